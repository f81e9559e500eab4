//! Pooled SSH connections, shared by every call: a few channels per connection (OpenSSH allows 10),
//! some of them kept for kills, more connections when more calls run, dead ones replaced on the
//! next use, idle ones closed; on each, a spare command channel started ahead (see [`super::spare`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use russh::Channel;
use russh::client::Msg;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};

use tokio::time::Instant;

use super::connect::{Connection, connect};
use super::spare::{Claimed, SpareSlot, SpareState};
use super::target::SshTarget;
use crate::error::{Error, Result};
use crate::health::{Failures, Health};

/// Command channels per connection. OpenSSH's default `MaxSessions` is 10; the rest are for kills.
pub const CHANNELS_PER_CONNECTION: usize = 8;
/// Channels per connection that only kills use, so a kill never waits for a command to end.
pub const KILL_CHANNELS_PER_CONNECTION: usize = 2;
/// How often idle connections are looked for, at most.
const REAP_EVERY: Duration = Duration::from_secs(30);

/// What a channel is for: each kind has its own slots on every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A command, a Claude process, a tunnelled TCP connection.
    Command,
    /// A kill script.
    Kill,
}

/// One open connection and its free channel slots.
pub struct PooledConnection {
    pub handle: Connection,
    slots: Arc<Semaphore>,
    kill_slots: Arc<Semaphore>,
    last_used: Mutex<Instant>,
    /// What the login shell needs to run the wrapper itself, once a command has told (see
    /// `transport::wrapper::in_place_prelude`); `None` inside: it cannot.
    in_place: OnceLock<Option<&'static str>>,
    spare: SpareSlot,
    /// Cancelled when the pool lets the connection go: a spare being started gives up.
    closing: CancellationToken,
}

impl PooledConnection {
    fn new(handle: Connection) -> Self {
        Self {
            handle,
            slots: Arc::new(Semaphore::new(CHANNELS_PER_CONNECTION)),
            kill_slots: Arc::new(Semaphore::new(KILL_CHANNELS_PER_CONNECTION)),
            last_used: Mutex::new(Instant::now()),
            in_place: OnceLock::new(),
            spare: SpareSlot::default(),
            closing: CancellationToken::new(),
        }
    }

    /// Starts a spare command channel with what `command` makes (the exec string and its tag,
    /// made only when a spare does start) and parks it, unless one is
    /// parked or starting already or no command slot is free: a spare never makes a call wait or
    /// a connection open. The task that opens it holds the connection until the server answers
    /// (an open given up midway could still be opened there, uncounted) or the pool lets the
    /// connection go; keepalive ends a connection that stalls.
    pub fn start_spare(self: &Arc<Self>, command: impl FnOnce() -> (String, String)) {
        if self.closing.is_cancelled() || !self.spare.begin(|| self.try_slot(Purpose::Command)) {
            return;
        }
        let (exec, tag) = command();
        tracing::debug!("starting a spare shell");
        let connection = self.clone();
        tokio::spawn(async move {
            let open = async {
                let channel = connection.handle.channel_open_session().await.ok()?;
                channel.exec(true, exec).await.ok()?;
                Some(channel)
            };
            let channel = tokio::select! {
                opened = open => opened,
                _ = connection.closing.cancelled() => None,
            };
            let keep = !connection.closing.is_cancelled();
            connection.spare.finish(channel, tag, keep).await;
        });
    }

    /// Where the connection's spare is.
    pub fn spare_state(&self) -> SpareState {
        self.spare.state()
    }

    /// Lets the connection go: a spare starting gives up, a parked one is closed.
    fn close(&self) {
        self.closing.cancel();
        drop(self.spare.take());
    }

