//! The bridge's Streamable HTTP link: every client message is POSTed with the session's
//! `Mcp-Session-Id` and negotiated `MCP-Protocol-Version`; answers come back as JSON or as an SSE
//! stream read by a task of the link; a GET stream carries what the server sends on its own and
//! its keep-alives; a `DELETE` ends the session when the bridge stops. HTTP/1.1 on hyper, over
//! the same TCP/TLS dialing as WebSocket links.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rmcp::transport::common::http_header::{
    EVENT_STREAM_MIME_TYPE, HEADER_MCP_PROTOCOL_VERSION, HEADER_SESSION_ID, JSON_MIME_TYPE,
};
use serde_json::{Value, json};
use sse_stream::SseStream;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::sync::CancellationToken;

use super::endpoint::{Failure, Target, refusal};
use super::link::Frame;

/// Time the server gets to answer a request's head, or all of a short answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest JSON answer accepted from the server.
const MAX_BODY: usize = 64 << 20;
/// Largest short answer read (a refusal, an empty acceptance).
const MAX_SHORT_BODY: usize = 64 << 10;
/// Longest error text kept from a refusal.
const MAX_ERROR_TEXT: usize = 512;

type Sender = SendRequest<Full<Bytes>>;

/// One Streamable HTTP session with the server. Dropping it stops its readers and connections.
pub struct HttpLink {
    target: Target,
    uri: Uri,
    authorization: Option<HeaderValue>,
    session: Option<HeaderValue>,
    protocol: Option<HeaderValue>,
    /// Connections free for the next request, and those the readers give back.
    idle: Vec<Sender>,
    returned: (UnboundedSender<Sender>, UnboundedReceiver<Sender>),
    frames: (UnboundedSender<Frame>, UnboundedReceiver<Frame>),
    /// Whether the server keeps a GET stream open (with keep-alives).
    listening: bool,
    /// Ends every task of the link: readers and connection drivers.
    stop: CancellationToken,
}

impl Drop for HttpLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What a reader waits for on its stream.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// The answer to the request with this id (as JSON text).
    Answer,
    /// Messages until the server ends the stream, which loses the session.
    Forever,
}

