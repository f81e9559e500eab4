//! Tool `list_jobs`: the caller's jobs, running and recently finished, to find one again after
//! the conversation that started it has moved on.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::reply::success;
use super::{Outpost, guard};
use crate::claude::stream::excerpt;
use crate::jobs::{Job, JobKind, JobStatus};

/// Jobs one call lists at most (newest first): keeps the result small for the model.
const MAX_LISTED: usize = 20;

/// Parameters of `list_jobs`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListJobsParams {
    /// Only jobs on this host (or group).
    #[serde(default)]
    pub host: Option<String>,
    /// Only jobs in this state; `finished` is any but `running`.
    #[serde(default)]
    pub status: Option<StatusFilter>,
}

// The states `list_jobs` can filter on (inlined, undocumented: the field says it all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(inline)]
pub enum StatusFilter {
    Running,
    Finished,
    Exited,
    Killed,
    TimedOut,
}

impl StatusFilter {
    fn admits(self, status: JobStatus) -> bool {
        match self {
            Self::Finished => status != JobStatus::Running,
            Self::Running => status == JobStatus::Running,
            Self::Exited => status == JobStatus::Exited,
            Self::Killed => status == JobStatus::Killed,
            Self::TimedOut => status == JobStatus::TimedOut,
        }
    }
}

/// One job as `list_jobs` shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobSummary {
    pub job_id: String,
    pub kind: JobKind,
    pub host: String,
    /// The command (for `claude`, the prompt), on one line, cut to 120 characters.
    pub command: String,
    pub status: JobStatus,
    /// Start time, RFC 3339, UTC.
    pub started_at: String,
    /// Run time so far, in milliseconds.
    pub duration_ms: u64,
    /// Null while running or when ended by a signal.
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The Claude session of a `claude` job, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Why a kill of this job is not confirmed (the process may still run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_unconfirmed: Option<String>,
    /// What the job waits for a person to approve (a Claude tool use), while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<String>,
}

/// Result of `list_jobs`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListJobsResult {
    /// Newest first, at most 20.
    pub jobs: Vec<JobSummary>,
    /// Older jobs that matched but are not listed: narrow with `host` or `status`.
    pub omitted: usize,
}

#[tool_router(router = list_job_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "List jobs",
        description = "Your jobs (remote_exec, spawn_claude), running and recently finished, newest first: to find one again; follow with job_output.",
        output_schema = schema_for_output::<ListJobsResult>(),
        annotations(
            title = "List jobs",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_jobs(
        &self,
        Parameters(params): Parameters<ListJobsParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let owner = guard::principal_of(&context, &self.principal);
        let matching: Vec<JobSummary> = (self.jobs_for(&owner).iter())
            .filter(|job| params.host.as_ref().is_none_or(|h| on_host(job, h)))
            .map(|job| summary(job))
            .filter(|job| params.status.is_none_or(|s| s.admits(job.status)))
            .collect();
        let omitted = matching.len().saturating_sub(MAX_LISTED);
        let jobs: Vec<JobSummary> = matching.into_iter().take(MAX_LISTED).collect();
        let text = listing_text(&jobs, omitted);
        success(&ListJobsResult { jobs, omitted }, text)
    }
}

/// Whether `job` runs on `host`, or on a member picked from the group `host`.
fn on_host(job: &Job, host: &str) -> bool {
    job.host == host || job.group.as_deref() == Some(host)
}

fn summary(job: &Job) -> JobSummary {
    let outcome = job.outcome();
    JobSummary {
        job_id: job.id.clone(),
        kind: job.kind,
        host: job.host.clone(),
        command: excerpt(&job.command),
        status: outcome.status,
        started_at: humantime::format_rfc3339_seconds(job.started_at).to_string(),
        duration_ms: outcome.duration_ms,
        exit_code: outcome.exit_code,
        signal: outcome.signal,
        session_id: job.session_id(),
        kill_unconfirmed: outcome.kill_unconfirmed,
        awaiting_approval: outcome.awaiting_approval,
    }
}

/// One line per job, for clients that show the text.
fn listing_text(jobs: &[JobSummary], omitted: usize) -> String {
    let mut text = format!("{} job(s)", jobs.len());
    for job in jobs {
        let ended = match (job.exit_code, &job.signal) {
            (Some(code), _) => format!(" (exit {code})"),
            (None, Some(signal)) => format!(" ({signal})"),
            (None, None) => String::new(),
        };
        text.push_str(&format!(
            "\n{} {} on {}: {}{ended}, started {}, {} ms: {}",
            job.job_id,
            job.kind.as_str(),
            job.host,
            job.status.as_str(),
            job.started_at,
            job.duration_ms,
            job.command
        ));
        if let Some(session) = &job.session_id {
            text.push_str(&format!(" [session {session}]"));
        }
    }
    if omitted > 0 {
        text.push_str(&format!(
            "\n{omitted} older job(s) not listed: narrow with host or status"
        ));
    }
    text
}
