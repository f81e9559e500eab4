//! Every command outpost runs is a job: the manager starts them, finds them, forgets them and kills them all at shutdown.

mod follow;
mod job;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use job::{Job, JobKind, JobSpec, JobStatus, Outcome};

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::transport::Process;

/// Finished jobs kept at most, whatever their age.
const MAX_FINISHED: usize = 64;
/// Output bytes that finished jobs may hold in all.
const MAX_FINISHED_BYTES: u64 = 64 << 20;

/// Owns all jobs and the tasks that drive them.
///
/// Dropping the manager does not wait for anything; call [`JobManager::shutdown`] to kill every
/// running process tree and wait until they are dead.
pub struct JobManager {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    tasks: TaskTracker,
    /// Parent of every job's kill token: cancelling it kills everything.
    shutdown: CancellationToken,
    next_id: AtomicU64,
    retention: Duration,
}

impl JobManager {
    pub fn new(retention: Duration) -> Self {
        Self {
            jobs: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            next_id: AtomicU64::new(1),
            retention,
        }
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes ownership of a started process as a new job.
    pub fn start(&self, process: Process, spec: JobSpec) -> Result<Arc<Job>> {
        let job = self.register(&spec)?;
        self.tasks.spawn(job::drive(job.clone(), process));
        Ok(job)
    }

    /// Starts a job that is not a plain command: `work` gets the job to record its output in,
    /// and must end it with [`Job::finish_with`]; it should stop when [`Job::kill_token`] fires.
    pub fn start_task<F>(&self, spec: JobSpec, work: impl FnOnce(Arc<Job>) -> F) -> Result<Arc<Job>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let job = self.register(&spec)?;
        self.tasks.spawn(work(job.clone()));
        Ok(job)
    }

    fn register(&self, spec: &JobSpec) -> Result<Arc<Job>> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.prune();
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The random part makes ids unguessable: on a served host a job is reached only by
        // whoever started it (or was told its id), and ids from an earlier run find nothing.
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let id = format!("job-{n}-{}", &secret[..12]);
        let job = Arc::new(Job::new(id.clone(), n, spec, self.shutdown.child_token()));
        self.jobs().insert(id, job.clone());
        Ok(job)
    }

    /// The job `id`, if `owner` started it: another principal's job is unknown to them, exactly
    /// like one that never existed (its id cannot even be probed).
    pub fn get_for(&self, id: &str, owner: &Principal) -> Result<Arc<Job>> {
        self.prune();
        self.jobs()
            .get(id)
            .filter(|job| job.owner == *owner)
            .cloned()
            .ok_or_else(|| Error::UnknownJob(id.to_owned()))
    }

    /// The jobs `owner` started that are still known (running, or finished within retention),
    /// newest first.
    pub fn list_for(&self, owner: &Principal) -> Vec<Arc<Job>> {
        self.prune();
        let mut jobs: Vec<Arc<Job>> = (self.jobs().values())
            .filter(|job| job.owner == *owner)
            .cloned()
            .collect();
        jobs.sort_by_key(|job| std::cmp::Reverse(job.seq()));
        jobs
    }

    /// Drops a job nobody will ask about again (a foreground call whose output was returned whole).
    pub fn forget(&self, id: &str) {
        self.jobs().remove(id);
    }

    /// Number of jobs still running.
    pub fn running(&self) -> usize {
        self.jobs().values().filter(|j| !j.is_finished()).count()
    }

    /// Kills every running process tree and waits (up to `limit`) until they are all dead.
    pub async fn shutdown(&self, limit: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(limit, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some processes were still dying at shutdown");
        }
    }

    /// Drops finished jobs past their retention, then the oldest beyond the count and byte limits.
    fn prune(&self) {
        let now = Instant::now();
        let mut jobs = self.jobs();
        let mut finished: Vec<(Instant, String, u64)> = jobs
            .values()
            .filter_map(|j| j.finished_at().map(|t| (t, j.id.clone(), j.log_bytes())))
            .collect();
        finished.sort();
        let mut bytes: u64 = finished.iter().map(|f| f.2).sum();
        let mut count = finished.len();
        for (at, id, size) in finished {
            let expired = now.duration_since(at) > self.retention;
            if !(expired || count > MAX_FINISHED || bytes > MAX_FINISHED_BYTES) {
                break;
            }
            jobs.remove(&id);
            count -= 1;
            bytes -= size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            kind: JobKind::Exec,
            owner: crate::auth::Principal::stdio(),
            host: "local".into(),
            group: None,
            command: "true".into(),
            timeout: Duration::from_secs(1),
            output_limit: 100,
            log_bytes: 100,
            follow_grace: Duration::from_secs(2),
            hold_for_first_reader: false,
        }
    }

    #[test]
    fn job_ids_carry_an_unguessable_part() {
        let manager = JobManager::new(Duration::from_secs(60));
        let a = manager.register(&spec()).unwrap().id.clone();
        let b = manager.register(&spec()).unwrap().id.clone();
        let random = |id: &str| id.rsplit('-').next().unwrap().to_owned();
        assert!(
            a.starts_with("job-1-") && b.starts_with("job-2-"),
            "{a} {b}"
        );
        assert_eq!(random(&a).len(), 12);
        assert_ne!(random(&a), random(&b));
        let owner = Principal::stdio();
        assert!(manager.get_for(&a, &owner).is_ok());
        assert!(manager.get_for("job-1-000000000000", &owner).is_err());
    }

    fn spec_of(owner: &str, host: &str) -> JobSpec {
        JobSpec {
            owner: Principal::new(owner),
            host: host.into(),
            ..spec()
        }
    }

    #[test]
    fn a_principal_finds_only_its_own_jobs_newest_first() {
        let manager = JobManager::new(Duration::from_secs(60));
        let (ana, bob) = (Principal::new("ana"), Principal::new("bob"));
        let first = manager.register(&spec_of("ana", "local")).unwrap();
        let bobs = manager.register(&spec_of("bob", "box")).unwrap();
        let second = manager.register(&spec_of("ana", "box")).unwrap();
        first.finish_with(JobStatus::Exited, serde_json::Value::Null);

        let ids = |jobs: Vec<Arc<Job>>| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(manager.list_for(&ana)),
            vec![second.id.as_str(), first.id.as_str()]
        );
        assert_eq!(ids(manager.list_for(&bob)), vec![bobs.id.as_str()]);
        assert!(manager.list_for(&Principal::stdio()).is_empty());

        assert!(manager.get_for(&first.id, &ana).is_ok());
        let refused = manager.get_for(&first.id, &bob).err().unwrap().to_string();
        assert_eq!(
            refused,
            Error::UnknownJob(first.id.clone()).to_string(),
            "another principal's job reads as one that never existed"
        );
    }
}
