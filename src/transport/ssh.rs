//! The `ssh` transport: each command on its own channel of a pooled connection, under the remote wrapper,
//! killed through a second channel that signals its process group.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use russh::{Channel, ChannelMsg, client::Msg};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::process::feed_stdin;
use super::startup::{MAX_STARTUP_NOISE, Scanned, StartupScan, log_chatter};
use super::wrapper::{Invocation, Report, is_plain_sh, kill_script};
use super::{CommandSpec, ExitStatus, KillPolicy, OutputStream, Process, ProcessEvent, Stdin};
use crate::error::{Error, Result};
use crate::ssh::pool::{Lease, PooledConnection};
use crate::ssh::{SshPool, SshTarget};

/// Runs commands on one SSH host through the shared pool.
#[derive(Clone)]
pub struct Ssh {
    target: SshTarget,
    pool: Arc<SshPool>,
    kill: KillPolicy,
}

impl std::fmt::Debug for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ssh")
            .field("target", &self.target.display())
            .finish()
    }
}

impl Ssh {
    pub fn new(target: SshTarget, pool: Arc<SshPool>, kill: KillPolicy) -> Self {
        Self { target, pool, kill }
    }

    fn channel_error(&self, e: impl std::fmt::Display) -> Error {
        Error::SshChannel {
            host: self.target.name.clone(),
            reason: e.to_string(),
        }
    }

    /// Starts `spec` under the wrapper; returns once the remote side reports the command running.
    pub async fn spawn(&self, spec: CommandSpec) -> Result<Process> {
        let mut invocation = Invocation::new(&spec.command, spec.cwd.as_deref(), &spec.env)?;
        let (lease, mut channel) = self.open_channel().await?;
        channel
            .exec(true, invocation.exec(lease.connection.login_shell_is_sh()))
            .await
            .map_err(|e| self.channel_error(e))?;
        channel
            .data_bytes(Bytes::from(std::mem::take(&mut invocation.header)))
            .await
            .map_err(|e| self.channel_error(e))?;
        let kill = CancellationToken::new();
        let stdin = match spec.stdin {
            Stdin::Null => {
                channel.eof().await.map_err(|e| self.channel_error(e))?;
                None
            }
            Stdin::Bytes(data) => {
                feed_stdin(channel.make_writer(), data, kill.clone());
                None
            }
            Stdin::Pipe => Some(Box::pin(channel.make_writer()) as super::StdinWriter),
        };
        // A login shell stuck in its startup files must not hang the call.
        let limit = self.target.connect_timeout;
        let report = self.await_report(&mut channel, &invocation, spec.cwd.as_deref());
        let mut start = tokio::time::timeout(limit, report).await.map_err(|_| {
            self.channel_error(format!(
                "the remote shell did not start the command within {}s (slow or interactive shell startup files?)",
                limit.as_secs_f64()
            ))
        })??;
        if let Some(shell) = &start.login_shell {
            lease.connection.learn_login_shell(is_plain_sh(shell));
        }
        tracing::debug!(host = %self.target.name, pgid = start.pid, "remote command started");
        let (tx, rx) = mpsc::channel(super::EVENT_BUFFER);
        let pid = start.pid;
        for (stream, data) in std::mem::take(&mut start.early) {
            let _ = tx.try_send(ProcessEvent::Output(stream, data));
        }
        tokio::spawn(supervise(
            channel,
            lease,
            self.target.name.clone(),
            start,
            tx,
            kill.clone(),
            self.kill.grace,
        ));
        Ok(Process::new(rx, stdin, kill, Some(pid)))
    }

    /// A session channel on a pooled connection (see [`SshPool::open_channel`]).
    async fn open_channel(&self) -> Result<(Lease, Channel<Msg>)> {
        let open = |c: Arc<PooledConnection>| async move { c.handle.channel_open_session().await };
        self.pool.open_channel(&self.target, open).await
    }

