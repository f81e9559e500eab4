//! Tool `sync_sessions`: copy Claude's session files of a project between a host and this machine.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Outpost;
use super::reply::{failure, success};
use crate::claude::Wanted;
use crate::error::{Error, Result};
use crate::sync::{CopyState, Cwd, Direction, SyncReport, SyncRequest, prepare};

/// Parameters of `sync_sessions`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncSessionsParams {
    /// The other host (see `list_hosts`). Default: the session's host, else the default host.
    #[serde(default)]
    pub host: Option<String>,
    /// The project path on that host. Default: the session's, else the remote's workspace.
    #[serde(default)]
    pub cwd: Option<String>,
    /// The same project's path on this machine, when it differs.
    #[serde(default)]
    pub local_cwd: Option<String>,
    /// `pull` (host → here) or `push` (here → host).
    pub direction: Direction,
    /// Only this session (default: every session of the project, and its memory).
    #[serde(default)]
    pub session_id: Option<String>,
}

/// Result of `sync_sessions`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SyncSessionsResult {
    pub host: String,
    pub direction: Direction,
    #[serde(flatten)]
    pub report: SyncReport,
}

#[tool_router(router = sync_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "Sync Claude sessions",
        description = "Copy Claude session files of a project between a host and here (pull/push), incrementally; diverged files are kept and reported as conflicts. Waits for the pull after a turn of that project first.",
        output_schema = schema_for_output::<SyncSessionsResult>(),
        annotations(
            title = "Sync Claude sessions",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn sync_sessions(
        &self,
        Parameters(params): Parameters<SyncSessionsParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let request = match self.sync_request(params) {
            Ok(request) => request,
            Err(e) => return failure(&e),
        };
        let owner = super::guard::principal_of(&context, &self.principal);
        let report = tokio::select! {
            report = self.cleared_sync(&request, &owner, &context) => report,
            // Dropping the sync kills its writers before they rename: nothing half-written remains.
            _ = context.ct.cancelled() => return failure(&Error::Cancelled),
        };
        match report {
            Ok(report) => {
                let result = SyncSessionsResult {
                    host: request.host,
                    direction: request.direction,
                    report,
                };
                let text = render_text(&result);
                success(&result, text)
            }
            Err(e) => failure(&e),
        }
    }
}

impl Outpost {
    /// Runs `request` once the policy (a push) and the host's key are cleared.
    async fn cleared_sync(
        &self,
        request: &SyncRequest,
        owner: &crate::auth::Principal,
        context: &RequestContext<RoleServer>,
    ) -> Result<SyncReport> {
        self.clear_sync(&context.peer, owner, request).await?;
        self.sync_after_pulls(request, &context.ct).await
    }

    /// Runs `request` once the pulls of that project still under way after turns have ended
    /// (bounded): a sync asked for right after a turn then sees that turn.
    async fn sync_after_pulls(
        &self,
        request: &SyncRequest,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<SyncReport> {
        let sync = prepare(&self.hosts, request).await?;
        let wanted = Wanted::Project {
            host: &request.host,
            cwd: sync.remote_cwd(),
            session_id: request.session_id.as_deref(),
        };
        let mut warnings = self.claude.pulls().settle(wanted, cancel).await?;
        let mut report = sync.run().await?;
        warnings.append(&mut report.warnings);
        report.warnings = warnings;
        Ok(report)
    }

    fn sync_request(&self, params: SyncSessionsParams) -> Result<SyncRequest> {
        let (host, cwd) = self.claude.target(
            params.host.as_deref(),
            params.cwd.as_deref(),
            params.session_id.as_deref(),
        );
        let cwd = cwd.ok_or(Error::InvalidArgument {
            field: "cwd",
            reason: "is needed: the project path on the host".into(),
        })?;
        Ok(SyncRequest {
            host,
            cwd: Cwd::Given(cwd),
            local_cwd: params.local_cwd,
            direction: params.direction,
            session_id: params.session_id,
            settle_on: None,
        })
    }
}

fn render_text(result: &SyncSessionsResult) -> String {
    let r = &result.report;
    let mut text = format!(
        "{:?} with {}: {} file(s) examined, {} transferred ({} bytes), {} already in sync\n{} → {}",
        result.direction,
        result.host,
        r.files_examined,
        r.files_transferred,
        r.bytes_transferred,
        r.files_in_sync,
        r.source_dir,
        r.destination_dir
    );
    for path in &r.destination_ahead {
        text.push_str(&format!("\ndestination already ahead (left alone): {path}"));
    }
    for c in &r.conflicts {
        let copy = match c.copy {
            CopyState::New => "wrote the incoming version to",
            CopyState::Updated => "brought up to date the incoming copy",
            CopyState::Unchanged => "the incoming version is already in",
        };
        text.push_str(&format!(
            "\nCONFLICT: {} has lines the source lacks; kept it, {copy} {}",
            c.path, c.incoming_copy
        ));
    }
    for warning in &r.warnings {
        text.push_str(&format!("\nwarning: {warning}"));
    }
    text
}
