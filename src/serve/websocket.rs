//! One WebSocket connection: the HTTP handshake (refused with 401/403/404/503 before any
//! upgrade, bounded by the header timeout; the subprotocol `mcp` echoed when offered), then one
//! MCP session on it until either side closes.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::gate::{Refusal, refusal};
use super::network::{Accepted, Shared};
use super::ws_transport::WsTransport;
use crate::auth::Principal;

/// The subprotocol MCP clients offer (the TypeScript SDK drops a connection that does not echo it).
const SUBPROTOCOL: &str = "mcp";

/// Serves one accepted connection to the end. Never fails: problems are logged.
#[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
pub async fn serve_connection(accepted: Accepted, shared: Arc<Shared>) {
    let Accepted {
        stream,
        peer,
        standing,
    } = accepted;
    let mut admitted: Option<Principal> = None;
    let callback = |request: &Request, mut response: Response| {
        let principal = (shared.gate)
            .check(request.uri().path(), request.headers())
            .map_err(|refused| refusal(refused, Some))?;
        if !standing.admit() {
            return Err(refusal(Refusal::Busy, Some));
        }
        if offers_subprotocol(request, SUBPROTOCOL) {
            let value = http::HeaderValue::from_static(SUBPROTOCOL);
            (response.headers_mut()).insert(http::header::SEC_WEBSOCKET_PROTOCOL, value);
        }
        admitted = Some(principal);
        Ok(response)
    };
    let max_message = shared.settings.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config));
    let socket = tokio::select! {
        finished = tokio::time::timeout(shared.header_timeout(), handshake) => match finished {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => {
                return tracing::debug!(%peer, error = %e, "WebSocket handshake refused or failed");
            }
            Err(_) => return tracing::debug!(%peer, "WebSocket handshake timed out"),
        },
        _ = standing.evicted() => {
            return tracing::debug!(%peer, "closed a connection still waiting to authenticate: too many wait");
        }
    };
    let Some(principal) = admitted else { return };
    tracing::info!(%peer, %principal, "WebSocket connection opened");
    let closed = shared.stop.child_token();
    let idle = Duration::from_secs(shared.settings.idle_timeout_secs.max(1));
    let transport = WsTransport::new(socket, closed.clone(), idle, max_message);
    let outpost = shared
        .state
        .outpost
        .for_connection(principal.clone(), closed.clone());
    match outpost.serve(transport).await {
        Ok(service) => {
            let _ = service.waiting().await;
        }
        Err(e) => tracing::debug!(%peer, error = %e, "client left before the session started"),
    }
    closed.cancel();
    drop(standing);
    tracing::info!(%peer, %principal, "WebSocket connection closed");
}

/// Whether the upgrade request lists `name` in `Sec-WebSocket-Protocol` (one header or several,
/// each a comma-separated list).
fn offers_subprotocol(request: &Request, name: &str) -> bool {
    let offers = request
        .headers()
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL);
    (offers.iter())
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|offered| offered.trim() == name)
}
