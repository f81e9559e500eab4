//! A running process on any transport: the stream of its output and exit, its stdin, and its kill switch.

use std::pin::Pin;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
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
    pid: Option<u32>,
    _load: Option<super::Ticket>,
}

impl Process {
    /// Wraps a backend's event channel. Cancelling `kill` must make the backend kill the tree
    /// and then still deliver `Exited`.
    pub fn new(
        events: mpsc::Receiver<ProcessEvent>,
        stdin: Option<StdinWriter>,
        kill: CancellationToken,
        pid: Option<u32>,
    ) -> Self {
        let guard = kill.clone().drop_guard();
        Self {
            events,
            stdin,
            kill,
            _kill_on_drop: guard,
            pid,
            _load: None,
        }
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
