//! Where `outpost mcp connect` reaches the remote server: a `ws://`/`wss://` (WebSocket) or
//! `http://`/`https://` (Streamable HTTP) URL, TLS checked against the system's roots or `--ca`;
//! or a remote's serve port through an SSH tunnel (direct-tcpip) on the pooled connection; and
//! the bearer token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::http::HttpLink;
use super::link::Link;
use crate::hosts::Hosts;
use crate::ssh::pool::Lease;
use crate::tls::Io;

/// Default port of `outpost mcp serve --websocket`.
pub const DEFAULT_PORT: u16 = 8001;
/// Time allowed to open the TCP connection or tunnel and finish the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 64 << 20;

/// A failed connection attempt: why, and whether the server itself refused (a bad token or
/// path, which waiting will not fix) rather than being unreachable.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub refused: bool,
}

impl From<Failure> for String {
    fn from(failure: Failure) -> Self {
        failure.reason
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self {
            reason,
            refused: false,
        }
    }
}

/// Where the server is.
#[derive(Clone)]
pub enum Endpoint {
    /// A WebSocket URL.
    WebSocket(Target),
    /// A Streamable HTTP URL.
    Http(Target),
    /// `ws://127.0.0.1:port/path` as seen from remote `host`, through SSH.
    Tunnel {
        host: String,
        port: u16,
        path: String,
    },
}

/// A server named by URL, and the TLS client that checks it (for `wss://` and `https://`).
#[derive(Clone)]
pub struct Target {
    pub url: String,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
}

impl Target {
    /// The URL's target; `tls` is the checker for a secure scheme, `None` for a plain one.
    pub fn new(url: &str, tls: Option<TlsConnector>) -> Result<Self, String> {
        let (host, port) = authority(url)?;
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            tls,
        })
    }

    /// A new connection to the server, TLS verified when the URL is secure.
    pub async fn dial(&self) -> Result<Box<dyn Io>, Failure> {
        let address = format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let name = ServerName::try_from(self.host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| format!("bad host name in {}: {e}", self.url))?;
        let stream = (tls.connect(name, tcp).await).map_err(|e| tls_error(&address, e))?;
        Ok(Box::new(stream))
    }
}

/// Where the bearer token comes from; read again before every connection (so it can rotate).
#[derive(Debug, Clone, Default)]
pub struct TokenSource {
    pub env: Option<String>,
    pub file: Option<PathBuf>,
}

impl TokenSource {
    fn read(&self) -> Result<Option<String>, String> {
        if let Some(name) = &self.env {
            return std::env::var(name)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|_| format!("--token-env: ${name} is not set"));
        }
        if let Some(path) = &self.file {
            return std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|e| format!("--token-file {}: {e}", path.display()));
        }
        Ok(None)
    }
}

impl Endpoint {
    /// What to show in messages: the URL, or `remote NAME port N`.
    pub fn describe(&self) -> String {
        match self {
            Self::WebSocket(target) | Self::Http(target) => target.url.clone(),
            Self::Tunnel { host, port, path } => format!("{host}:{port}{path} (through SSH)"),
        }
    }

    /// Opens a link to the server, presenting the token.
    pub async fn open(&self, hosts: &Arc<Hosts>, token: &TokenSource) -> Result<Link, Failure> {
        let token = token.read().map_err(|reason| Failure {
            reason,
            refused: true,
        })?;
        let opening = async {
            let authorization = bearer(token)?;
            if let Self::Http(target) = self {
                let link = HttpLink::open(target.clone(), authorization).await?;
                return Ok(Link::Http(Box::new(link)));
            }
            let (url, io, lease) = self.transport(hosts).await?;
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| format!("bad URL {url}: {e}"))?;
            if let Some(value) = authorization {
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE));
            let (socket, _) =
                tokio_tungstenite::client_async_with_config(request, io, Some(config))
                    .await
                    .map_err(handshake_error)?;
            Ok::<_, Failure>(Link::WebSocket {
                socket: Box::new(socket),
                _lease: lease,
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}").into()),
        }
    }

    /// The WebSocket URL to ask for and the stream to ask on.
    async fn transport(
        &self,
        hosts: &Arc<Hosts>,
    ) -> Result<(String, Box<dyn Io>, Option<Lease>), Failure> {
        match self {
            Self::WebSocket(target) | Self::Http(target) => {
                Ok((target.url.clone(), target.dial().await?, None))
            }
            Self::Tunnel { host, port, path } => {
                let target = hosts
                    .ssh_target(host)
                    .ok_or_else(|| format!("`{host}` is not an SSH remote or ssh alias"))?;
                let dialed = crate::tunnel::dial(hosts, &target, "127.0.0.1", *port)
                    .await
                    .map_err(|e| match e {
                        crate::Error::SshChannel { .. } => {
                            format!("{e} (is `outpost mcp serve --websocket` running there?)")
                        }
                        e => e.to_string(),
                    })?;
                let url = format!("ws://127.0.0.1:{port}{path}");
                let (stream, lease) = dialed.into_parts();
                Ok((url, Box::new(stream), Some(lease)))
            }
        }
    }
}

