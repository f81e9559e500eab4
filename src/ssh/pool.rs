//! Pooled SSH connections, shared by every call: a few channels per connection (OpenSSH allows 10),
//! more connections when more calls run, dead ones replaced on the next use with backoff after
//! network errors, idle ones closed.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use russh::Channel;
use russh::client::Msg;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::connect::{Connection, connect};
use super::target::SshTarget;
use crate::error::{Error, Result};
use crate::transport::Health;

/// Command channels per connection. OpenSSH's default `MaxSessions` is 10; two stay free for kills.
pub const CHANNELS_PER_CONNECTION: usize = 8;
/// How often idle connections are looked for, at most.
const REAP_EVERY: Duration = Duration::from_secs(30);
/// Waits after consecutive network failures: 1 s, 2 s, 4 s ... at most this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One open connection and its free channel slots.
pub struct PooledConnection {
    pub handle: Connection,
    slots: Arc<Semaphore>,
    last_used: Mutex<Instant>,
    /// Whether the login shell is plain `sh`, once a command's wrapper has said.
    login_shell_is_sh: OnceLock<bool>,
}

impl PooledConnection {
    fn new(handle: Connection) -> Self {
        Self {
            handle,
            slots: Arc::new(Semaphore::new(CHANNELS_PER_CONNECTION)),
            last_used: Mutex::new(Instant::now()),
            login_shell_is_sh: OnceLock::new(),
        }
    }

    /// Whether commands may run in the login shell directly (it is plain `sh`); false until
    /// a first command has told.
    pub fn login_shell_is_sh(&self) -> bool {
        self.login_shell_is_sh.get().copied().unwrap_or(false)
    }

    /// Records what the login shell is, as a command's wrapper reported it.
    pub fn learn_login_shell(&self, is_sh: bool) {
        let _ = self.login_shell_is_sh.set(is_sh);
    }

    fn idle_since(&self) -> Option<Instant> {
        let free = self.slots.available_permits() == CHANNELS_PER_CONNECTION;
        free.then(|| *self.last_used.lock().unwrap_or_else(|e| e.into_inner()))
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

/// A failed connection attempt, remembered to space out the next ones.
struct Failure {
    count: u32,
    at: Instant,
    message: String,
}

#[derive(Default)]
struct HostConnections {
    /// Locked while connecting, so concurrent calls to one host share new connections.
    open: tokio::sync::Mutex<Vec<Arc<PooledConnection>>>,
    failure: Mutex<Option<Failure>>,
}

type Table = Mutex<HashMap<SshTarget, Arc<HostConnections>>>;

/// Every SSH connection outpost holds, by target.
///
/// Dropping the pool stops its idle reaper; connections close when their last user lets go.
pub struct SshPool {
    hosts: Arc<Table>,
    reaper: std::sync::OnceLock<DropGuard>,
    idle_timeout: Duration,
}

impl SshPool {
    /// A pool that closes connections left idle for `idle_timeout`.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            hosts: Arc::default(),
            reaper: std::sync::OnceLock::new(),
            idle_timeout,
        }
    }

    fn hosts(&self) -> MutexGuard<'_, HashMap<SshTarget, Arc<HostConnections>>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A channel slot on a live connection to `target`, connecting when none has room.
    /// A slow or dead host only ever holds up calls to that same host.
    pub async fn lease(&self, target: &SshTarget) -> Result<Lease> {
        self.reaper
            .get_or_init(|| start_reaper(Arc::downgrade(&self.hosts), self.idle_timeout));
        let host = self.hosts().entry(target.clone()).or_default().clone();
        let mut open = host.open.lock().await;
        open.retain(|c| !c.handle.is_closed());
        for connection in open.iter() {
            if let Ok(slot) = connection.slots.clone().try_acquire_owned() {
                return Ok(Lease {
                    connection: connection.clone(),
                    _slot: slot,
                });
            }
        }
        check_backoff(&host, target)?;
        tracing::info!(host = %target.name, existing = open.len(), "opening an SSH connection");
        let handle = match connect(target).await {
            Ok(handle) => handle,
            Err(e) => {
                record_failure(&host, &e);
                return Err(e);
            }
        };
        *host.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let connection = Arc::new(PooledConnection::new(handle));
        open.push(connection.clone());
        let slot = connection
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|e| Error::SshChannel {
                host: target.name.clone(),
                reason: e.to_string(),
            })?;
        Ok(Lease {
            connection,
            _slot: slot,
        })
    }

    /// A channel opened by `open` on a pooled connection, with the lease that holds its slot.
    /// A connection that fails for another reason than the server refusing this one channel (half
    /// dead, not yet noticed by keepalive) is dropped and a fresh one tried, once. A refusal
    /// (`MaxSessions` reached, a closed port for direct-tcpip) leaves the connection and the
    /// other channels on it alone.
    pub async fn open_channel<F, Fut>(
        &self,
        target: &SshTarget,
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
        match open(lease.connection.clone()).await {
            Ok(channel) => return Ok((lease, channel)),
            Err(e @ russh::Error::ChannelOpenFailure(_)) => return Err(failed(e)),
            Err(e) => {
                tracing::warn!(host = %target.name, error = %e, "connection unusable; reconnecting");
                let broken = lease.connection.clone();
                drop(lease);
                self.discard(target, &broken).await;
            }
        }
        let lease = self.lease(target).await?;
        let channel = open(lease.connection.clone()).await.map_err(failed)?;
        Ok((lease, channel))
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
        let failure = host.failure.lock().unwrap_or_else(|e| e.into_inner());
        match failure.as_ref() {
            None => Health::Ready,
            Some(f) => Health::after_failures(f.count, f.at, &f.message),
        }
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
            0 => match &*host.failure.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(f) => format!("unreachable: {}", f.message),
                None => "not connected".to_owned(),
            },
            n => format!(
                "connected ({n} connection{})",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Refuses a new attempt too soon after network failures, saying when the next one may go.
fn check_backoff(host: &HostConnections, target: &SshTarget) -> Result<()> {
    let failure = host.failure.lock().unwrap_or_else(|e| e.into_inner());
    let Some(f) = failure.as_ref() else {
        return Ok(());
    };
    let wait = backoff(f.count);
    let elapsed = f.at.elapsed();
    if elapsed >= wait {
        return Ok(());
    }
    Err(target.connect_error(format!(
        "{} (after {} failed attempt{}; next try in {:.1}s)",
        f.message,
        f.count,
        if f.count == 1 { "" } else { "s" },
        (wait - elapsed).as_secs_f64()
    )))
}

/// Only network trouble backs off; a refused host key or key is reported afresh every time.
fn record_failure(host: &HostConnections, error: &Error) {
    let Error::SshConnect { reason, .. } = error else {
        return;
    };
    let mut failure = host.failure.lock().unwrap_or_else(|e| e.into_inner());
    let count = failure.as_ref().map_or(0, |f| f.count) + 1;
    *failure = Some(Failure {
        count,
        at: Instant::now(),
        message: reason.clone(),
    });
}

pub(crate) fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(5);
    Duration::from_secs(secs).min(MAX_BACKOFF)
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
        let _ = connection
            .handle
            .disconnect(russh::Disconnect::ByApplication, "idle", "en")
            .await;
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
}
