//! Serving the MCP tools to a client: on stdio, over WebSocket or Streamable HTTP; each transport in its own file.

mod admission;
mod eof;
mod gate;
mod http;
mod http_sessions;
pub mod jsonrpc;
mod lines;
pub mod network;
mod state;
mod stdio;
mod tls;
mod websocket;
mod ws_transport;

pub use network::{ListenOptions, Protocol, serve_network};
pub use state::{ServerState, StateOptions};
pub use stdio::serve_stdio;

/// Resolves on SIGTERM or SIGINT: the signals that ask a server to stop.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// signal arriving in between is not lost (nor does it kill the process by default action).
/// Call it inside the runtime, before starting anything that a signal should stop.
pub(crate) fn termination() -> impl std::future::Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = signals else {
            tracing::warn!("cannot listen for SIGTERM/SIGINT");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
