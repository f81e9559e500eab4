//! SEP-2663 tasks (`io.modelcontextprotocol/tasks`): for a client that declared the extension, a
//! `remote_exec`, `transfer` or `spawn_claude` call runs as a job and answers with a task whose id is the
//! job's; `tasks/get` reports the job and `tasks/cancel` kills it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CreateTaskResult,
    DetailedTask, ErrorData, GetTaskResult, Task, TaskPayload, TaskStatus,
};
use rmcp::service::RequestContext;
use serde_json::Value;

use super::claude::SpawnClaudeParams;
use super::exec::RemoteExecParams;
use super::reply::{failed_with, failure, success};
use super::transfer::TransferParams;
use super::{Outpost, guard};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::jobs::{Job, JobKind, JobStatus};

/// How often clients are asked to poll `tasks/get`.
const POLL_INTERVAL_MS: u64 = 1000;

impl Outpost {
    /// The task a `tools/call` becomes: for a client that declared tasks, a `remote_exec`,
    /// `transfer` or `spawn_claude` call with valid arguments starts its job and answers with the task (or
    /// with the tool's own error result when the job cannot start). None: call the tool as usual.
    pub(super) async fn call_as_task(
        &self,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Option<CallToolResponse> {
        if !(context.client_capabilities()).is_some_and(|c| c.supports_tasks()) {
            return None;
        }
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        let owner = guard::principal_of(context, &self.principal);
        let started = match request.name.as_ref() {
            "remote_exec" => {
                let mut params: RemoteExecParams = serde_json::from_value(arguments).ok()?;
                if params.hosts.is_some() {
                    // A fan-out answers with one result per host, not one job's task.
                    return None;
                }
                params.background = true;
                let start = self.start_exec(params, owner, &context.peer);
                match self.start_unless_cancelled(start, &context.ct).await {
                    Ok(job) => Ok(job),
                    Err(answer) => return Some(CallToolResponse::Complete(answer)),
                }
            }
            "transfer" => {
                let params: TransferParams = serde_json::from_value(arguments).ok()?;
                let start = self.start_transfer(&params, owner, &context.peer);
                match self.start_unless_cancelled(start, &context.ct).await {
                    Ok(job) => Ok(job),
                    Err(answer) => return Some(CallToolResponse::Complete(answer)),
                }
            }
            "spawn_claude" => {
                let params: SpawnClaudeParams = serde_json::from_value(arguments).ok()?;
                tokio::select! {
                    started = self.start_claude_task(params, owner, &context.peer) => started,
                    _ = context.ct.cancelled() => Err(Error::Cancelled),
                }
            }
            _ => return None,
        };
        Some(match started {
            Ok(job) => CallToolResponse::Task(CreateTaskResult::new(self.task_of(&job))),
            Err(e) => CallToolResponse::Complete(failure(&e)),
        })
    }

    async fn start_claude_task(
        &self,
        params: SpawnClaudeParams,
        owner: Principal,
        peer: &rmcp::Peer<RoleServer>,
    ) -> Result<Arc<Job>> {
        let request = self.turn_request(params, &owner)?;
        self.clear_claude_turn(peer, &owner, &request).await?;
        let (job, _) = self.start_claude_job(request, owner, None)?;
        Ok(job)
    }

    /// `tasks/get`: the caller's job as a task; finished, with the result its tool returns.
    pub(super) fn task_state(
        &self,
        task_id: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let job = self.owned_task(task_id, context)?;
        let detailed = DetailedTask::new(self.task_of(&job), self.task_payload(&job));
        Ok(GetTaskResult::new(detailed))
    }

    /// `tasks/cancel`: kills the caller's job and waits (within the kill bound) for it to die.
    /// The task then reports `cancelled`, unless the job had ended by itself first.
    pub(super) async fn cancel_task_job(
        &self,
        task_id: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let job = self.owned_task(task_id, context)?;
        job.kill_and_wait(self.kill_wait()).await;
        Ok(())
    }

    /// The job behind `task_id` when the caller started it; another's job is answered exactly
    /// as an unknown one.
    fn owned_task(
        &self,
        task_id: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<Arc<Job>, ErrorData> {
        let principal = guard::principal_of(context, &self.principal);
        self.job_for(task_id, &principal).map_err(|_| {
            ErrorData::invalid_params(
                format!(
                    "unknown task: {task_id}; tasks are kept exec.job_retention_secs after they end"
                ),
                None,
            )
        })
    }

    /// The job's task fields: it lives for the retention time after its end.
    fn task_of(&self, job: &Job) -> Task {
        let outcome = job.outcome();
        let retention_ms = self.hosts.config().exec.job_retention_secs * 1000;
        let updated = job.started_at + Duration::from_millis(outcome.duration_ms);
        let mut task = Task::new(
            job.id.clone(),
            TaskStatus::Working,
            timestamp(job.started_at),
            timestamp(updated),
        )
        .with_ttl_ms(outcome.duration_ms.saturating_add(retention_ms))
        .with_poll_interval_ms(POLL_INTERVAL_MS);
        let lines = job.last_lines();
        if !job.is_finished() && !lines.is_empty() {
            task = task.with_status_message(lines);
        }
        task
    }

    fn task_payload(&self, job: &Job) -> TaskPayload {
        if !job.is_finished() {
            return TaskPayload::Working;
        }
        // Killed and gone: cancelled. A kill in doubt is a result that says so (as job_kill's).
        let outcome = job.outcome();
        if outcome.status == JobStatus::Killed && outcome.kill_unconfirmed.is_none() {
            return TaskPayload::Cancelled;
        }
        let result = match job.kind {
            JobKind::Exec => super::exec::reply(&self.exec_result(job, true)),
            JobKind::Claude => claude_result(job),
            JobKind::Transfer => super::transfer::transfer_reply(job),
        };
        let result = match serde_json::to_value(result) {
            Ok(Value::Object(object)) => object,
            _ => serde_json::Map::new(),
        };
        TaskPayload::Completed { result }
    }
}

/// A finished `claude` job's result as `spawn_claude` gives it: its detail as structured
/// content, Claude's answer as the text; an error result when the turn failed.
fn claude_result(job: &Job) -> CallToolResult {
    let detail = job.detail().unwrap_or_default();
    let field = |key: &str| detail.get(key).and_then(Value::as_str).unwrap_or_default();
    if let Some(error) = detail.get("error").and_then(Value::as_str) {
        return CallToolResult::error(vec![ContentBlock::text(error)]);
    }
    if detail.get("is_error").and_then(Value::as_bool) == Some(true) {
        let headline = format!("Claude's turn on {} ended in an error.", job.host);
        return failed_with(&detail, &headline);
    }
    let text = format!(
        "Claude on {} (session {}):\n{}",
        field("host"),
        field("session_id"),
        field("result")
    );
    success(&detail, text)
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}
