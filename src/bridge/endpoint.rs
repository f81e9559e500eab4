//! Where `outpost mcp connect` reaches the remote server: a `ws://` or `wss://` URL (TLS checked
//! against the system's roots or `--ca`), or a remote's serve port through an SSH tunnel
//! (direct-tcpip) on the pooled connection; and the bearer token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::hosts::Hosts;
use crate::ssh::pool::Lease;
use crate::tls::Io;

/// Default port of `outpost mcp serve --websocket`.
pub const DEFAULT_PORT: u16 = 8001;
/// Time allowed to open the TCP connection or tunnel and finish the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 64 << 20;

/// An open WebSocket to the server. Dropping it closes the socket (and frees the tunnel's
/// channel slot).
pub struct Link {
    pub socket: WebSocketStream<Box<dyn Io>>,
    _lease: Option<Lease>,
}

impl Link {
    pub async fn send(&mut self, text: String) -> Result<(), WsError> {
        use futures::SinkExt;
        self.socket.send(Message::text(text)).await
    }
}

/// A failed connection attempt: why, and whether the server itself refused (a bad token or
/// path, which waiting will not fix) rather than being unreachable.
#[derive(Debug)]
pub struct Failure {
    pub reason: String,
    pub refused: bool,
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
    /// `ws://host:port/path`, or `wss://` with the TLS client that checks the server.
    Url {
        url: String,
        tls: Option<TlsConnector>,
    },
    /// `ws://127.0.0.1:port/path` as seen from remote `host`, through SSH.
    Tunnel {
        host: String,
        port: u16,
        path: String,
    },
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
            Self::Url { url, .. } => url.clone(),
            Self::Tunnel { host, port, path } => format!("{host}:{port}{path} (through SSH)"),
        }
    }

    /// Opens a WebSocket to the server, presenting the token.
    pub async fn open(&self, hosts: &Arc<Hosts>, token: &TokenSource) -> Result<Link, Failure> {
        let token = token.read().map_err(|reason| Failure {
            reason,
            refused: true,
        })?;
        let opening = async {
            let (url, io, lease) = self.transport(hosts).await?;
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| format!("bad URL {url}: {e}"))?;
            if let Some(token) = token {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the token has characters a header cannot carry".to_owned())?;
                request.headers_mut().insert(header::AUTHORIZATION, value);
            }
            let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE));
            let (socket, _) =
                tokio_tungstenite::client_async_with_config(request, io, Some(config))
                    .await
                    .map_err(handshake_error)?;
            Ok::<_, Failure>(Link {
                socket,
                _lease: lease,
            })
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}").into()),
        }
    }

    /// The URL to ask for and the stream to ask on.
    async fn transport(
        &self,
        hosts: &Arc<Hosts>,
    ) -> Result<(String, Box<dyn Io>, Option<Lease>), Failure> {
        match self {
            Self::Url { url, tls } => {
                let (host, port) = authority(url).map_err(|reason| Failure {
                    reason,
                    refused: true,
                })?;
                let address = format!("{host}:{port}");
                let tcp = TcpStream::connect(&address)
                    .await
                    .map_err(|e| format!("cannot connect to {address}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                let Some(tls) = tls else {
                    return Ok((url.clone(), Box::new(tcp), None));
                };
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| format!("bad host name in {url}: {e}"))?;
                let stream = (tls.connect(name, tcp).await).map_err(|e| tls_error(&address, e))?;
                Ok((url.clone(), Box::new(stream), None))
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

/// Whether `url` is a `wss://` URL (else a `ws://` one); any other scheme is refused.
pub fn is_secure(url: &str) -> Result<bool, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    match uri.scheme_str() {
        Some("ws") => Ok(false),
        Some("wss") => Ok(true),
        Some("http" | "https") => Err(format!(
            "{url}: outpost mcp connect speaks WebSocket: give the ws:// or wss:// URL of a server started with --websocket"
        )),
        _ => Err(format!("{url} is not a ws:// or wss:// URL")),
    }
}

/// Host and port of a `ws://` or `wss://` URL (port 80 or 443 when it names none).
fn authority(url: &str) -> Result<(String, u16), String> {
    let default = if is_secure(url)? { 443 } else { 80 };
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
    format!("TLS handshake with {address} failed: {e} (does the server run with --tls-cert? a server without it needs ws://)").into()
}

/// A refused upgrade explained without echoing anything secret.
fn handshake_error(e: WsError) -> Failure {
    let reason = match e {
        WsError::Http(response) => match response.status() {
            StatusCode::UNAUTHORIZED => {
                "the server refused the token (401): check --token-env / --token-file and that it has not expired".to_owned()
            }
            StatusCode::NOT_FOUND => "no MCP endpoint at that path (404): check the URL's path".to_owned(),
            status => format!("the server answered {status}"),
        },
        other => return other.to_string().into(),
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
        assert!(
            authority("https://h/mcp")
                .unwrap_err()
                .contains("--websocket")
        );
        assert!(authority("ftp://h/mcp").is_err());
    }
}
