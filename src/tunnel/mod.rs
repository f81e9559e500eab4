//! Port tunnels: local listeners whose connections go to a port reachable from an SSH host, each
//! over a direct-tcpip channel of the pooled connection. Health-checked; after the connection
//! drops, the next check or connection opens a new one, so tunnels come back by themselves.

use std::sync::Arc;
use std::time::Duration;

use russh::ChannelStream;
use russh::client::Msg;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{PortOrAddress, TunnelConfig};
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::ssh::SshTarget;
use crate::ssh::pool::{Attempt, Lease, OnRefusal, PooledConnection, Purpose};

/// Between health checks of a tunnel that works.
const CHECK_UP: Duration = Duration::from_secs(10);
/// Between health checks of a tunnel that does not (the pool's backoff spaces real attempts).
const CHECK_DOWN: Duration = Duration::from_secs(1);
/// Bound on one health check or one connection's setup.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// One forwarded port: `local` here to `remote` as seen from `host`.
#[derive(Debug, Clone)]
pub struct Forward {
    pub local: (String, u16),
    pub remote: (String, u16),
    pub description: Option<String>,
}

impl Forward {
    /// From the config; `None` for an end that is not a port or `host:port` (refused at load).
    pub fn from_config(tunnel: &TunnelConfig) -> Option<Self> {
        Some(Self {
            local: tunnel.local.split()?,
            remote: tunnel.remote.split()?,
            description: tunnel.description.clone(),
        })
    }

    /// From ssh's `-L` syntax: `[BIND:]PORT:HOST:HOSTPORT`.
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument {
            field: "-L",
            reason: format!("`{spec}` is not [BIND:]PORT:HOST:HOSTPORT"),
        };
        let (local, remote) = match spec.split(':').collect::<Vec<_>>().as_slice() {
            [port, host, hostport] => (
                PortOrAddress::Address(format!("127.0.0.1:{port}")),
                format!("{host}:{hostport}"),
            ),
            [bind, port, host, hostport] => (
                PortOrAddress::Address(format!("{bind}:{port}")),
                format!("{host}:{hostport}"),
            ),
            _ => return Err(bad()),
        };
        Ok(Self {
            local: local.split().ok_or_else(bad)?,
            remote: PortOrAddress::Address(remote).split().ok_or_else(bad)?,
            description: None,
        })
    }

    fn label(&self, host: &str) -> String {
        let (lh, lp) = &self.local;
        let (rh, rp) = &self.remote;
        let about = self
            .description
            .as_ref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        format!("{lh}:{lp} -> {host} -> {rh}:{rp}{about}")
    }
}

/// A stream to a port reachable from an SSH host; holds its channel slot until dropped.
pub struct Dialed {
    pub stream: ChannelStream<Msg>,
    _lease: Lease,
}

impl Dialed {
    /// The stream, and the lease to keep as long as the stream is used.
    pub fn into_parts(self) -> (ChannelStream<Msg>, Lease) {
        (self.stream, self._lease)
    }
}

/// Opens a direct-tcpip channel to `host:port` as seen from `target`, on a pooled connection
/// (see [`crate::ssh::SshPool::open_channel`]).
pub async fn dial(hosts: &Hosts, target: &SshTarget, host: &str, port: u16) -> Result<Dialed> {
    let open = |c: Arc<PooledConnection>| {
        let host = host.to_owned();
        async move {
            c.handle
                .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
                .await
        }
    };
    let (lease, channel) = hosts
        .pool()
        .open_channel(target, OnRefusal::Fail, open)
        .await
        .map_err(|e| match e {
            Error::SshChannel { host: name, reason } => Error::SshChannel {
                host: name,
                reason: format!("cannot reach {host}:{port} from there: {reason}"),
            },
            e => e,
        })?;
    Ok(Dialed {
        stream: channel.into_stream(),
        _lease: lease,
    })
}

/// Tunnels to one SSH host, bound and serving until dropped or stopped.
///
/// Dropping it stops the listeners, health checks and every tunneled connection.
pub struct Tunnels {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    /// One line per tunnel, for the user.
    pub labels: Vec<String>,
}

impl Drop for Tunnels {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Tunnels {
    /// Binds every local port first (all or nothing, with a clear error for a port in use),
    /// then serves each and checks it every so often.
    pub async fn open(hosts: Arc<Hosts>, host: &str, forwards: Vec<Forward>) -> Result<Self> {
        let target = hosts.ssh_target(host).ok_or_else(|| {
            Error::Tunnel(format!("`{host}` is not an SSH host (a remote of kind ssh, an ~/.ssh/config alias or user@host): tunnels go over SSH"))
        })?;
        let mut listeners = Vec::new();
        for forward in &forwards {
            listeners.push(bind(forward).await?);
        }
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let mut labels = Vec::new();
        for (forward, listener) in forwards.into_iter().zip(listeners) {
            let label = forward.label(host);
            let link = Link {
                hosts: hosts.clone(),
                target: target.clone(),
                forward,
                label: label.clone(),
            };
            tasks.spawn(link.clone().serve(listener, stop.child_token()));
            tasks.spawn(link.check(stop.child_token()));
            labels.push(label);
        }
        Ok(Self {
            tasks,
            stop,
            labels,
        })
    }

