//! `outpost mcp serve` on stdio: one MCP session on stdin/stdout, and a clean shutdown that kills every process.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use super::eof::EofSignal;
use super::lines::LineTransport;
use super::termination;
use crate::claude::Claude;
use crate::claude::registry::Registry;
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::jobs::JobManager;
use crate::tools::Outpost;

/// How long rmcp gets to send the last responses once every process is dead.
const DRAIN: Duration = Duration::from_secs(3);

/// Serves MCP on stdin/stdout until stdin closes or SIGTERM/SIGINT arrives; then kills every
/// running process tree and returns.
pub async fn serve_stdio(hosts: Arc<Hosts>) -> Result<()> {
    let settings = hosts.config().exec.clone();
    let jobs = Arc::new(JobManager::new(Duration::from_secs(
        settings.job_retention_secs,
    )));
    let kill_limit = settings.kill_grace() + Duration::from_secs(2);
    let termination = termination();
    tokio::pin!(termination);
    let eof = CancellationToken::new();
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let stdin = tokio::io::BufReader::new(EofSignal::new(stdin, eof.clone()));
    let transport = LineTransport::new(stdin, stdout);
    let claude = Claude::new(hosts.clone(), Registry::new(Registry::default_path()));
    let server = Outpost::new(hosts, jobs.clone(), claude.clone());

    let service = tokio::select! {
        service = server.serve(transport) => match service {
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
            tokio::join!(jobs.shutdown(kill_limit), claude.shutdown());
            let _ = tokio::time::timeout(DRAIN + Duration::from_secs(5), &mut waiting).await;
        }
        _ = &mut termination => {
            tokio::join!(jobs.shutdown(kill_limit), claude.shutdown());
            stop.cancel();
            let _ = tokio::time::timeout(DRAIN, &mut waiting).await;
        }
    }
    jobs.shutdown(kill_limit).await;
    claude.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
