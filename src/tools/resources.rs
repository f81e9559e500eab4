//! Each job's log as an MCP resource, `outpost://jobs/{job_id}`: listed for its owner, read with its state.

use std::fmt::Write as _;
use std::sync::Arc;

use rmcp::model::{ErrorData, Resource, ResourceContents, ResourceTemplate};

use super::Outpost;
use crate::auth::Principal;
use crate::jobs::{Job, JobStatus, Outcome};

/// What every job resource's URI starts with; the job id follows.
const URI_PREFIX: &str = "outpost://jobs/";
/// The resource template `resources/templates/list` offers.
pub(super) const URI_TEMPLATE: &str = "outpost://jobs/{job_id}";
/// How long a command excerpt in a resource's title may be, in characters.
const TITLE_COMMAND_CHARS: usize = 60;

/// The job id in a job resource's URI.
pub(super) fn job_id_of(uri: &str) -> Option<&str> {
    uri.strip_prefix(URI_PREFIX)
}

/// The resource URI of job `id`.
pub(super) fn job_uri(id: &str) -> String {
    format!("{URI_PREFIX}{id}")
}

impl Outpost {
    /// The job `uri` names, when it exists and belongs to `principal`; a job of someone else
    /// is answered exactly as one that does not exist.
    pub(super) fn owned_job(
        &self,
        uri: &str,
        principal: &Principal,
    ) -> Result<Arc<Job>, ErrorData> {
        let not_found = || {
            ErrorData::resource_not_found(
                format!(
                    "no job resource `{uri}`: job resources are {URI_TEMPLATE} for jobs you started that are still kept; resources/list shows them"
                ),
                None,
            )
        };
        let id = job_id_of(uri).ok_or_else(not_found)?;
        self.job_for(id, principal).map_err(|_| not_found())
    }

    /// The jobs of `principal` as resources, newest first.
    pub(super) fn job_resources(&self, principal: &Principal) -> Vec<Resource> {
        (self.jobs_for(principal).iter())
            .map(|job| {
                let outcome = job.outcome();
                Resource::new(job_uri(&job.id), job.id.clone())
                    .with_title(title(job))
                    .with_description(format!(
                        "{} {} job on {}: {}",
                        outcome.status.as_str(),
                        job.kind.as_str(),
                        job.host,
                        exit_words(&outcome)
                    ))
                    .with_mime_type("text/plain")
            })
            .collect()
    }

    /// The template of job resources.
    pub(super) fn job_resource_template() -> ResourceTemplate {
        ResourceTemplate::new(URI_TEMPLATE, "job")
            .with_title("A job's state and output")
            .with_description(
                "A remote_exec or spawn_claude job (job_id from the tool's result): its state, then its newest output.",
            )
            .with_mime_type("text/plain")
    }

    /// The contents of job resource `uri` for `principal`: a header with the job's state, then
    /// its newest output within the output budget, saying what was left out.
    pub(super) fn read_job_resource(
        &self,
        uri: &str,
        principal: &Principal,
    ) -> Result<ResourceContents, ErrorData> {
        let job = self.owned_job(uri, principal)?;
        let budget = self.hosts.config().exec.output_limit_bytes.max(1);
        Ok(ResourceContents::text(render(&job, budget), uri).with_mime_type("text/plain"))
    }
}

/// A job as text: one `name: value` line per fact, then its output (the newest `budget` bytes).
fn render(job: &Job, budget: usize) -> String {
    let outcome = job.outcome();
    let mut text = String::new();
    let _ = writeln!(text, "job_id: {}", job.id);
    let _ = writeln!(text, "kind: {}", job.kind.as_str());
    let _ = writeln!(text, "host: {}", job.host);
    let _ = writeln!(text, "command: {}", job.command);
    let _ = writeln!(
        text,
        "started_at: {}",
        humantime::format_rfc3339_seconds(job.started_at)
    );
    let _ = writeln!(text, "status: {}", outcome.status.as_str());
    let _ = writeln!(text, "{}", exit_words(&outcome));
    if let Some(session) = job.session_id() {
        let _ = writeln!(text, "session_id: {session}");
    }
    if let Some(doubt) = &outcome.kill_unconfirmed {
        let _ = writeln!(text, "kill_unconfirmed: {doubt}");
    }
    if let Some(detail) = job.detail() {
        let _ = writeln!(text, "result: {detail}");
    }
    let end = job.log_end();
    let read = job.read_newest(end, budget);
    let _ = write!(
        text,
        "--- output, bytes {}..{} of {end}",
        read.offset, read.next_offset
    );
    if read.offset > 0 {
        let _ = write!(
            text,
            "; the first {} bytes are left out (job_output with offset reads what is still kept)",
            read.offset
        );
    }
    if read.next_offset < end {
        let _ = write!(text, "; {} newer bytes did not fit", end - read.next_offset);
    }
    text.push_str(" ---\n");
    text.push_str(&read.text);
    text
}

fn title(job: &Job) -> String {
    let mut command: String = job.command.chars().take(TITLE_COMMAND_CHARS).collect();
    if command.len() < job.command.len() {
        command.push('…');
    }
    format!("{} on {}: {command}", job.kind.as_str(), job.host)
}

/// The exit code or signal and the run time, as a line of text.
fn exit_words(outcome: &Outcome) -> String {
    let secs = outcome.duration_ms as f64 / 1000.0;
    match (outcome.status, &outcome.exit_code, &outcome.signal) {
        (JobStatus::Running, _, _) => format!("running for {secs:.1}s"),
        (_, Some(code), _) => format!("exit_code: {code}, after {secs:.1}s"),
        (_, None, Some(signal)) => format!("signal: {signal}, after {secs:.1}s"),
        _ => format!("ended after {secs:.1}s"),
    }
}
