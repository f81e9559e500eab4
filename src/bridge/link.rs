//! An open link to the remote server, over WebSocket or Streamable HTTP: send one JSON-RPC
//! message, receive the next frame, close.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::http::HttpLink;
use crate::ssh::pool::Lease;
use crate::tls::Io;

/// One frame from the server, as the bridge cares about it.
pub enum Frame {
    /// A JSON-RPC message.
    Text(String),
    /// A ping, pong, keep-alive or binary frame: not for the client, but proof the server is alive.
    Control,
    /// The link closed or failed, and why.
    Closed(String),
}

/// An open link. Dropping it closes it (and frees a tunnel's channel slot).
pub enum Link {
    WebSocket {
        socket: Box<WebSocketStream<Box<dyn Io>>>,
        _lease: Option<Lease>,
    },
    Http(Box<HttpLink>),
}

impl Link {
    /// Sends one message; an error means the link is unusable.
    pub async fn send(&mut self, text: String) -> Result<(), String> {
        match self {
            Self::WebSocket { socket, .. } => {
                (socket.send(Message::text(text)).await).map_err(|e| format!("cannot send: {e}"))
            }
            Self::Http(link) => link.send(text).await,
        }
    }

    /// The next frame (tungstenite answers pings by itself).
    pub async fn next_frame(&mut self) -> Frame {
        let socket = match self {
            Self::WebSocket { socket, .. } => socket,
            Self::Http(link) => return link.next_frame().await,
        };
        match socket.next().await {
            Some(Ok(Message::Text(text))) => Frame::Text(text.to_string()),
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                Frame::Closed("the server closed the connection".to_owned())
            }
            Some(Ok(_)) => Frame::Control,
        }
    }

    /// Whether the server is expected to show it is alive (pings, keep-alives) while idle.
    pub fn heartbeat(&self) -> bool {
        match self {
            Self::WebSocket { .. } => true,
            Self::Http(link) => link.heartbeat(),
        }
    }

    /// Ends the link politely: a WebSocket close, or ending the HTTP session.
    pub async fn close(self) {
        match self {
            Self::WebSocket { mut socket, .. } => {
                let _ = SinkExt::close(&mut socket).await;
            }
            Self::Http(link) => link.close().await,
        }
    }
}
