//! Keeping a host's Claude session files and this machine's in step around turns: the local copy
//! is pushed before a session is resumed on a host, and the session is pulled after each turn, in
//! the background once the turn is answered (Claude writes the turn to its log only ~0.1 s after
//! its result). A failure is a warning in a turn's result, never a failed turn.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use super::pulls::Pulls;
use super::worker::Worker;
use crate::hosts::Hosts;
use crate::sync::{Cwd, Direction, SyncReport, SyncRequest, sync_with_host};

/// Longest a sync around a turn may take before it is given up (as a warning).
const SYNC_LIMIT: Duration = Duration::from_secs(120);

/// What was synced around one turn.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct TurnSync {
    /// Sent to the host before the turn (the local copy was ahead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<SyncReport>,
    /// The session is being pulled here in the background now; the next turn of this session
    /// waits for it and reports it as `previous_pull`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pulling: bool,
    /// How the background pull after this session's previous turn went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_pull: Option<PullOutcome>,
    /// Sync failures; the turn itself is unaffected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How a background pull went.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct PullOutcome {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulled: Option<SyncReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl PullOutcome {
    /// Pulls `session_id` from `host`, once its log holds `settle_on` (the turn's last message).
    /// `physical_cwd` is the project path as Claude reported it.
    pub async fn pull(
        hosts: &Hosts,
        host: &str,
        physical_cwd: &str,
        session_id: &str,
        settle_on: Option<String>,
    ) -> Self {
        let cwd = Cwd::Physical(physical_cwd.to_owned());
        let request = request(host, cwd, Direction::Pull, session_id, settle_on);
        match attempt(hosts, &request, "pull after the turn").await {
            // Its warnings (files passed over) stand with the others, where the turn shows them.
            Ok(mut report) => Self {
                warnings: std::mem::take(&mut report.warnings),
                pulled: Some(report),
            },
            Err(warning) => Self {
                pulled: None,
                warnings: vec![warning],
            },
        }
    }
}

impl TurnSync {
    /// Pushes the local copy of `session_id` to `host` (only what the host lacks).
    pub async fn push(&mut self, hosts: &Hosts, host: &str, cwd: &str, session_id: &str) {
        let cwd = Cwd::Given(cwd.to_owned());
        let request = request(host, cwd, Direction::Push, session_id, None);
        match attempt(hosts, &request, "push before the turn").await {
            Ok(mut report) => {
                self.warnings.append(&mut report.warnings);
                self.pushed = Some(report);
            }
            Err(warning) => self.warnings.push(warning),
        }
    }
}

/// Runs `request`, bounded by SYNC_LIMIT; a failure is logged and becomes the warning returned.
async fn attempt(hosts: &Hosts, request: &SyncRequest, what: &str) -> Result<SyncReport, String> {
    let outcome = tokio::time::timeout(SYNC_LIMIT, sync_with_host(hosts, request)).await;
    let warning = match outcome {
        Ok(Ok(report)) => return Ok(report),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("gave up after {}s", SYNC_LIMIT.as_secs()),
    };
    tracing::warn!(host = %request.host, "session sync failed: {what}: {warning}");
    Err(format!("{what}: {warning}"))
}

fn request(
    host: &str,
    cwd: Cwd,
    direction: Direction,
    session_id: &str,
    settle_on: Option<String>,
) -> SyncRequest {
    SyncRequest {
        host: host.to_owned(),
        cwd,
        local_cwd: None,
        direction,
        session_id: Some(session_id.to_owned()),
        settle_on,
    }
}

/// Closes `worker` gently and, on a host whose sessions are synced, pulls its session once more:
/// Claude appends a last record when it exits, and without it the copies here and on the next
/// host would diverge. That pull counts as under way in `pulls` from this call on, so a sync
/// asked for while the process is closing waits for it too.
pub(super) fn close_and_pull(
    worker: Worker,
    hosts: Arc<Hosts>,
    grace: Duration,
    pulls: &Pulls,
) -> impl Future<Output = ()> + Send + 'static {
    let syncs = hosts.syncs_sessions(&worker.host);
    let tracked = syncs.then(|| pulls.track(&worker.host, &worker.cwd, &worker.session_id));
    async move {
        let (host, cwd, id) = (
            worker.host.clone(),
            worker.cwd.clone(),
            worker.session_id.clone(),
        );
        worker.close(grace).await;
        if tracked.is_some() {
            // A failure is logged by the sync; nobody waits for this result.
            PullOutcome::pull(&hosts, &host, &cwd, &id, None).await;
        }
        drop(tracked);
    }
}
