//! Serving the MCP tools to a client: over stdio now; each transport in its own file.

mod eof;
pub mod jsonrpc;
mod lines;
mod stdio;

pub use stdio::serve_stdio;

/// Resolves on SIGTERM or SIGINT: the signals that ask a server to stop.
pub(crate) async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
