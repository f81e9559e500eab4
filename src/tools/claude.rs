//! Tool `spawn_claude`: one turn of Claude Code on a host, streamed back as progress, in the
//! foreground or as a background job.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Outpost;
use super::guard;
use super::reply::{failed_with, failure, seconds, success};
use crate::auth::Principal;
use crate::claude::launch::{LaunchOptions, PermissionMode};
use crate::claude::stream::{self, TurnResult};
use crate::claude::{Claude, Interrupt, TurnReport, TurnRequest, TurnSync};
use crate::error::{Error, Result};
use crate::jobs::{Job, JobKind, JobSpec, JobStatus};

/// Parameters of `spawn_claude`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnClaudeParams {
    /// Host or group to run on (see `list_hosts`). Default: the session's host when resuming, else the default host.
    #[serde(default)]
    pub host: Option<String>,
    /// Project directory on that host. Default: the session's when resuming, else the remote's workspace.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The prompt for this turn.
    pub prompt: String,
    /// Continue this session (an earlier result's `session_id`, or see `list_sessions`).
    #[serde(default)]
    pub session_id: Option<String>,
    /// With `session_id`: continue in a new session that starts with a copy of its history.
    #[serde(default)]
    pub fork: bool,
    /// Model alias or name (e.g. `sonnet`, `opus`).
    #[serde(default)]
    pub model: Option<String>,
    /// How Claude asks for permission to use tools.
    #[serde(default)]
    pub permission_mode: Option<PermissionMode>,
    /// Tool rules allowed without asking, e.g. `Bash(git log:*)`, `Edit`.
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Tool rules refused.
    #[serde(default)]
    pub disallowed_tools: Vec<String>,
    /// Most model round-trips in this turn.
    #[serde(default)]
    pub max_turns: Option<u32>,
    /// Text appended to Claude's system prompt.
    #[serde(default)]
    pub append_system_prompt: Option<String>,
    /// Seconds before the turn is interrupted (default 1800).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Return a `job_id` at once; follow with `job_output`.
    #[serde(default)]
    pub background: bool,
}

/// How a turn ended (or, for a background call, that it is running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// Started in the background: follow `job_id`.
    Running,
    /// Claude finished the turn (see `is_error`).
    Completed,
    /// Cancelled by the client or `job_kill`.
    Interrupted,
    /// Interrupted for running past `timeout_secs`.
    TimedOut,
}

/// Result of `spawn_claude`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SpawnClaudeResult {
    /// The session: pass it as `session_id` to continue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub host: String,
    /// Project directory on the host (symlinks resolved, once Claude has started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    pub status: TurnStatus,
    /// Whether a live process took the turn (no cold start).
    pub warm: bool,
    /// The session this one was forked from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// Claude's `result` line: final text, `is_error`, `subtype`, cost, ...
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub turn: Option<TurnResult>,
    /// Session files synced between the host and here around the turn (remote hosts with sync on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<TurnSync>,
    /// Background job to follow with `job_output` (its `claude` field holds this result at the end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

#[tool_router(router = claude_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "Run Claude Code",
        description = "Run a Claude Code turn on a host in a project dir; returns the session_id to continue (warm, fast) or resume later. Progress streams as notifications.",
        output_schema = schema_for_output::<SpawnClaudeResult>(),
        annotations(
            title = "Run Claude Code",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn spawn_claude(
        &self,
        Parameters(params): Parameters<SpawnClaudeParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let background = params.background;
        let request = match self.turn_request(params) {
            Ok(request) => request,
            Err(e) => return failure(&e),
        };
        if background {
            let owner = guard::principal_of(&context, &self.principal);
            return match self.start_claude_job(request, owner) {
                Ok(result) => {
                    let text = format!(
                        "Claude started in the background on {} as {}; follow with job_output",
                        result.host,
                        result.job_id.as_deref().unwrap_or_default()
                    );
                    success(&result, text)
                }
                Err(e) => failure(&e),
            };
        }
        let (events, received) = mpsc::unbounded_channel();
        let sink = EventSink {
            token: context.meta.get_progress_token(),
            peer: context.peer.clone(),
            debug_log: self.wants_debug_log(),
        };
        let turn = self.claude.turn(request, events, &context.ct);
        let (outcome, ()) = tokio::join!(turn, sink.forward(received));
        match outcome {
            Ok(report) => {
                let result = result_of(report);
                match failure_headline(&result) {
                    Some(headline) => failed_with(&result, &headline),
                    None => success(&result, render_text(&result)),
                }
            }
            Err(e) => failure(&e),
        }
    }
}

