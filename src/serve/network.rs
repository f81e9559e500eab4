//! Serving on a TCP port: the listen flags, the accept loop (each connection waits to
//! authenticate, then takes a slot), and a stop that refuses new connections, cancels running
//! calls and kills their processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{Admission, Standing};
use super::gate::Gate;
use super::state::{ServerState, StateOptions};
use super::termination;
use crate::audit::AuditChoice;
use crate::auth::{Authenticator, Verifier};
use crate::config::ServeSettings;
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::tls::Io;

/// How long connections get to finish once every process is dead.
const DRAIN: Duration = Duration::from_secs(3);

/// `--auth`: how clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A bearer JWT in the `Authorization` header.
    Jwt,
    /// Nobody is asked; refused on non-loopback addresses without `--insecure-no-auth`.
    None,
}

/// Where and how `outpost mcp serve --websocket|--http` listens.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenOptions {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 8001)]
    pub port: u16,
    /// URL path of the MCP endpoint.
    #[arg(long, default_value = "/mcp")]
    pub path: String,
    /// Authentication (default: `jwt`, except on loopback with no JWT secret configured).
    #[arg(long, value_enum)]
    pub auth: Option<AuthMode>,
    /// File holding the HS256 secret (default: $OUTPOST_JWT_SECRET, then `serve.jwt.secret_file`).
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Allow `--auth none` on a non-loopback address.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Serve over TLS (wss://, https://) with this PEM certificate chain, server's first.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Allow bearer tokens in plain text (no --tls-cert) on a non-loopback address.
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_no_tls: bool,
}

impl Default for ListenOptions {
    /// The same defaults as the flags.
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8001,
            path: "/mcp".to_owned(),
            auth: None,
            jwt_secret_file: None,
            insecure_no_auth: false,
            tls_cert: None,
            tls_key: None,
            insecure_no_tls: false,
        }
    }
}

/// The network transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    WebSocket,
    StreamableHttp,
}

/// One accepted connection (TLS already set up when served with it) and its standing under
/// the connection cap (freed on drop).
pub struct Accepted {
    pub stream: Box<dyn Io>,
    pub peer: SocketAddr,
    pub standing: Standing,
}

/// Everything a connection handler needs, shared by all connections.
pub struct Shared {
    pub state: ServerState,
    pub gate: Gate,
    pub settings: ServeSettings,
    /// Cancelled when the server stops.
    pub stop: CancellationToken,
}

impl Shared {
    /// Time a connection gets to send a complete request head (`serve.header_timeout_secs`).
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.header_timeout_secs.max(1))
    }
}

/// Serves MCP over `protocol` until SIGTERM/SIGINT; then stops accepting, cancels every running
/// call, kills every process, and returns.
pub async fn serve_network(
    hosts: Arc<Hosts>,
    protocol: Protocol,
    listen: ListenOptions,
    audit: AuditChoice,
) -> Result<()> {
    let settings = hosts.config().serve.clone();
    let termination = termination();
    tokio::pin!(termination);
    let loopback = is_loopback(&listen.host).await?;
    let auth = authenticator(&listen, &settings, loopback)?;
    let tls = tls_acceptor(&listen, &auth, loopback)?;
    let listener = bind(&listen).await?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Serve(e.to_string()))?;
    let options = StateOptions {
        audit,
        network: true,
        calls_per_minute: settings.calls_per_minute,
        jwt_secret_file: listen.jwt_secret_file.clone(),
    };
    let shared = Arc::new(Shared {
        state: ServerState::new(hosts, options)?,
        gate: Gate {
            path: listen.path.clone(),
            auth,
            allowed_hosts: settings.allowed_hosts.clone(),
        },
        stop: CancellationToken::new(),
        settings,
    });
    let scheme = match (protocol, tls.is_some()) {
        (Protocol::WebSocket, false) => "ws",
        (Protocol::WebSocket, true) => "wss",
        (Protocol::StreamableHttp, false) => "http",
        (Protocol::StreamableHttp, true) => "https",
    };
    // Tests and scripts read this line to learn the port.
    eprintln!("outpost: serving MCP on {scheme}://{bound}{}", listen.path);
    let http = match protocol {
        Protocol::StreamableHttp => Some(super::http::HttpService::new(&shared, bound)),
        Protocol::WebSocket => None,
    };
    let admission = Admission::new(shared.settings.max_connections);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut termination => break,
        };
        let _ = tcp.set_nodelay(true);
        let standing = admission.arrive();
        let (shared, tls, http) = (shared.clone(), tls.clone(), http.clone());
        tracker.spawn(async move {
            let Some(stream) = super::tls::secure(tcp, tls, &standing, &shared).await else {
                return tracing::debug!(%peer, "closed before the TLS handshake completed");
            };
            let accepted = Accepted {
                stream,
                peer,
                standing,
            };
            match http {
                Some(http) => http.serve_connection(accepted, shared).await,
                None => super::websocket::serve_connection(accepted, shared).await,
            }
        });
    }
    drop(listener);
    tracing::info!("stopping: cancelling running calls");
    shared.stop.cancel();
    shared.state.shutdown().await;
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(listen: &ListenOptions) -> Result<TcpListener> {
    TcpListener::bind((listen.host.as_str(), listen.port))
        .await
        .map_err(|e| {
            Error::Serve(format!(
                "cannot listen on {}:{}: {e}",
                listen.host, listen.port
            ))
        })
}

