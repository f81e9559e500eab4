//! Tools `job_output` and `job_kill`: follow and stop jobs started by `remote_exec` or
//! `spawn_claude`, the caller's own only.

use std::time::Duration;

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::reply::{failed_with, failure, success};
use super::{Outpost, guard};
use crate::error::Error;
use crate::jobs::{Job, JobKind, Outcome};

/// Longest a `job_output` call waits, whatever `wait_secs` asks: clients give up on a request
/// after 60 s (the TypeScript SDK's default), so a long-poll answers well before that.
pub(super) const MAX_WAIT_SECS: f64 = 50.0;
/// Most output one `job_output` call returns, whatever `max_bytes` asks: bounds the memory a
/// call takes (the page is in the result twice, and serialized once more).
const MAX_PAGE_BYTES: usize = 1 << 20;

/// Parameters of `job_output`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobOutputParams {
    /// Job id from `remote_exec` or `spawn_claude`.
    pub job_id: String,
    /// Byte offset to read from: 0 (default) for the start, or the last call's `next_offset`.
    #[serde(default)]
    pub offset: u64,
    /// Wait up to this many seconds for new output or the end of the job; more than 50 counts as 50.
    #[serde(default)]
    pub wait_secs: Option<f64>,
    /// Most bytes `output` may take as JSON text, escapes included (default: the output budget, 30000; at most 1 MiB).
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// Lose nothing: while you call again soon (within `exec.follow_grace_ms`, 2 s), output you
    /// have not read is held back (the command waits) instead of the oldest being dropped.
    #[serde(default)]
    pub follow: bool,
}

/// Parameters of `job_kill`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobKillParams {
    /// Job id from `remote_exec` or `spawn_claude`.
    pub job_id: String,
}

/// A job's state.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobView {
    pub job_id: String,
    pub host: String,
    pub command: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Result of `job_output`: the job's state and its output (stdout and stderr interleaved).
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobOutputResult {
    #[serde(flatten)]
    pub job: JobView,
    /// Output from `offset` to `next_offset`, cleaned: terminal escape sequences removed, control characters shown as symbols.
    pub output: String,
    /// Offset of the first byte of `output`.
    pub offset: u64,
    /// Offset to pass next time.
    pub next_offset: u64,
    /// Bytes before `offset` that are no longer kept (only the newest few MiB are).
    pub dropped_bytes: u64,
    /// Whether more output is already available past `next_offset`.
    pub more: bool,
    /// For a `spawn_claude` job, once it has finished: its result, as `spawn_claude` returns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "spawn_claude_result")]
    pub claude: Option<serde_json::Value>,
    /// For a `transfer` job, once it has finished: its result, as `transfer` returns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "spawn_claude_result")]
    pub transfer: Option<serde_json::Value>,
}

/// `claude`'s and `transfer`'s schema: an object (the shape is `spawn_claude`'s output schema; repeating it here
/// would double the size of `tools/list`).
fn spawn_claude_result(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object" })
}

#[tool_router(router = job_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "Job output",
        description = "Status and output of a remote_exec or spawn_claude job from an offset. While status is running or more is true, call again with next_offset; wait_secs (up to 50) long-polls.",
        output_schema = schema_for_output::<JobOutputResult>(),
        annotations(
            title = "Job output",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn job_output(
        &self,
        Parameters(params): Parameters<JobOutputParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let owner = guard::principal_of(&context, &self.principal);
        let job = match self.job_for(&params.job_id, &owner) {
            Ok(job) => job,
            Err(e) => return failure(&e),
        };
        // A turn waiting for a person's approval asks this client's user, if it can.
        self.ask_once(&job, &context.peer, &owner, false);
        let wait = long_poll(params.wait_secs);
        if params.follow {
            job.follow(params.offset, wait.unwrap_or_default());
        }
        if let Some(wait) = wait {
            let token = context.meta.get_progress_token();
            tokio::select! {
                _ = job.output_after(params.offset) => {}
                _ = tokio::time::sleep(wait) => {}
                // Heartbeats while nothing comes (it ends with the job, as the wait does).
                _ = super::progress::report(&job, token, &context.peer) => {}
                never = self.serve_approvals(&job, &context.peer, &owner, false) => match never {},
                _ = context.ct.cancelled() => return failure(&Error::Cancelled),
            }
        }
        let max = params
            .max_bytes
            .unwrap_or(self.hosts.config().exec.output_limit_bytes)
            .clamp(1, MAX_PAGE_BYTES);
        // The state first: a job that ends meanwhile says `running` with `more` still to come,
        // never `exited` with output missing from the page.
        let state = view(&job);
        let read = job.read_log(params.offset, max);
        if params.follow {
            job.follow(read.next_offset, Duration::ZERO);
        }
        let result = JobOutputResult {
            job: state,
            more: read.next_offset < job.log_end(),
            output: read.text,
            offset: read.offset,
            next_offset: read.next_offset,
            dropped_bytes: read.dropped,
            claude: job.detail().filter(|_| job.kind == JobKind::Claude),
            transfer: job.detail().filter(|_| job.kind == JobKind::Transfer),
        };
        let text = format!(
            "{} {}{}; output {}..{}{}\n{}",
            result.job.job_id,
            result.job.outcome.status.as_str(),
            result
                .job
                .outcome
                .exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default(),
            result.offset,
            result.next_offset,
            if result.more { ", more available" } else { "" },
            result.output
        );
        let text = match result.claude.as_ref().or(result.transfer.as_ref()) {
            Some(detail) => format!("{text}\nresult: {detail}"),
            None => text,
        };
        success(&result, text)
    }

    #[tool(
        title = "Kill a job",
        description = "Kill a remote_exec job's process tree, or interrupt a spawn_claude job's turn.",
        output_schema = schema_for_output::<JobView>(),
        annotations(
            title = "Kill a job",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn job_kill(
        &self,
        Parameters(params): Parameters<JobKillParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let owner = guard::principal_of(&context, &self.principal);
        let job = match self.job_for(&params.job_id, &owner) {
            Ok(job) => job,
            Err(e) => return failure(&e),
        };
        job.kill_and_wait(self.kill_wait()).await;
        let result = view(&job);
        let outcome = &result.outcome;
        let headline = format!(
            "{} on {} is {}",
            result.job_id,
            result.host,
            outcome.status.as_str()
        );
        match outcome.kill_unconfirmed {
            None => success(&result, headline),
            Some(_) => failed_with(
                &result,
                &format!("{headline}, but the kill is not confirmed; check again with job_output"),
            ),
        }
    }
}

/// How long a call asking `wait_secs` waits: not at all unless it is positive, at most
/// [`MAX_WAIT_SECS`] (a longer wait is cut to it, not refused).
fn long_poll(wait_secs: Option<f64>) -> Option<Duration> {
    let wait = wait_secs.filter(|w| *w > 0.0)?;
    Some(Duration::from_secs_f64(wait.min(MAX_WAIT_SECS)))
}

fn view(job: &Job) -> JobView {
    JobView {
        job_id: job.id.clone(),
        host: job.host.clone(),
        command: job.command.clone(),
        outcome: job.outcome(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_polls_are_cut_to_the_cap_not_refused() {
        for none in [None, Some(0.0), Some(-1.0), Some(f64::NAN)] {
            assert_eq!(long_poll(none), None, "{none:?}");
        }
        assert_eq!(long_poll(Some(2.5)), Some(Duration::from_millis(2500)));
        let cap = Some(Duration::from_secs(50));
        for long in [50.0, 300.0, 1e9, f64::INFINITY] {
            assert_eq!(long_poll(Some(long)), cap, "{long}");
        }
    }
}
