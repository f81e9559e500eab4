//! One live Claude Code process in stream-json mode, serving one turn at a time.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::launch::{LaunchOptions, NOT_FOUND_MARKER};
use super::permission::{self, Approval, Decision, PermissionRequest};
use super::stream::{self, Line, TurnResult};
use crate::error::{Error, Result};
use crate::transport::{
    CommandSpec, ExitStatus, OutputStream, Process, ProcessEvent, StdinWriter, Transport,
};

/// A stdout line longer than this is dropped (Claude's lines carry whole tool results).
const MAX_LINE: usize = 64 << 20;
/// Bytes of stderr kept for error messages.
const STDERR_TAIL: usize = 4096;
/// What Claude prints when `--resume` names a session it cannot find.
const NO_CONVERSATION: &str = "No conversation found with session ID";

/// Why a turn was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    Cancelled,
    TimedOut,
}

/// How one turn ended.
#[derive(Debug)]
pub struct TurnEnd {
    pub result: TurnResult,
    pub interrupted: Option<Interrupt>,
    /// The id of the turn's last assistant message: its record in the session file marks the
    /// turn as written there.
    pub last_message_id: Option<String>,
}

/// One turn to run: the prompt, where its events go, and what ends it early.
pub struct Turn<'a> {
    pub prompt: &'a str,
    /// Every parsed stdout line of the turn, in order.
    pub events: &'a mpsc::UnboundedSender<Value>,
    /// Where permission prompts go to be decided; `None`: they are denied.
    pub approvals: Option<&'a mpsc::UnboundedSender<Approval>>,
    /// Cancelled when the caller gives up: the turn is interrupted.
    pub cancel: &'a CancellationToken,
    pub deadline: Instant,
    /// Time an interrupted turn gets to end before the process is killed.
    pub grace: Duration,
}

/// A Claude process and what is known of it.
///
/// **Dropping a worker kills its process tree**; [`Worker::close`] ends it gently (EOF on stdin),
/// which lets Claude finish writing its session file.
pub struct Worker {
    pub host: String,
    pub session_id: String,
    /// The project directory: as requested until Claude reports its physical path.
    pub cwd: String,
    /// The project directory as the caller gave it (`~/proj`, a symlink, ...).
    pub asked_cwd: String,
    pub options: LaunchOptions,
    process: Process,
    stdin: Option<StdinWriter>,
    stdout: Vec<u8>,
    stderr_tail: Vec<u8>,
    exit: Option<ExitStatus>,
    interrupts: u64,
    /// Tools a person allowed for the rest of this process's life ("allow this tool").
    allowed_tools: HashSet<String>,
}

/// A permission prompt waiting for its decision.
type Pending = Pin<Box<dyn Future<Output = (PermissionRequest, Decision)> + Send>>;

enum Step {
    Line(Option<Value>),
    Decided(PermissionRequest, Decision),
    Interrupt(Interrupt),
    GiveUp,
}

impl Worker {
    /// Starts Claude with `spec` (its command line from [`super::launch::command_line`]).
    pub async fn start(
        transport: &Transport,
        spec: CommandSpec,
        host: String,
        session_id: String,
        options: LaunchOptions,
    ) -> Result<Self> {
        let cwd = spec.cwd.clone().unwrap_or_default();
        let mut process = transport.spawn(spec).await?;
        let stdin = process.take_stdin();
        tracing::info!(%host, session = %session_id, pid = process.pid(), "claude started");
        Ok(Self {
            host,
            session_id,
            asked_cwd: cwd.clone(),
            cwd,
            options,
            process,
            stdin,
            stdout: Vec::new(),
            stderr_tail: Vec::new(),
            exit: None,
            interrupts: 0,
            allowed_tools: HashSet::new(),
        })
    }

    /// Whether the process is still there to take a turn (it may have died while idle).
    pub fn is_alive(&mut self) -> bool {
        while self.exit.is_none() {
            match self.process.try_next_event() {
                Some(event) => self.absorb(event),
                None => break,
            }
        }
        self.exit.is_none() && self.stdin.is_some()
    }