/// The `Authorization` header carrying `token`.
fn bearer(token: Option<String>) -> Result<Option<HeaderValue>, Failure> {
    let Some(token) = token else { return Ok(None) };
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| "the token has characters a header cannot carry".to_owned())?;
    Ok(Some(value))
}

/// How a URL's server is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme {
    /// Streamable HTTP (`http`, `https`) rather than WebSocket (`ws`, `wss`).
    pub http: bool,
    /// With TLS (`wss`, `https`).
    pub secure: bool,
}

impl Scheme {
    /// The scheme of `url`; any but `ws`, `wss`, `http` and `https` is refused.
    pub fn of(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let (http, secure) = match uri.scheme_str() {
            Some("ws") => (false, false),
            Some("wss") => (false, true),
            Some("http") => (true, false),
            Some("https") => (true, true),
            _ => {
                return Err(format!(
                    "{url} is not a ws://, wss://, http:// or https:// URL"
                ));
            }
        };
        Ok(Self { http, secure })
    }
}

/// Host and port of a URL (port 80 or 443 when it names none).
fn authority(url: &str) -> Result<(String, u16), String> {
    let default = if Scheme::of(url)?.secure { 443 } else { 80 };
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let host = uri
        .host()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| format!("{url} names no host"))?;
    Ok((host.to_owned(), uri.port_u16().unwrap_or(default)))
}

/// A failed TLS handshake explained: an untrusted certificate will not fix itself by waiting.
fn tls_error(address: &str, e: std::io::Error) -> Failure {
    if let Some(why) = crate::tls::untrusted_certificate(&e) {
        return Failure {
            reason: format!("the certificate of {address} is not trusted: {why}"),
            refused: true,
        };
    }
    format!("TLS handshake with {address} failed: {e} (does the server run with --tls-cert? a server without it needs ws:// or http://)").into()
}

/// A refused upgrade explained without echoing anything secret.
fn handshake_error(e: WsError) -> Failure {
    match e {
        WsError::Http(response) => refusal(response.status()),
        other => other.to_string().into(),
    }
}

/// The server's refusal to open a session, explained with the fix.
pub fn refusal(status: StatusCode) -> Failure {
    let reason = match status {
        StatusCode::UNAUTHORIZED => {
            "the server refused the token (401): check --token-env / --token-file and that it has not expired".to_owned()
        }
        StatusCode::NOT_FOUND => {
            "no MCP endpoint at that path (404): check the URL's path".to_owned()
        }
        status => format!("the server answered {status}"),
    };
    Failure {
        reason,
        refused: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_of_urls() {
        let pair = |url| authority(url).unwrap();
        assert_eq!(pair("ws://h:9/mcp"), ("h".to_owned(), 9));
        assert_eq!(pair("ws://h/mcp"), ("h".to_owned(), 80));
        assert_eq!(pair("wss://h/mcp"), ("h".to_owned(), 443));
        assert_eq!(pair("ws://[::1]:8001/mcp"), ("[::1]".to_owned(), 8001));
        assert_eq!(pair("https://h/mcp"), ("h".to_owned(), 443));
        assert_eq!(pair("http://h:8002/mcp"), ("h".to_owned(), 8002));
        assert!(authority("ftp://h/mcp").unwrap_err().contains("https://"));
    }
}
