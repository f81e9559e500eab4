//! Pooled SSH connections, shared by every call: a few channels per connection (OpenSSH allows 10),
//! more connections when more calls run, a closed connection replaced on the next use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connect::{Connection, connect};
use super::target::SshTarget;
use crate::error::Result;

/// Command channels per connection. OpenSSH's default `MaxSessions` is 10; two stay free for kills.
pub const CHANNELS_PER_CONNECTION: usize = 8;

/// One open connection and its free channel slots.
pub struct PooledConnection {
    pub handle: Connection,
    slots: Arc<Semaphore>,
}

/// The right to open one command channel on a connection; the slot frees when this drops.
pub struct Lease {
    pub connection: Arc<PooledConnection>,
    _slot: OwnedSemaphorePermit,
}

#[derive(Default)]
struct HostConnections {
    /// Locked while connecting, so concurrent calls to one host share new connections.
    open: tokio::sync::Mutex<Vec<Arc<PooledConnection>>>,
}

/// Every SSH connection outpost holds, by target.
#[derive(Default)]
pub struct SshPool {
    hosts: Mutex<HashMap<SshTarget, Arc<HostConnections>>>,
}

impl SshPool {
    fn hosts(&self) -> MutexGuard<'_, HashMap<SshTarget, Arc<HostConnections>>> {
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A channel slot on a live connection to `target`, connecting when none has room.
    /// A slow or dead host only ever holds up calls to that same host.
    pub async fn lease(&self, target: &SshTarget) -> Result<Lease> {
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
        tracing::info!(host = %target.name, existing = open.len(), "opening an SSH connection");
        let connection = Arc::new(PooledConnection {
            handle: connect(target).await?,
            slots: Arc::new(Semaphore::new(CHANNELS_PER_CONNECTION)),
        });
        open.push(connection.clone());
        let slot = connection.slots.clone().try_acquire_owned().map_err(|e| {
            crate::error::Error::SshChannel {
                host: target.name.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(Lease {
            connection,
            _slot: slot,
        })
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

    /// `connected (N connections)` or `not connected`, for `list_hosts`.
    pub fn state(&self, target: &SshTarget) -> String {
        let Some(host) = self.hosts().get(target).cloned() else {
            return "not connected".to_owned();
        };
        let Ok(open) = host.open.try_lock() else {
            return "connecting".to_owned();
        };
        match open.iter().filter(|c| !c.handle.is_closed()).count() {
            0 => "not connected".to_owned(),
            n => format!(
                "connected ({n} connection{})",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}
