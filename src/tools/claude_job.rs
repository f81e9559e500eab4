//! A `spawn_claude` turn as a job, in the background or in the foreground: the job's log gets one
//! line per event, its detail the result; a foreground call also gets the typed result, and the
//! raw events as debug log messages when its client asked for them.

use std::sync::Arc;
use std::time::Duration;

use rmcp::{Peer, RoleServer};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::Outpost;
use super::approvals::decide_prompts;
use super::claude::{SpawnClaudeResult, TurnStatus, result_of};
use crate::auth::Principal;
use crate::claude::{Claude, Interrupt, TurnRequest, stream};
use crate::error::{Error, Result};
use crate::jobs::{Job, JobKind, JobSpec, JobStatus};

/// What a foreground call gets from its turn besides the job.
pub(super) struct Tap {
    /// The turn's result (or why it failed), once the job has finished.
    pub done: oneshot::Sender<Result<SpawnClaudeResult>>,
    /// Where to send every event as a debug log message, when the client asked for them.
    pub debug_log: Option<Peer<RoleServer>>,
}

impl Outpost {
    /// Starts the turn as a job of `owner`; the result says where it runs (status `running`).
    pub(super) fn start_claude_job(
        &self,
        mut request: TurnRequest,
        owner: Principal,
        tap: Option<Tap>,
    ) -> Result<(Arc<Job>, SpawnClaudeResult)> {
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
        let (prompts, asked) = mpsc::unbounded_channel();
        request.approvals = Some(prompts);
        let (approvals, audit) = (self.approvals.clone(), self.policy.clone());
        let place = match &cwd {
            Some(cwd) => format!("{host} in {cwd}"),
            None => host.clone(),
        };
        let timeout = Duration::from_secs(self.hosts.config().claude.approval_timeout_secs);
        let job = self.jobs.start_task(spec, move |job| async move {
            let decide = decide_prompts(approvals, audit, job.clone(), place, timeout, asked);
            tokio::join!(run(claude, request, job, tap), decide);
        })?;
        let result = SpawnClaudeResult {
            session_id,
            host,
            cwd,
            status: TurnStatus::Running,
            warm: false,
            forked_from: None,
            turn: None,
            sync: None,
            job_id: Some(job.id.clone()),
            events: None,
            next: None,
        };
        Ok((job, result))
    }
}

async fn run(claude: Arc<Claude>, request: TurnRequest, job: Arc<Job>, tap: Option<Tap>) {
    let (events, mut received) = mpsc::unbounded_channel::<Value>();
    let cancel = job.kill_token();
    let turn = claude.turn(request, events, &cancel);
    let debug_log = tap.as_ref().and_then(|t| t.debug_log.clone());
    let record = async {
        while let Some(event) = received.recv().await {
            if let Some(id) = event.get("session_id").and_then(Value::as_str) {
                job.set_session_id(id);
            }
            if let Some(line) = stream::summary(&event) {
                job.record_line(&line);
            }
            if let Some(peer) = &debug_log {
                send_debug_log(peer, event).await;
            }
        }
    };
    let (outcome, ()) = tokio::join!(turn, record);
    let outcome = match outcome {
        Ok(report) => {
            let status = match report.interrupted {
                Some(Interrupt::TimedOut) => JobStatus::TimedOut,
                Some(Interrupt::Cancelled) => JobStatus::Killed,
                None => JobStatus::Exited,
            };
            let result = result_of(report);
            job.finish_with(status, serde_json::to_value(&result).unwrap_or_default());
            Ok(result)
        }
        Err(e) => {
            job.record_line(&format!("error: {e}"));
            let status = match e {
                Error::Cancelled | Error::ShuttingDown => JobStatus::Killed,
                _ => JobStatus::Exited,
            };
            job.finish_with(status, serde_json::json!({ "error": e.to_string() }));
            Err(e)
        }
    };
    if let Some(tap) = tap {
        // The caller may have detached or gone: then nobody waits for this.
        let _ = tap.done.send(outcome);
    }
}

#[allow(deprecated)]
async fn send_debug_log(peer: &Peer<RoleServer>, event: Value) {
    let log =
        rmcp::model::LoggingMessageNotificationParam::new(rmcp::model::LoggingLevel::Debug, event)
            .with_logger("claude");
    if let Err(e) = peer.notify_logging_message(log).await {
        tracing::debug!(error = %e, "cannot send a log message");
    }
}
