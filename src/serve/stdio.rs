//! `outpost mcp serve` on stdio: one MCP session on stdin/stdout, and a clean shutdown that kills every process.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use super::eof::EofSignal;
use super::lines::LineTransport;
use super::state::{ServerState, StateOptions};
use super::termination;
use crate::error::{Error, Result};
use crate::hosts::Hosts;

/// How long rmcp gets to send the last responses once every process is dead.
const DRAIN: Duration = Duration::from_secs(3);
/// Pipe buffer asked for on stdout: a large result (a `job_output` page of several MiB) then
/// crosses in a few writes instead of one 64 KiB pipe-full per wake-up of the client.
const STDOUT_PIPE_BYTES: i32 = 1 << 20;

/// Serves MCP on stdin/stdout until stdin closes or SIGTERM/SIGINT arrives; then kills every
/// running process tree and returns. Calls are audited as `stdio` when an audit log is set.
pub async fn serve_stdio(hosts: Arc<Hosts>, audit: crate::audit::AuditChoice) -> Result<()> {
    let options = StateOptions {
        audit,
        ..StateOptions::default()
    };
    let state = ServerState::new(hosts, options)?;
    let termination = termination();
    tokio::pin!(termination);
    let eof = CancellationToken::new();
    widen_stdout_pipe();
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let stdin = tokio::io::BufReader::new(EofSignal::new(stdin, eof.clone()));
    let transport = LineTransport::new(stdin, stdout);
    let service = tokio::select! {
        service = state.outpost.clone().serve(transport) => match service {
            Ok(service) => service,
            Err(e) => {
                tracing::info!(error = %e, "client left before the session started");
                return if eof.is_cancelled() { Ok(()) } else { Err(Error::Mcp(e.to_string())) };
            }
        },
        _ = &mut termination => return Ok(()),
    };
    tracing::info!("MCP session started on stdio");
    let stop = service.cancellation_token();
    let waiting = service.waiting();
    tokio::pin!(waiting);
    tokio::select! {
        _ = &mut waiting => {}
        _ = eof.cancelled() => {
            tracing::info!("stdin closed; killing running processes");
            state.shutdown().await;
            let _ = tokio::time::timeout(DRAIN + Duration::from_secs(5), &mut waiting).await;
        }
        _ = &mut termination => {
            state.shutdown().await;
            stop.cancel();
            let _ = tokio::time::timeout(DRAIN, &mut waiting).await;
        }
    }
    state.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Grows stdout's pipe buffer when stdout is a pipe (Linux); anything else is left as it is.
fn widen_stdout_pipe() {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{FcntlArg, fcntl};
        let stdout = std::io::stdout();
        match fcntl(&stdout, FcntlArg::F_SETPIPE_SZ(STDOUT_PIPE_BYTES)) {
            Ok(size) => tracing::debug!(size, "stdout pipe buffer"),
            Err(e) => tracing::debug!(error = %e, "stdout pipe buffer left as it is"),
        }
    }
}
