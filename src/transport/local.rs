//! The `local` transport: `sh -c` on this machine, in its own process group so the whole tree can be killed.

use std::io;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::BytesMut;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use super::process::feed_stdin;
use super::{
    CommandSpec, ExitStatus, KillPolicy, KillReporter, KillState, OutputStream, Process,
    ProcessEvent, Stdin,
};
use crate::error::{Error, Result};

/// After the command itself exits, how long to keep reading pipes that stay silent
/// (held open by a background child it left behind) before giving up on them.
const DRAIN_IDLE: Duration = Duration::from_millis(300);
/// Size of one read from a pipe.
const CHUNK: usize = 64 * 1024;
/// How long after SIGKILL a group still gets to be gone before the kill is called unconfirmed.
const AFTER_KILL: Duration = Duration::from_secs(1);
/// How often a dying group is looked at.
const POLL: Duration = Duration::from_millis(20);

/// Runs commands on this machine.
#[derive(Debug, Clone)]
pub struct Local {
    name: String,
    kill: KillPolicy,
}

impl Local {
    pub fn new(name: impl Into<String>, kill: KillPolicy) -> Self {
        Self {
            name: name.into(),
            kill,
        }
    }

    /// Starts `spec` under `/bin/sh -c` as the leader of a new process group.
    pub async fn spawn(&self, spec: CommandSpec) -> Result<Process> {
        let cwd = self.resolve_cwd(spec.cwd.as_deref()).await?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&spec.command)
            .current_dir(&cwd)
            .envs(&spec.env)
            .stdin(match spec.stdin {
                Stdin::Null => Stdio::null(),
                Stdin::Bytes(_) | Stdin::Pipe => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = super::reaper::spawn(&mut command).map_err(|source| Error::Spawn {
            host: self.name.clone(),
            source,
        })?;
        let pid = child.id();
        let kill = CancellationToken::new();
        let stdin = child.stdin.take();
        let stdin = match (spec.stdin, stdin) {
            (Stdin::Bytes(data), Some(pipe)) => {
                feed_stdin(pipe, data, kill.clone());
                None
            }
            (Stdin::Pipe, Some(pipe)) => Some(Box::pin(pipe) as super::StdinWriter),
            _ => None,
        };
        let (tx, rx) = mpsc::channel(super::EVENT_BUFFER);
        let (report, kill_state) = watch::channel(KillState::NotAsked);
        let owner = Supervisor {
            tx,
            kill: kill.clone(),
            report,
            grace: self.kill.grace,
        };
        tokio::spawn(owner.run(child));
        tracing::debug!(host = %self.name, pid, "spawned local process");
        Ok(Process::new(rx, stdin, kill, kill_state, pid))
    }

    async fn resolve_cwd(&self, cwd: Option<&str>) -> Result<PathBuf> {
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("/"));
        let Some(cwd) = cwd else {
            return Ok(home);
        };
        let path = crate::home::expand(cwd, &home);
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_dir() => Ok(path),
            Ok(_) => Err(Error::CwdNotDirectory {
                host: self.name.clone(),
                cwd: path.display().to_string(),
            }),
            Err(_) => Err(Error::MissingCwd {
                host: self.name.clone(),
                cwd: path.display().to_string(),
            }),
        }
    }
}

/// Owns a child: forwards its output, kills its tree on request, and reports the exit last.
struct Supervisor {
    tx: mpsc::Sender<ProcessEvent>,
    kill: CancellationToken,
    report: KillReporter,
    grace: Duration,
}

impl Supervisor {
    async fn run(self, mut child: Child) {
        let pgid = child.id().map(|pid| Pid::from_raw(pid as i32));
        let exited = CancellationToken::new();
        let mut readers = JoinSet::new();
        if let Some(pipe) = child.stdout.take() {
            let tx = self.tx.clone();
            readers.spawn(forward(pipe, OutputStream::Stdout, tx, exited.clone()));
        }
        if let Some(pipe) = child.stderr.take() {
            let tx = self.tx.clone();
            readers.spawn(forward(pipe, OutputStream::Stderr, tx, exited.clone()));
        }
        let status = tokio::select! {
            status = child.wait() => status,
            _ = self.kill.cancelled() => self.kill_tree(pgid, &mut child).await,
        };
        super::reaper::waited(pgid.map(|leader| leader.as_raw() as u32));
        exited.cancel();
        self.drain(readers, pgid).await;
        let status = match status {
            Ok(status) => exit_status(status),
            Err(e) => {
                tracing::warn!(error = %e, "could not wait for local process");
                ExitStatus::default()
            }
        };
        let _ = self.tx.send(ProcessEvent::Exited(status)).await;
    }

    /// Lets the readers finish after the leader is gone. A kill request meanwhile also kills
    /// what is left of the group and gives the readers only DRAIN_IDLE more.
    async fn drain(&self, mut readers: JoinSet<()>, pgid: Option<Pid>) {
        let mut deadline = None;
        loop {
            tokio::select! {
                next = readers.join_next() => if next.is_none() { return },
                _ = self.kill.cancelled(), if deadline.is_none() => {
                    // Asked after the leader ended: what is left of its group dies now.
                    if let Some(pgid) = pgid
                        && *self.report.borrow() == KillState::NotAsked
                    {
                        self.report.send_replace(KillState::Sent);
                        let _ = killpg(pgid, Signal::SIGKILL);
                        self.report.send_replace(confirm(pgid, AFTER_KILL).await);
                    }
                    deadline = Some(Instant::now() + DRAIN_IDLE);
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    readers.abort_all();
                    return;
                }
            }
        }
    }

