//! Who holds a connection slot: only authenticated connections take one of `serve.max_connections`;
//! connections still waiting to authenticate are counted apart, and when too many wait the
//! longest-waiting is closed, so strangers without a token cannot crowd out clients with one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The slots of one server and the queue of connections waiting to authenticate.
pub struct Admission {
    slots: Arc<Semaphore>,
    /// Connections not yet admitted, longest-waiting first, with the token that closes each.
    waiting: Mutex<VecDeque<(u64, CancellationToken)>>,
    max_waiting: usize,
    next_id: AtomicU64,
}

impl Admission {
    /// `max_connections` authenticated connections at once, and as many waiting to authenticate.
    pub fn new(max_connections: usize) -> Arc<Self> {
        let max = max_connections.max(1);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            waiting: Mutex::new(VecDeque::new()),
            max_waiting: max,
            next_id: AtomicU64::new(0),
        })
    }

    /// Registers a newly accepted connection as waiting to authenticate; when that makes too
    /// many waiting, the longest-waiting one is told to close.
    pub fn arrive(self: &Arc<Self>) -> Standing {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut waiting = self.waiting();
        waiting.push_back((id, evicted.clone()));
        while waiting.len() > self.max_waiting {
            if let Some((_, oldest)) = waiting.pop_front() {
                oldest.cancel();
            }
        }
        drop(waiting);
        Standing {
            admission: self.clone(),
            id,
            evicted,
            slot: Mutex::new(None),
        }
    }

    fn waiting(&self) -> MutexGuard<'_, VecDeque<(u64, CancellationToken)>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One accepted connection's standing: waiting to authenticate, or admitted with a slot (freed
/// when this is dropped, with the connection).
pub struct Standing {
    admission: Arc<Admission>,
    id: u64,
    evicted: CancellationToken,
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Standing {
    /// Resolves when this connection, still waiting to authenticate, must close to make room.
    /// Never resolves once it is admitted.
    pub fn evicted(&self) -> WaitForCancellationFuture<'_> {
        self.evicted.cancelled()
    }

    /// Called when the connection has authenticated: true when it holds a slot (now or already),
    /// false when every slot is taken (answer 503) or it was already told to close.
    pub fn admit(&self) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return true;
        }
        let mut waiting = self.admission.waiting();
        if self.evicted.is_cancelled() {
            return false;
        }
        let Ok(permit) = self.admission.slots.clone().try_acquire_owned() else {
            return false;
        };
        waiting.retain(|(id, _)| *id != self.id);
        *slot = Some(permit);
        true
    }
}

impl Drop for Standing {
    fn drop(&mut self) {
        self.admission.waiting().retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_connections_do_not_take_slots_and_the_oldest_makes_room() {
        let admission = Admission::new(2);
        let first = admission.arrive();
        let second = admission.arrive();
        assert!(!first.evicted.is_cancelled());
        let third = admission.arrive();
        assert!(
            first.evicted.is_cancelled(),
            "the longest-waiting is closed"
        );
        assert!(!first.admit(), "a closed connection is not admitted");
        assert!(second.admit() && third.admit());
        // Admitted connections are out of the queue: newcomers never evict them.
        let newcomers: Vec<_> = (0..5).map(|_| admission.arrive()).collect();
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert!(!newcomers[4].admit(), "both slots are taken");
        drop(second);
        assert!(
            newcomers[4].admit(),
            "a slot frees when its connection ends"
        );
        assert!(newcomers[4].admit(), "admitting again keeps the slot");
    }
}
