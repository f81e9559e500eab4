//! `outpost mcp connect`: a stdio MCP server for the local client that forwards every message to
//! a remote outpost over WebSocket or Streamable HTTP, reconnecting with backoff and
//! re-initializing transparently.

mod endpoint;
mod http;
mod link;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Stdout};
use tokio::time::{Instant, sleep_until};

pub use endpoint::{DEFAULT_PORT, Endpoint, TokenSource};
use endpoint::{Failure, Scheme, Target};
use link::{Frame, Link};
use session::{ClientMessage, Session};

use crate::error::{Error, Result};
use crate::hosts::Hosts;

/// How long a request waits for a link before it fails.
const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Waits between connection attempts: doubling from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(10));
/// A link up this long counts as healthy: losing it resets the backoff.
const STABLE_LINK: Duration = Duration::from_secs(30);
/// A server silent this long (it pings every 20 s; over HTTP, keep-alives every 15 s) is taken
/// for gone.
const SILENCE: Duration = Duration::from_secs(65);
/// Time the server gets to answer the replayed `initialize`.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(15);

/// `outpost mcp connect` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectOptions {
    /// The server's URL: ws://buildbox:8001/mcp (a server started with --websocket), or
    /// http://buildbox:8000/mcp (--http); wss:// and https:// for TLS.
    #[arg(long, conflicts_with = "remote", required_unless_present = "remote")]
    pub url: Option<String>,
    /// Reach `outpost mcp serve --websocket` on this remote through an SSH tunnel.
    #[arg(long)]
    pub remote: Option<String>,
    /// With --remote: the server's port there (default: the remote's `serve_port`, else 8001).
    #[arg(long, requires = "remote")]
    pub port: Option<u16>,
    /// With --remote: the server's path.
    #[arg(long, default_value = "/mcp")]
    pub path: String,
    /// Environment variable holding the bearer token.
    #[arg(long, value_name = "VAR", conflicts_with = "token_file")]
    pub token_env: Option<String>,
    /// File holding the bearer token (read again on every reconnect).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With a wss:// or https:// URL: trust the CA certificates in this PEM file (or the
    /// server's own self-signed certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE", requires = "url")]
    pub ca: Option<PathBuf>,
}

/// Bridges stdin/stdout to the server until stdin closes.
pub async fn run_bridge(hosts: Arc<Hosts>, options: ConnectOptions) -> Result<()> {
    let endpoint = match (&options.url, &options.remote) {
        (Some(url), _) => url_endpoint(url, options.ca.as_deref())?,
        (None, Some(remote)) => Endpoint::Tunnel {
            host: remote.clone(),
            port: options.port.unwrap_or_else(|| {
                let remote = hosts.config().remotes.get(remote);
                remote.and_then(|r| r.serve_port).unwrap_or(DEFAULT_PORT)
            }),
            path: options.path.clone(),
        },
        (None, None) => return Err(Error::Serve("give --url or --remote".to_owned())),
    };
    let token = TokenSource {
        env: options.token_env.clone(),
        file: options.token_file.clone(),
    };
    let _tunnels = match &options.remote {
        Some(remote) => open_tunnels(&hosts, remote).await,
        None => Vec::new(),
    };
    let mut bridge = Bridge {
        hosts,
        endpoint,
        token,
        session: Session::default(),
        stdout: tokio::io::stdout(),
        link: None,
        last_error: "not connected yet".to_owned(),
        next_attempt: Instant::now(),
        backoff: BACKOFF.0,
        connected_at: Instant::now(),
    };
    bridge.run().await
}

