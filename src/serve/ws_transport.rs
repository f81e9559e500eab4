//! MCP over one WebSocket: text frames carry JSON-RPC, binary frames are refused, silent or
//! dead peers are closed, and the connection's end cancels its calls.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use rmcp::RoleServer;
use rmcp::model::JsonRpcMessage;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::jsonrpc::{Incoming, parse_incoming, too_large};

/// How often the server pings; a peer silent for three of these is taken for dead.
pub const PING_EVERY: Duration = Duration::from_secs(20);

type Sink<S> = Arc<Mutex<SplitSink<WebSocketStream<S>, Message>>>;

/// An MCP transport over an accepted WebSocket. When it ends (close, error, idle, dead peer)
/// it cancels `closed`, which cancels the connection's running calls.
pub struct WsTransport<S> {
    sink: Sink<S>,
    stream: SplitStream<WebSocketStream<S>>,
    closed: CancellationToken,
    /// Requests received and not yet answered.
    in_flight: Arc<AtomicUsize>,
    ticker: Interval,
    last_frame: Instant,
    last_message: Instant,
    idle_timeout: Duration,
    max_message: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTransport<S> {
    pub fn new(
        socket: WebSocketStream<S>,
        closed: CancellationToken,
        idle_timeout: Duration,
        max_message: usize,
    ) -> Self {
        let (sink, stream) = socket.split();
        // Tick often enough to notice the idle timeout within half of it.
        let every = PING_EVERY
            .min(idle_timeout / 2)
            .max(Duration::from_millis(100));
        let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            sink: Arc::new(Mutex::new(sink)),
            stream,
            closed,
            in_flight: Arc::new(AtomicUsize::new(0)),
            ticker,
            last_frame: Instant::now(),
            last_message: Instant::now(),
            idle_timeout,
            max_message,
        }
    }

    /// Ends the connection: cancels its calls and tells the peer why.
    async fn end(&mut self, code: CloseCode, reason: &str) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.closed.cancel();
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self
            .sink
            .lock()
            .await
            .send(Message::Close(Some(frame)))
            .await;
        None
    }

    /// On a ping tick: close a dead or idle connection (returns the reason), else ping.
    async fn keepalive(&mut self) -> Option<(CloseCode, &'static str)> {
        if self.last_frame.elapsed() >= PING_EVERY * 3 {
            return Some((CloseCode::Away, "no answer to pings"));
        }
        let idle = self.in_flight.load(Ordering::Relaxed) == 0
            && self.last_message.elapsed() >= self.idle_timeout;
        if idle {
            return Some((CloseCode::Normal, "idle timeout"));
        }
        let ping = self
            .sink
            .lock()
            .await
            .send(Message::Ping(Vec::new().into()))
            .await;
        ping.err().map(|_| (CloseCode::Away, "cannot write"))
    }

    /// What to do with one text message: a message for the service, or a reply already sent.
    async fn accept_text(&mut self, text: &[u8]) -> Option<RxJsonRpcMessage<RoleServer>> {
        self.last_message = Instant::now();
        let reply = match parse_incoming(text) {
            Incoming::Message(message) => {
                if matches!(*message, JsonRpcMessage::Request(_)) {
                    self.in_flight.fetch_add(1, Ordering::Relaxed);
                }
                return Some(*message);
            }
            Incoming::Ignore => return None,
            Incoming::Reply(reply) => reply,
        };
        let _ = self.sink.lock().await.send(Message::text(reply)).await;
        None
    }
}

impl<S> Transport<RoleServer> for WsTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let sink = self.sink.clone();
        let in_flight = self.in_flight.clone();
        async move {
            if matches!(item, JsonRpcMessage::Response(_) | JsonRpcMessage::Error(_)) {
                let _ = in_flight
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            let text = serde_json::to_string(&item).map_err(io::Error::other)?;
            sink.lock()
                .await
                .send(Message::text(text))
                .await
                .map_err(io::Error::other)
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            let frame = tokio::select! {
                frame = self.stream.next() => frame,
                _ = self.ticker.tick() => match self.keepalive().await {
                    Some((code, reason)) => return self.end(code, reason).await,
                    None => continue,
                },
                _ = self.closed.cancelled() => return self.end(CloseCode::Away, "server stopping").await,
            };
            self.last_frame = Instant::now();
            match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(message) = self.accept_text(text.as_bytes()).await {
                        return Some(message);
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let reason = "binary frames are not supported: send JSON-RPC as text";
                    return self.end(CloseCode::Unsupported, reason).await;
                }
                Some(Ok(Message::Close(_))) | None => {
                    self.closed.cancel();
                    return None;
                }
                Some(Ok(_)) => {} // ping, pong, raw frame: tungstenite answers pings itself
                Some(Err(WsError::Capacity(_))) => {
                    let _ = (self.sink.lock().await)
                        .send(Message::text(too_large(self.max_message)))
                        .await;
                    return self.end(CloseCode::Size, "message too large").await;
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket read failed");
                    self.closed.cancel();
                    return None;
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.closed.cancel();
        let mut sink = self.sink.lock().await;
        let _ = sink.send(Message::Close(None)).await;
        sink.close().await.map_err(io::Error::other)
    }
}
