//! Where `outpost mcp connect` reaches the remote server: a `ws://` URL, or a remote's serve
//! port through an SSH tunnel (direct-tcpip) on the pooled connection; and the bearer token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::hosts::Hosts;
use crate::ssh::pool::Lease;

/// Default port of `outpost mcp serve --websocket`.
pub const DEFAULT_PORT: u16 = 8001;
/// Time allowed to open the TCP connection or tunnel and finish the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 64 << 20;

/// A byte stream a WebSocket can run on: a TCP socket or an SSH channel.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

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
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `ws://host:port/path`.
    Url(String),
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
            Self::Url(url) => url.clone(),
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
            Self::Url(url) => {
                let address = authority(url).map_err(|reason| Failure {
                    reason,
                    refused: true,
                })?;
                let tcp = TcpStream::connect(&address)
                    .await
                    .map_err(|e| format!("cannot connect to {address}: {e}"))?;
                let _ = tcp.set_nodelay(true);
                Ok((url.clone(), Box::new(tcp), None))
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

/// `host:port` of a `ws://` URL (port 80 when it names none).
fn authority(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => return Err("wss:// is not supported: reach the server through SSH with --remote, or put a TLS proxy on the client side".to_owned()),
        _ => return Err(format!("{url} is not a ws:// URL")),
    }
    let host = uri
        .host()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| format!("{url} names no host"))?;
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(80)))
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
        assert_eq!(authority("ws://h:9/mcp").unwrap(), "h:9");
        assert_eq!(authority("ws://h/mcp").unwrap(), "h:80");
        assert_eq!(authority("ws://[::1]:8001/mcp").unwrap(), "[::1]:8001");
        assert!(authority("wss://h/mcp").unwrap_err().contains("--remote"));
        assert!(authority("http://h/mcp").is_err());
    }
}
