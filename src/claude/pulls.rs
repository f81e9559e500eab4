//! The session pulls under way in the background (after a turn, after closing a process), so that
//! an explicit sync or a listing can wait for those of its project or sessions and report what
//! is current rather than race them.

use std::sync::Mutex;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::error::{Error, Result};

/// Longest an explicit sync or a listing waits for pulls under way before going ahead (with a
/// warning). A pull itself gives up after two minutes; this keeps a stalled one from holding a
/// call that long.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One pull under way.
struct UnderWay {
    host: String,
    /// The project's physical path on the host.
    cwd: String,
    session_id: String,
    /// Cancelled when the pull ends, however it ends.
    done: CancellationToken,
}

/// Which pulls a caller waits for.
#[derive(Debug, Clone, Copy)]
pub enum Wanted<'a> {
    /// Those of a project on a host, or of one session there.
    Project {
        host: &'a str,
        cwd: &'a str,
        session_id: Option<&'a str>,
    },
    /// Those of these sessions.
    Sessions(&'a [String]),
}

impl Wanted<'_> {
    fn matches(&self, pull: &UnderWay) -> bool {
        match *self {
            Wanted::Project {
                host,
                cwd,
                session_id,
            } => {
                pull.host == host
                    && pull.cwd == cwd
                    && session_id.is_none_or(|id| id == pull.session_id)
            }
            Wanted::Sessions(ids) => ids.contains(&pull.session_id),
        }
    }
}

/// Held by a pull while it runs: dropping it (the pull ended, or its task was dropped) marks the
/// pull done.
pub struct Tracked {
    _done: DropGuard,
}

/// The pulls under way in this server.
#[derive(Default)]
pub struct Pulls {
    under_way: Mutex<Vec<UnderWay>>,
}

impl Pulls {
    /// Registers a pull of `session_id` (project `cwd` on `host`) before it starts; it counts as
    /// under way until the returned guard is dropped.
    pub(super) fn track(&self, host: &str, cwd: &str, session_id: &str) -> Tracked {
        let done = CancellationToken::new();
        let mut under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
        under_way.retain(|p| !p.done.is_cancelled());
        under_way.push(UnderWay {
            host: host.to_owned(),
            cwd: cwd.to_owned(),
            session_id: session_id.to_owned(),
            done: done.clone(),
        });
        Tracked {
            _done: done.drop_guard(),
        }
    }

    /// Waits until every pull `wanted` that is under way now has ended, at most [`WAIT_LIMIT`],
    /// so that what the caller reports next is current. Gives a warning for each still under
    /// way at the limit; `cancel` ends the wait with [`Error::Cancelled`].
    pub async fn settle(
        &self,
        wanted: Wanted<'_>,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>> {
        self.wait(wanted, WAIT_LIMIT, cancel).await
    }

    /// [`Pulls::settle`], waiting at most `limit`.
    async fn wait(
        &self,
        wanted: Wanted<'_>,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>> {
        let pending: Vec<(String, CancellationToken)> = {
            let under_way = self.under_way.lock().unwrap_or_else(|e| e.into_inner());
            under_way
                .iter()
                .filter(|p| !p.done.is_cancelled() && wanted.matches(p))
                .map(|p| (p.session_id.clone(), p.done.clone()))
                .collect()
        };
        let all_done = futures::future::join_all(pending.iter().map(|(_, d)| d.cancelled()));
        tokio::select! {
            _ = all_done => return Ok(Vec::new()),
            _ = tokio::time::sleep(limit) => {}
            _ = cancel.cancelled() => return Err(Error::Cancelled),
        }
        Ok(pending
            .iter()
            .filter(|(_, done)| !done.is_cancelled())
            .map(|(id, _)| {
                format!(
                    "the pull of session {id} after its last turn was still running after {}s; what is reported here may miss that turn",
                    limit.as_secs()
                )
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: Wanted<'static> = Wanted::Project {
        host: "gpu",
        cwd: "/p",
        session_id: None,
    };

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_pull_does() {
        let pulls = std::sync::Arc::new(Pulls::default());
        let tracked = pulls.track("gpu", "/p", "s1");
        let ending = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(tracked);
        });
        let started = tokio::time::Instant::now();
        let warnings = pulls
            .wait(PROJECT, WAIT_LIMIT, &CancellationToken::new())
            .await;
        assert!(warnings.expect("not cancelled").is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        ending.await.expect("ended");
    }

    /// Whether a wait for `wanted` ends at once with nothing to report.
    async fn nothing_to_wait_for(pulls: &Pulls, wanted: Wanted<'_>) -> bool {
        let started = tokio::time::Instant::now();
        let waited = pulls
            .wait(wanted, WAIT_LIMIT, &CancellationToken::new())
            .await;
        waited.is_ok_and(|w| w.is_empty()) && started.elapsed() == Duration::ZERO
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_wanted_pulls_are_waited_for() {
        let pulls = Pulls::default();
        let _other_project = pulls.track("gpu", "/q", "s2");
        let _other_host = pulls.track("box", "/p", "s3");
        let _other_session = pulls.track("gpu", "/p", "s4");
        let one = Wanted::Project {
            host: "gpu",
            cwd: "/p",
            session_id: Some("s1"),
        };
        assert!(nothing_to_wait_for(&pulls, one).await);
        let ids = ["s9".to_owned()];
        assert!(nothing_to_wait_for(&pulls, Wanted::Sessions(&ids)).await);
        // A finished pull is not waited for either.
        drop(pulls.track("gpu", "/p", "s1"));
        assert!(nothing_to_wait_for(&pulls, one).await);
        // And the wanted ones are.
        let s4 = ["s4".to_owned()];
        assert!(!nothing_to_wait_for(&pulls, Wanted::Sessions(&s4)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_pull_is_waited_for_up_to_the_limit_and_named() {
        let pulls = Pulls::default();
        let _stalled = pulls.track("gpu", "/p", "s1");
        let started = tokio::time::Instant::now();
        let warnings = pulls
            .wait(PROJECT, WAIT_LIMIT, &CancellationToken::new())
            .await;
        let warnings = warnings.expect("not cancelled");
        assert_eq!(started.elapsed(), WAIT_LIMIT);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("session s1") && warnings[0].contains("30s"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_clients_cancel_ends_the_wait() {
        let pulls = Pulls::default();
        let _stalled = pulls.track("gpu", "/p", "s1");
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let started = tokio::time::Instant::now();
        let waited = pulls.wait(PROJECT, WAIT_LIMIT, &cancel).await;
        assert!(matches!(waited, Err(Error::Cancelled)));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }
}
