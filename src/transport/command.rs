//! The `command` transport: a process inside a container, pod or other wrapper, started by an argv
//! prefix (`docker exec -i CONTAINER`, `kubectl exec -i POD --`, ...) that another backend runs. The
//! command runs under the same wrapper as over SSH, so cwd, env, stdin and whole-tree kills apply
//! inside, and no env value ever reaches the engine's argv.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::kill_script::{Group, kill_script, parse_verdicts};
use super::local::sleep_until_opt;
use super::process::feed_stdin;
use super::startup::{MAX_STARTUP_NOISE, Scanned, StartupScan, log_chatter};
use super::trailer::LastWord;
use super::wrapper::{Invocation, Report};
use super::{
    CommandSpec, ExitStatus, KillPolicy, KillReporter, KillState, OutputStream, Process,
    ProcessEvent, Stdin, Transport,
};
use crate::error::{Error, Result};

/// After the kill inside, how long the engine's client gets to end by itself before it is killed.
const CLIENT_SETTLE: Duration = Duration::from_secs(2);

/// Runs commands through `prefix` (an argv that runs a program elsewhere with stdio attached),
/// itself started on the `base` host.
#[derive(Debug, Clone)]
pub struct CommandPrefix {
    name: String,
    prefix: Vec<String>,
    base: Box<Transport>,
    kill: KillPolicy,
    start_timeout: Duration,
}