/// The server at `url`; a `wss://` or `https://` one checked against `ca` or the system's roots.
fn url_endpoint(url: &str, ca: Option<&Path>) -> Result<Endpoint> {
    let scheme = Scheme::of(url).map_err(Error::Serve)?;
    let tls = match (scheme.secure, ca) {
        (true, ca) => Some(crate::tls::connector(ca)?),
        (false, Some(_)) => {
            let (plain, secure) = if scheme.http {
                ("http", "https")
            } else {
                ("ws", "wss")
            };
            return Err(Error::Tls(format!(
                "--ca is for wss:// and https:// URLs; {url} is plain {plain}://: use {secure}:// (the server needs --tls-cert) or drop --ca"
            )));
        }
        (false, None) => None,
    };
    let target = Target::new(url, tls).map_err(Error::Serve)?;
    Ok(match scheme.http {
        true => Endpoint::Http(target),
        false => Endpoint::WebSocket(target),
    })
}

/// The remote's configured tunnels, for as long as the bridge runs. A tunnel whose port is in
/// use is reported and skipped: the bridge's own work does not depend on them.
async fn open_tunnels(hosts: &Arc<Hosts>, remote: &str) -> Vec<crate::tunnel::Tunnels> {
    let forwards = crate::tunnel::forwards(hosts, remote, &[]).unwrap_or_default();
    let mut open = Vec::new();
    for forward in forwards {
        match crate::tunnel::Tunnels::open(hosts.clone(), remote, vec![forward]).await {
            Ok(tunnels) => {
                for label in &tunnels.labels {
                    tracing::info!("tunnel {label}");
                }
                open.push(tunnels);
            }
            Err(e) => tracing::error!("a tunnel of `{remote}` is not open: {e}"),
        }
    }
    open
}

struct Bridge {
    hosts: Arc<Hosts>,
    endpoint: Endpoint,
    token: TokenSource,
    session: Session,
    stdout: Stdout,
    link: Option<Link>,
    last_error: String,
    next_attempt: Instant,
    backoff: Duration,
    /// When the current (or last) link came up.
    connected_at: Instant,
}

impl Bridge {
    async fn run(&mut self) -> Result<()> {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        let mut expiry = tokio::time::interval(Duration::from_secs(1));
        let mut last_frame = Instant::now();
        loop {
            let connected = self.link.is_some();
            tokio::select! {
                line = stdin.next_line() => match line {
                    Ok(Some(line)) if line.trim().is_empty() => {}
                    Ok(Some(line)) => self.on_client_line(line).await?,
                    Ok(None) | Err(_) => break,
                },
                frame = next_frame(&mut self.link), if connected => {
                    last_frame = Instant::now();
                    match frame {
                        Frame::Text(text) => self.on_server_text(&text).await?,
                        Frame::Control => {}
                        Frame::Closed(why) => self.lost(&why).await?,
                    }
                }
                _ = sleep_until(self.next_attempt), if !connected => {
                    self.connect().await?;
                    last_frame = Instant::now();
                }
                _ = expiry.tick() => {
                    let heartbeat = self.link.as_ref().is_some_and(Link::heartbeat);
                    if heartbeat && last_frame.elapsed() > SILENCE {
                        self.lost("the server stopped answering").await?;
                    }
                    let errors = self.session.expire(&self.unreachable(), Instant::now());
                    self.write_all(errors).await?;
                }
            }
        }
        if let Some(link) = self.link.take() {
            link.close().await;
        }
        Ok(())
    }

    async fn on_client_line(&mut self, line: String) -> Result<()> {
        let message = match ClientMessage::parse(line) {
            Ok(message) => message,
            Err(reply) => return self.write(&reply).await,
        };
        self.send(message).await
    }

    /// Sends on the link, or queues until there is one.
    async fn send(&mut self, message: ClientMessage) -> Result<()> {
        let Some(link) = &mut self.link else {
            self.session.enqueue(message, QUEUE_WAIT);
            return Ok(());
        };
        self.session.sending(&message);
        if let Err(why) = link.send(message.text).await {
            return self.lost(&why).await;
        }
        Ok(())
    }

