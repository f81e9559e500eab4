//! Where a Claude turn runs: the host (or group member) and project of a call, the `claude`
//! executable there, and moving a new session on to another group member when one is unreachable.

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::launch::Locate;
use super::{Claude, TurnReport, TurnRequest};
use crate::error::Result;

impl Claude {
    /// Runs one turn, sending every stream-json event to `events` (dropped at the end, which
    /// closes the channel). A cancel interrupts it. A new session on a group moves on to another
    /// member when the chosen one cannot be reached.
    pub async fn turn(
        &self,
        request: TurnRequest,
        events: mpsc::UnboundedSender<Value>,
        caller_cancel: &CancellationToken,
    ) -> Result<TurnReport> {
        // The group may also come from the default host.
        let (host, _) = self.target(request.host.as_deref(), None, None);
        let attempts = match (self.hosts.group(&host), &request.session_id) {
            (Some(members), None) => members.len(),
            _ => 1,
        };
        let mut tried = Vec::new();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = self
                .turn_once(request.clone(), events.clone(), caller_cancel, &mut tried)
                .await;
            match outcome {
                Err(e) if e.is_unreachable() && attempt < attempts => {
                    tracing::warn!(error = %e, "group member unreachable; trying another");
                }
                outcome => return outcome,
            }
        }
    }

    /// The host (or group) and project of a call: as given, else where the session last ran (from
    /// the registry), else the default host and its workspace. A session that last ran on a member
    /// of the given group goes back to that member.
    pub fn target(
        &self,
        host: Option<&str>,
        cwd: Option<&str>,
        session_id: Option<&str>,
    ) -> (String, Option<String>) {
        let record = session_id.and_then(|id| self.registry.get(id));
        let host = host.map(str::trim).filter(|h| !h.is_empty());
        let host = match (host, &record) {
            // A resumed session goes back to the member of the group it ran on.
            (Some(group), Some(record))
                if self
                    .hosts
                    .group(group)
                    .is_some_and(|members| members.contains(&record.host)) =>
            {
                record.host.clone()
            }
            (Some(host), _) => host.to_owned(),
            (None, Some(record)) => record.host.clone(),
            (None, None) => self.hosts.effective_name(None),
        };
        let cwd = cwd
            .map(str::to_owned)
            .or_else(|| record.filter(|r| r.host == host).map(|r| r.cwd))
            .or_else(|| self.hosts.workspace(&host));
        (host, cwd)
    }

    pub(super) fn locate(&self, host: &str) -> Locate<'_> {
        Locate::configured(self.hosts.config().remotes.get(host))
    }
}
