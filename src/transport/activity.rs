//! What each host is doing: how many processes run there now, and its recent failures to start one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::health::{Failures, Health};

/// Per-host counts of running processes, shared by every transport, and memory of failures to
/// start (SSH connection failures are the pool's to remember).
#[derive(Debug, Clone, Default)]
pub struct Activity(Arc<Mutex<HashMap<String, HostActivity>>>);

#[derive(Debug, Default)]
struct HostActivity {
    running: usize,
    failures: Failures,
}

/// One unit of load on a host, counted until dropped.
#[derive(Debug)]
pub struct Ticket {
    activity: Activity,
    host: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(host) = self.activity.table().get_mut(&self.host) {
            host.running = host.running.saturating_sub(1);
        }
    }
}

impl Activity {
    fn table(&self) -> MutexGuard<'_, HashMap<String, HostActivity>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more process (or one about to start) on `host` while the ticket lives.
    pub fn ticket(&self, host: &str) -> Ticket {
        self.table().entry(host.to_owned()).or_default().running += 1;
        Ticket {
            activity: self.clone(),
            host: host.to_owned(),
        }
    }

    /// Processes running (or starting) on `host` now.
    pub fn running(&self, host: &str) -> usize {
        self.table().get(host).map_or(0, |h| h.running)
    }

    /// Remembers that a start on `host`, begun at `started`, failed: it is down for a while.
    pub fn failed(&self, host: &str, started: Instant, message: String) {
        let mut table = self.table();
        let entry = table.entry(host.to_owned()).or_default();
        entry.failures.failed(started, message);
    }

    /// Forgets `host`'s failures: a process started there.
    pub fn succeeded(&self, host: &str) {
        if let Some(entry) = self.table().get_mut(host) {
            entry.failures.succeeded();
        }
    }

    pub fn health(&self, host: &str) -> Health {
        let table = self.table();
        table
            .get(host)
            .map_or(Health::Ready, |h| h.failures.health())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tickets_count_until_dropped() {
        let activity = Activity::default();
        let a = activity.ticket("gpu1");
        let b = activity.ticket("gpu1");
        assert_eq!(activity.running("gpu1"), 2);
        drop(a);
        assert_eq!(activity.running("gpu1"), 1);
        drop(b);
        assert_eq!(activity.running("gpu1"), 0);
        assert_eq!(activity.running("gpu2"), 0);
    }

    #[tokio::test]
    async fn a_failure_marks_down_then_a_success_clears_it() {
        let activity = Activity::default();
        assert_eq!(activity.health("gpu1"), Health::Ready);
        activity.failed("gpu1", Instant::now(), "refused".into());
        assert!(
            matches!(activity.health("gpu1"), Health::Down { retry_in, .. } if retry_in <= Duration::from_secs(1))
        );
        activity.succeeded("gpu1");
        assert_eq!(activity.health("gpu1"), Health::Ready);
    }
}