impl HttpLink {
    /// Connects (checking TLS), and checks the path and token with a GET naming no session:
    /// the server refuses a bad token (401) or path (404) before anything else.
    pub async fn open(target: Target, authorization: Option<HeaderValue>) -> Result<Self, Failure> {
        let uri: Uri = (target.url.parse()).map_err(|e| format!("bad URL {}: {e}", target.url))?;
        let mut link = Self {
            target,
            uri,
            authorization,
            session: None,
            protocol: None,
            idle: Vec::new(),
            returned: unbounded_channel(),
            frames: unbounded_channel(),
            listening: false,
            stop: CancellationToken::new(),
        };
        let sender = link.dial().await?;
        link.idle.push(sender);
        let (response, sender) = link.exchange(link.request(Method::GET, None)).await?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND
        ) {
            return Err(refusal(response.status()));
        }
        if response.status() != StatusCode::OK && body_text(response).await.is_ok() {
            link.idle.push(sender);
        }
        Ok(link)
    }

    pub fn heartbeat(&self) -> bool {
        self.listening
    }

    /// POSTs one message. An `initialize` is answered before this returns (its session id and
    /// protocol version are needed next); after `notifications/initialized` the GET stream opens.
    pub async fn send(&mut self, text: String) -> Result<(), String> {
        let head = Head::of(&text);
        let method = head.method.as_deref();
        let id = method.and(head.id);
        let initialize = method == Some("initialize");
        let initialized = method == Some("notifications/initialized");
        if initialize {
            (self.session, self.protocol) = (None, None);
        }
        let (response, sender) = self
            .exchange(self.request(Method::POST, Some(text)))
            .await?;
        let status = response.status();
        if initialize {
            self.session = response.headers().get(HEADER_SESSION_ID).cloned();
        }
        match status {
            StatusCode::ACCEPTED => self.recycle(response, sender).await,
            StatusCode::OK => match id {
                Some(id) if initialize => self.initialized(response, &id).await?,
                Some(id) => self.spawn_reader(response, Some(sender), Expect::Answer, id),
                None => self.recycle(response, sender).await,
            },
            StatusCode::NOT_FOUND if self.session.is_some() => {
                return Err("the server no longer knows this session (404: it restarted, or dropped the session after it idled)".to_owned());
            }
            StatusCode::UNAUTHORIZED => return Err(refusal(status).reason),
            status => self.rejected(status, response, id).await,
        }
        if initialized && self.session.is_some() {
            self.listen().await?;
        }
        Ok(())
    }

    pub async fn next_frame(&mut self) -> Frame {
        match self.frames.1.recv().await {
            Some(frame) => frame,
            None => Frame::Closed("the link stopped".to_owned()),
        }
    }

    /// Ends the session on the server (best effort: the server also drops idle sessions).
    pub async fn close(mut self) {
        if self.session.is_none() {
            return;
        }
        let request = self.request(Method::DELETE, None);
        if let Ok((response, _)) = self.exchange(request).await {
            tracing::debug!(status = %response.status(), "ended the HTTP session");
        }
    }

    /// Reads the answer to `initialize` now, passing it on, and keeps its protocol version.
    async fn initialized(
        &mut self,
        response: Response<Incoming>,
        id: &Value,
    ) -> Result<(), String> {
        let mut messages = messages(response, self.frames.0.clone());
        let read = async {
            while let Some(text) = messages.next().await {
                let text = text?;
                let answer = answers(&text, id).then(|| version(&text));
                let _ = self.frames.0.send(Frame::Text(text));
                if let Some(version) = answer {
                    return Ok(version);
                }
            }
            Err("the server ended its answer to initialize without one".to_owned())
        };
        let version = (tokio::time::timeout(ANSWER_TIMEOUT, read).await)
            .map_err(|_| "the server did not answer initialize".to_owned())??;
        self.protocol = version.and_then(|v| HeaderValue::from_str(&v).ok());
        Ok(())
    }

    /// Opens the GET stream for what the server sends outside of answers. A server without one
    /// (405) is fine, but then nothing shows that it is alive while the bridge is idle.
    async fn listen(&mut self) -> Result<(), String> {
        let mut request = self.request(Method::GET, None);
        (request.headers_mut()).insert(
            header::ACCEPT,
            HeaderValue::from_static(EVENT_STREAM_MIME_TYPE),
        );
        let (response, sender) = self.exchange(request).await?;
        match response.status() {
            StatusCode::OK => {
                self.listening = true;
                self.spawn_reader(response, None, Expect::Forever, Value::Null);
            }
            StatusCode::METHOD_NOT_ALLOWED => self.recycle(response, sender).await,
            status => {
                let text = body_text(response).await.unwrap_or_default();
                return Err(format!(
                    "the server refused its event stream: {status} {text}"
                ));
            }
        }
        Ok(())
    }

    /// A message the server would not take: its JSON-RPC error goes to the client when it sent
    /// one; else the client's request gets one saying what the server answered.
    async fn rejected(
        &mut self,
        status: StatusCode,
        response: Response<Incoming>,
        id: Option<Value>,
    ) {
        let json = is(&response, JSON_MIME_TYPE);
        let text = body_text(response).await.unwrap_or_default();
        if json && serde_json::from_str::<Value>(&text).is_ok_and(|v| v.get("error").is_some()) {
            let _ = self.frames.0.send(Frame::Text(text));
            return;
        }
        tracing::warn!(%status, "the server refused a message: {text}");
        let Some(id) = id else { return };
        let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32000,
            "message": format!("the remote outpost refused the message with {status}: {}", text.trim())}});
        let _ = self.frames.0.send(Frame::Text(error.to_string()));
    }

    /// Reads a stream of answers in a task of the link; gives its connection back when done.
    fn spawn_reader(
        &self,
        response: Response<Incoming>,
        sender: Option<Sender>,
        expect: Expect,
        id: Value,
    ) {
        let frames = self.frames.0.clone();
        let returned = self.returned.0.clone();
        let stop = self.stop.clone();
        let mut messages = messages(response, frames.clone());
        tokio::spawn(async move {
            let read = async {
                while let Some(text) = messages.next().await {
                    let text = text?;
                    let done = expect == Expect::Answer && answers(&text, &id);
                    let _ = frames.send(Frame::Text(text));
                    if done {
                        return Ok(());
                    }
                }
                Err(match expect {
                    Expect::Answer => "the server ended the stream of a call without its answer",
                    Expect::Forever => "the server ended its event stream",
                }
                .to_owned())
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                read = read => match read {
                    Ok(()) => {
                        drop(messages);
                        if let Some(sender) = sender {
                            let _ = returned.send(sender);
                        }
                    }
                    Err(why) => {
                        let _ = frames.send(Frame::Closed(why));
                    }
                },
            }
        });
    }

    /// Keeps a connection whose answer was read whole, for the next request.
    async fn recycle(&mut self, response: Response<Incoming>, sender: Sender) {
        if body_text(response).await.is_ok() {
            self.idle.push(sender);
        }
    }

    /// Sends a request on a free or new connection and waits for the head of its answer.
    async fn exchange(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Sender), Failure> {
        let mut sender = self.connection().await?;
        let response = (tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request)).await)
            .map_err(|_| format!("the server did not answer within {ANSWER_TIMEOUT:?}"))?
            .map_err(|e| format!("the request to {} failed: {e}", self.target.url))?;
        Ok((response, sender))
    }

    async fn connection(&mut self) -> Result<Sender, Failure> {
        while let Ok(sender) = self.returned.1.try_recv() {
            self.idle.push(sender);
        }
        while let Some(sender) = self.idle.pop() {
            if sender.is_ready() {
                return Ok(sender);
            }
        }
        self.dial().await
    }

    /// A new HTTP/1.1 connection, driven by a task of the link.
    async fn dial(&self) -> Result<Sender, Failure> {
        let io = self.target.dial().await?;
        let (sender, connection) = (http1::handshake(TokioIo::new(io)).await)
            .map_err(|e| format!("HTTP handshake with {} failed: {e}", self.target.url))?;
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(error = %e, "an HTTP connection to the server ended with an error");
                },
            }
        });
        Ok(sender)
    }

    /// A request to the server's URL with the token, session and protocol version.
    fn request(&self, method: Method, body: Option<String>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *request.method_mut() = method.clone();
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        if let Some(authority) = self
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, authority);
        }
        if let Some(authorization) = &self.authorization {
            headers.insert(header::AUTHORIZATION, authorization.clone());
        }
        if let Some(session) = &self.session {
            headers.insert(HEADER_SESSION_ID, session.clone());
        }
        if let Some(protocol) = &self.protocol {
            headers.insert(HEADER_MCP_PROTOCOL_VERSION, protocol.clone());
        }
        let accept = match method {
            Method::POST => "application/json, text/event-stream",
            _ => EVENT_STREAM_MIME_TYPE,
        };
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if method == Method::POST {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(JSON_MIME_TYPE),
            );
        }
        request
    }
}

