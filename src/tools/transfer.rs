//! Tool `transfer`: copy a file or folder between two hosts as a job (progress, background,
//! detach, cancel and timeout as for `remote_exec`); the result is a summary, never the bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Outpost;
use super::foreground::Waited;
use super::guard;
use super::policy::Action;
use super::reply::{failed_with, failure, seconds, success};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::jobs::{Job, JobKind, JobSpec, JobStatus};
use crate::transfer::{self, End, Location, Options, Progress, Summary};

/// How often a running transfer writes its progress line to its job's output.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Parameters of `transfer`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    /// File or folder to copy: `host:path`, or a path here.
    pub source: String,
    /// `host:path`. An existing folder, or a path ending in `/`, gets the source inside it.
    pub destination: String,
    /// Replace destination files that differ (default: refuse).
    #[serde(default)]
    pub overwrite: bool,
    /// Compare and check files by SHA-256, not size and mtime.
    #[serde(default)]
    pub verify: bool,
    /// Seconds before it is stopped (default 3600).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Return a `job_id` at once.
    #[serde(default)]
    pub background: bool,
    /// As in remote_exec.
    #[serde(default)]
    pub detach_after_secs: Option<f64>,
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Running,
    Done,
    Failed,
    Killed,
    TimedOut,
}

/// Result of `transfer`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TransferResult {
    pub status: TransferStatus,
    /// What was done (once done).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Why it failed or stopped; nothing is left under a final name half written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// While it runs: files and bytes so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[tool_router(router = transfer_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "Copy files",
        description = "Copy a file or folder between hosts (SFTP, or sh in containers); modes, mtimes and symlinks kept, unchanged files skipped, partial files resumed. The bytes never pass through you.",
        output_schema = schema_for_output::<TransferResult>(),
        annotations(
            title = "Copy files",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn transfer(
        &self,
        Parameters(params): Parameters<TransferParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let detach_at = match self.detach_at(params.detach_after_secs) {
            Ok(at) => at,
            Err(e) => return failure(&e),
        };
        let owner = guard::principal_of(&context, &self.principal);
        let start = self.start_transfer(&params, owner, &context.peer);
        let job = match self.start_unless_cancelled(start, &context.ct).await {
            Ok(job) => job,
            Err(answer) => return answer,
        };
        if params.background {
            self.notify_when_done(&job, &context.peer);
            return running(&job, "started in the background");
        }
        let named_timeout = params.timeout_secs.is_some();
        match (self.wait_foreground(&job, detach_at, named_timeout, &context)).await {
            Waited::Finished => {}
            Waited::Cancelled(answer) => return answer,
            Waited::Detached => return running(&job, "still copying"),
        }
        self.jobs.forget(&job.id);
        transfer_reply(&job)
    }
}

impl Outpost {
    /// Checks the call, clears it with the destination's policy, and starts the copy as a job.
    pub(super) async fn start_transfer(
        &self,
        params: &TransferParams,
        owner: Principal,
        peer: &rmcp::Peer<RoleServer>,
    ) -> Result<Arc<Job>> {
        let source = Location::parse(&params.source, "source")?;
        let dest = Location::parse(&params.destination, "destination")?;
        let settings = &self.hosts.config().exec;
        let timeout = match params.timeout_secs {
            Some(secs) => seconds("timeout_secs", secs, settings.max_timeout_secs)?,
            None => Duration::from_secs(settings.default_background_timeout_secs),
        };
        let (from, to) = (source.to_string(), dest.to_string());
        let action = Action::Transfer {
            source: &from,
            destination: &to,
        };
        self.clear_transfer(peer, &owner, &source.host, &dest.host, action)
            .await?;
        // Unknown hosts and groups fail the call now; connecting is part of the job (its
        // timeout and a cancel cover a host that does not answer).
        for end in [&source, &dest] {
            End::check(&self.hosts, end)?;
        }
        let spec = JobSpec {
            kind: JobKind::Transfer,
            owner,
            host: dest.host.clone(),
            group: None,
            command: format!("transfer {from} → {to}"),
            timeout,
            output_limit: settings.output_limit_bytes,
            log_bytes: settings.job_log_bytes,
            follow_grace: settings.follow_grace(),
            hold_for_first_reader: false,
        };
        let options = Options {
            overwrite: params.overwrite,
            verify: params.verify,
        };
        tracing::info!(%from, %to, "transfer started");
        let hosts = self.hosts.clone();
        self.jobs
            .start_task(spec, move |job| run(job, hosts, source, dest, options))
    }
}

