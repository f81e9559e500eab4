//! Kills of process groups on SSH hosts: the kills asked for at once go to a host together, in one
//! kill script on a channel the pool keeps for kills, each group's fate is reported as soon as
//! the script knows it, and kills the host did not answer are retried until it does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg};
use tokio::time::{Instant, timeout};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::kill_script::{Group, Verdict, kill_script, parse_verdicts};
use super::{KillReporter, KillState};
use crate::error::{Error, Result};
use crate::health::backoff;
use crate::ssh::pool::{Attempt, Lease, Purpose};
use crate::ssh::{SshPool, SshTarget};

/// How long a host gets to start a kill script once a connection is there: a host that does
/// not answer by then is taken as unresponsive, and its connection is dropped.
const DELIVERY: Duration = Duration::from_secs(2);
/// Beyond the grace and the wait after SIGKILL, how long a running kill script may take.
const SCRIPT_SLACK: Duration = Duration::from_secs(5);
/// How long kills that could not be delivered are retried before they are given up on.
const RETRY_FOR: Duration = Duration::from_secs(600);
/// Kill scripts running at once on one host: a kill asked for while one runs need not wait for
/// it. Within what the pool keeps for kills on a single connection.
const SCRIPTS_AT_ONCE: usize = crate::ssh::pool::KILL_CHANNELS_PER_CONNECTION;

/// Kills process groups on SSH hosts, batched per host.
///
/// Cheap to clone. **Dropping the last clone stops the retries** of kills not delivered yet
/// (their state becomes `Failed`, and a warning is logged for each).
#[derive(Clone)]
pub struct SshKills {
    desk: Arc<Desk>,
    _stop: Arc<DropGuard>,
}

struct Desk {
    pool: Arc<SshPool>,
    grace: Duration,
    /// Kills waiting for a script, per host. A host is here while a task runs for it.
    queues: Mutex<HashMap<SshTarget, Queue>>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Request>,
    /// Tasks sending this host's kills.
    workers: usize,
}

/// One group to kill, and where to say what became of it.
struct Request {
    group: Group,
    report: KillReporter,
    asked: Instant,
}

