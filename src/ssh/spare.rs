//! Spare channels: a command channel opened and started ahead of time, its login shell already
//! waiting on stdin for the next command, parked on its connection so that a warm call skips the
//! channel open and the shell's start. At most one per connection; it holds a command slot, which
//! a lease that finds no other free slot takes back.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg};
use tokio::sync::{Notify, OwnedSemaphorePermit, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Output a parked shell may print (its startup files) before it is given up as unusable.
const MAX_PARKED_OUTPUT: usize = 64 << 10;
/// How long a closed spare's channel gets for the server to confirm the close.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Where a connection's spare is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpareState {
    /// None parked or starting.
    None,
    /// Being opened and started.
    Starting,
    /// Parked, its shell waiting for a command.
    Parked,
    /// Parked, but found gone (its shell ended, or the server refused it); replaced by the next.
    Dead,
}

/// A connection's spare: parked, or starting (holding its command slot), or none.
#[derive(Default)]
pub struct SpareSlot {
    inner: Mutex<Inner>,
    /// Told when a start ends (parked, or given up).
    started: Notify,
}

#[derive(Default)]
struct Inner {
    parked: Option<Parked>,
    /// The slot of a spare being started: its channel may be open on the server already.
    starting: Option<OwnedSemaphorePermit>,
}

impl SpareSlot {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the spare is.
    pub fn state(&self) -> SpareState {
        let inner = self.inner();
        match &inner.parked {
            Some(parked) if parked.alive() => SpareState::Parked,
            Some(_) => SpareState::Dead,
            None if inner.starting.is_some() => SpareState::Starting,
            None => SpareState::None,
        }
    }

    /// Whether it is parked, alive or not (a parked spare's slot counts as free for idleness).
    pub fn parked(&self) -> bool {
        self.inner().parked.is_some()
    }

    /// Begins starting a spare with the slot `free` gives, unless a live one is parked or starting
    /// (a dead one is dropped). Whether the start should go on.
    pub fn begin(&self, free: impl FnOnce() -> Option<OwnedSemaphorePermit>) -> bool {
        let mut inner = self.inner();
        if inner.parked.as_ref().is_some_and(|p| !p.alive()) {
            inner.parked = None;
        }
        if inner.parked.is_some() || inner.starting.is_some() {
            return false;
        }
        inner.starting = free();
        inner.starting.is_some()
    }

    /// Parks what a start opened (`channel`, tagged `tag`), or closes it (and frees the slot)
    /// when there is none or `keep` is false.
    pub async fn finish(&self, channel: Option<Channel<Msg>>, tag: String, keep: bool) {
        let (unwanted, slot) = {
            let mut inner = self.inner();
            let slot = inner.starting.take();
            match (channel, slot) {
                (Some(channel), Some(slot)) if keep => {
                    inner.parked = Some(Parked::new(channel, slot, tag));
                    (None, None)
                }
                (channel, slot) => (channel, slot),
            }
        };
        self.started.notify_waiters();
        if let Some(channel) = unwanted {
            close(channel).await;
        }
        drop(slot);
    }

    /// The parked spare, taken off the connection.
    pub fn take(&self) -> Option<Parked> {
        self.inner().parked.take()
    }

    /// The spare's slot for another channel, once its channel is closed (so that the server no
    /// longer counts its session): a parked spare's at once, a starting one's once it is parked,
    /// if that takes less than [`CLOSE_WAIT`]. None: there is no spare, or it is still starting.
    pub async fn give_back(&self) -> Option<OwnedSemaphorePermit> {
        let parked = tokio::time::timeout(CLOSE_WAIT, async {
            loop {
                let started = self.started.notified();
                tokio::pin!(started);
                started.as_mut().enable();
                let found = {
                    let mut inner = self.inner();
                    match inner.parked.take() {
                        Some(parked) => Some(Some(parked)),
                        None if inner.starting.is_none() => Some(None),
                        None => None,
                    }
                };
                if let Some(found) = found {
                    return found;
                }
                started.await;
            }
        });
        Some(parked.await.ok()??.evict().await)
    }
}

