//! A running process on any transport: the stream of its output and exit, its stdin, and its kill switch.

use std::pin::Pin;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// How a process ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<String>,
}

impl ExitStatus {
    /// Death by signal number `n`: named `SIGTERM`, `SIGKILL`, ... (`SIGn` for one without a name).
    pub fn signalled(n: i32) -> Self {
        let name = nix::sys::signal::Signal::try_from(n)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_else(|_| format!("SIG{n}"));
        Self {
            code: None,
            signal: Some(name),
        }
    }

    /// The shell convention: the code, or 128 + signal number.
    pub fn shell_code(&self) -> i32 {
        match (&self.code, &self.signal) {
            (Some(code), _) => *code,
            (None, Some(name)) => name
                .parse::<nix::sys::signal::Signal>()
                .map(|s| 128 + s as i32)
                .unwrap_or(255),
            (None, None) => 255,
        }
    }
}

/// Everything a finished process printed, and how it ended.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

/// What became of a request to kill a process tree. It can change after the process's `Exited`:
/// a kill that could not be delivered at first may be confirmed (or given up on) later.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KillState {
    /// No kill was asked for.
    #[default]
    NotAsked,
    /// Asked and under way: not confirmed yet.
    Sent,
    /// Not confirmed: why. Still being retried (e.g. the host does not answer); the process
    /// may still be running.
    Retrying(String),
    /// The whole process tree is confirmed gone.
    Confirmed,
    /// Given up on: why. The process may still be running.
    Failed(String),
}

impl KillState {
    /// Why the kill is not (yet) confirmed, for a result; None when confirmed or not asked.
    pub fn doubt(&self) -> Option<String> {
        match self {
            KillState::NotAsked | KillState::Confirmed => None,
            KillState::Sent => Some("the kill has not been confirmed yet".to_owned()),
            KillState::Retrying(why) => Some(format!(
                "the kill is not confirmed: {why}; the process may still be running, and outpost keeps trying to kill it"
            )),
            KillState::Failed(why) => Some(format!(
                "the kill failed: {why}; the process may still be running"
            )),
        }
    }

    /// Whether nothing more will change: confirmed, given up, or never asked.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            KillState::NotAsked | KillState::Confirmed | KillState::Failed(_)
        )
    }
}

/// The sending side of a process's [`KillState`], kept by whatever delivers its kill.
pub type KillReporter = watch::Sender<KillState>;

/// What a running process reports, in order: output chunks, then exactly one `Exited`.
#[derive(Debug)]
pub enum ProcessEvent {
    Output(OutputStream, Bytes),
    Exited(ExitStatus),
}

/// The writable end of a process's stdin. Call `shutdown()` to send EOF: over SSH, merely dropping
/// it does not.
pub type StdinWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// A handle on a running process tree.
///
/// The backend's supervisor task owns the process; this handle receives its events.
/// **Dropping the handle kills the whole process tree** (TERM, then KILL after the grace).
pub struct Process {
    events: mpsc::Receiver<ProcessEvent>,
    stdin: Option<StdinWriter>,
    kill: CancellationToken,
    _kill_on_drop: DropGuard,
    kill_state: watch::Receiver<KillState>,
    pid: Option<u32>,
    _load: Option<super::Ticket>,
}

impl Process {
    /// Wraps a backend's event channel. Cancelling `kill` must make the backend kill the tree,
    /// say through `kill_state` what became of that, and then still deliver `Exited`.
    pub fn new(
        events: mpsc::Receiver<ProcessEvent>,
        stdin: Option<StdinWriter>,
        kill: CancellationToken,
        kill_state: watch::Receiver<KillState>,
        pid: Option<u32>,
    ) -> Self {
        let guard = kill.clone().drop_guard();
        Self {
            events,
            stdin,
            kill,
            _kill_on_drop: guard,
            kill_state,
            pid,
            _load: None,
        }
    }

    /// What became of a kill: watch it to learn of a confirmation that comes after `Exited`.
    pub fn kill_state(&self) -> watch::Receiver<KillState> {
        self.kill_state.clone()
    }

    /// Keeps `ticket` (load counted on a host) until this handle is dropped.
    pub fn holding(mut self, ticket: super::Ticket) -> Self {
        self._load = Some(ticket);
        self
    }

    /// The next output chunk or the exit; `None` once the exit has been delivered.
    pub async fn next_event(&mut self) -> Option<ProcessEvent> {
        self.events.recv().await
    }

    /// The next event if one is already waiting, without blocking.
    pub fn try_next_event(&mut self) -> Option<ProcessEvent> {
        self.events.try_recv().ok()
    }

    /// Asks for the process tree to be killed; `Exited` follows on the event stream.
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// The stdin writer, when the command was started with `Stdin::Pipe`.
    pub fn take_stdin(&mut self) -> Option<StdinWriter> {
        self.stdin.take()
    }

    /// Runs the process to its end, collecting all output. For short commands only: memory is unbounded.
    pub async fn output(mut self) -> Output {
        let mut output = Output::default();
        while let Some(event) = self.next_event().await {
            match event {
                ProcessEvent::Output(OutputStream::Stdout, data) => {
                    output.stdout.extend_from_slice(&data)
                }
                ProcessEvent::Output(OutputStream::Stderr, data) => {
                    output.stderr.extend_from_slice(&data)
                }
                ProcessEvent::Exited(status) => output.status = status,
            }
        }
        output
    }

    /// The pid of the process (on its own host), when the backend knows it.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }
}

/// Writes `data` to a process's stdin and closes it, in the background; stops when `stop` is
/// cancelled (the process is being killed). A process that exits without reading it all is fine.
pub(super) fn feed_stdin<W>(mut writer: W, data: Vec<u8>, stop: CancellationToken)
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        tokio::select! {
            result = async { writer.write_all(&data).await?; writer.shutdown().await } => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "process closed stdin before reading all of it");
                }
            }
            _ = stop.cancelled() => {}
        }
    });
}