    /// Runs one turn: writes the prompt, forwards events until the `result` line.
    /// After an error the worker is unusable; the session itself stays resumable.
    pub async fn turn(&mut self, turn: Turn<'_>) -> Result<TurnEnd> {
        if !self.stdout.is_empty() {
            tracing::debug!(
                bytes = self.stdout.len(),
                "dropping stray claude output between turns"
            );
            self.stdout.clear();
        }
        self.write(&stream::user_message(turn.prompt)).await;
        let mut interrupted = None;
        let mut give_up_at: Option<Instant> = None;
        let mut last_message_id = None;
        // The permission prompts Claude waits on (it may ask about several tool uses at once),
        // each with where its decision comes from.
        let mut waiting: FuturesUnordered<Pending> = FuturesUnordered::new();
        loop {
            let step = tokio::select! {
                Some((request, decision)) = waiting.next(), if !waiting.is_empty() => Step::Decided(request, decision),
                line = self.next_line() => Step::Line(line),
                _ = turn.cancel.cancelled(), if interrupted.is_none() => Step::Interrupt(Interrupt::Cancelled),
                _ = tokio::time::sleep_until(turn.deadline), if interrupted.is_none() => Step::Interrupt(Interrupt::TimedOut),
                _ = tokio::time::sleep_until(give_up_at.unwrap_or(turn.deadline)), if give_up_at.is_some() => Step::GiveUp,
            };
            match step {
                Step::Line(None) => return Err(self.failure()),
                Step::Decided(request, decision) => self.answer(&request, &decision).await,
                Step::Line(Some(event)) => {
                    if let Some(request) = PermissionRequest::from_line(&event) {
                        let _ = turn.events.send(event);
                        if let Some(pending) = self.ask(request, turn.approvals).await {
                            waiting.push(pending);
                        }
                        continue;
                    }
                    let line = stream::classify(&event);
                    if event["type"] == "assistant"
                        && let Some(id) = event["message"]["id"].as_str()
                    {
                        last_message_id = Some(id.to_owned());
                    }
                    let _ = turn.events.send(event);
                    match line {
                        Line::Init { session_id, cwd } => {
                            self.session_id = session_id;
                            self.cwd = cwd;
                        }
                        Line::Result(result) => {
                            return self.finish(*result, interrupted, last_message_id);
                        }
                        Line::Other => {}
                    }
                }
                Step::Interrupt(why) => {
                    tracing::info!(session = %self.session_id, ?why, "interrupting the turn");
                    interrupted = Some(why);
                    // A prompt still open is moot: Claude drops the tool use when interrupted.
                    waiting.clear();
                    give_up_at = Some(Instant::now() + turn.grace);
                    self.interrupts += 1;
                    let request =
                        stream::interrupt_request(&format!("outpost-{}", self.interrupts));
                    self.write(&request).await;
                }
                Step::GiveUp => {
                    tracing::warn!(session = %self.session_id, "no answer to the interrupt; killing claude");
                    self.kill().await;
                    return Ok(TurnEnd {
                        result: self.killed_result(turn.grace),
                        interrupted,
                        last_message_id,
                    });
                }
            }
        }
    }

    /// Takes a permission prompt: answered at once for a tool allowed for the process, or
    /// when there is nobody to ask; otherwise handed over, and the decision to wait for back.
    async fn ask(
        &mut self,
        request: PermissionRequest,
        approvals: Option<&mpsc::UnboundedSender<Approval>>,
    ) -> Option<Pending> {
        if self.allowed_tools.contains(&request.tool_name) {
            self.answer(&request, &Decision::Allow).await;
            return None;
        }
        let (decide, decision) = oneshot::channel();
        let approval = Approval {
            request: request.clone(),
            decide,
        };
        match approvals.map(|approvals| approvals.send(approval)) {
            Some(Ok(())) => Some(Box::pin(async move {
                let decision = decision.await.unwrap_or_else(|_| {
                    Decision::Deny("outpost stopped waiting for a decision".to_owned())
                });
                (request, decision)
            })),
            _ => {
                let why = "outpost has nobody to ask for this turn; allow the tool with allowed_tools or permission_mode";
                self.answer(&request, &Decision::Deny(why.to_owned())).await;
                None
            }
        }
    }

    /// Answers a permission prompt; "allow this tool" is remembered for the process.
    async fn answer(&mut self, request: &PermissionRequest, decision: &Decision) {
        if *decision == Decision::AllowTool {
            self.allowed_tools.insert(request.tool_name.clone());
        }
        tracing::info!(session = %self.session_id, tool = %request.tool_name, ?decision, "permission prompt answered");
        self.write(&permission::response(request, decision)).await;
    }

    /// A `result` ends the turn; one saying the session does not exist is an error.
    fn finish(
        &self,
        result: TurnResult,
        interrupted: Option<Interrupt>,
        last_message_id: Option<String>,
    ) -> Result<TurnEnd> {
        if result.errors.iter().any(|e| e.contains(NO_CONVERSATION)) {
            return Err(Error::ClaudeSessionNotFound {
                session_id: self.session_id.clone(),
                host: self.host.clone(),
                cwd: self.cwd.clone(),
            });
        }
        Ok(TurnEnd {
            result,
            interrupted,
            last_message_id,
        })
    }

