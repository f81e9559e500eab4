//! Tool `spawn_claude`: one turn of Claude Code on a host, streamed back as progress, in the
//! foreground or as a background job.

use std::time::Duration;

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::Outpost;
use super::claude_job::Tap;
use super::foreground::Waited;
use super::guard;
use super::reply::{failed_with, failure, seconds, success};
use crate::auth::Principal;
use crate::claude::launch::{LaunchOptions, PermissionMode};
use crate::claude::stream::TurnResult;
use crate::claude::{Interrupt, TurnReport, TurnRequest, TurnSync};
use crate::error::{Error, Result};

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
    /// Seconds until the call returns `running` with a `job_id` while the turn goes on (default 45; 0: never).
    #[serde(default)]
    pub detach_after_secs: Option<f64>,
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
    /// While the turn runs: its events so far, one line each (the newest, when there are many).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// While the turn runs: how to follow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
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
        let detach_at = match self.detach_at(params.detach_after_secs) {
            Ok(detach_at) => detach_at,
            Err(e) => return failure(&e),
        };
        let owner = guard::principal_of(&context, &self.principal);
        let request = match self.turn_request(params, &owner) {
            Ok(request) => request,
            Err(e) => return failure(&e),
        };
        tokio::select! {
            cleared = self.clear_claude_turn(&context.peer, &owner, &request) => {
                if let Err(e) = cleared {
                    return failure(&e);
                }
            }
            _ = context.ct.cancelled() => return failure(&Error::Cancelled),
        }
        if background {
            return match self.start_claude_job(request, owner, None) {
                Ok((job, result)) => {
                    self.notify_when_done(&job, &context.peer);
                    let text = format!(
                        "Claude started in the background on {} as {}",
                        job.host, job.id
                    );
                    success(&result, text)
                }
                Err(e) => failure(&e),
            };
        }
        let (done, outcome) = oneshot::channel();
        let tap = Tap {
            done,
            debug_log: self.wants_debug_log().then(|| context.peer.clone()),
        };
        let starter = owner.clone();
        let (job, mut result) = match self.start_claude_job(request, owner, Some(tap)) {
            Ok(started) => started,
            Err(e) => return failure(&e),
        };
        let waited = tokio::select! {
            // A turn keeps its own timeout (`timeout_secs`, else claude.default_timeout_secs).
            waited = self.wait_foreground(&job, detach_at, true, &context) => waited,
            never = self.serve_approvals(&job, &context.peer, &starter, true) => match never {},
        };
        match waited {
            Waited::Finished => {}
            Waited::Cancelled(answer) => return answer,
            Waited::Detached => {
                result.session_id = job.session_id().or(result.session_id);
                let budget = self.hosts.config().exec.output_limit_bytes;
                let events = job.read_newest(job.log_end(), budget);
                result.next = Some(super::exec::follow_up(&job, events.next_offset));
                result.events = Some(events.text);
                let text = format!("Claude is still working on {} as {}", job.host, job.id);
                return success(&result, text);
            }
        }
        self.jobs.forget(&job.id);
        match outcome.await {
            Ok(Ok(result)) => match failure_headline(&result) {
                Some(headline) => failed_with(&result, &headline),
                None => success(&result, render_text(&result)),
            },
            Ok(Err(e)) => failure(&e),
            Err(_) => failure(&Error::ShuttingDown),
        }
    }
}

impl Outpost {
    /// The turn `params` ask for, on behalf of `owner`.
    pub(super) fn turn_request(
        &self,
        params: SpawnClaudeParams,
        owner: &Principal,
    ) -> Result<TurnRequest> {
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
            approvals: None,
            owner: (!owner.is_local()).then(|| owner.to_string()),
        })
    }
}

pub(super) fn result_of(report: TurnReport) -> SpawnClaudeResult {
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
        events: None,
        next: None,
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