    async fn on_server_text(&mut self, text: &str) -> Result<()> {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            tracing::warn!("the server sent something that is not JSON; dropped");
            return Ok(());
        };
        if self.session.answered(&value) {
            self.write(&value).await?;
        }
        Ok(())
    }

    /// The link is gone: fail the calls in flight and plan the reconnection.
    async fn lost(&mut self, why: &str) -> Result<()> {
        tracing::warn!(endpoint = %self.endpoint.describe(), "link lost: {why}");
        self.link = None;
        self.last_error = why.to_owned();
        // Only a link that stayed up earns a quick retry: a server that accepts and drops at
        // once is retried with growing waits, not every 250 ms.
        if self.connected_at.elapsed() >= STABLE_LINK {
            self.backoff = BACKOFF.0;
        }
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        let errors = self.session.link_lost(why);
        self.write_all(errors).await
    }

    /// One connection attempt: open, replay the session, send what waited.
    async fn connect(&mut self) -> Result<()> {
        let link = match self.endpoint.open(&self.hosts, &self.token).await {
            Ok(link) => link,
            Err(failure) => return self.failed(failure).await,
        };
        self.link = Some(link);
        if let Err(reason) = self.replay().await {
            self.link = None;
            return self.failed(reason.into()).await;
        }
        tracing::info!(endpoint = %self.endpoint.describe(), "connected");
        self.connected_at = Instant::now();
        for (message, _) in self.session.take_queue() {
            self.send(message).await?;
        }
        Ok(())
    }

    /// Plans the next attempt. When the server refused (bad token, wrong path), waiting calls
    /// fail now instead of after QUEUE_WAIT; retries go on in case the token file is fixed.
    async fn failed(&mut self, failure: Failure) -> Result<()> {
        let reason = failure.reason;
        tracing::warn!(endpoint = %self.endpoint.describe(), retry_in = ?self.backoff, "cannot connect: {reason}");
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
        self.last_error = reason;
        if !failure.refused {
            return Ok(());
        }
        let errors = self.session.expire_all(&self.unreachable());
        self.write_all(errors).await
    }

    /// Why calls cannot be sent now.
    fn unreachable(&self) -> String {
        format!(
            "the remote outpost at {} is unreachable: {}",
            self.endpoint.describe(),
            self.last_error
        )
    }

    /// Re-initializes the session on a new link and waits for the server's answer.
    async fn replay(&mut self) -> std::result::Result<(), String> {
        let messages = self.session.replay();
        let Some(first_id) = messages.first().and_then(|m| m.get("id")).cloned() else {
            return Ok(());
        };
        let Some(link) = &mut self.link else {
            return Err("no link".into());
        };
        for message in messages {
            link.send(message.to_string()).await?;
        }
        let deadline = Instant::now() + REPLAY_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, next_frame(&mut self.link))
                .await
                .map_err(|_| "the server did not answer initialize".to_owned())?;
            let text = match frame {
                Frame::Text(text) => text,
                Frame::Control => continue,
                Frame::Closed(why) => return Err(format!("{why} during initialize")),
            };
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if value.get("id") == Some(&first_id) {
                return match value.get("error") {
                    Some(error) => Err(format!("the server refused initialize: {error}")),
                    None => Ok(()),
                };
            }
        }
    }

    async fn write_all(&mut self, values: Vec<Value>) -> Result<()> {
        for value in values {
            self.write(&value).await?;
        }
        Ok(())
    }

    /// One line to the client.
    async fn write(&mut self, value: &Value) -> Result<()> {
        let mut line = value.to_string();
        line.push('\n');
        let written = async {
            self.stdout.write_all(line.as_bytes()).await?;
            self.stdout.flush().await
        };
        written
            .await
            .map_err(|e| Error::Serve(format!("cannot write to stdout: {e}")))
    }
}

/// The next frame on the link.
async fn next_frame(link: &mut Option<Link>) -> Frame {
    match link.as_mut() {
        Some(link) => link.next_frame().await,
        None => Frame::Closed("not connected".to_owned()),
    }
}
