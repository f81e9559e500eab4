//! A foreground call waiting on its job: progress and heartbeats while it runs, a detach before
//! the client gives up on the call, the kill when the client cancels first, and the message
//! that tells the client when a job it no longer waits for has ended.
// MCP 2026-07-28 deprecates log messages; clients of the versions before it read them.
#![allow(deprecated)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use rmcp::model::{CallToolResult, ContentBlock, LoggingLevel, LoggingMessageNotificationParam};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};

use super::Outpost;
use super::progress;
use super::reply::{failure, seconds};
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

/// Ends at `at`, the time a call detaches; never without one.
pub(super) async fn detach(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Outpost {
    /// When a call that began now detaches, from the delay it asks for (`None`: the config's
    /// `exec.detach_after_secs`); `None` back means never. Counted from the call's start, so
    /// connecting counts against the client's patience too.
    pub(super) fn detach_at(&self, asked: Option<f64>) -> Result<Option<Instant>> {
        let exec = &self.hosts.config().exec;
        let delay = match asked {
            Some(0.0) => None,
            Some(secs) => Some(seconds("detach_after_secs", secs, exec.max_timeout_secs)?),
            None => {
                (exec.detach_after_secs > 0).then(|| Duration::from_secs(exec.detach_after_secs))
            }
        };
        Ok(delay.map(|delay| Instant::now() + delay))
    }

    /// Waits for `job` on behalf of the call of `context`, reporting progress (heartbeats
    /// included) to it; see [`Outpost::wait_jobs`].
    pub(super) async fn wait_foreground(
        &self,
        job: &Arc<Job>,
        detach_at: Option<Instant>,
        named_timeout: bool,
        context: &RequestContext<RoleServer>,
    ) -> Waited {
        let report = progress::report(job, context.meta.get_progress_token(), &context.peer);
        let jobs = std::slice::from_ref(job);
        (self.wait_jobs(
            jobs,
            report,
            self.cancel(job),
            detach_at,
            named_timeout,
            context,
        ))
        .await
    }

    /// Waits for `jobs` on behalf of the call of `context` while `report` tells its progress
    /// (it ends when they all have). A cancel counts before anything else: `on_cancel` kills
    /// and answers. At the detach, jobs found all finished are finished; otherwise those still
    /// running go on, with the background timeout unless the call named one, and the client is
    /// told when each ends.
    pub(super) async fn wait_jobs(
        &self,
        jobs: &[Arc<Job>],
        report: impl Future<Output = ()>,
        on_cancel: impl Future<Output = CallToolResult>,
        detach_at: Option<Instant>,
        named_timeout: bool,
        context: &RequestContext<RoleServer>,
    ) -> Waited {
        tokio::select! {
            biased;
            _ = context.ct.cancelled() => Waited::Cancelled(on_cancel.await),
            () = report => Waited::Finished,
            _ = detach(detach_at) => {
                let running: Vec<&Arc<Job>> = jobs.iter().filter(|job| !job.is_finished()).collect();
                if running.is_empty() {
                    return Waited::Finished;
                }
                let background = self.hosts.config().exec.default_background_timeout_secs;
                for job in running {
                    tracing::info!(job = %job.id, "detached: the call returns, the job goes on");
                    if !named_timeout {
                        job.set_timeout(Duration::from_secs(background));
                    }
                    self.notify_when_done(job, &context.peer);
                }
                Waited::Detached
            }
        }
    }

    /// Starts a job with `start` unless the call is cancelled first. A cancel while the start is
    /// under way (its command may already be on its way to the host) gives the start a kill's
    /// wait to finish, then kills what it started: nothing is left running without an owner.
    /// `Err` is the call's answer (the start's failure, or the cancel's).
    pub(super) async fn start_unless_cancelled(
        &self,
        start: impl Future<Output = Result<Arc<Job>>>,
        cancelled: &CancellationToken,
    ) -> std::result::Result<Arc<Job>, CallToolResult> {
        tokio::pin!(start);
        tokio::select! {
            started = &mut start => started.map_err(|e| failure(&e)),
            // Connecting can take up to the connect timeout; a cancel does not wait for that.
            _ = cancelled.cancelled() => match tokio::time::timeout(self.kill_wait(), start).await {
                Ok(Ok(job)) => Err(self.cancel(&job).await),
                _ => Err(failure(&Error::Cancelled)),
            },
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
        self.connection_tasks.spawn(async move {
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
