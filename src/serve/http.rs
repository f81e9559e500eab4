//! MCP Streamable HTTP: rmcp's service behind the gate (path, origin, bearer token → 401),
//! served by hyper on each accepted connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tower_service::Service;

use super::network::{Accepted, Shared, refusal};
use crate::auth::Principal;
use crate::tools::Outpost;

type Body = BoxBody<Bytes, Infallible>;

/// rmcp's Streamable HTTP service for this server's tools; cheap to clone.
#[derive(Clone)]
pub struct HttpService {
    mcp: StreamableHttpService<Outpost, LocalSessionManager>,
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
        let mcp = StreamableHttpService::new(new_session, Arc::new(sessions), config);
        Self { mcp }
    }

    /// Serves HTTP on one accepted connection until the client or the server closes it.
    pub async fn serve_connection(self, accepted: Accepted, shared: Arc<Shared>) {
        let Accepted { tcp, peer, slot } = accepted;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let this = self.clone();
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(this.answer(request, &shared).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
        if let Err(e) = connection.await {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
        drop(slot);
    }

    async fn answer(mut self, mut request: Request<Incoming>, shared: &Shared) -> Response<Body> {
        match shared.gate.check(request.uri().path(), request.headers()) {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                match self.mcp.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
            Err(status) => refusal(status, |reason| Full::new(Bytes::from(reason)).boxed()),
        }
    }
}
