//! `remote_exec` with `hosts`: the command on every host at once, each host's run a job of
//! its own; a cancel or the call's end kills or keeps them all together.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer};
use tokio::time::Instant;

use super::Outpost;
use super::exec::{RemoteExecParams, command_action, exec_lines};
use super::fanout_result::{FanoutResult, HostResult, Summary, render_text, share};
use super::foreground::Waited;
use super::guard;
use super::progress;
use super::reply::{failure, success};
use super::sudo::SudoRun;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::jobs::Job;

/// Each host of the call, and its job or why it has none.
type Started = Vec<(String, Result<Arc<Job>>)>;

impl Outpost {
    /// Runs `params.command` on every host of `params.hosts`.
    pub(super) async fn fan_out(
        &self,
        params: RemoteExecParams,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        if params.host.is_some() {
            return failure(&Error::InvalidArgument {
                field: "hosts",
                reason: "cannot be given together with `host`; name one host as `host`, or every host in `hosts`".into(),
            });
        }
        let names = params.hosts.clone().unwrap_or_default();
        let checked = self.hosts.expand(&names).and_then(|hosts| {
            let detach_at = self.detach_at(params.detach_after_secs)?;
            Ok((hosts, detach_at, self.exec_timeout(&params)?))
        });
        let (hosts, detach_at, timeout) = match checked {
            Ok(checked) => checked,
            Err(e) => return failure(&e),
        };
        let owner = guard::principal_of(&context, &self.principal);
        let started = Mutex::new(Vec::new());
        let starting = self.start_all(&params, &hosts, timeout, &owner, &context.peer, &started);
        tokio::pin!(starting);
        let slots = tokio::select! {
            slots = &mut starting => slots,
            _ = context.ct.cancelled() => {
                // A start dropped while its command is being sent would leave that command
                // running: the starts under way get a kill's wait to finish, then all die.
                let _ = tokio::time::timeout(self.kill_wait(), &mut starting).await;
                let jobs = std::mem::take(&mut *started.lock().unwrap_or_else(|e| e.into_inner()));
                return self.cancel_all(&jobs).await;
            }
        };
        let jobs: Vec<Arc<Job>> = (slots.iter())
            .filter_map(|(_, job)| job.as_ref().ok().cloned())
            .collect();
        if params.background {
            jobs.iter()
                .for_each(|job| self.notify_when_done(job, &context.peer));
            return self.fanout_reply(slots, true);
        }
        match self
            .wait_all(&jobs, detach_at, params.timeout_secs.is_some(), &context)
            .await
        {
            Waited::Finished => {
                let mut hosts = self.fanout_results(slots, false);
                self.sudo_refusals(&params, &mut hosts).await;
                self.fanout_answer(hosts)
            }
            Waited::Cancelled(answer) => answer,
            Waited::Detached => self.fanout_reply(slots, true),
        }
    }

    /// Clears and starts the command on each host, at most `exec.fanout_concurrency` starting
    /// at once; each job started is put in `started` as soon as it is, for a cancel to kill.
    async fn start_all(
        &self,
        params: &RemoteExecParams,
        hosts: &[String],
        timeout: Duration,
        owner: &Principal,
        peer: &Peer<RoleServer>,
        started: &Mutex<Vec<Arc<Job>>>,
    ) -> Started {
        let settings = &self.hosts.config().exec;
        let limit = share(settings.output_limit_bytes, hosts.len());
        // A sudo argument that is wrong fails on each host's start, with its own entry.
        let checked = exec_lines(params).map_or_else(|_| params.command.clone(), |(c, _)| c);
        let action = command_action(params, &checked, params.cwd.as_deref());
        let verdicts = self.check_fanout_policy(peer, owner, hosts, &action).await;
        let start = |(host, verdict): (String, Result<()>)| async move {
            let job = match verdict {
                Ok(()) => (self.start_on(params, &host, timeout, owner, peer, limit)).await,
                Err(refused) => Err(refused),
            };
            if let Ok(job) = &job {
                started
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(job.clone());
            }
            (host, job)
        };
        futures::stream::iter(hosts.iter().cloned().zip(verdicts))
            .map(start)
            .buffered(settings.fanout_concurrency)
            .collect()
            .await
    }

