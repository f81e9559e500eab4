//! MCP Streamable HTTP: rmcp's service behind the gate (path, origin, bearer token → 401), on
//! HTTP/1.1 served by hyper on each accepted connection, with a request-head timeout, a slot
//! taken at the first authenticated request, each session answering only its principal, and bad
//! JSON-RPC answered as on the other transports.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower_service::Service;

use super::admission::Standing;
use super::gate::{Refusal, refusal};
use super::http_sessions::SessionOwners;
use super::jsonrpc::{Incoming as JsonRpc, parse_incoming, too_large};
use super::network::{Accepted, Shared};
use crate::auth::Principal;
use crate::tools::Outpost;

type Body = BoxBody<Bytes, Infallible>;

/// rmcp's Streamable HTTP service for this server's tools; cheap to clone.
#[derive(Clone)]
pub struct HttpService {
    mcp: StreamableHttpService<Outpost, LocalSessionManager>,
    owners: Arc<SessionOwners>,
}

impl HttpService {
    /// Sessions idle for `serve.idle_timeout_secs` are dropped; bodies over
    /// `serve.max_message_bytes` get 413; only loopback names, `bound` and
    /// `serve.allowed_hosts` may appear in `Host`.
    pub fn new(shared: &Arc<Shared>, bound: SocketAddr) -> Self {
        let settings = &shared.settings;
        let mut sessions = LocalSessionManager::default();
        sessions.session_config.keep_alive =
            Some(Duration::from_secs(settings.idle_timeout_secs.max(1)));
        let sessions = Arc::new(sessions);
        let mut config = StreamableHttpServerConfig::default()
            .with_max_request_body_bytes(settings.max_message_bytes)
            .with_cancellation_token(shared.stop.child_token());
        // rmcp allows the loopback names already.
        config.allowed_hosts.push(bound.ip().to_string());
        config
            .allowed_hosts
            .extend(settings.allowed_hosts.iter().cloned());
        // One handler per session (its own log level); each request carries its principal.
        let outpost = shared.state.outpost.clone();
        let stop = shared.stop.clone();
        let new_session =
            move || Ok(outpost.for_connection(Principal::anonymous(), stop.child_token()));
        let owners = Arc::new(SessionOwners::new(sessions.clone()));
        let mcp = StreamableHttpService::new(new_session, sessions, config);
        Self { mcp, owners }
    }

    /// Serves HTTP/1.1 on one accepted connection until the client or the server closes it. A
    /// request head not complete within the header timeout (the first, or the next one on a
    /// kept-alive connection) closes the connection; so does a newer connection needing room
    /// while this one has not yet authenticated.
    pub async fn serve_connection(self, accepted: Accepted, shared: Arc<Shared>) {
        let Accepted {
            stream,
            peer,
            standing,
        } = accepted;
        let standing = Arc::new(standing);
        let admitted = standing.clone();
        let header_timeout = shared.header_timeout();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let this = self.clone();
            let shared = shared.clone();
            let standing = admitted.clone();
            async move { Ok::<_, Infallible>(this.answer(request, &shared, &standing).await) }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            ended = connection => if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            },
            _ = standing.evicted() => {
                tracing::debug!(%peer, "closed a connection still waiting to authenticate: too many wait");
            }
        }
    }

    async fn answer(
        mut self,
        mut request: Request<Incoming>,
        shared: &Shared,
        standing: &Standing,
    ) -> Response<Body> {
        let principal = match shared.gate.check(request.uri().path(), request.headers()) {
            Ok(principal) => principal,
            Err(refused) => return refused_with(refused),
        };
        if !standing.admit() {
            return refused_with(Refusal::Busy);
        }
        let named = SessionOwners::named(request.headers());
        if let Some(session) = &named
            && !self.owners.permits(session, &principal)
        {
            tracing::debug!(%principal, "refused a session opened by another principal");
            return refused_with(Refusal::NotFound);
        }
        let method = request.method().clone();
        request.extensions_mut().insert(principal.clone());
        let response = if method == Method::POST {
            let (parts, body) = request.into_parts();
            let body = match read_message(body, shared.settings.max_message_bytes).await {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            self.mcp
                .call(Request::from_parts(parts, Full::new(body)))
                .await
        } else {
            self.mcp.call(request).await
        };
        let response = match response {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let succeeded = response.status().is_success();
        (self.owners)
            .note(&method, named, &principal, response.headers(), succeeded)
            .await;
        response
    }
}

/// A POST body, read whole (up to `limit` bytes), when it is a JSON-RPC message for rmcp; else
/// the answer it gets: 413, or 400 with the JSON-RPC error the other transports send for it.
async fn read_message(body: Incoming, limit: usize) -> Result<Bytes, Response<Body>> {
    let answer = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
        *response.status_mut() = status;
        let json = HeaderValue::from_static("application/json");
        (response.headers_mut()).insert(http::header::CONTENT_TYPE, json);
        response
    };
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(answer(StatusCode::PAYLOAD_TOO_LARGE, too_large(limit)));
        }
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a request body");
            return Err(refused_with(Refusal::BadRequest));
        }
    };
    match parse_incoming(&body) {
        JsonRpc::Reply(error) => Err(answer(StatusCode::BAD_REQUEST, error)),
        JsonRpc::Message(_) | JsonRpc::Ignore => Ok(body),
    }
}

fn refused_with(refused: Refusal) -> Response<Body> {
    refusal(refused, |text| Full::new(Bytes::from(text)).boxed())
}
