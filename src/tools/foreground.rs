//! A foreground call waiting on its job: progress and heartbeats while it runs, a detach before
//! the client gives up on the call, the kill when the client cancels first, and the message
//! that tells the client when a job it no longer waits for has ended.
// MCP 2026-07-28 deprecates log messages; clients of the versions before it read them.
#![allow(deprecated)]

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock, LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};

use super::Outpost;
use super::progress;
use super::reply::seconds;
use crate::error::{Error, Result};
use crate::jobs::Job;

/// How a foreground wait ended.
pub enum Waited {
    /// The job has finished.
    Finished,
    /// `detach_after_secs` passed: the job goes on, the call answers `running`.
    Detached,
    /// The client cancelled the call: the job was killed; this is the call's answer.
    Cancelled(CallToolResult),
}

impl Outpost {
    /// The detach delay a call asks for (`None`: the config's `exec.detach_after_secs`); `None`
    /// back means never.
    pub(super) fn detach_after(&self, asked: Option<f64>) -> Result<Option<Duration>> {
        let max = self.hosts.config().exec.max_timeout_secs;
        match asked {
            Some(0.0) => Ok(None),
            Some(secs) => seconds("detach_after_secs", secs, max).map(Some),
            None => match self.hosts.config().exec.detach_after_secs {
                0 => Ok(None),
                secs => Ok(Some(Duration::from_secs(secs))),
            },
        }
    }

    /// Waits for `job` on behalf of the call of `context`, reporting progress (heartbeats
    /// included) to it.
    pub(super) async fn wait_foreground(
        &self,
        job: &Arc<Job>,
        detach_after: Option<Duration>,
        context: &RequestContext<RoleServer>,
    ) -> Waited {
        let detach = async {
            match detach_after {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending().await,
            }
        };
        let token = context.meta.get_progress_token();
        tokio::select! {
            _ = progress::report(job, token, &context.peer) => Waited::Finished,
            _ = detach => {
                tracing::info!(job = %job.id, "detached: the call returns, the job goes on");
                self.notify_when_done(job, &context.peer);
                Waited::Detached
            }
            _ = context.ct.cancelled() => Waited::Cancelled(self.cancel(job).await),
        }
    }

    /// Kills the job of a cancelled call; the call's answer says whether the kill is confirmed.
    async fn cancel(&self, job: &Job) -> CallToolResult {
        job.kill_and_wait(self.kill_wait()).await;
        let text = match job.outcome().kill_unconfirmed {
            None => {
                self.jobs.forget(&job.id);
                format!("{}; the process tree was killed", Error::Cancelled)
            }
            Some(doubt) => format!(
                "{}; the kill is not confirmed: {doubt}. job_output job_id={} shows its outcome.",
                Error::Cancelled,
                job.id
            ),
        };
        CallToolResult::error(vec![ContentBlock::text(text)])
    }

    /// Tells the client on `peer` with a log message (`info`, logger `outpost.jobs`) when `job`
    /// ends: for jobs that run on after their call returned (background, detached). The wait
    /// ends with the connection.
    pub(super) fn notify_when_done(&self, job: &Arc<Job>, peer: &Peer<RoleServer>) {
        let (job, peer, closed) = (job.clone(), peer.clone(), self.closed.clone());
        let wanted = self.wants_log(LoggingLevel::Info);
        tokio::spawn(async move {
            tokio::select! {
                _ = job.finished() => {}
                _ = closed.cancelled() => return,
            }
            if !wanted() {
                return;
            }
            let outcome = job.outcome();
            let data = serde_json::json!({
                "event": "job_finished",
                "job_id": job.id,
                "host": job.host,
                "status": outcome.status,
                "exit_code": outcome.exit_code,
                "signal": outcome.signal,
                "kill_unconfirmed": outcome.kill_unconfirmed,
            });
            let message = LoggingMessageNotificationParam::new(LoggingLevel::Info, data)
                .with_logger("outpost.jobs");
            if let Err(e) = peer.notify_logging_message(message).await {
                tracing::debug!(error = %e, "cannot send the end of a job");
            }
        });
    }
}