    /// Meets `host`'s unknown host keys and starts the command there.
    async fn start_on(
        &self,
        params: &RemoteExecParams,
        host: &str,
        timeout: Duration,
        owner: &Principal,
        peer: &Peer<RoleServer>,
        output_limit: usize,
    ) -> Result<Arc<Job>> {
        self.confirm_host_keys(peer, owner, host).await?;
        let mut params = params.clone();
        params.hosts = None;
        params.host = Some(host.to_owned());
        (self.launch_exec(params, host, timeout, owner.clone(), output_limit)).await
    }

    /// Waits for every job, reporting progress; a cancel kills them all, and at the detach
    /// those still running go on (see [`Outpost::wait_jobs`]).
    async fn wait_all(
        &self,
        jobs: &[Arc<Job>],
        detach_at: Option<Instant>,
        named_timeout: bool,
        context: &RequestContext<RoleServer>,
    ) -> Waited {
        let report = progress::report_all(jobs, context.meta.get_progress_token(), &context.peer);
        let cancel = self.cancel_all(jobs);
        (self.wait_jobs(jobs, report, cancel, detach_at, named_timeout, context)).await
    }

    /// Kills the jobs of a cancelled fan-out; the answer says whether every kill is confirmed.
    async fn cancel_all(&self, jobs: &[Arc<Job>]) -> CallToolResult {
        let wait = self.kill_wait();
        futures::future::join_all(jobs.iter().map(|job| job.kill_and_wait(wait))).await;
        let mut doubts = Vec::new();
        for job in jobs {
            match job.outcome().kill_unconfirmed {
                None => self.jobs.forget(&job.id),
                Some(doubt) => doubts.push(format!("on {} ({}): {doubt}", job.host, job.id)),
            }
        }
        let text = match doubts.is_empty() {
            true => format!(
                "{}; the process trees on {} hosts were killed",
                Error::Cancelled,
                jobs.len()
            ),
            false => format!(
                "{}; a kill is not confirmed {}. job_output with those job_ids shows their outcome.",
                Error::Cancelled,
                doubts.join("; ")
            ),
        };
        CallToolResult::error(vec![ContentBlock::text(text)])
    }

    /// The answer of a fan-out whose jobs stand as `slots` say.
    fn fanout_reply(&self, slots: Started, keep: bool) -> CallToolResult {
        self.fanout_answer(self.fanout_results(slots, keep))
    }

    fn fanout_results(&self, slots: Started, keep: bool) -> Vec<HostResult> {
        (slots.into_iter())
            .map(|(host, job)| match job {
                Ok(job) => HostResult::Ran(self.exec_result(&job, keep)),
                Err(e) => HostResult::failed(host, &e),
            })
            .collect()
    }

    /// The call's answer: every host's entry, and the summary of them.
    fn fanout_answer(&self, hosts: Vec<HostResult>) -> CallToolResult {
        let summary = Summary::of(&hosts);
        let result = FanoutResult { hosts, summary };
        let text = render_text(&result);
        success(&result, text)
    }

    /// With `sudo`, a host where sudo wanted a password (or refused the variables) is a refusal
    /// naming the sudoers rule to add, as for one host.
    async fn sudo_refusals(&self, params: &RemoteExecParams, hosts: &mut [HostResult]) {
        let Ok(Some(run)) = SudoRun::from_params(params) else {
            return;
        };
        // Each probe may take a while on its host: all at once.
        let probes = hosts.iter().map(|entry| async {
            match entry {
                HostResult::Ran(result) => self.sudo_refusal(&run, result).await,
                _ => None,
            }
        });
        let refusals = futures::future::join_all(probes).await;
        for (entry, refused) in hosts.iter_mut().zip(refusals) {
            if let (HostResult::Ran(result), Some(refused)) = (&*entry, refused) {
                *entry = HostResult::failed(result.host.clone(), &refused);
            }
        }
    }
}