    /// Reads until the wrapper's report line; output after it is kept for the process.
    async fn await_report(
        &self,
        channel: &mut Channel<Msg>,
        invocation: &Invocation,
        cwd: Option<&str>,
    ) -> Result<Started> {
        let mut scan = StartupScan::new(invocation);
        // sshd may send the exit status before the last output (a command that ends at once).
        let mut exit = ExitStatus::default();
        loop {
            let scanned = match channel.wait().await {
                Some(ChannelMsg::Data { data }) => scan.stdout(&data),
                Some(ChannelMsg::ExtendedData { data, .. }) => scan.stderr(&data),
                Some(ChannelMsg::Failure) => {
                    return Err(self.channel_error("the server refused to run a command"));
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    exit.code = Some(exit_status as i32);
                    continue;
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    exit.signal = Some(signal_label(&signal_name));
                    continue;
                }
                Some(ChannelMsg::Close) | None => {
                    return Err(self.channel_error(format!(
                        "the remote shell ended before the command started (is `sh` there?): {}",
                        scan.stderr_text()
                    )));
                }
                Some(_) => continue,
            };
            match scanned {
                Scanned::Pending => {}
                Scanned::TooNoisy => {
                    return Err(self.channel_error(format!(
                        "the remote shell printed over {MAX_STARTUP_NOISE} bytes without starting the command"
                    )));
                }
                Scanned::Reported(Report::Started { pid, login_shell }, early) => {
                    log_chatter(&self.target.name, &scan);
                    let nonce = invocation.nonce.clone();
                    return Ok(Started {
                        pid,
                        login_shell,
                        early,
                        exit,
                        nonce,
                    });
                }
                Scanned::Reported(Report::NoCwd, _) => {
                    return Err(Error::MissingCwd {
                        host: self.target.name.clone(),
                        cwd: cwd.unwrap_or_default().to_owned(),
                    });
                }
            }
        }
    }
}

struct Started {
    pid: u32,
    /// `$SHELL` on the host, as the wrapper reported it.
    login_shell: Option<String>,
    early: Vec<(OutputStream, Bytes)>,
    /// The exit status, when it came with the start.
    exit: ExitStatus,
    /// The run's nonce, which the kill script checks for.
    nonce: String,
}

/// Forwards the channel's output, kills the remote group on request, and reports the exit last.
/// The lease (the channel slot) is held until the channel closes.
async fn supervise(
    mut channel: Channel<Msg>,
    lease: Lease,
    host: String,
    start: Started,
    tx: mpsc::Sender<ProcessEvent>,
    kill: CancellationToken,
    grace: Duration,
) {
    let (pgid, mut status, nonce) = (start.pid, start.exit, start.nonce);
    let mut killer = None;
    loop {
        tokio::select! {
            message = channel.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    let _ = tx.send(ProcessEvent::Output(OutputStream::Stdout, Bytes::copy_from_slice(&data))).await;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let _ = tx.send(ProcessEvent::Output(OutputStream::Stderr, Bytes::copy_from_slice(&data))).await;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => status.code = Some(exit_status as i32),
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => status.signal = Some(signal_label(&signal_name)),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            _ = kill.cancelled(), if killer.is_none() => {
                killer = Some(tokio::spawn(kill_group(lease.connection.clone(), pgid, nonce.clone(), grace)));
            }
        }
    }
    if status.code.is_none() && status.signal.is_none() && killer.is_none() {
        let note = format!(
            "\n[outpost: the connection to `{host}` was lost before the command ended; it may still be running there]\n"
        );
        let _ = tx
            .send(ProcessEvent::Output(
                OutputStream::Stderr,
                Bytes::from(note),
            ))
            .await;
    }
    if let Some(killer) = killer {
        // Let the KILL phase finish so stragglers of the group die too; bounded by the grace.
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), killer).await;
    }
    drop(lease);
    let _ = tx.send(ProcessEvent::Exited(status)).await;
}

/// On a second channel: TERM the group, wait up to `grace` for it to go, then KILL what is left.
async fn kill_group(connection: Arc<PooledConnection>, pgid: u32, nonce: String, grace: Duration) {
    // Run by `sh` whatever the login shell is (fish, csh, ...).
    let script = format!("exec sh -c '{}'", kill_script(pgid, grace, &nonce));
    let result = async {
        let mut channel = connection.handle.channel_open_session().await?;
        channel.exec(true, script.as_bytes()).await?;
        channel.eof().await?;
        while let Some(message) = channel.wait().await {
            if matches!(message, ChannelMsg::Close) {
                break;
            }
        }
        Ok::<_, russh::Error>(())
    };
    if let Err(e) = result.await {
        tracing::warn!(pgid, error = %e, "could not kill the remote process group");
    }
}

fn signal_label(signal: &russh::Sig) -> String {
    match signal {
        russh::Sig::Custom(name) => format!("SIG{name}"),
        other => format!("SIG{other:?}"),
    }
}
