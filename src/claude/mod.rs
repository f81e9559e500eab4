//! Claude Code sessions: one warm process per session, resumed when gone, capped per host and
//! closed when idle; each turn recorded in the session registry.

pub mod launch;
pub mod permission;
mod placement;
mod pulls;
pub mod registry;
mod session_sync;
pub mod stream;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ClaudeSettings;
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::transport::{CommandSpec, Stdin};
use launch::{LaunchOptions, Start};
pub use pulls::{Pulls, Wanted};
use registry::{Registry, SessionRecord, SessionStatus};
use session_sync::close_and_pull;
pub use session_sync::{PullOutcome, TurnSync};
use stream::TurnResult;
pub use worker::Interrupt;
use worker::{Turn, Worker};

/// What `spawn_claude` asks for.
#[derive(Debug, Clone)]
pub struct TurnRequest {
    pub host: Option<String>,
    pub cwd: Option<String>,
    pub prompt: String,
    pub session_id: Option<String>,
    pub fork: bool,
    pub options: LaunchOptions,
    pub timeout: Duration,
    /// Where Claude's permission prompts go for a person to decide; without it they are denied
    /// (saying nobody could be asked).
    pub approvals: Option<mpsc::UnboundedSender<permission::Approval>>,
    /// The network principal a new session (or fork) belongs to; `None` for the local client.
    pub owner: Option<String>,
}

/// How a turn went, and where.
#[derive(Debug)]
pub struct TurnReport {
    pub host: String,
    pub cwd: String,
    pub session_id: String,
    /// Whether a live process took the turn (no cold start).
    pub warm: bool,
    pub forked_from: Option<String>,
    pub result: TurnResult,
    pub interrupted: Option<Interrupt>,
    /// Session files synced around the turn (remote hosts with sync on).
    pub sync: Option<TurnSync>,
}

/// The process (if any) of one session. Its async lock is held for a whole turn, so a prompt
/// for a session that is mid-turn waits its turn.
struct Slot {
    worker: Option<Worker>,
    last_used: Instant,
    /// The background pull after the last turn: the next turn (or closing) waits for it first.
    pulling: Option<JoinHandle<PullOutcome>>,
}

struct SlotEntry {
    host: String,
    slot: Arc<AsyncMutex<Slot>>,
}