impl SshKills {
    /// Kills through `pool`'s connections, with `grace` between TERM and KILL.
    pub fn new(pool: Arc<SshPool>, grace: Duration) -> Self {
        let stop = CancellationToken::new();
        Self {
            desk: Arc::new(Desk {
                pool,
                grace,
                queues: Mutex::default(),
                tasks: TaskTracker::new(),
                stop: stop.clone(),
            }),
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Kills `group` on `target`, saying on `report` what became of it: `Sent` at once, then
    /// `Confirmed`, `Failed`, or `Retrying` while the host does not answer.
    pub fn kill(&self, target: &SshTarget, group: Group, report: KillReporter) {
        report.send_replace(KillState::Sent);
        let request = Request {
            group,
            report,
            asked: Instant::now(),
        };
        let mut queues = self.desk.queues();
        let queue = queues.entry(target.clone()).or_default();
        queue.waiting.push(request);
        if queue.workers == SCRIPTS_AT_ONCE {
            return;
        }
        queue.workers += 1;
        let desk = self.desk.clone();
        let target = target.clone();
        self.desk
            .tasks
            .spawn(async move { desk.serve(target).await });
    }
}

impl Desk {
    fn queues(&self) -> MutexGuard<'_, HashMap<SshTarget, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `target`'s waiting kills, all at once, until none wait; retries those the host did
    /// not answer, spaced by the backoff.
    async fn serve(&self, target: SshTarget) {
        let mut failures = 0;
        loop {
            // Kills asked for together (a burst, a shutdown) go in one script.
            tokio::task::yield_now().await;
            let batch = {
                let mut queues = self.queues();
                let Some(queue) = queues.get_mut(&target) else {
                    return;
                };
                if queue.waiting.is_empty() {
                    queue.workers -= 1;
                    if queue.workers == 0 {
                        queues.remove(&target);
                    }
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            let undelivered = self.attempt(&target, batch).await;
            if undelivered.is_empty() {
                failures = 0;
                continue;
            }
            failures += 1;
            let undelivered = give_up_old(&target, undelivered);
            tokio::select! {
                _ = tokio::time::sleep(backoff(failures)) => {}
                _ = self.stop.cancelled() => {
                    let why = "outpost stopped before the host answered";
                    let waiting = self.queues().remove(&target).map(|q| q.waiting);
                    for request in undelivered.into_iter().chain(waiting.into_iter().flatten()) {
                        fail(&target, &request, why.to_owned());
                    }
                    return;
                }
            }
            let mut queues = self.queues();
            let queue = queues.entry(target.clone()).or_default();
            let newer = std::mem::replace(&mut queue.waiting, undelivered);
            queue.waiting.extend(newer);
        }
    }

    /// One kill script for `batch`; hands back the requests it could not settle.
    async fn attempt(&self, target: &SshTarget, batch: Vec<Request>) -> Vec<Request> {
        let groups: Vec<Group> = batch.iter().map(|r| r.group.clone()).collect();
        let script = format!("exec sh -c '{}'", kill_script(&groups, self.grace));
        let mut pending = batch;
        let why = match self.run(target, &script, &mut pending).await {
            Ok(()) if pending.is_empty() => return pending,
            Ok(()) => "the kill script ended without a word on this group".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(host = %target.name, groups = pending.len(), "kill not confirmed: {why}; retrying");
        for request in &pending {
            request
                .report
                .send_replace(KillState::Retrying(why.clone()));
        }
        pending
    }

    /// Runs `script` on a kill channel, settling each request of `pending` as its verdict comes.
    /// A server that turns the channel down (its `MaxSessions` still counts sessions that are
    /// ending) gets the script on another connection.
    async fn run(
        &self,
        target: &SshTarget,
        script: &str,
        pending: &mut Vec<Request>,
    ) -> Result<()> {
        let lease = self
            .pool
            .lease_for(target, Purpose::Kill, Attempt::Now)
            .await?;
        let (lease, mut channel) = match self.start(target, &lease, script).await {
            Ok(channel) => (lease, channel),
            Err(Refused::Channel) => {
                let refused = lease.connection.clone();
                drop(lease);
                let lease = self
                    .pool
                    .lease_elsewhere(target, Purpose::Kill, &refused)
                    .await?;
                match self.start(target, &lease, script).await {
                    Ok(channel) => (lease, channel),
                    Err(refused) => return Err(refused.into_error(target)),
                }
            }
            Err(other) => return Err(other.into_error(target)),
        };
        let limit = self.grace + super::kill_script::AFTER_KILL + SCRIPT_SLACK;
        let mut output = Vec::new();
        let read = async {
            while let Some(message) = channel.wait().await {
                match message {
                    ChannelMsg::Data { data } => {
                        output.extend_from_slice(&data);
                        settle(target, pending, &mut output);
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
        };
        if timeout(limit, read).await.is_err() {
            self.pool.discard(target, &lease.connection).await;
            return Err(unresponsive(target, "the kill script did not finish"));
        }
        Ok(())
    }

    /// Starts `script` on a new channel of `lease`'s connection, within DELIVERY. A connection
    /// that fails otherwise than by refusing the channel is dropped: the next try opens another.
    async fn start(
        &self,
        target: &SshTarget,
        lease: &Lease,
        script: &str,
    ) -> std::result::Result<Channel<Msg>, Refused> {
        let started = async {
            let channel = lease.connection.handle.channel_open_session().await?;
            channel.exec(true, script.as_bytes()).await?;
            channel.eof().await?;
            Ok::<_, russh::Error>(channel)
        };
        let failed = match timeout(DELIVERY, started).await {
            Ok(Ok(channel)) => return Ok(channel),
            Ok(Err(russh::Error::ChannelOpenFailure(_))) => return Err(Refused::Channel),
            Ok(Err(e)) => Refused::Broken(e.to_string()),
            Err(_) => Refused::Unresponsive,
        };
        self.pool.discard(target, &lease.connection).await;
        Err(failed)
    }
}

/// Why a kill script did not start.
enum Refused {
    /// The server turned the channel down.
    Channel,
    /// The connection failed.
    Broken(String),
    /// No answer within DELIVERY.
    Unresponsive,
}

impl Refused {
    fn into_error(self, target: &SshTarget) -> Error {
        let reason = match self {
            Refused::Channel => "the server refused a kill channel on two connections".to_owned(),
            Refused::Broken(e) => e,
            Refused::Unresponsive => {
                return unresponsive(target, &format!("no answer within {}s", DELIVERY.as_secs()));
            }
        };
        Error::SshChannel {
            host: target.name.clone(),
            reason,
        }
    }
}

fn unresponsive(target: &SshTarget, what: &str) -> Error {
    Error::SshChannel {
        host: target.name.clone(),
        reason: format!("the connection is unresponsive ({what})"),
    }
}

/// Settles the requests whose verdicts are in the complete lines of `output`.
fn settle(target: &SshTarget, pending: &mut Vec<Request>, output: &mut Vec<u8>) {
    let Some(end) = output.iter().rposition(|b| *b == b'\n') else {
        return;
    };
    let lines: Vec<u8> = output.drain(..=end).collect();
    for (pgid, verdict) in parse_verdicts(&String::from_utf8_lossy(&lines)) {
        pending.retain(|request| {
            if request.group.pgid != pgid {
                return true;
            }
            report(target, request, verdict);
            false
        });
    }
}

fn report(target: &SshTarget, request: &Request, verdict: Verdict) {
    match verdict.doubt() {
        None => {
            request.report.send_replace(KillState::Confirmed);
        }
        Some(doubt) => fail(target, request, doubt.to_owned()),
    }
}

fn fail(target: &SshTarget, request: &Request, why: String) {
    let pgid = request.group.pgid;
    tracing::warn!(host = %target.name, pgid, "kill failed: {why}; the process may still be running");
    request.report.send_replace(KillState::Failed(why));
}

/// Gives up on the kills retried for longer than RETRY_FOR; returns the others.
fn give_up_old(target: &SshTarget, requests: Vec<Request>) -> Vec<Request> {
    let (old, young): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|r| r.asked.elapsed() >= RETRY_FOR);
    for request in old {
        let why = match &*request.report.borrow() {
            KillState::Retrying(why) => why.clone(),
            _ => String::new(),
        };
        let why = format!(
            "the host did not take the kill for {} minutes ({why})",
            RETRY_FOR.as_secs() / 60
        );
        fail(target, &request, why);
    }
    young
}