/// The JSON-RPC messages of an answer, JSON or SSE. Each chunk of an SSE stream, keep-alives
/// included, also shows on `alive` that the server is there.
fn messages(
    response: Response<Incoming>,
    alive: UnboundedSender<Frame>,
) -> BoxStream<'static, Result<String, String>> {
    if is(&response, JSON_MIME_TYPE) {
        let body = Limited::new(response.into_body(), MAX_BODY);
        let whole = async move {
            let bytes = body
                .collect()
                .await
                .map_err(|e| format!("cannot read the server's answer: {e}"))?;
            Ok(String::from_utf8_lossy(&bytes.to_bytes()).into_owned())
        };
        return futures::stream::once(whole).boxed();
    }
    let chunks = BodyDataStream::new(response.into_body()).inspect_ok(move |_| {
        let _ = alive.send(Frame::Control);
    });
    SseStream::from_bytes_stream(chunks)
        .map_err(|e| format!("the server's event stream broke: {e}"))
        .try_filter_map(
            |event| async move { Ok(event.data.filter(|data| !data.trim().is_empty())) },
        )
        .boxed()
}

/// Whether `response`'s content type is `mime`.
fn is(response: &Response<Incoming>, mime: &str) -> bool {
    let value = response.headers().get(header::CONTENT_TYPE);
    value
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(mime))
}

/// A short answer's text, read whole (up to a limit, within the answer timeout).
async fn body_text(response: Response<Incoming>) -> Result<String, String> {
    let body = Limited::new(response.into_body(), MAX_SHORT_BODY);
    let read = tokio::time::timeout(ANSWER_TIMEOUT, body.collect());
    let bytes = (read.await)
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes.to_bytes()).into_owned();
    Ok(text.chars().take(MAX_ERROR_TEXT).collect())
}

/// A JSON-RPC message's `method` and `id`, read without building the rest (params, results).
#[derive(serde::Deserialize, Default)]
struct Head<'a> {
    #[serde(borrow, default)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    id: Option<Value>,
}

impl<'a> Head<'a> {
    /// The head of `text`; empty when it is not a JSON object.
    fn of(text: &'a str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// Whether the message `text` is the answer (result or error) to the request `id`.
fn answers(text: &str, id: &Value) -> bool {
    let head = Head::of(text);
    head.method.is_none() && head.id.as_ref() == Some(id)
}

/// The protocol version in an answer to `initialize`.
fn version(text: &str) -> Option<String> {
    let message: Value = serde_json::from_str(text).ok()?;
    let version = message.pointer("/result/protocolVersion")?;
    version.as_str().map(str::to_owned)
}