/// Every live Claude process of this server.
///
/// The manager owns the processes and the reaper task. [`Claude::shutdown`] closes them all;
/// dropping the manager without it kills them (each worker kills its process on drop).
pub struct Claude {
    hosts: Arc<Hosts>,
    settings: ClaudeSettings,
    registry: Registry,
    slots: Mutex<HashMap<String, SlotEntry>>,
    /// Background pulls under way, for explicit syncs and listings to wait for.
    pulls: Pulls,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Claude {
    /// Starts the manager and its idle reaper.
    pub fn new(hosts: Arc<Hosts>, registry: Registry) -> Arc<Self> {
        let settings = hosts.config().claude.clone();
        let claude = Arc::new(Self {
            hosts,
            settings,
            registry,
            slots: Mutex::new(HashMap::new()),
            pulls: Pulls::default(),
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        claude.tasks.spawn(reap(Arc::downgrade(&claude)));
        claude
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The session pulls under way in the background, for a sync or listing to wait for.
    pub fn pulls(&self) -> &Pulls {
        &self.pulls
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, SlotEntry>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.idle_timeout_secs)
    }

    fn grace(&self) -> Duration {
        Duration::from_secs(self.settings.interrupt_grace_secs)
    }

    /// One attempt at a turn; the host it picked is added to `tried`.
    pub(super) async fn turn_once(
        &self,
        request: TurnRequest,
        events: mpsc::UnboundedSender<Value>,
        caller_cancel: &CancellationToken,
        tried: &mut Vec<String>,
    ) -> Result<TurnReport> {
        if self.stop.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // Interrupted by the caller's cancel or by shutdown, whichever comes first.
        let cancel = self.stop.child_token();
        let _link = self
            .tasks
            .spawn(follow(caller_cancel.clone(), cancel.clone()));
        let _end_link = cancel.clone().drop_guard();
        let (host, cwd) = self.target(
            request.host.as_deref(),
            request.cwd.as_deref(),
            request.session_id.as_deref(),
        );
        // For a group: its member, counted as busy from now until Claude's process is.
        let picked = self.hosts.pick_excluding(&host, tried)?;
        let host = picked.host.clone();
        tried.push(host.clone());
        let cwd = cwd.or_else(|| self.hosts.workspace(&host));
        let transport = self.hosts.resolve(&host)?;
        let start = match (&request.session_id, request.fork) {
            (None, _) => Start::New(uuid::Uuid::new_v4().to_string()),
            (Some(id), false) => Start::Resume(id.clone()),
            (Some(id), true) => Start::Fork(id.clone()),
        };
        // A fork's id is known only once Claude starts: its slot moves to that id after the turn.
        let key = match &start {
            Start::Fork(_) => format!("fork-{}", uuid::Uuid::new_v4()),
            _ => start.session_id().to_owned(),
        };
        let slot = self.slot(&key, &host);
        // Also waits for the background pull after this session's previous turn.
        let mut guard = tokio::select! {
            guard = slot.lock_owned() => guard,
            _ = cancel.cancelled() => return Err(Error::Cancelled),
        };
        let previous_pull = match guard.pulling.take() {
            Some(pull) => tokio::select! {
                outcome = pull => outcome.ok(),
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            },
            None => None,
        };
        let reusable = guard.worker.as_mut().is_some_and(|w| {
            w.host == host
                && cwd
                    .as_ref()
                    .is_none_or(|c| *c == w.cwd || *c == w.asked_cwd)
                && w.options == request.options
                && w.is_alive()
        });
        let warm = reusable && !request.fork;
        let mut sync = self.hosts.syncs_sessions(&host).then(TurnSync::default);
        if !warm {
            if let Some(old) = guard.worker.take() {
                close_and_pull(old, self.hosts.clone(), self.grace(), &self.pulls).await;
            }
            if let (Some(sync), Start::Resume(id) | Start::Fork(id)) = (sync.as_mut(), &start) {
                let at = cwd.as_deref().unwrap_or("~");
                sync.push(&self.hosts, &host, at, id).await;
            }
            self.make_room(&host);
            let spec = CommandSpec {
                command: launch::command_line(self.locate(&host), &start, &request.options),
                cwd: cwd.clone(),
                env: self.hosts.claude_environment(&host),
                stdin: Stdin::Pipe,
            };
            let id = start.session_id().to_owned();
            let started =
                Worker::start(&transport, spec, host.clone(), id, request.options.clone());
            let worker = tokio::select! {
                worker = started => worker?,
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            };
            guard.worker = Some(worker);
        }
        drop(picked);
        self.mark_running(&start, &host, cwd.as_deref(), request.owner.as_deref());
        let (mut report, settle_on, slot) = self
            .run_turn(guard, &key, &request, &start, &events, &cancel, warm)
            .await?;
        if let Some(mut sync) = sync {
            sync.previous_pull = previous_pull;
            sync.pulling = true;
            report.sync = Some(sync);
            // Its handle waits in the slot: the next turn awaits and reports it, closing awaits it.
            let (hosts, host) = (self.hosts.clone(), report.host.clone());
            let (cwd, id) = (report.cwd.clone(), report.session_id.clone());
            // Registered before the turn is answered: a sync asked for next waits for it.
            let tracked = self.pulls.track(&host, &cwd, &id);
            let mut slot = slot;
            slot.pulling = Some(self.tasks.spawn(async move {
                let _tracked = tracked;
                PullOutcome::pull(&hosts, &host, &cwd, &id, settle_on).await
            }));
        }
        Ok(report)
    }

    /// Runs the turn on the slot's worker and files the worker and the record away after it.
    #[allow(clippy::too_many_arguments)]
    async fn run_turn(
        &self,
        mut guard: OwnedMutexGuard<Slot>,
        key: &str,
        request: &TurnRequest,
        start: &Start,
        events: &mpsc::UnboundedSender<Value>,
        cancel: &CancellationToken,
        warm: bool,
    ) -> Result<(TurnReport, Option<String>, OwnedMutexGuard<Slot>)> {
        let Some(mut worker) = guard.worker.take() else {
            return Err(Error::ShuttingDown);
        };
        let turn = Turn {
            prompt: &request.prompt,
            events,
            approvals: request.approvals.as_ref(),
            cancel,
            deadline: Instant::now() + request.timeout,
            grace: self.grace(),
        };
        let outcome = worker.turn(turn).await;
        guard.last_used = Instant::now();
        let forked_from = match start {
            Start::Fork(from) => Some(from.clone()),
            _ => None,
        };
        let end = match outcome {
            Ok(end) => end,
            Err(e) => {
                self.mark_closed(&worker.session_id);
                return Err(e);
            }
        };
        let alive = worker.is_alive();
        let report = TurnReport {
            host: worker.host.clone(),
            cwd: worker.cwd.clone(),
            session_id: worker.session_id.clone(),
            warm,
            forked_from,
            result: end.result,
            interrupted: end.interrupted,
            sync: None,
        };
        self.record_turn(&report, alive, request.owner.as_deref());
        let mut slot = guard;
        if alive {
            if worker.session_id == key {
                slot.worker = Some(worker);
            } else {
                drop(slot);
                let moved = self.slot(&worker.session_id, &worker.host);
                slot = moved.lock_owned().await;
                slot.worker = Some(worker);
                slot.last_used = Instant::now();
            }
        }
        // Only a turn that ended by itself is sure to be written to the session file soon.
        let settle_on = end.last_message_id.filter(|_| report.interrupted.is_none());
        Ok((report, settle_on, slot))
    }

    fn slot(&self, key: &str, host: &str) -> Arc<AsyncMutex<Slot>> {
        let mut slots = self.slots();
        let entry = slots.entry(key.to_owned()).or_insert_with(|| SlotEntry {
            host: host.to_owned(),
            slot: Arc::new(AsyncMutex::new(Slot {
                worker: None,
                pulling: None,
                last_used: Instant::now(),
            })),
        });
        entry.slot.clone()
    }

    /// Closes least recently used idle processes on `host` until a new one fits under the cap.
    /// Slots mid-turn (locked) count as live and are never closed.
    fn make_room(&self, host: &str) {
        let mut idle = Vec::new();
        let mut live = 0;
        for entry in self.slots().values().filter(|e| e.host == host) {
            match entry.slot.clone().try_lock_owned() {
                Err(_) => live += 1,
                Ok(guard) if guard.worker.is_some() => {
                    live += 1;
                    idle.push(guard);
                }
                Ok(_) => {}
            }
        }
        idle.sort_by_key(|g| g.last_used);
        for mut guard in idle {
            if live <= self.settings.max_processes_per_host {
                break;
            }
            if let Some(worker) = guard.worker.take() {
                tracing::info!(%host, session = %worker.session_id, "closing the least recently used claude process (per-host cap)");
                self.close_in_background(worker, guard.pulling.take());
                live -= 1;
            }
        }
    }

    /// Closes `worker` (after the pull still running for its session, if any) and pulls once more.
    fn close_in_background(&self, worker: Worker, pulling: Option<JoinHandle<PullOutcome>>) {
        self.mark_closed(&worker.session_id);
        let (hosts, grace) = (self.hosts.clone(), self.grace());
        let closing = close_and_pull(worker, hosts, grace, &self.pulls);
        self.tasks.spawn(async move {
            if let Some(pull) = pulling {
                let _ = pull.await;
            }
            closing.await;
        });
    }

    /// Closes idle processes past the idle timeout and forgets dead ones.
    fn reap_once(&self) {
        let idle_limit = self.idle_timeout();
        let mut slots = self.slots();
        slots.retain(|_, entry| {
            let Ok(mut guard) = entry.slot.clone().try_lock_owned() else {
                return true;
            };
            let idle_for = guard.last_used.elapsed();
            if let Some(worker) = guard.worker.as_mut()
                && (!worker.is_alive() || idle_for >= idle_limit)
                && let Some(worker) = guard.worker.take()
            {
                self.close_in_background(worker, guard.pulling.take());
            }
            let pulling = guard.pulling.as_ref().is_some_and(|p| !p.is_finished());
            guard.worker.is_some() || pulling || Arc::strong_count(&entry.slot) > 2
        });
    }

    /// Interrupts running turns, closes every process (EOF, then kill after the grace) and waits.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let slots: Vec<_> = self.slots().drain().map(|(_, e)| e.slot).collect();
        let closing = slots.into_iter().map(|slot| async move {
            let worker = slot.lock().await.worker.take();
            if let Some(worker) = worker {
                self.mark_closed(&worker.session_id);
                worker.close(self.grace()).await;
            }
        });
        let all = futures::future::join_all(closing);
        let limit = self.grace() * 2 + Duration::from_secs(2);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!("some claude processes were still closing at shutdown");
        }
        self.tasks.close();
        let _ = tokio::time::timeout(limit, self.tasks.wait()).await;
    }

    fn mark_running(&self, start: &Start, host: &str, cwd: Option<&str>, owner: Option<&str>) {
        let (id, create) = match start {
            Start::New(id) => (id, Some(new_record(id, host, cwd.unwrap_or("~"), owner))),
            Start::Resume(id) => (id, None),
            Start::Fork(_) => return,
        };
        self.registry.update(id, create, |r| {
            r.status = SessionStatus::Running;
            r.last_turn = registry::now();
            r.server_pid = Some(std::process::id());
        });
    }

    fn record_turn(&self, report: &TurnReport, alive: bool, owner: Option<&str>) {
        let mut create = new_record(&report.session_id, &report.host, &report.cwd, owner);
        create.forked_from = report.forked_from.clone();
        self.registry.update(&report.session_id, Some(create), |r| {
            r.host = report.host.clone();
            r.cwd = report.cwd.clone();
            r.status = if alive {
                SessionStatus::Warm
            } else {
                SessionStatus::Closed
            };
            r.server_pid = alive.then(std::process::id);
            r.turns += 1;
            r.last_is_error = report.result.is_error;
            r.last_result = stream::excerpt(
                report
                    .result
                    .result
                    .as_deref()
                    .or(report.result.errors.first().map(String::as_str))
                    .unwrap_or(&report.result.subtype),
            );
            r.total_cost_usd = report.result.total_cost_usd;
        });
    }

    fn mark_closed(&self, session_id: &str) {
        self.registry.update(session_id, None, |r| {
            r.status = SessionStatus::Closed;
            r.server_pid = None;
        });
    }
}

fn new_record(id: &str, host: &str, cwd: &str, owner: Option<&str>) -> SessionRecord {
    let now = registry::now();
    SessionRecord {
        session_id: id.to_owned(),
        host: host.to_owned(),
        cwd: cwd.to_owned(),
        created: now.clone(),
        last_turn: now,
        status: SessionStatus::Running,
        turns: 0,
        last_is_error: false,
        last_result: String::new(),
        total_cost_usd: 0.0,
        forked_from: None,
        server_pid: Some(std::process::id()),
        owner: owner.map(str::to_owned),
    }
}

/// Cancels `ours` when `theirs` is cancelled; ends when either is.
async fn follow(theirs: CancellationToken, ours: CancellationToken) {
    tokio::select! {
        _ = theirs.cancelled() => ours.cancel(),
        _ = ours.cancelled() => {}
    }
}

/// The reaper: checks idle processes a few times per idle timeout, until the manager goes.
async fn reap(claude: Weak<Claude>) {
    let (tick, stop) = match claude.upgrade() {
        Some(c) => (
            (c.idle_timeout() / 4).clamp(Duration::from_millis(250), Duration::from_secs(30)),
            c.stop.clone(),
        ),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => return,
        }
        match claude.upgrade() {
            Some(c) => c.reap_once(),
            None => return,
        }
    }
}
