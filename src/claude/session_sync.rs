//! Keeping a host's Claude session files and this machine's in step around turns: the local copy
//! is pushed before a session is resumed on a host, and the session is pulled after each turn.
//! A failure is a warning in the turn's result, never a failed turn.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

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
    /// Brought here after the turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulled: Option<SyncReport>,
    /// Sync failures; the turn itself is unaffected.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl TurnSync {
    /// Pushes the local copy of `session_id` to `host` (only what the host lacks).
    pub async fn push(&mut self, hosts: &Hosts, host: &str, cwd: &str, session_id: &str) {
        let cwd = Cwd::Given(cwd.to_owned());
        let request = request(host, cwd, Direction::Push, session_id, None);
        match run(hosts, &request).await {
            Ok(report) => self.pushed = Some(report),
            Err(warning) => self
                .warnings
                .push(format!("push before the turn: {warning}")),
        }
    }

    /// Pulls `session_id` from `host`, once its log holds `settle_on` (the turn's last message).
    /// `physical_cwd` is the project path as Claude reported it.
    pub async fn pull(
        &mut self,
        hosts: &Hosts,
        host: &str,
        physical_cwd: &str,
        session_id: &str,
        settle_on: Option<String>,
    ) {
        let cwd = Cwd::Physical(physical_cwd.to_owned());
        let request = request(host, cwd, Direction::Pull, session_id, settle_on);
        match run(hosts, &request).await {
            Ok(report) => self.pulled = Some(report),
            Err(warning) => self
                .warnings
                .push(format!("pull after the turn: {warning}")),
        }
    }
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

async fn run(hosts: &Hosts, request: &SyncRequest) -> Result<SyncReport, String> {
    match tokio::time::timeout(SYNC_LIMIT, sync_with_host(hosts, request)).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => {
            tracing::warn!(host = %request.host, error = %e, "session sync failed");
            Err(e.to_string())
        }
        Err(_) => Err(format!("gave up after {}s", SYNC_LIMIT.as_secs())),
    }
}
