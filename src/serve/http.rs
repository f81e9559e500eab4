//! MCP Streamable HTTP: rmcp's service behind the gate (path, origin, bearer token → 401), on
//! HTTP/1.1 served by hyper on each accepted connection, with a request-head timeout, a slot
//! taken at the first authenticated request, and each session answering only its principal.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower_service::Service;

use super::admission::Standing;
use super::gate::{Refusal, refusal};
use super::http_sessions::SessionOwners;
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
            tcp,
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
        let connection = builder.serve_connection(TokioIo::new(tcp), service);
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
        let response = match self.mcp.call(request).await {
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

fn refused_with(refused: Refusal) -> Response<Body> {
    refusal(refused, |text| Full::new(Bytes::from(text)).boxed())
}
