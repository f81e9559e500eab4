//! Subscriptions to job resources: `notifications/resources/updated` on new output (at most one
//! per resource every UPDATE_INTERVAL) and when the job ends, for legacy `resources/subscribe`
//! sessions and for 2026-07-28 `subscriptions/listen` requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rmcp::model::{ErrorData, ResourceUpdatedNotificationParam, SubscriptionFilter};
use rmcp::service::SubscriptionContext;
use rmcp::{Peer, RoleServer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::resources::job_id_of;
use super::{Outpost, guard};
use crate::jobs::Job;

/// Least time between two updates of one resource: a chatty command does not flood the client.
const UPDATE_INTERVAL: Duration = Duration::from_millis(500);

/// Calls `notify` after changes of `job`, at most every UPDATE_INTERVAL, and once more when it
/// ends; returns then, or as soon as `notify` says the client is gone. A job already finished
/// will not change: nothing is sent for it.
async fn follow_changes<F, Fut>(job: &Job, mut notify: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut changes = job.subscribe();
    if job.is_finished() {
        return;
    }
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        let finished = job.is_finished();
        if !notify().await || finished {
            return;
        }
        // Changes during the pause are marked in `changes`: one update covers them all.
        tokio::time::sleep(UPDATE_INTERVAL).await;
    }
}

/// One connection's `resources/subscribe` subscriptions (sessions of 2025-11-25 and before).
/// Each runs as a task that ends with its job, on `resources/unsubscribe`, when the connection
/// closes, or when the client can no longer be reached.
#[derive(Default)]
pub(super) struct Subscriptions {
    /// Per URI: the subscription's number and its cancellation.
    live: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next: AtomicU64,
    tasks: TaskTracker,
}

impl Subscriptions {
    fn live(&self) -> MutexGuard<'_, HashMap<String, (u64, CancellationToken)>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts sending `peer` updates of `job` as `uri` until `closed` (the connection) ends;
    /// subscribing again to a subscribed URI changes nothing.
    fn add(
        self: &Arc<Self>,
        uri: String,
        job: Arc<Job>,
        peer: Peer<RoleServer>,
        closed: &CancellationToken,
    ) {
        let mut live = self.live();
        if live.contains_key(&uri) {
            return;
        }
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = closed.child_token();
        live.insert(uri.clone(), (number, stop.clone()));
        let this = self.clone();
        self.tasks.spawn(async move {
            let notify = || async {
                let param = ResourceUpdatedNotificationParam::new(uri.clone());
                peer.notify_resource_updated(param).await.is_ok()
            };
            tokio::select! {
                _ = follow_changes(&job, notify) => {}
                _ = stop.cancelled() => {}
            }
            this.end(&uri, number);
        });
    }

    /// Stops the subscription to `uri`, if any.
    fn remove(&self, uri: &str) {
        if let Some((_, stop)) = self.live().remove(uri) {
            stop.cancel();
        }
    }

    /// Forgets subscription `number` to `uri` once its task is done (unless replaced since).
    fn end(&self, uri: &str, number: u64) {
        let mut live = self.live();
        if live.get(uri).is_some_and(|(n, _)| *n == number) {
            live.remove(uri);
        }
    }
}

impl Outpost {
    /// `resources/subscribe`: updates of an own job's resource go to this connection.
    pub(super) fn subscribe_job(
        &self,
        uri: String,
        principal: &crate::auth::Principal,
        peer: Peer<RoleServer>,
    ) -> Result<(), ErrorData> {
        let job = self.owned_job(&uri, principal)?;
        self.subscriptions.add(uri, job, peer, &self.closed);
        Ok(())
    }

    /// `resources/unsubscribe`: no more updates of `uri` on this connection.
    pub(super) fn unsubscribe_job(&self, uri: &str) {
        self.subscriptions.remove(uri);
    }

    /// The part of a `subscriptions/listen` filter outpost serves: every job resource URI,
    /// whether or not such a job is held (saying so would let anyone probe ids: the filter comes
    /// without the caller, so `listen` picks out the caller's own jobs).
    pub(super) fn job_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> SubscriptionFilter {
        let uris = (requested.resource_subscriptions.iter().flatten())
            .filter(|uri| job_id_of(uri).is_some())
            .cloned();
        SubscriptionFilter::builder()
            .resource_subscriptions(uris)
            .build()
    }

    /// `subscriptions/listen`: updates of the caller's own jobs among the accepted URIs go to
    /// the request's stream until the client cancels it or the connection closes.
    pub(super) async fn listen_jobs(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let principal = guard::principal_of(context.request_context(), &self.principal);
        let accepted = context.accepted().resource_subscriptions.clone();
        let jobs: Vec<(String, Arc<Job>)> = (accepted.into_iter().flatten())
            .filter_map(|uri| Some((uri.clone(), self.owned_job(&uri, &principal).ok()?)))
            .collect();
        let sink = context.sink();
        let watches = futures::future::join_all(jobs.iter().map(|(uri, job)| {
            follow_changes(job, move || async move {
                sink.notify_resource_updated(uri.clone()).await.is_ok()
            })
        }));
        tokio::select! {
            // Every job ended: nothing more will come, but the client decides when to stop.
            _ = async { watches.await; std::future::pending::<()>().await } => {}
            _ = context.cancelled() => {}
            _ = self.closed.cancelled() => {}
        }
        Ok(())
    }
}