/// Whether every address `host` stands for is a loopback one.
async fn is_loopback(host: &str) -> Result<bool> {
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| Error::Serve(format!("cannot resolve --host {host}: {e}")))?
        .collect();
    Ok(!addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()))
}

/// The authenticator `listen` asks for; `--auth none` off loopback needs `--insecure-no-auth`.
fn authenticator(
    listen: &ListenOptions,
    settings: &ServeSettings,
    loopback: bool,
) -> Result<Authenticator> {
    let jwt = || Verifier::from_settings(&settings.jwt, listen.jwt_secret_file.as_deref());
    let configured =
        crate::auth::jwt::is_configured(&settings.jwt, listen.jwt_secret_file.as_deref());
    let mode = listen.auth.unwrap_or(if loopback && !configured {
        AuthMode::None
    } else {
        AuthMode::Jwt
    });
    match mode {
        AuthMode::Jwt => Ok(Authenticator::Jwt(Box::new(jwt()?))),
        AuthMode::None if !loopback && !listen.insecure_no_auth => Err(Error::Serve(format!(
            "refusing to serve {} without authentication: use --auth jwt, bind 127.0.0.1, or pass --insecure-no-auth",
            listen.host
        ))),
        AuthMode::None => {
            tracing::warn!(
                "no authentication: every local user of this machine can run commands as you; prefer --auth jwt"
            );
            Ok(Authenticator::None)
        }
    }
}

/// The TLS acceptor of `--tls-cert`/`--tls-key`; without them, bearer tokens would cross the
/// network in plain text, which off loopback needs `--insecure-no-tls`.
fn tls_acceptor(
    listen: &ListenOptions,
    auth: &Authenticator,
    loopback: bool,
) -> Result<Option<TlsAcceptor>> {
    if let (Some(cert), Some(key)) = (&listen.tls_cert, &listen.tls_key) {
        return Ok(Some(crate::tls::acceptor(cert, key)?));
    }
    let tokens = matches!(auth, Authenticator::Jwt(_));
    if tokens && !loopback && !listen.insecure_no_tls {
        return Err(Error::Serve(format!(
            "refusing to serve {} with bearer tokens in plain text: use --tls-cert FILE --tls-key FILE, bind 127.0.0.1, or pass --insecure-no-tls",
            listen.host
        )));
    }
    if tokens && !loopback {
        tracing::warn!(
            "no TLS: bearer tokens and everything else cross the network in plain text; prefer --tls-cert and --tls-key"
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listen_options_match_the_flags() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            listen: ListenOptions,
        }
        let parsed = Flags::parse_from(["outpost"]).listen;
        let default = ListenOptions::default();
        assert_eq!(
            (parsed.host, parsed.port, parsed.path, parsed.auth),
            (default.host, default.port, default.path, default.auth)
        );
    }
}