/// The job's work: the copy, a progress line a second, and the result as its detail; a kill or
/// the timeout drops the copy where it is.
async fn run(job: Arc<Job>, hosts: Arc<Hosts>, source: Location, dest: Location, options: Options) {
    let progress = Progress::default();
    let started = Instant::now();
    let copy = transfer::open_and_copy(&hosts, &source, &dest, &options, &progress);
    tokio::pin!(copy);
    let past_timeout = job.past_timeout();
    tokio::pin!(past_timeout);
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.tick().await;
    let kill = job.kill_token();
    let (status, outcome) = loop {
        tokio::select! {
            result = &mut copy => break (JobStatus::Exited, Some(result)),
            _ = kill.cancelled() => break (JobStatus::Killed, None),
            _ = &mut past_timeout => break (JobStatus::TimedOut, None),
            _ = ticks.tick() => job.record_line(&progress.line(started.elapsed())),
        }
    };
    let result = match (status, outcome) {
        (_, Some(Ok(summary))) => {
            job.record_line(&summary.line());
            finished(TransferStatus::Done, Some(summary), None)
        }
        (_, Some(Err(e))) => finished(TransferStatus::Failed, None, Some(e.to_string())),
        (JobStatus::TimedOut, None) => {
            let why = "timed out; raise timeout_secs or use background: true".to_owned();
            stopped(TransferStatus::TimedOut, &progress, started, why)
        }
        _ => stopped(
            TransferStatus::Killed,
            &progress,
            started,
            "killed".to_owned(),
        ),
    };
    if let Some(error) = &result.error {
        job.record_line(&format!("error: {error}"));
    }
    job.finish_with(status, serde_json::to_value(&result).unwrap_or_default());
}

fn finished(
    status: TransferStatus,
    summary: Option<Summary>,
    error: Option<String>,
) -> TransferResult {
    TransferResult {
        status,
        summary,
        error,
        progress: None,
        job_id: None,
        next: None,
    }
}

/// The result of a copy stopped midway: how far it got, and that no final name holds a part.
fn stopped(
    status: TransferStatus,
    progress: &Progress,
    started: Instant,
    why: String,
) -> TransferResult {
    let so_far = progress.line(started.elapsed());
    let error = format!(
        "{why} after {so_far}; files not finished stay under partial names (.NAME.*.outpost-part) and the same transfer resumes them"
    );
    let mut result = finished(status, None, Some(error));
    result.progress = Some(so_far);
    result
}

/// The answer for a job still copying: its id, how far it is, and how to follow it.
fn running(job: &Job, what: &str) -> CallToolResult {
    let progress = job.last_lines().lines().last().map(str::to_owned);
    let result = TransferResult {
        status: TransferStatus::Running,
        summary: None,
        error: None,
        progress,
        job_id: Some(job.id.clone()),
        next: Some(format!(
            "Call job_output with job_id {} (wait_secs up to {}) until status is not running; its `transfer` field is then this result.",
            job.id,
            super::jobs::MAX_WAIT_SECS
        )),
    };
    success(&result, format!("{what}: {} ({})", job.command, job.id))
}

/// A finished transfer job's answer: a summary, or an error that says what happened.
pub(super) fn transfer_reply(job: &Job) -> CallToolResult {
    let detail = job.detail().unwrap_or(Value::Null);
    let result: Option<TransferResult> = serde_json::from_value(detail).ok();
    match result {
        Some(result) if result.status == TransferStatus::Done => {
            let line = result
                .summary
                .as_ref()
                .map(Summary::line)
                .unwrap_or_default();
            success(&result, line)
        }
        Some(result) => {
            let status = serde_json::to_value(result.status).unwrap_or_default();
            let headline = format!("{} ended: {}", job.command, status.as_str().unwrap_or("?"));
            failed_with(&result, &headline)
        }
        None => failure(&Error::Transfer {
            op: "finish",
            place: job.command.clone(),
            reason: "the transfer left no result; see job_output".to_owned(),
        }),
    }
}