/// A spare channel handed over for a command.
pub struct Claimed {
    pub channel: Channel<Msg>,
    /// What the channel received while parked (startup output), in order.
    pub early: Vec<ChannelMsg>,
    /// What the spare was started with (the wrapper's nonce).
    pub tag: String,
}

/// A parked spare: its slot, and the task that holds its channel and watches it.
///
/// Dropping it closes the channel (its shell then reads the end of its input and exits without
/// running anything) and frees the slot.
pub struct Parked {
    slot: OwnedSemaphorePermit,
    tag: String,
    since: Instant,
    claim: oneshot::Sender<()>,
    holder: JoinHandle<Option<Held>>,
}

/// The channel as the holder hands it back. Dropped unclaimed (the claim was given up midway),
/// it closes the channel.
struct Held {
    channel: Option<Channel<Msg>>,
    early: Vec<ChannelMsg>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take() {
            // Short-lived: ends when the server has closed the channel, or after CLOSE_WAIT.
            tokio::spawn(close(channel));
        }
    }
}

impl Parked {
    /// Parks `channel` (already started with `tag`), holding `slot` until claimed or dropped.
    pub fn new(channel: Channel<Msg>, slot: OwnedSemaphorePermit, tag: String) -> Self {
        let (claim, claimed) = oneshot::channel();
        Self {
            slot,
            tag,
            since: Instant::now(),
            claim,
            holder: tokio::spawn(hold(channel, claimed)),
        }
    }

    /// How long it has been parked.
    pub fn age(&self) -> Duration {
        self.since.elapsed()
    }

    /// Whether its channel is still open and waiting (not found dead while parked).
    pub fn alive(&self) -> bool {
        !self.holder.is_finished()
    }

    /// The channel and the slot, unless the spare died while parked (its shell ended, the
    /// server refused it, the connection broke), in which case the slot is dropped.
    pub async fn claim(self) -> Option<(Claimed, OwnedSemaphorePermit)> {
        let _ = self.claim.send(());
        let mut held = self.holder.await.ok().flatten()?;
        let claimed = Claimed {
            channel: held.channel.take()?,
            early: std::mem::take(&mut held.early),
            tag: self.tag,
        };
        Some((claimed, self.slot))
    }

    /// Closes the spare, waits (briefly) for the server to let its session go, and returns the
    /// slot for another channel.
    pub async fn evict(self) -> OwnedSemaphorePermit {
        drop(self.claim);
        let _ = self.holder.await;
        self.slot
    }
}

/// Holds a parked channel: keeps what it receives (so the connection never waits on a full
/// channel buffer), hands it over when claimed, closes it when dropped or found dead.
async fn hold(mut channel: Channel<Msg>, mut claim: oneshot::Receiver<()>) -> Option<Held> {
    let mut early = Vec::new();
    let mut printed = 0;
    loop {
        tokio::select! {
            // What has already arrived is looked at before a claim: a spare that died is not handed over.
            biased;
            message = channel.wait() => match message {
                Some(message @ (ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. })) => {
                    if let ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } = &message {
                        printed += data.len();
                    }
                    early.push(message);
                    if printed > MAX_PARKED_OUTPUT {
                        break;
                    }
                }
                Some(ChannelMsg::Success | ChannelMsg::WindowAdjusted { .. }) => {}
                Some(ChannelMsg::Close) | None => return None,
                // Refused, or the shell ended or closed its output before any command came.
                Some(_) => break,
            },
            claimed = &mut claim => match claimed {
                Ok(()) => return Some(Held { channel: Some(channel), early }),
                Err(_) => break,
            },
        }
    }
    close(channel).await;
    None
}

/// Ends a channel whose wrapper may be waiting for a header: EOF (its shell exits), then the
/// server's close is waited for before closing from this side, all within [`CLOSE_WAIT`]. In that
/// order the server has let the session go (it counts toward `MaxSessions`) before the slot is
/// used again; russh does not pass on the server's answer to a close sent from here.
pub async fn close(mut channel: Channel<Msg>) {
    let closed = async {
        channel.eof().await.ok()?;
        while let Some(message) = channel.wait().await {
            if matches!(message, ChannelMsg::Close) {
                return Some(());
            }
        }
        Some(())
    };
    if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
        let _ = channel.close().await;
    }
}
