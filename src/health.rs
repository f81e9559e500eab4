//! The one memory of a host's recent failures: how long automatic retries wait after them
//! (1 s, 2 s, 4 s … 30 s), and the health that implies. SSH connections and engine starts share it.

use std::time::Duration;

use tokio::time::Instant;

/// Waits after consecutive failures: 1 s, 2 s, 4 s ... at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long automatic retries wait after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// Whether a host is worth sending work to, from what its last attempts said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Its last attempt worked, or none was made.
    Ready,
    /// Its last attempt failed, but the wait after that failure is over: worth one more try.
    Suspect(String),
    /// Failed recently; automatic retries (group picks, health checks) wait `retry_in`.
    Down { reason: String, retry_in: Duration },
}

/// The failures in a row of one host, if its last attempt failed.
#[derive(Debug, Default)]
pub struct Failures(Option<Failure>);

#[derive(Debug)]
struct Failure {
    count: u32,
    /// When the last failed attempt began.
    started: Instant,
    /// When it failed: the backoff counts from here.
    at: Instant,
    message: String,
}

impl Failures {
    /// Records that an attempt begun at `started` failed with `message`.
    pub fn failed(&mut self, started: Instant, message: String) {
        let count = self.0.as_ref().map_or(0, |f| f.count) + 1;
        self.0 = Some(Failure {
            count,
            started,
            at: Instant::now(),
            message,
        });
    }

    /// Forgets the failures: an attempt worked.
    pub fn succeeded(&mut self) {
        self.0 = None;
    }

    /// What the last failure said, if the last attempt failed.
    pub fn last(&self) -> Option<&str> {
        self.0.as_ref().map(|f| f.message.as_str())
    }

    /// The failure of an attempt that began at or after `since`, if the last one was such: a
    /// caller that has waited while that attempt ran shares its outcome instead of trying again
    /// at once (no stampede on a host that is down).
    pub fn failed_since(&self, since: Instant) -> Option<&str> {
        self.0
            .as_ref()
            .filter(|f| f.started >= since)
            .map(|f| f.message.as_str())
    }

    /// How many attempts in a row failed.
    pub fn count(&self) -> u32 {
        self.0.as_ref().map_or(0, |f| f.count)
    }

    /// Down while the backoff after the last failure lasts, then suspect; ready without one.
    pub fn health(&self) -> Health {
        let Some(f) = &self.0 else {
            return Health::Ready;
        };
        match backoff(f.count).checked_sub(f.at.elapsed()) {
            Some(retry_in) if !retry_in.is_zero() => Health::Down {
                reason: f.message.clone(),
                retry_in,
            },
            _ => Health::Suspect(f.message.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_down_for_its_backoff_then_suspect_until_a_success() {
        let mut failures = Failures::default();
        assert_eq!(failures.health(), Health::Ready);
        let started = Instant::now();
        failures.failed(started, "refused".into());
        failures.failed(started, "refused".into());
        assert!(
            matches!(failures.health(), Health::Down { retry_in, .. } if retry_in == Duration::from_secs(2))
        );
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(matches!(failures.health(), Health::Down { .. }));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(failures.health(), Health::Suspect("refused".into()));
        failures.succeeded();
        assert_eq!(failures.health(), Health::Ready);
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_attempt_begun_after_a_caller_asked_answers_for_it() {
        let mut failures = Failures::default();
        let before = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        let asked = Instant::now();
        failures.failed(before, "refused".into());
        assert_eq!(failures.failed_since(asked), None, "an older attempt");
        tokio::time::advance(Duration::from_millis(5)).await;
        failures.failed(Instant::now(), "timed out".into());
        assert_eq!(failures.failed_since(asked), Some("timed out"));
        assert_eq!(failures.count(), 2);
    }
}