    /// Serves until `stop` is cancelled.
    pub async fn run_until(mut self, stop: impl std::future::Future<Output = ()>) {
        stop.await;
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind(forward: &Forward) -> Result<TcpListener> {
    let (host, port) = &forward.local;
    TcpListener::bind((host.as_str(), *port)).await.map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("local port {port} on {host} is already in use: stop what listens there (`ss -ltnp 'sport = :{port}'` shows it) or pick another local port")
        } else {
            format!("cannot listen on {host}:{port}: {e}")
        };
        Error::Tunnel(reason)
    })
}

/// One tunnel's way through: where it leads and how to say so.
#[derive(Clone)]
struct Link {
    hosts: Arc<Hosts>,
    target: SshTarget,
    forward: Forward,
    label: String,
}

impl Link {
    async fn dial(&self) -> Result<Dialed> {
        let (host, port) = &self.forward.remote;
        match tokio::time::timeout(DIAL_TIMEOUT, dial(&self.hosts, &self.target, host, *port)).await
        {
            Ok(dialed) => dialed,
            Err(_) => Err(Error::SshChannel {
                host: self.target.name.clone(),
                reason: format!("no answer within {}s", DIAL_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Whether an SSH connection to the host is open or can be opened.
    async fn connected(&self) -> Result<()> {
        // A health check is an automatic retry: it waits out the backoff after failures.
        let lease = self
            .hosts
            .pool()
            .lease_for(&self.target, Purpose::Command, Attempt::WhenDue)
            .await?;
        if lease.connection.handle.is_closed() {
            return Err(Error::SshChannel {
                host: self.target.name.clone(),
                reason: "the connection closed".to_owned(),
            });
        }
        Ok(())
    }

    /// Accepts connections and carries each through its own channel, until `stop`.
    async fn serve(self, listener: TcpListener, stop: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => return,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            match accepted {
                Ok((socket, peer)) => {
                    let link = self.clone();
                    connections.spawn(async move { link.carry(socket, peer).await });
                }
                Err(e) => {
                    tracing::warn!(tunnel = %self.label, error = %e, "accept failed");
                    tokio::time::sleep(CHECK_DOWN).await;
                }
            }
        }
    }

    async fn carry(&self, mut socket: TcpStream, peer: std::net::SocketAddr) {
        let _ = socket.set_nodelay(true);
        let mut dialed = match self.dial().await {
            Ok(dialed) => dialed,
            Err(e) => {
                tracing::warn!(tunnel = %self.label, %peer, error = %e, "connection not carried");
                return;
            }
        };
        match tokio::io::copy_bidirectional(&mut socket, &mut dialed.stream).await {
            Ok((up, down)) => {
                tracing::debug!(tunnel = %self.label, %peer, up, down, "connection closed")
            }
            Err(e) => tracing::debug!(tunnel = %self.label, %peer, error = %e, "connection ended"),
        }
    }

    /// Checks the tunnel every so often, saying when it starts or stops working: while it works,
    /// that its SSH connection is there (a dropped one is replaced); at first and while it does
    /// not, that a channel to the far end opens (so a closed remote port is reported, without
    /// touching the far service every few seconds once it works).
    async fn check(self, stop: CancellationToken) {
        let mut up = None;
        loop {
            let probe = match up {
                Some(true) => self.connected().await,
                _ => self.dial().await.map(drop),
            };
            let now_up = match probe {
                Ok(_) => {
                    if up != Some(true) {
                        tracing::info!(tunnel = %self.label, "tunnel up");
                    }
                    true
                }
                Err(e) => {
                    if up != Some(false) {
                        tracing::warn!(tunnel = %self.label, error = %e, "tunnel down; retrying");
                    }
                    false
                }
            };
            up = Some(now_up);
            let wait = if now_up { CHECK_UP } else { CHECK_DOWN };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// The forwards configured for `host`, plus any given on the command line.
pub fn forwards(hosts: &Hosts, host: &str, extra: &[String]) -> Result<Vec<Forward>> {
    let configured = hosts
        .config()
        .remotes
        .get(host)
        .map(|r| r.tunnels.as_slice())
        .unwrap_or_default();
    let mut forwards: Vec<Forward> = configured.iter().filter_map(Forward::from_config).collect();
    for spec in extra {
        forwards.push(Forward::parse(spec)?);
    }
    Ok(forwards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_style_forwards() {
        let f = Forward::parse("8080:localhost:80").unwrap();
        assert_eq!(f.local, ("127.0.0.1".into(), 8080));
        assert_eq!(f.remote, ("localhost".into(), 80));
        let f = Forward::parse("0.0.0.0:9000:db:5432").unwrap();
        assert_eq!(f.local, ("0.0.0.0".into(), 9000));
        assert_eq!(f.remote, ("db".into(), 5432));
        assert!(Forward::parse("8080").is_err());
        assert!(Forward::parse("x:db:5432").is_err());
    }
}