    /// What the login shell needs to run the wrapper itself (`Some(None)`: it cannot), once a
    /// first command has told; `None` until then.
    pub fn in_place_known(&self) -> Option<Option<&'static str>> {
        self.in_place.get().copied()
    }

    /// Records what the login shell can do, as a command's wrapper reported it.
    pub fn learn_login_shell(&self, in_place: Option<&'static str>) {
        let _ = self.in_place.set(in_place);
    }

    /// Since when no command, kill or tunnel has used the connection (a parked spare does not count).
    fn idle_since(&self) -> Option<Instant> {
        let parked = usize::from(self.spare.parked());
        let free = self.slots.available_permits() + parked == CHANNELS_PER_CONNECTION
            && self.kill_slots.available_permits() == KILL_CHANNELS_PER_CONNECTION;
        free.then(|| *self.last_used.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A free slot of the kind `purpose` asks for, if there is one.
    fn try_slot(&self, purpose: Purpose) -> Option<OwnedSemaphorePermit> {
        let slots = match purpose {
            Purpose::Command => &self.slots,
            Purpose::Kill => &self.kill_slots,
        };
        slots.clone().try_acquire_owned().ok()
    }
}

/// The right to open one command channel on a connection; the slot frees when this drops.
pub struct Lease {
    pub connection: Arc<PooledConnection>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self
            .connection
            .last_used
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

#[derive(Default)]
struct HostConnections {
    /// Locked while connecting, so concurrent calls to one host share new connections.
    open: tokio::sync::Mutex<Vec<Arc<PooledConnection>>>,
    failures: Mutex<Failures>,
}

impl HostConnections {
    fn failures(&self) -> MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`SshPool::open_channel`] does when the server refuses the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefusal {
    /// Report it.
    Fail,
    /// Try once more on another connection (opened if need be).
    TryAnotherConnection,
}

/// When a lease may connect: a call's own lease always makes a real attempt (or shares one that
/// began after it asked); automatic retries wait out the backoff after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// A user's call: the host may be back at any moment.
    Now,
    /// A health check or retry: refused while the host's backoff lasts.
    WhenDue,
}

type Table = Mutex<HashMap<SshTarget, Arc<HostConnections>>>;

/// Every SSH connection outpost holds, by target.
///
/// Dropping the pool stops its idle reaper; connections close when their last user lets go, and
/// their spares with them.
pub struct SshPool {
    hosts: Arc<Table>,
    reaper: std::sync::OnceLock<DropGuard>,
    idle_timeout: Duration,
    spares: bool,
}

impl SshPool {
    /// A pool that closes connections left idle for `idle_timeout`.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            hosts: Arc::default(),
            reaper: std::sync::OnceLock::new(),
            idle_timeout,
            spares: true,
        }
    }

    /// Whether commands get a spare channel started ahead on each connection (`ssh.warm_shell`).
    pub fn with_spares(mut self, on: bool) -> Self {
        self.spares = on;
        self
    }

    /// Whether a spare should be started after each command (see [`PooledConnection::start_spare`]).
    pub fn spares(&self) -> bool {
        self.spares
    }

    fn hosts(&self) -> MutexGuard<'_, HashMap<SshTarget, Arc<HostConnections>>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A command channel slot on a live connection to `target`, connecting when none has room
    /// (a real attempt, whatever earlier failures said: see [`Attempt`]).
    /// A slow or dead host only ever holds up calls to that same host.
    pub async fn lease(&self, target: &SshTarget) -> Result<Lease> {
        self.lease_for(target, Purpose::Command, Attempt::Now).await
    }

    /// A slot of the kind `purpose` on a live connection to `target`, connecting when none has
    /// room. Concurrent callers share one connection attempt: one that waited while another
    /// attempt began and failed gets that failure instead of trying again at once.
    pub async fn lease_for(
        &self,
        target: &SshTarget,
        purpose: Purpose,
        attempt: Attempt,
    ) -> Result<Lease> {
        self.lease_avoiding(target, purpose, attempt, None).await
    }

    /// [`SshPool::lease_for`] on any connection but `refused` (whose server turned down a channel
    /// of ours: `MaxSessions` still counts sessions that are ending), connecting if need be.
    pub async fn lease_elsewhere(
        &self,
        target: &SshTarget,
        purpose: Purpose,
        refused: &Arc<PooledConnection>,
    ) -> Result<Lease> {
        self.lease_avoiding(target, purpose, Attempt::Now, Some(refused))
            .await
    }

    async fn lease_avoiding(
        &self,
        target: &SshTarget,
        purpose: Purpose,
        attempt: Attempt,
        avoid: Option<&Arc<PooledConnection>>,
    ) -> Result<Lease> {
        self.reaper
            .get_or_init(|| start_reaper(Arc::downgrade(&self.hosts), self.idle_timeout));
        let asked = Instant::now();
        let host = self.hosts().entry(target.clone()).or_default().clone();
        let mut spares_asked = purpose != Purpose::Command;
        let mut open = loop {
            let mut open = host.open.lock().await;
            open.retain(|c| {
                let live = !c.handle.is_closed();
                if !live {
                    c.close();
                }
                live
            });
            let usable = || {
                open.iter()
                    .filter(|c| !avoid.is_some_and(|avoid| Arc::ptr_eq(c, avoid)))
            };
            if let Some(lease) = free_slot(usable(), purpose) {
                return Ok(lease);
            }
            if spares_asked {
                break open;
            }
            // A spare gives its slot back before another connection is opened (with the lock
            // let go: that takes up to a round trip, or a start's end).
            spares_asked = true;
            let usable: Vec<_> = usable().cloned().collect();
            drop(open);
            if let Some(lease) = spare_slot(usable).await {
                return Ok(lease);
            }
        };
        check_attempt(&host, target, asked, attempt)?;
        tracing::info!(host = %target.name, existing = open.len(), "opening an SSH connection");
        let handle = match connect(target).await {
            Ok(handle) => handle,
            Err(e) => {
                if let Error::SshConnect { reason, .. } = &e {
                    // Only network trouble backs off; a refused key is reported afresh each time.
                    host.failures().failed(asked, reason.clone());
                }
                return Err(e);
            }
        };
        host.failures().succeeded();
        let connection = Arc::new(PooledConnection::new(handle));
        open.push(connection.clone());
        let slot = connection
            .try_slot(purpose)
            .ok_or_else(|| Error::SshChannel {
                host: target.name.clone(),
                reason: "a new connection had no free channel".to_owned(),
            })?;
        Ok(Lease {
            connection,
            _slot: slot,
        })
    }

    /// A channel opened by `open` on a pooled connection, with the lease that holds its slot.
    /// A connection that fails for another reason than the server refusing this one channel (half
    /// dead, not yet noticed by keepalive) is dropped and a fresh one tried, once. A refusal
    /// leaves the connection and the other channels on it alone; `on_refusal` says whether
    /// another connection is tried (a session refused because `MaxSessions` still counts one
    /// that is ending) or not (a closed port for direct-tcpip is closed everywhere).
    pub async fn open_channel<F, Fut>(
        &self,
        target: &SshTarget,
        on_refusal: OnRefusal,
        open: F,
    ) -> Result<(Lease, Channel<Msg>)>
    where
        F: Fn(Arc<PooledConnection>) -> Fut,
        Fut: Future<Output = std::result::Result<Channel<Msg>, russh::Error>>,
    {
        let failed = |e: russh::Error| Error::SshChannel {
            host: target.name.clone(),
            reason: e.to_string(),
        };
        let lease = self.lease(target).await?;
        let first = lease.connection.clone();
        let lease = match open(first.clone()).await {
            Ok(channel) => return Ok((lease, channel)),
            Err(e @ russh::Error::ChannelOpenFailure(_)) if on_refusal == OnRefusal::Fail => {
                return Err(failed(e));
            }
            Err(russh::Error::ChannelOpenFailure(_)) => {
                drop(lease);
                self.lease_elsewhere(target, Purpose::Command, &first)
                    .await?
            }
            Err(e) => {
                tracing::warn!(host = %target.name, error = %e, "connection unusable; reconnecting");
                drop(lease);
                self.discard(target, &first).await;
                self.lease(target).await?
            }
        };
        let channel = open(lease.connection.clone()).await.map_err(failed)?;
        Ok((lease, channel))
    }

    /// A spare command channel of `target`'s, with the lease that holds its slot, if one is parked
    /// and alive. Never waits for a connection attempt. A spare parked for longer than the idle
    /// timeout is closed instead (startup files may have changed since its shell started).
    pub async fn claim_spare(&self, target: &SshTarget) -> Option<(Lease, Claimed)> {
        let host = self.hosts().get(target).cloned()?;
        let connections: Vec<_> = host
            .open
            .try_lock()
            .ok()?
            .iter()
            .filter(|c| !c.handle.is_closed())
            .cloned()
            .collect();
        for connection in connections {
            let Some(parked) = connection.spare.take() else {
                continue;
            };
            if parked.age() >= self.idle_timeout {
                drop(parked.evict().await);
                continue;
            }
            if let Some((claimed, slot)) = parked.claim().await {
                let lease = Lease {
                    connection,
                    _slot: slot,
                };
                return Some((lease, claimed));
            }
        }
        None
    }

    /// Adds a connection opened elsewhere (e.g. timed by `outpost remote test`) to the pool.
    pub async fn adopt(&self, target: &SshTarget, handle: Connection) {
        let host = self.hosts().entry(target.clone()).or_default().clone();
        host.open
            .lock()
            .await
            .push(Arc::new(PooledConnection::new(handle)));
    }

    /// Drops a connection found unusable, so the next lease opens a fresh one.
    pub async fn discard(&self, target: &SshTarget, connection: &Arc<PooledConnection>) {
        let Some(host) = self.hosts().get(target).cloned() else {
            return;
        };
        host.open
            .lock()
            .await
            .retain(|c| !Arc::ptr_eq(c, connection));
        connection.close();
        let _ = connection
            .handle
            .disconnect(russh::Disconnect::ByApplication, "unusable", "en")
            .await;
    }

    /// Whether `target` is worth a try, from its last connection attempts.
    pub fn health(&self, target: &SshTarget) -> Health {
        let Some(host) = self.hosts().get(target).cloned() else {
            return Health::Ready;
        };
        host.failures().health()
    }

    /// `connected (N connections)` or `not connected`, for `list_hosts`.
    pub fn state(&self, target: &SshTarget) -> String {
        let Some(host) = self.hosts().get(target).cloned() else {
            return "not connected".to_owned();
        };
        let Ok(open) = host.open.try_lock() else {
            return "connecting".to_owned();
        };
        match open.iter().filter(|c| !c.handle.is_closed()).count() {
            0 => match host.failures().last() {
                Some(message) => format!("unreachable: {message}"),
                None => "not connected".to_owned(),
            },
            n => format!(
                "connected ({n} connection{})",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A free slot of the kind `purpose` asks for on one of `connections`.
fn free_slot<'a>(
    mut connections: impl Iterator<Item = &'a Arc<PooledConnection>>,
    purpose: Purpose,
) -> Option<Lease> {
    connections.find_map(|connection| {
        let slot = connection.try_slot(purpose)?;
        Some(Lease {
            connection: connection.clone(),
            _slot: slot,
        })
    })
}

/// The slot of a spare on one of `connections`, given back (see [`SpareSlot::give_back`]).
async fn spare_slot(connections: Vec<Arc<PooledConnection>>) -> Option<Lease> {
    for connection in connections {
        if let Some(slot) = connection.spare.give_back().await {
            return Some(Lease {
                connection,
                _slot: slot,
            });
        }
    }
    None
}

/// Whether a connection attempt may go now. An attempt that began after this caller asked and
/// failed answers for it too (no stampede on a host that is down); otherwise a call's lease
/// tries, and an automatic retry waits out the backoff, saying when the next try is.
fn check_attempt(
    host: &HostConnections,
    target: &SshTarget,
    asked: Instant,
    attempt: Attempt,
) -> Result<()> {
    let failures = host.failures();
    if let Some(message) = failures.failed_since(asked) {
        return Err(target.connect_error(message.to_owned()));
    }
    match (attempt, failures.health()) {
        (Attempt::WhenDue, Health::Down { reason, retry_in }) => {
            let count = failures.count();
            Err(target.connect_error(format!(
                "{reason} (after {count} failed attempt{}; next try in {:.1}s)",
                if count == 1 { "" } else { "s" },
                retry_in.as_secs_f64()
            )))
        }
        _ => Ok(()),
    }
}

/// Closes connections idle for `idle_timeout`, looking every so often, until the pool is dropped.
fn start_reaper(table: Weak<Table>, idle_timeout: Duration) -> DropGuard {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let every = (idle_timeout / 2).clamp(Duration::from_millis(100), REAP_EVERY);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = token.cancelled() => return,
            }
            let Some(table) = table.upgrade() else { return };
            let hosts: Vec<Arc<HostConnections>> = table
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            for host in hosts {
                close_idle(&host, idle_timeout).await;
            }
        }
    });
    stop.drop_guard()
}

async fn close_idle(host: &HostConnections, idle_timeout: Duration) {
    let mut open = host.open.lock().await;
    let (idle, keep): (Vec<_>, Vec<_>) = open
        .drain(..)
        .partition(|c| c.idle_since().is_some_and(|t| t.elapsed() >= idle_timeout));
    *open = keep;
    drop(open);
    for connection in idle {
        tracing::debug!("closing an idle SSH connection");
        connection.close();
        let _ = connection
            .handle
            .disconnect(russh::Disconnect::ByApplication, "idle", "en")
            .await;
    }
}
