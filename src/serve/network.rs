//! Serving on a TCP port: the listen flags, who may connect (the gate), the connection cap, and
//! a stop that refuses new connections, cancels running calls and kills their processes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::{ServerState, StateOptions};
use super::termination;
use crate::auth::{Authenticator, Principal, Verifier};
use crate::config::ServeSettings;
use crate::error::{Error, Result};
use crate::hosts::Hosts;

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
        }
    }
}

/// The network transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    WebSocket,
    StreamableHttp,
}

/// Decides, from a request's path and headers, whether it may open an MCP session, and as whom.
pub struct Gate {
    path: String,
    auth: Authenticator,
    /// Extra names browsers may send in `Origin` (loopback names always pass).
    allowed_hosts: Vec<String>,
}

impl Gate {
    /// The principal of an admitted request, or the status to refuse it with. A request from a
    /// browser page (an `Origin` header) is refused unless that origin's host is allowed, so a
    /// web page cannot drive a server that has no authentication.
    pub fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
    ) -> std::result::Result<Principal, StatusCode> {
        if path != self.path {
            return Err(StatusCode::NOT_FOUND);
        }
        if let Some(origin) = headers.get(http::header::ORIGIN)
            && !self.origin_allowed(origin.to_str().unwrap_or(""))
        {
            return Err(StatusCode::FORBIDDEN);
        }
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        self.auth
            .admit(authorization)
            .ok_or(StatusCode::UNAUTHORIZED)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let Ok(uri) = origin.parse::<http::Uri>() else {
            return false;
        };
        let (Some(name), Some(authority)) = (uri.host(), uri.authority()) else {
            return false;
        };
        ["localhost", "127.0.0.1", "[::1]"].contains(&name)
            || (self.allowed_hosts.iter()).any(|h| h == name || h == authority.as_str())
    }
}

/// A refusal with a bare status and its reason phrase: no detail a client could learn from.
/// `body` wraps the text in the response body type of the server at hand.
pub fn refusal<B>(status: StatusCode, body: impl FnOnce(String) -> B) -> http::Response<B> {
    let reason = status.canonical_reason().unwrap_or("").to_owned();
    let mut response = http::Response::new(body(reason));
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// One accepted TCP connection and its place under the connection cap (freed on drop).
pub struct Accepted {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

/// Everything a connection handler needs, shared by all connections.
pub struct Shared {
    pub state: ServerState,
    pub gate: Gate,
    pub settings: ServeSettings,
    /// Cancelled when the server stops.
    pub stop: CancellationToken,
}

/// Serves MCP over `protocol` until SIGTERM/SIGINT; then stops accepting, cancels every running
/// call, kills every process, and returns.
pub async fn serve_network(
    hosts: Arc<Hosts>,
    protocol: Protocol,
    listen: ListenOptions,
    audit_path: Option<PathBuf>,
) -> Result<()> {
    let settings = hosts.config().serve.clone();
    let termination = termination();
    tokio::pin!(termination);
    let loopback = is_loopback(&listen.host).await?;
    let auth = authenticator(&listen, &settings, loopback)?;
    let listener = bind(&listen).await?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Serve(e.to_string()))?;
    let options = StateOptions {
        audit_path,
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
    let scheme = match protocol {
        Protocol::WebSocket => "ws",
        Protocol::StreamableHttp => "http",
    };
    // Tests and scripts read this line to learn the port.
    eprintln!("outpost: serving MCP on {scheme}://{bound}{}", listen.path);
    let http = match protocol {
        Protocol::StreamableHttp => Some(super::http::HttpService::new(&shared, bound)),
        Protocol::WebSocket => None,
    };
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections.max(1)));
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracker.spawn(answer_over_capacity(tcp));
            continue;
        };
        let accepted = Accepted { tcp, peer, slot };
        let shared = shared.clone();
        match &http {
            Some(http) => tracker.spawn(http.clone().serve_connection(accepted, shared)),
            None => tracker.spawn(super::websocket::serve_connection(accepted, shared)),
        };
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

/// Answers a connection over the cap with one `503` (the same for an HTTP request and a
/// WebSocket upgrade) and closes it.
async fn answer_over_capacity(tcp: TcpStream) {
    let service = hyper::service::service_fn(|_request| async {
        let mut response = refusal(StatusCode::SERVICE_UNAVAILABLE, |reason| {
            http_body_util::Full::new(bytes::Bytes::from(reason))
        });
        (response.headers_mut()).insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        Ok::<_, std::convert::Infallible>(response)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(Duration::from_secs(10), connection).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate {
        Gate {
            path: "/mcp".into(),
            auth: Authenticator::None,
            allowed_hosts: vec!["box.example".into()],
        }
    }

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

    #[test]
    fn path_and_browser_origins_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(gate().check("/other", &headers), Err(StatusCode::NOT_FOUND));
        assert!(gate().check("/mcp", &headers).is_ok());
        for refused in [
            "https://evil.example",
            "null",
            "http://localhost.evil.example",
        ] {
            headers.insert("origin", refused.parse().unwrap());
            assert_eq!(
                gate().check("/mcp", &headers),
                Err(StatusCode::FORBIDDEN),
                "{refused}"
            );
        }
        for allowed in [
            "http://localhost:3000",
            "https://box.example",
            "http://127.0.0.1",
            "http://[::1]:8080",
        ] {
            headers.insert("origin", allowed.parse().unwrap());
            assert!(gate().check("/mcp", &headers).is_ok(), "{allowed}");
        }
    }
}