impl CommandPrefix {
    /// `start_timeout` bounds the engine's start (pulling up the exec session) up to the wrapper's report.
    pub fn new(
        name: impl Into<String>,
        prefix: Vec<String>,
        base: Transport,
        kill: KillPolicy,
        start_timeout: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            prefix,
            base: Box::new(base),
            kill,
            start_timeout,
        }
    }

    /// The prefix followed by `args`, as one shell line for the base host.
    fn command_line(&self, args: &[&str]) -> String {
        let words = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied());
        format!("exec {}", shell_words::join(words))
    }

    fn program(&self) -> &str {
        self.prefix.first().map_or("", String::as_str)
    }

    /// Starts `spec` inside; returns once the wrapper there reports the command running.
    /// Boxed: the base is a transport too, so the future type would otherwise contain itself.
    pub fn spawn(&self, spec: CommandSpec) -> BoxFuture<'_, Result<Process>> {
        Box::pin(self.start(spec))
    }

    async fn start(&self, spec: CommandSpec) -> Result<Process> {
        let invocation = Invocation::new(&spec.command, spec.cwd.as_deref(), &spec.env)?;
        let mut outer = self
            .base
            .spawn(CommandSpec {
                command: self.command_line(&invocation.argv()),
                cwd: None,
                env: BTreeMap::new(),
                stdin: Stdin::Pipe,
            })
            .await?;
        let kill = CancellationToken::new();
        // Both bounded: an engine that hangs may never read the header either.
        let starting = async {
            let stdin = self.feed(&mut outer, &invocation, spec.stdin, &kill).await;
            let started = self.await_report(&mut outer, &invocation, spec.cwd.as_deref());
            started.await.map(|started| (stdin, started))
        };
        let (stdin, (group, early)) = match tokio::time::timeout(self.start_timeout, starting).await
        {
            Ok(started) => started?,
            Err(_) => {
                let reason = format!(
                    "it did not start the command within {}s",
                    self.start_timeout.as_secs_f64()
                );
                return Err(self.engine_error(reason, None));
            }
        };
        let (tx, rx) = mpsc::channel(super::EVENT_BUFFER);
        // A command that dies at once may say so in the same read as the report.
        let mut last = LastWord::new(&invocation.nonce);
        for (stream, data) in early {
            if let Some(data) = last.output(stream, data) {
                let _ = tx.try_send(ProcessEvent::Output(stream, data));
            }
        }
        let pid = group.pgid;
        let (report, kill_state) = watch::channel(KillState::NotAsked);
        let killer = self.killer(group, report);
        tokio::spawn(supervise(outer, tx, kill.clone(), killer, last));
        Ok(Process::new(rx, stdin, kill, kill_state, Some(pid)))
    }

    /// Writes the wrapper's header, then the caller's stdin; hands back the pipe for `Stdin::Pipe`.
    /// An engine that fails at once closes its stdin: the error comes from its output instead.
    async fn feed(
        &self,
        outer: &mut Process,
        invocation: &Invocation,
        stdin: Stdin,
        kill: &CancellationToken,
    ) -> Option<super::StdinWriter> {
        let mut writer = outer.take_stdin()?;
        if writer.write_all(&invocation.header).await.is_err() {
            return None;
        }
        match stdin {
            Stdin::Null => {
                let _ = writer.shutdown().await;
                None
            }
            Stdin::Bytes(data) => {
                feed_stdin(writer, data, kill.clone());
                None
            }
            Stdin::Pipe => Some(writer),
        }
    }

    /// Reads the engine's output until the wrapper's report; the engine ending first is its error.
    async fn await_report(
        &self,
        outer: &mut Process,
        invocation: &Invocation,
        cwd: Option<&str>,
    ) -> Result<(Group, Vec<(OutputStream, bytes::Bytes)>)> {
        let mut scan = StartupScan::new(invocation);
        loop {
            let scanned = match outer.next_event().await {
                Some(ProcessEvent::Output(OutputStream::Stdout, data)) => scan.stdout(&data),
                Some(ProcessEvent::Output(OutputStream::Stderr, data)) => scan.stderr(&data),
                Some(ProcessEvent::Exited(status)) => {
                    return Err(self.engine_error(scan.stderr_text(), Some(status)));
                }
                None => return Err(self.engine_error(scan.stderr_text(), None)),
            };
            match scanned {
                Scanned::Pending => {}
                Scanned::Reported(Report::Started { group, .. }, early) => {
                    log_chatter(&self.name, &scan);
                    return Ok((group, early));
                }
                Scanned::Reported(Report::NoCwd, _) => {
                    return Err(Error::MissingCwd {
                        host: self.name.clone(),
                        cwd: cwd.unwrap_or_default().to_owned(),
                    });
                }
                Scanned::TooNoisy => {
                    let reason = format!(
                        "it printed over {MAX_STARTUP_NOISE} bytes without starting the command"
                    );
                    return Err(self.engine_error(reason, None));
                }
            }
        }
    }

    /// The engine's own complaint, with a hint for the common causes.
    fn engine_error(&self, said: String, status: Option<ExitStatus>) -> Error {
        let code = status.as_ref().map(ExitStatus::shell_code);
        let reason = match (said.is_empty(), code) {
            (false, _) => said,
            (true, Some(code)) => format!("it exited with code {code} and printed nothing"),
            (true, None) => "it ended and printed nothing".to_owned(),
        };
        let program = self.program().to_owned();
        // docker: `exec: "sh": executable file not found`; podman: ``executable file `sh` not found``.
        let no_sh = ["\"sh\"", "`sh`"].iter().any(|sh| reason.contains(sh));
        let no_cli = code == Some(127) && reason.contains(&format!("{program}: not found"));
        let hint = if no_sh {
            " (outpost needs a POSIX `sh` inside the container)".to_owned()
        } else if no_cli {
            format!(
                " (is `{program}` installed on `{}` and on its PATH? Set `cli` to its full path otherwise)",
                self.base.host()
            )
        } else {
            String::new()
        };
        Error::Engine {
            host: self.name.clone(),
            program,
            reason,
            hint,
        }
    }

    fn killer(&self, group: Group, report: KillReporter) -> Killer {
        let script = kill_script(std::slice::from_ref(&group), self.kill.grace);
        Killer {
            base: (*self.base).clone(),
            command: self.command_line(&["sh", "-c", &script]),
            // The bound every caller waits for a verdict (job_kill, cancel, shutdown).
            limit: self.kill.grace + super::VERDICT_SLACK,
            host: self.name.clone(),
            report,
        }
    }
}