impl Outpost {
    fn turn_request(&self, params: SpawnClaudeParams) -> Result<TurnRequest> {
        if params.prompt.trim().is_empty() {
            return Err(Error::InvalidArgument {
                field: "prompt",
                reason: "is empty".into(),
            });
        }
        if params.fork && params.session_id.is_none() {
            return Err(Error::InvalidArgument {
                field: "fork",
                reason: "needs the `session_id` to fork from".into(),
            });
        }
        let settings = self.hosts.config();
        let timeout = match params.timeout_secs {
            Some(secs) => seconds("timeout_secs", secs, settings.exec.max_timeout_secs)?,
            None => Duration::from_secs(settings.claude.default_timeout_secs),
        };
        Ok(TurnRequest {
            host: params.host,
            cwd: params.cwd,
            prompt: params.prompt,
            session_id: params.session_id.filter(|s| !s.trim().is_empty()),
            fork: params.fork,
            options: LaunchOptions {
                model: params.model,
                permission_mode: params.permission_mode,
                allowed_tools: params.allowed_tools,
                disallowed_tools: params.disallowed_tools,
                max_turns: params.max_turns,
                append_system_prompt: params.append_system_prompt,
            },
            timeout,
        })
    }

    /// Runs the turn as a job: its log gets one summary line per event, its detail the result.
    fn start_claude_job(
        &self,
        mut request: TurnRequest,
        owner: Principal,
    ) -> Result<SpawnClaudeResult> {
        // Where the turn will run: a resumed session goes back to its recorded host and cwd.
        let (host, cwd) = self.claude.target(
            request.host.as_deref(),
            request.cwd.as_deref(),
            request.session_id.as_deref(),
        );
        request.host = Some(host.clone());
        request.cwd = cwd.clone();
        let exec = &self.hosts.config().exec;
        let spec = JobSpec {
            kind: JobKind::Claude,
            owner,
            host: host.clone(),
            // The member is picked when the turn starts; its result names it.
            group: self.hosts.group(&host).map(|_| host.clone()),
            command: format!("claude: {}", stream::excerpt(&request.prompt)),
            timeout: request.timeout,
            output_limit: exec.output_limit_bytes,
            log_bytes: exec.job_log_bytes,
            follow_grace: exec.follow_grace(),
            hold_for_first_reader: false,
        };
        let claude = self.claude.clone();
        let session_id = request.session_id.clone().filter(|_| !request.fork);
        let job = self
            .jobs
            .start_task(spec, move |job| run_claude_job(claude, request, job))?;
        Ok(SpawnClaudeResult {
            session_id,
            host,
            cwd,
            status: TurnStatus::Running,
            warm: false,
            forked_from: None,
            turn: None,
            sync: None,
            job_id: Some(job.id.clone()),
        })
    }
}

async fn run_claude_job(claude: Arc<Claude>, request: TurnRequest, job: Arc<Job>) {
    let (events, mut received) = mpsc::unbounded_channel::<Value>();
    let cancel: CancellationToken = job.kill_token();
    let turn = claude.turn(request, events, &cancel);
    let record = async {
        while let Some(event) = received.recv().await {
            if let Some(id) = event.get("session_id").and_then(Value::as_str) {
                job.set_session_id(id);
            }
            if let Some(line) = stream::summary(&event) {
                job.record_line(&line);
            }
        }
    };
    let (outcome, ()) = tokio::join!(turn, record);
    match outcome {
        Ok(report) => {
            let status = match report.interrupted {
                Some(Interrupt::TimedOut) => JobStatus::TimedOut,
                Some(Interrupt::Cancelled) => JobStatus::Killed,
                None => JobStatus::Exited,
            };
            let detail = serde_json::to_value(result_of(report)).unwrap_or_default();
            job.finish_with(status, detail);
        }
        Err(e) => {
            job.record_line(&format!("error: {e}"));
            let status = match e {
                Error::Cancelled | Error::ShuttingDown => JobStatus::Killed,
                _ => JobStatus::Exited,
            };
            job.finish_with(status, serde_json::json!({ "error": e.to_string() }));
        }
    }
}

/// Where a foreground turn's events go: progress notifications and debug log messages.
struct EventSink {
    token: Option<ProgressToken>,
    peer: Peer<RoleServer>,
    debug_log: bool,
}