    /// Sends TERM to the group, waits up to the grace for the leader to end and the group to be
    /// gone, then sends KILL; says whether the group is confirmed gone. The leader's end is
    /// awaited, not polled: a leader that ignores TERM costs the grace and nothing more.
    async fn kill_tree(
        &self,
        pgid: Option<Pid>,
        child: &mut Child,
    ) -> io::Result<std::process::ExitStatus> {
        let Some(pgid) = pgid else {
            return child.wait().await;
        };
        self.report.send_replace(KillState::Sent);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        let status = tokio::select! {
            status = child.wait() => Some(status?),
            _ = tokio::time::sleep_until(deadline) => None,
        };
        if status.is_some() && gone_by(pgid, deadline).await {
            self.report.send_replace(KillState::Confirmed);
        } else {
            let _ = killpg(pgid, Signal::SIGKILL);
            self.report.send_replace(confirm(pgid, AFTER_KILL).await);
        }
        match status {
            Some(status) => Ok(status),
            None => child.wait().await,
        }
    }
}

/// Whether group `pgid` is gone by `deadline`, looking every [`POLL`].
async fn gone_by(pgid: Pid, deadline: Instant) -> bool {
    while group_alive(pgid) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL).await;
    }
    true
}

/// Waits up to `limit` for group `pgid` to be gone; the kill's outcome.
async fn confirm(pgid: Pid, limit: Duration) -> KillState {
    if gone_by(pgid, Instant::now() + limit).await {
        return KillState::Confirmed;
    }
    let doubt = super::Verdict::Alive.doubt().unwrap_or_default();
    tracing::warn!(pgid = pgid.as_raw(), "{doubt}");
    KillState::Failed(doubt.to_owned())
}

/// Sleeps until `deadline`; returns at once without one, so `select!` branches guard on it.
pub(super) async fn sleep_until_opt(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}

/// Whether any process of the group is left that is not a zombie: a zombie (dead, waiting for a
/// parent that may never reap it) is gone for a kill's purposes. Without `/proc`, whether the
/// group exists at all.
fn group_alive(pgid: Pid) -> bool {
    if killpg(pgid, None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let path = entry.path().join("stat");
        std::fs::read_to_string(path).is_ok_and(|stat| live_member(&stat, pgid.as_raw()))
    })
}

/// Whether a `/proc/PID/stat` line is of a process in group `pgid` that is not a zombie.
fn live_member(stat: &str, pgid: i32) -> bool {
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    let group = fields.nth(1).and_then(|g| g.parse::<i32>().ok());
    group == Some(pgid) && !matches!(state, Some("Z" | "X"))
}

/// Forwards one pipe as events until EOF, or until it stays silent for DRAIN_IDLE after `exited`.
async fn forward<R>(
    mut pipe: R,
    stream: OutputStream,
    tx: mpsc::Sender<ProcessEvent>,
    exited: CancellationToken,
) where
    R: AsyncRead + Unpin + Send + 'static,
{
    {
        let mut buf = BytesMut::with_capacity(CHUNK);
        loop {
            buf.reserve(CHUNK);
            let read = if exited.is_cancelled() {
                match timeout(DRAIN_IDLE, pipe.read_buf(&mut buf)).await {
                    Ok(read) => read,
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    read = pipe.read_buf(&mut buf) => read,
                    _ = exited.cancelled() => continue,
                }
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let chunk = buf.split().freeze();
                    if tx.send(ProcessEvent::Output(stream, chunk)).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(n) => ExitStatus::signalled(n),
        None => ExitStatus {
            code: status.code(),
            signal: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_group_of_zombies_is_not_alive() {
        // A leader, and a member that exits at once but that its parent (this test, outside
        // the group) has not reaped: a zombie in the group.
        let mut leader = std::process::Command::new("sleep")
            .arg("4718")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = Pid::from_raw(leader.id() as i32);
        let mut zombie = std::process::Command::new("true")
            .process_group(pgid.as_raw())
            .spawn()
            .unwrap();
        while !std::fs::read_to_string(format!("/proc/{}/stat", zombie.id()))
            .unwrap()
            .contains(") Z ")
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(group_alive(pgid));
        leader.kill().unwrap();
        leader.wait().unwrap();
        assert!(
            killpg(pgid, None).is_ok(),
            "the zombie still holds the group"
        );
        assert!(!group_alive(pgid), "a group of zombies counts as alive");
        zombie.wait().unwrap();
    }

    #[test]
    fn stat_lines_are_read_past_odd_command_names() {
        let line = "4242 (a) b Z (c) S 1 77 77 0 -1";
        assert!(live_member(line, 77));
        assert!(!live_member(line, 78));
        assert!(!live_member("4242 (sh) Z 1 77 77 0", 77), "a zombie");
    }
}
