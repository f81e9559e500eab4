//! One running (or finished) command: its state, its output, and the task that drives its process.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::follow::Follower;
use crate::auth::Principal;
use crate::output::{Capture, LogRead, OutputLog, Rendered};
use crate::transport::{ExitStatus, KillState, OutputStream, Process, ProcessEvent};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Still running.
    Running,
    /// Ended by itself (any exit code).
    Exited,
    /// Killed on request (cancel, `job_kill`, shutdown).
    Killed,
    /// Killed because it ran past its timeout.
    TimedOut,
}

impl JobStatus {
    /// The status as results name it (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Exited => "exited",
            Self::Killed => "killed",
            Self::TimedOut => "timed_out",
        }
    }
}

/// How a job stands or ended: the fields every job-related result shares.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Outcome {
    /// `running`, `exited`, `killed` or `timed_out`.
    pub status: JobStatus,
    /// Exit code; null while running or when ended by a signal.
    pub exit_code: Option<i32>,
    /// Name of the signal that ended it (e.g. `SIGTERM`), else null.
    pub signal: Option<String>,
    /// Whether it was killed for running past its timeout.
    pub timed_out: bool,
    /// Run time so far, in milliseconds.
    pub duration_ms: u64,
    /// Set when a kill (timeout, cancel, `job_kill`, shutdown) is not confirmed: why, and that
    /// the process may still be running. Absent when the whole process tree is known to be gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill_unconfirmed: Option<String>,
    /// While the job waits for a person's approval: what for (a Claude tool use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub awaiting_approval: Option<String>,
}

/// How many times [`Job::read_newest`] moves its start to fit its budget.
const FIT_ATTEMPTS: usize = 8;

/// What a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A shell command (`remote_exec`).
    Exec,
    /// A Claude Code turn (`spawn_claude`).
    Claude,
    /// A copy of files (`transfer`).
    Transfer,
}

impl JobKind {
    /// The kind as results name it (its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Claude => "claude",
            Self::Transfer => "transfer",
        }
    }
}

/// What a job was started with.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub kind: JobKind,
    /// Who started it: only they may see, read or kill it.
    pub owner: Principal,
    pub host: String,
    /// The group `host` was chosen from, if any.
    pub group: Option<String>,
    pub command: String,
    pub timeout: Duration,
    pub output_limit: usize,
    pub log_bytes: usize,
    /// How long after a following read the job keeps holding output back for that reader.
    pub follow_grace: Duration,
    /// Hold output back from the start for a reader that comes within `follow_grace` (a
    /// background job's caller, about to follow it), as if it were already following.
    pub hold_for_first_reader: bool,
}

struct JobState {
    status: JobStatus,
    exit: Option<ExitStatus>,
    finished: Option<Instant>,
    capture: Capture,
    log: OutputLog,
    /// The tool's own result for jobs that are not plain commands (a Claude turn's result).
    detail: Option<serde_json::Value>,
    /// A reader the job holds output back for, rather than drop what it has not read.
    follower: Option<Follower>,
    /// What became of a kill of the job's process; it may change after the job has ended.
    kill_state: Option<watch::Receiver<KillState>>,
    /// The Claude session a `claude` job's turn belongs to, once known.
    session_id: Option<String>,
    /// What the job waits for a person to approve, if it does.
    awaiting: Option<String>,
}

/// A command under way or done. Shared by the manager, the task that drives it and the tools.
pub struct Job {
    pub id: String,
    /// Order of creation: later jobs have larger numbers.
    seq: u64,
    pub kind: JobKind,
    pub owner: Principal,
    pub host: String,
    pub group: Option<String>,
    pub command: String,
    pub started_at: SystemTime,
    started: Instant,
    state: Mutex<JobState>,
    /// Bumped on every change (output or end); waiters watch it.
    changed: watch::Sender<u64>,
    /// Woken when a following reader moves on, for output held back for it.
    follower_moved: Notify,
    /// Cancelled to kill the job's process tree.
    kill: CancellationToken,
    /// How long after its start the job is killed for running too long; it may be raised.
    timeout: watch::Sender<Duration>,
    follow_grace: Duration,
}

