//! Progress notifications of a call that waits on a job: its newest output as it comes, and a
//! heartbeat at least every [`HEARTBEAT`] while it is quiet, so a client that gives up on calls
//! without progress (the TypeScript SDK, after 60 s) keeps waiting for silent work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use tokio::time::Instant;

use crate::jobs::Job;

/// Least time between two notifications about new output.
const OUTPUT_INTERVAL: Duration = Duration::from_millis(250);
/// Most output one notification carries.
const MESSAGE_BYTES: usize = 600;
/// Most time between two notifications, output or not.
pub const HEARTBEAT: Duration = Duration::from_secs(4);

/// Reports on `job` to the client that sent `token` until the job has finished, the output it
/// had not reported yet included. `progress` is the seconds since the call began, so it
/// increases with every notification, as MCP asks. Without a token, just waits for the end.
pub async fn report(job: &Job, token: Option<ProgressToken>, peer: &Peer<RoleServer>) {
    let Some(token) = token else {
        return job.finished().await;
    };
    beat(job, |progress, message| {
        send(peer, &token, progress, message)
    })
    .await
}

async fn send(peer: &Peer<RoleServer>, token: &ProgressToken, progress: f64, message: String) {
    let param = ProgressNotificationParam::new(token.clone(), progress).with_message(message);
    if let Err(e) = peer.notify_progress(param).await {
        tracing::debug!(error = %e, "cannot send progress");
    }
}

/// [`report`] for the jobs of a fan-out, until all have finished: how many are done and the
/// newest output line of the one that wrote last (`3/5 done; gpu2: epoch 4`), at most every
/// OUTPUT_INTERVAL while anything changes, and at least every HEARTBEAT.
pub async fn report_all(jobs: &[Arc<Job>], token: Option<ProgressToken>, peer: &Peer<RoleServer>) {
    let all_done = futures::future::join_all(jobs.iter().map(|job| job.finished()));
    let Some(token) = token else {
        all_done.await;
        return;
    };
    let mut clock = Clock::start();
    let mut ends: Vec<u64> = jobs.iter().map(|job| job.log_end()).collect();
    let mut done = 0;
    let mut quiet_until = Instant::now() + HEARTBEAT;
    tokio::pin!(all_done);
    loop {
        let finished = tokio::select! {
            _ = &mut all_done => true,
            _ = tokio::time::sleep(OUTPUT_INTERVAL) => false,
        };
        let now_done = jobs.iter().filter(|job| job.is_finished()).count();
        let wrote = (jobs.iter().zip(&mut ends))
            .filter(|(job, end)| job.log_end() != **end)
            .map(|(job, end)| {
                *end = job.log_end();
                job
            })
            .last();
        let now = Instant::now();
        if now_done != done || wrote.is_some() || now >= quiet_until {
            done = now_done;
            let mut message = format!("{done}/{} done", jobs.len());
            let newest =
                wrote.and_then(|job| Some((job, job.last_lines().lines().last()?.to_owned())));
            if let Some((job, line)) = newest {
                let line: String = line.chars().take(MESSAGE_BYTES).collect();
                message.push_str(&format!("; {}: {line}", job.host));
            }
            send(peer, &token, clock.tick(), message).await;
            quiet_until = now + HEARTBEAT;
        }
        if finished {
            return;
        }
    }
}

/// The `progress` values of one call: seconds since it began, strictly increasing (as MCP
/// requires) even for two notifications within a millisecond.
struct Clock {
    started: Instant,
    last: f64,
}

impl Clock {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            last: 0.0,
        }
    }

    /// Seconds since the start.
    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The next notification's `progress`.
    fn tick(&mut self) -> f64 {
        self.last = self.elapsed().max(self.last + 0.001);
        self.last
    }
}