/// Kills the command's process group inside, through a second run of the prefix, and says
/// whether it is confirmed gone.
struct Killer {
    base: Transport,
    command: String,
    limit: Duration,
    host: String,
    report: KillReporter,
}

impl Killer {
    async fn run(self) {
        self.report.send_replace(KillState::Sent);
        let spec = CommandSpec {
            command: self.command,
            ..CommandSpec::default()
        };
        let done = async {
            let output = self.base.spawn(spec).await?.output().await;
            Ok::<_, Error>(output)
        };
        let state = match tokio::time::timeout(self.limit, done).await {
            Ok(Ok(output)) => {
                let said = String::from_utf8_lossy(&output.stdout);
                match parse_verdicts(&said).first() {
                    Some((_, verdict)) => match verdict.doubt() {
                        None => KillState::Confirmed,
                        Some(doubt) => KillState::Failed(doubt.to_owned()),
                    },
                    None => KillState::Failed(format!(
                        "the kill script inside did not report (exit {}): {}",
                        output.status.shell_code(),
                        String::from_utf8_lossy(&output.stderr).trim()
                    )),
                }
            }
            Ok(Err(e)) => KillState::Failed(format!("cannot run the kill inside: {e}")),
            Err(_) => KillState::Failed(format!(
                "the kill inside did not finish within {}s",
                self.limit.as_secs_f64()
            )),
        };
        if let Some(doubt) = state.doubt() {
            tracing::warn!(host = %self.host, "{doubt}");
        }
        self.report.send_replace(state);
        tokio::time::sleep(CLIENT_SETTLE).await;
    }
}

/// Forwards the engine's output and exit, the wrapper's last word taken out of the one and into
/// the other. On kill: the group inside is killed first (killing only the engine's client would
/// leave it running), then the client if it has not ended by itself. If even that does not end it
/// (a client that cannot be killed, a channel held open), the process is given up on after a
/// bound, saying so.
async fn supervise(
    mut outer: Process,
    tx: mpsc::Sender<ProcessEvent>,
    kill: CancellationToken,
    killer: Killer,
    mut last: LastWord,
) {
    let limit = killer.limit;
    let host = killer.host.clone();
    let mut verdict = killer.report.subscribe();
    let mut killer = Some(killer);
    let mut killing: Option<JoinHandle<()>> = None;
    let mut abandon_at = None;
    let mut status = ExitStatus::default();
    loop {
        tokio::select! {
            event = outer.next_event() => match event {
                Some(ProcessEvent::Output(stream, data)) => {
                    if let Some(data) = last.output(stream, data) {
                        let _ = tx.send(ProcessEvent::Output(stream, data)).await;
                    }
                }
                Some(ProcessEvent::Exited(exit)) => status = exit,
                None => break,
            },
            _ = kill.cancelled(), if killer.is_some() => {
                killing = killer.take().map(|k| tokio::spawn(k.run()));
            }
            _ = finished(&mut killing) => {
                killing = None;
                outer.kill();
                abandon_at = Some(tokio::time::Instant::now() + limit);
            }
            _ = sleep_until_opt(abandon_at), if abandon_at.is_some() => {
                let note = format!(
                    "\n[outpost: the process in `{host}` could not be confirmed dead; it may still be running there]\n"
                );
                let note = ProcessEvent::Output(OutputStream::Stderr, note.into());
                let _ = tx.send(note).await;
                break;
            }
        }
    }
    if killer.is_none() {
        // The client ended with the process inside; the kill still says whether all of it went.
        let settled = verdict.wait_for(KillState::is_settled);
        let _ = tokio::time::timeout(limit, settled).await;
    }
    for (stream, data) in last.rest() {
        let _ = tx.send(ProcessEvent::Output(stream, data)).await;
    }
    let _ = tx.send(ProcessEvent::Exited(last.status(status))).await;
}

/// Waits for the task, if there is one; pending forever otherwise.
async fn finished(task: &mut Option<JoinHandle<()>>) {
    match task {
        Some(task) => {
            let _ = task.await;
        }
        None => std::future::pending().await,
    }
}