impl Job {
    pub(super) fn new(id: String, seq: u64, spec: &JobSpec, kill: CancellationToken) -> Self {
        Self {
            id,
            seq,
            kind: spec.kind,
            owner: spec.owner.clone(),
            host: spec.host.clone(),
            group: spec.group.clone(),
            command: spec.command.clone(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            state: Mutex::new(JobState {
                status: JobStatus::Running,
                exit: None,
                finished: None,
                capture: Capture::new(spec.output_limit),
                log: OutputLog::new(spec.log_bytes),
                detail: None,
                follower: spec.hold_for_first_reader.then(|| Follower {
                    offset: 0,
                    until: Instant::now() + spec.follow_grace,
                }),
                kill_state: None,
                session_id: None,
                awaiting: None,
            }),
            changed: watch::Sender::new(0),
            follower_moved: Notify::new(),
            kill,
            timeout: watch::Sender::new(spec.timeout),
            follow_grace: spec.follow_grace,
        }
    }

    fn state(&self) -> MutexGuard<'_, JobState> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for the process tree to be killed; the status becomes `killed` once it is dead.
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// Kills the job and waits for it to end, at most `limit` (a half-dead SSH link can take
    /// long to confirm); logs when it is still dying.
    pub async fn kill_and_wait(&self, limit: Duration) {
        self.kill();
        if tokio::time::timeout(limit, self.finished()).await.is_err() {
            tracing::warn!(job = %self.id, "process tree still dying after {limit:?}");
        }
    }

    /// The job's state in result form, as it stands now.
    pub fn outcome(&self) -> Outcome {
        let state = self.state();
        let duration = state.finished.unwrap_or_else(Instant::now) - self.started;
        let exit = state.exit.clone().unwrap_or_default();
        let kill = state.kill_state.as_ref().map(|k| k.borrow().clone());
        let kill_unconfirmed = match state.status {
            JobStatus::Killed | JobStatus::TimedOut => kill.and_then(|k| k.doubt()),
            // Asked to die and not dead yet: never `running` without a word.
            JobStatus::Running if self.kill.is_cancelled() => kill
                .and_then(|k| k.doubt())
                .or_else(|| KillState::Sent.doubt()),
            JobStatus::Running | JobStatus::Exited => None,
        };
        Outcome {
            status: state.status,
            exit_code: exit.code,
            signal: exit.signal,
            timed_out: state.status == JobStatus::TimedOut,
            duration_ms: duration.as_millis().min(u64::MAX as u128) as u64,
            kill_unconfirmed,
            awaiting_approval: state.awaiting.clone(),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.state().finished.is_some()
    }

    pub(super) fn finished_at(&self) -> Option<Instant> {
        self.state().finished
    }

    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn log_bytes(&self) -> u64 {
        self.state().log.held() as u64
    }

    /// stdout and stderr cut to the output budget.
    pub fn rendered(&self) -> Rendered {
        self.state().capture.render()
    }

    /// Output from `offset` on, at most `max` bytes.
    pub fn read_log(&self, offset: u64, max: usize) -> LogRead {
        let state = self.state();
        state.log.read(offset, max, state.finished.is_none())
    }

    /// The newest output up to `end` that fits `budget` (bytes of JSON text, escapes included):
    /// the start moves on by what did not fit, a few times, as escapes make text longer than
    /// bytes.
    pub fn read_newest(&self, end: u64, budget: usize) -> LogRead {
        let mut start = end.saturating_sub(budget as u64);
        let mut read = self.read_log(start, budget);
        for _ in 0..FIT_ATTEMPTS {
            if read.next_offset >= end {
                break;
            }
            start += end - read.next_offset;
            read = self.read_log(start, budget);
        }
        read
    }

    /// Marks a reader that will read from `offset` next, within `wait` plus the follow grace:
    /// until then the job holds output back rather than drop any of it unread.
    pub fn follow(&self, offset: u64, wait: Duration) {
        self.state().follower = Some(Follower {
            offset,
            until: Instant::now() + wait + self.follow_grace,
        });
        self.follower_moved.notify_one();
    }

    /// Waits until `len` more bytes of output can be kept without dropping any a following
    /// reader has not read, or that reader stops following.
    async fn room_for(&self, len: usize) {
        while let Some(until) = self.held_back_until(len) {
            tokio::select! {
                _ = self.follower_moved.notified() => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    /// When keeping `len` more bytes now would drop bytes a following reader has not read: until
    /// when that reader counts as following. None when there is room.
    fn held_back_until(&self, len: usize) -> Option<Instant> {
        let state = self.state();
        let (end, cap) = (state.log.end(), state.log.cap());
        let follower = state.follower?;
        follower
            .must_wait(end, len, cap, Instant::now())
            .then_some(follower.until)
    }

    /// Offset just past the newest output that can be read (a character still arriving is not).
    pub fn log_end(&self) -> u64 {
        let state = self.state();
        state.log.readable_end(state.finished.is_none())
    }

    /// The newest few output lines, for progress messages.
    pub fn last_lines(&self) -> String {
        self.state().log.last_lines(3, 160)
    }

    /// A receiver that wakes on every output chunk and at the end.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until the job has finished.
    pub async fn finished(&self) {
        let mut changes = self.subscribe();
        while !self.is_finished() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until output past `offset` exists or the job finishes.
    pub async fn output_after(&self, offset: u64) {
        let mut changes = self.subscribe();
        while !self.is_finished() && self.log_end() <= offset {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Sets the job's timeout, counted from its start, to `timeout` (a foreground call that
    /// detached gets the background default).
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout.send_replace(timeout);
    }

    /// Ends when the job has run past its timeout (which may be raised meanwhile): what
    /// [`drive`] kills a command at, and what other jobs enforce themselves.
    pub async fn past_timeout(&self) {
        let mut timeout = self.timeout.subscribe();
        let started = tokio::time::Instant::from_std(self.started);
        loop {
            let deadline = started + *timeout.borrow_and_update();
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                changed = timeout.changed() => if changed.is_err() {
                    return std::future::pending().await;
                },
            }
        }
    }

    /// A token cancelled when the job is asked to stop (`job_kill`, shutdown).
    pub fn kill_token(&self) -> CancellationToken {
        self.kill.clone()
    }

    /// Records the Claude session of a `claude` job (the first one told is kept).
    pub fn set_session_id(&self, id: &str) {
        self.state().session_id.get_or_insert_with(|| id.to_owned());
    }

    /// Marks the job as waiting for a person's approval of `what` (`None`: no longer).
    pub fn set_awaiting(&self, what: Option<String>) {
        self.state().awaiting = what;
        self.changed.send_modify(|n| *n += 1);
    }

    /// The Claude session of a `claude` job, once known.
    pub fn session_id(&self) -> Option<String> {
        self.state().session_id.clone()
    }

    /// The tool's result for a job that is not a plain command, once it has one.
    pub fn detail(&self) -> Option<serde_json::Value> {
        self.state().detail.clone()
    }

    /// Appends a line of text to the job's output.
    pub fn record_line(&self, line: &str) {
        let mut text = line.to_owned();
        text.push('\n');
        self.record(OutputStream::Stdout, text.as_bytes());
    }

    /// Ends a job that is not a plain command, with its result.
    pub fn finish_with(&self, status: JobStatus, detail: serde_json::Value) {
        self.state().detail = Some(detail);
        self.finish(status, ExitStatus::default());
    }

    fn record(&self, stream: OutputStream, data: &[u8]) {
        {
            let mut state = self.state();
            state.capture.push(stream, data);
            state.log.push(data);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn finish(&self, status: JobStatus, exit: ExitStatus) {
        {
            let mut state = self.state();
            state.status = status;
            state.exit = Some(exit);
            state.finished = Some(Instant::now());
        }
        self.changed.send_modify(|n| *n += 1);
    }
}

/// Drives `process` to its end: records output, enforces the timeout, honours kill requests.
/// While a reader follows the job (see [`Job::follow`]), output it has not read yet is never
/// dropped: the next chunk waits, and so does the process behind it. The job's status is final
/// when this returns.
pub(super) async fn drive(job: Arc<Job>, mut process: Process) {
    job.state().kill_state = Some(process.kill_state());
    let past_timeout = job.past_timeout();
    tokio::pin!(past_timeout);
    let mut ending: Option<JobStatus> = None;
    let mut held: Option<(OutputStream, Bytes)> = None;
    loop {
        let held_len = held.as_ref().map_or(0, |(_, data)| data.len());
        tokio::select! {
            event = process.next_event(), if held.is_none() => match event {
                Some(ProcessEvent::Output(stream, data)) => held = Some((stream, data)),
                Some(ProcessEvent::Exited(exit)) => {
                    job.finish(ending.unwrap_or(JobStatus::Exited), exit);
                    break;
                }
                None => {
                    job.finish(ending.unwrap_or(JobStatus::Exited), ExitStatus::default());
                    break;
                }
            },
            _ = job.room_for(held_len), if held.is_some() && ending.is_none() => {}
            _ = &mut past_timeout, if ending.is_none() => {
                tracing::info!(job = %job.id, "timed out; killing its process tree");
                ending = Some(JobStatus::TimedOut);
                process.kill();
            }
            _ = job.kill.cancelled(), if ending.is_none() => {
                tracing::info!(job = %job.id, "killing its process tree on request");
                ending = Some(JobStatus::Killed);
                process.kill();
            }
        }
        // Kept at once unless a follower is owed room; once the job is ending nothing waits.
        if let Some((stream, data)) = held.take() {
            if ending.is_some() || job.held_back_until(data.len()).is_none() {
                job.record(stream, &data);
            } else {
                held = Some((stream, data));
            }
        }
    }
    tracing::debug!(job = %job.id, status = ?job.outcome().status, "job finished");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        for status in [
            JobStatus::Running,
            JobStatus::Exited,
            JobStatus::Killed,
            JobStatus::TimedOut,
        ] {
            assert_eq!(serde_json::json!(status), status.as_str());
        }
        for kind in [JobKind::Exec, JobKind::Claude, JobKind::Transfer] {
            assert_eq!(serde_json::json!(kind), kind.as_str());
        }
    }
}