/// The timing of [`report`]: `send(progress, message)` on new output (at most every
/// OUTPUT_INTERVAL, and once more at the end) and whenever HEARTBEAT passes without one.
async fn beat<F, Fut>(job: &Job, mut send: F)
where
    F: FnMut(f64, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut clock = Clock::start();
    let mut changes = job.subscribe();
    let mut sent_end = job.log_end();
    let mut next_allowed = Instant::now();
    let mut quiet_until = next_allowed + HEARTBEAT;
    // Checked after subscribing: an end before it would never be told.
    while !job.is_finished() {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() || job.is_finished() {
                    break;
                }
                tokio::time::sleep_until(next_allowed.min(quiet_until)).await;
            }
            _ = tokio::time::sleep_until(quiet_until) => {}
        }
        let now = Instant::now();
        let output = job.log_end() != sent_end;
        if !output && now < quiet_until {
            continue;
        }
        let message = if output {
            new_output(job, &mut sent_end)
        } else {
            heartbeat(job, clock.elapsed())
        };
        send(clock.tick(), message).await;
        next_allowed = now + OUTPUT_INTERVAL;
        quiet_until = now + HEARTBEAT;
    }
    if job.log_end() != sent_end {
        send(clock.tick(), new_output(job, &mut sent_end)).await;
    }
}

/// What arrived since `sent_end` (its newest part, when much did); moves `sent_end` past it.
fn new_output(job: &Job, sent_end: &mut u64) -> String {
    let end = job.log_end();
    let from = (*sent_end).max(end.saturating_sub(MESSAGE_BYTES as u64));
    *sent_end = end;
    job.read_log(from, MESSAGE_BYTES).text.trim_end().to_owned()
}

/// A heartbeat's message: how long the job has run, and its newest output line.
fn heartbeat(job: &Job, elapsed: f64) -> String {
    match job.last_lines().lines().last() {
        None => format!("running for {elapsed:.0} s, no output yet"),
        Some(newest) => format!("running for {elapsed:.0} s; last output: {newest}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::jobs::{JobKind, JobManager, JobSpec, JobStatus};

    fn spec() -> JobSpec {
        JobSpec {
            kind: JobKind::Claude,
            owner: crate::auth::Principal::stdio(),
            host: "local".into(),
            group: None,
            command: "test".into(),
            timeout: Duration::from_secs(3600),
            output_limit: 1000,
            log_bytes: 1000,
            follow_grace: Duration::from_secs(2),
            hold_for_first_reader: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_ended_before_the_report_began_is_reported_at_once() {
        let jobs = JobManager::new(Duration::from_secs(60));
        let job = jobs.start_task(spec(), |_| async {}).unwrap();
        job.record_line("all done");
        job.finish_with(JobStatus::Exited, serde_json::Value::Null);
        let sent = Mutex::new(Vec::new());
        let started = Instant::now();
        beat(&job, |_, message| {
            sent.lock().unwrap().push(message);
            async {}
        })
        .await;
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no heartbeat was waited for"
        );
        assert!(
            sent.lock().unwrap().is_empty(),
            "the output was there before"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_job_gets_a_heartbeat_at_least_every_few_seconds() {
        let jobs = JobManager::new(Duration::from_secs(60));
        let job = jobs
            .start_task(spec(), |_| std::future::pending::<()>())
            .unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let started = Instant::now();
        let reporter = beat(&job, |progress, message| {
            log.lock()
                .unwrap()
                .push((started.elapsed(), progress, message));
            async {}
        });
        let work = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            job.record_line("compiling");
            tokio::time::sleep(Duration::from_secs(30)).await;
        };
        let work = async {
            work.await;
            job.record_line("linking");
            job.finish_with(JobStatus::Exited, serde_json::Value::Null);
        };
        // The reporter returns once the job has finished, its last output reported.
        tokio::join!(reporter, work);
        let sent = sent.lock().unwrap();
        let mut previous = (Duration::ZERO, 0.0);
        for (at, progress, _) in sent.iter() {
            assert!(
                *at - previous.0 <= HEARTBEAT,
                "silent from {previous:?} to {at:?}"
            );
            assert!(*progress > previous.1, "progress must increase: {sent:?}");
            previous = (*at, *progress);
        }
        assert!(Duration::from_secs(60) - previous.0 <= HEARTBEAT);
        let messages: Vec<&str> = sent.iter().map(|s| s.2.as_str()).collect();
        assert_eq!(messages[0], "running for 4 s, no output yet");
        assert!(messages.contains(&"compiling"), "{messages:?}");
        let [.., beat, end] = &messages[..] else {
            panic!("{messages:?}")
        };
        assert!(beat.ends_with("last output: compiling"), "{beat}");
        assert_eq!(*end, "linking");
    }
}