    fn killed_result(&self, grace: Duration) -> TurnResult {
        TurnResult {
            subtype: "error_during_execution".into(),
            is_error: true,
            session_id: self.session_id.clone(),
            terminal_reason: Some("killed".into()),
            errors: vec![format!(
                "Claude did not stop within {}s of the interrupt, so its process was killed; the session stays resumable",
                grace.as_secs_f64()
            )],
            ..TurnResult::default()
        }
    }

    /// Writes a line to Claude's stdin. A failure means the process is gone, which the read
    /// side reports; it is only logged here.
    async fn write(&mut self, line: &str) {
        let Some(stdin) = self.stdin.as_mut() else {
            return;
        };
        let written = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        if let Err(e) = written.await {
            tracing::debug!(error = %e, "cannot write to claude's stdin");
            self.stdin = None;
        }
    }

    /// The next JSON line on stdout; `None` once the process has exited.
    async fn next_line(&mut self) -> Option<Value> {
        loop {
            while let Some(end) = self.stdout.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.stdout.drain(..=end).collect();
                match serde_json::from_slice::<Value>(&line) {
                    Ok(value) if value.is_object() => return Some(value),
                    _ => {
                        tracing::debug!(line = %String::from_utf8_lossy(&line).trim_end(), "non-JSON line from claude")
                    }
                }
            }
            if self.exit.is_some() {
                return None;
            }
            self.absorb_next().await;
        }
    }

    /// Waits for the process's next event and takes it in; the end of the stream counts as an exit.
    async fn absorb_next(&mut self) {
        match self.process.next_event().await {
            Some(event) => self.absorb(event),
            None => self.exit = Some(ExitStatus::default()),
        }
    }

    async fn wait_exit(&mut self) {
        while self.exit.is_none() {
            self.absorb_next().await;
        }
    }

    fn absorb(&mut self, event: ProcessEvent) {
        match event {
            ProcessEvent::Output(OutputStream::Stdout, data) => {
                if self.stdout.len() + data.len() > MAX_LINE {
                    tracing::warn!("claude printed a line over {MAX_LINE} bytes; dropping it");
                    self.stdout.clear();
                }
                self.stdout.extend_from_slice(&data);
            }
            ProcessEvent::Output(OutputStream::Stderr, data) => {
                self.stderr_tail.extend_from_slice(&data);
                let excess = self.stderr_tail.len().saturating_sub(STDERR_TAIL);
                self.stderr_tail.drain(..excess);
            }
            ProcessEvent::Exited(status) => self.exit = Some(status),
        }
    }

    /// The error for a process that ended without finishing its turn.
    fn failure(&self) -> Error {
        let stderr = String::from_utf8_lossy(&self.stderr_tail);
        let status = self.exit.clone().unwrap_or_default();
        if let Some(at) = stderr.find(NOT_FOUND_MARKER) {
            let tried = stderr[at + NOT_FOUND_MARKER.len()..].lines().next();
            return Error::ClaudeNotFound {
                host: self.host.clone(),
                tried: tried.unwrap_or_default().to_owned(),
            };
        }
        if stderr.contains(NO_CONVERSATION) {
            return Error::ClaudeSessionNotFound {
                session_id: self.session_id.clone(),
                host: self.host.clone(),
                cwd: self.cwd.clone(),
            };
        }
        let stderr = stderr.trim();
        Error::ClaudeDied {
            host: self.host.clone(),
            status: match (status.code, status.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(signal)) => format!("killed by {signal}"),
                (None, None) => "connection lost".to_owned(),
            },
            stderr: if stderr.is_empty() {
                String::new()
            } else {
                format!("; its stderr ends with: {}", stream::excerpt_end(stderr))
            },
        }
    }

    async fn kill(&mut self) {
        self.process.kill();
        self.wait_exit().await;
    }

    /// Ends the process gently: EOF on stdin, then up to `grace` for it to exit, then a kill.
    pub async fn close(mut self, grace: Duration) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.shutdown().await;
        }
        if tokio::time::timeout(grace, self.wait_exit()).await.is_err() {
            tracing::warn!(session = %self.session_id, "claude did not exit after EOF; killing it");
        }
        self.kill().await;
        tracing::info!(host = %self.host, session = %self.session_id, "claude closed");
    }
}
