//! One WebSocket connection: the HTTP handshake (refused with 401/403/404/503 before any
//! upgrade), then one MCP session on it until either side closes.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::network::{Accepted, Shared, refusal};
use super::ws_transport::WsTransport;
use crate::auth::Principal;

/// Time a client gets to complete the HTTP upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted connection to the end. Never fails: problems are logged.
#[allow(clippy::result_large_err)] // the handshake callback's error type is tungstenite's
pub async fn serve_connection(accepted: Accepted, shared: Arc<Shared>) {
    let Accepted { tcp, peer, slot } = accepted;
    let mut admitted: Option<Principal> = None;
    let callback = |request: &Request, response: Response| match shared
        .gate
        .check(request.uri().path(), request.headers())
    {
        Ok(principal) => {
            admitted = Some(principal);
            Ok(response)
        }
        Err(status) => Err(refusal(status, Some)),
    };
    let max_message = shared.settings.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(tcp, callback, Some(config));
    let socket = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(socket)) => socket,
        Ok(Err(e)) => {
            return tracing::debug!(%peer, error = %e, "WebSocket handshake refused or failed");
        }
        Err(_) => return tracing::debug!(%peer, "WebSocket handshake timed out"),
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
    drop(slot);
    tracing::info!(%peer, %principal, "WebSocket connection closed");
}