impl EventSink {
    async fn forward(self, mut events: mpsc::UnboundedReceiver<Value>) {
        let mut count = 0u32;
        while let Some(event) = events.recv().await {
            count += 1;
            if self.debug_log {
                #[allow(deprecated)]
                let log = rmcp::model::LoggingMessageNotificationParam::new(
                    rmcp::model::LoggingLevel::Debug,
                    event.clone(),
                )
                .with_logger("claude");
                #[allow(deprecated)]
                let sent = self.peer.notify_logging_message(log).await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "cannot send a log message");
                }
            }
            let (Some(token), Some(line)) = (&self.token, stream::summary(&event)) else {
                continue;
            };
            let param =
                ProgressNotificationParam::new(token.clone(), f64::from(count)).with_message(line);
            if let Err(e) = self.peer.notify_progress(param).await {
                tracing::debug!(error = %e, "cannot send progress");
            }
        }
    }
}

fn result_of(report: TurnReport) -> SpawnClaudeResult {
    SpawnClaudeResult {
        session_id: Some(report.session_id),
        host: report.host,
        cwd: Some(report.cwd),
        status: match report.interrupted {
            None => TurnStatus::Completed,
            Some(Interrupt::Cancelled) => TurnStatus::Interrupted,
            Some(Interrupt::TimedOut) => TurnStatus::TimedOut,
        },
        warm: report.warm,
        forked_from: report.forked_from,
        turn: Some(report.result),
        sync: report.sync,
        job_id: None,
    }
}

/// The short text form: a status line, then Claude's answer or what went wrong and what to do.
fn render_text(result: &SpawnClaudeResult) -> String {
    let Some(turn) = &result.turn else {
        return format!("{:?}", result.status);
    };
    let session = result.session_id.as_deref().unwrap_or("?");
    let mut text = format!(
        "Claude on {} (session {session}{}, {:.1}s, ${:.4}):\n",
        result.host,
        if result.warm { ", warm" } else { "" },
        turn.duration_ms as f64 / 1000.0,
        turn.total_cost_usd
    );
    if let Some(answer) = &turn.result {
        text.push_str(answer);
    }
    for error in &turn.errors {
        text.push_str(&format!("\nerror: {error}"));
    }
    if let Some(hint) = hint(result, turn) {
        text.push_str(&format!("\n[{hint}]"));
    }
    if let Some(sync) = &result.sync {
        text.push_str(&sync_notes(sync));
    }
    text
}

/// What went wrong, when Claude reports the turn as an error; the result's fields follow it in
/// the error's text.
fn failure_headline(result: &SpawnClaudeResult) -> Option<String> {
    let turn = result.turn.as_ref().filter(|t| t.is_error)?;
    let mut headline = format!("Claude's turn on {} ended in an error.", result.host);
    if let Some(hint) = hint(result, turn) {
        headline.push_str(&format!(" {hint}"));
    }
    Some(headline)
}

/// What to make of how a turn ended, when there is something to do about it.
fn hint(result: &SpawnClaudeResult, turn: &TurnResult) -> Option<String> {
    match (result.status, turn.api_error_status) {
        (TurnStatus::TimedOut, _) => Some("The turn ran past timeout_secs and was interrupted; the session is resumable.".to_owned()),
        (TurnStatus::Interrupted, _) => Some("The turn was interrupted; the session is resumable.".to_owned()),
        (_, Some(401 | 403)) => Some("The Claude API refused the credentials on that host: set ANTHROPIC_API_KEY there, or pass it with `forward_env` in outpost's config.".to_owned()),
        (_, Some(429 | 529)) => Some("The Claude API is rate-limited or overloaded; try again later.".to_owned()),
        (_, Some(status)) => Some(format!("The Claude API answered HTTP {status}.")),
        _ if turn.subtype == "error_max_turns" => Some("The turn hit max_turns; continue the session to let it go on.".to_owned()),
        _ => None,
    }
}

/// Lines about the session sync around a turn.
fn sync_notes(sync: &TurnSync) -> String {
    let mut text = String::new();
    let previous = sync.previous_pull.as_ref();
    if let Some(pulled) = previous.and_then(|p| p.pulled.as_ref()) {
        text.push_str(&format!(
            "\n[previous turn's session sync: {} file(s), {} bytes{}]",
            pulled.files_transferred,
            pulled.bytes_transferred,
            if pulled.conflicts.is_empty() {
                ""
            } else {
                ", CONFLICTS: see sync.previous_pull.pulled.conflicts"
            }
        ));
    }
    if sync.pulling {
        text.push_str("\n[session being synced here in the background]");
    }
    let warnings = previous.map(|p| p.warnings.iter()).into_iter().flatten();
    for warning in sync.warnings.iter().chain(warnings) {
        text.push_str(&format!("\n[warning: session sync: {warning}]"));
    }
    text
}
