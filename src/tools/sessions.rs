//! Tool `list_sessions`: the caller's Claude sessions outpost has run, from the session registry.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::reply::{failure, success};
use super::{Outpost, guard};
use crate::claude::Wanted;
use crate::claude::registry::SessionRecord;

/// Sessions listed when the call gives no `limit`.
const DEFAULT_LIMIT: usize = 20;

/// Parameters of `list_sessions`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSessionsParams {
    /// Only sessions on this host.
    #[serde(default)]
    pub host: Option<String>,
    /// Most sessions to list, newest first (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Result of `list_sessions`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ListSessionsResult {
    /// Newest turn first.
    pub sessions: Vec<SessionRecord>,
    /// Pulls of these sessions after their last turn that were still running when listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[tool_router(router = session_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "List Claude sessions",
        description = "Claude sessions run through outpost (newest first): host, cwd, status, last result. Resume one with spawn_claude session_id. Waits for the pulls after their last turns first.",
        output_schema = schema_for_output::<ListSessionsResult>(),
        annotations(
            title = "List Claude sessions",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_sessions(
        &self,
        Parameters(params): Parameters<ListSessionsParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let principal = guard::principal_of(&context, &self.principal);
        let limits = self.limits(&principal);
        let sessions: Vec<SessionRecord> = self
            .claude
            .registry()
            .all()
            .into_iter()
            .filter(|r| params.host.as_ref().is_none_or(|h| *h == r.host))
            .filter(|r| self.shows_session(&principal, &limits, r))
            .take(params.limit.unwrap_or(DEFAULT_LIMIT))
            .collect();
        // The session files of what is listed are here once their pulls have ended.
        let ids: Vec<String> = sessions.iter().map(|r| r.session_id.clone()).collect();
        let warnings = match self
            .claude
            .pulls()
            .settle(Wanted::Sessions(&ids), &context.ct)
            .await
        {
            Ok(warnings) => warnings,
            Err(e) => return failure(&e),
        };
        let mut text = format!("{} session(s)", sessions.len());
        for r in &sessions {
            text.push_str(&format!(
                "\n{} {:?} on {} in {} — {} turn(s), last {}{}: {}",
                r.session_id,
                r.status,
                r.host,
                r.cwd,
                r.turns,
                r.last_turn,
                if r.last_is_error { " (error)" } else { "" },
                r.last_result
            ));
        }
        for warning in &warnings {
            text.push_str(&format!("\nwarning: {warning}"));
        }
        success(&ListSessionsResult { sessions, warnings }, text)
    }
}
