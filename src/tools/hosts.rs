//! Tool `list_hosts`: every host name a call can use, with its kind and state.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use super::Outpost;
use super::reply::success;
use crate::hosts::HostEntry;

/// Result of `list_hosts`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HostList {
    /// Host used when a call names none.
    pub default_host: String,
    pub hosts: Vec<HostEntry>,
}

#[tool_router(router = host_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "List hosts",
        description = "List the hosts remote_exec can run on, with kind and state.",
        output_schema = schema_for_output::<HostList>(),
        annotations(
            title = "List hosts",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_hosts(&self) -> CallToolResult {
        let result = HostList {
            default_host: self.hosts.effective_name(None),
            hosts: self.hosts.list(),
        };
        let text = result
            .hosts
            .iter()
            .map(|h| {
                format!(
                    "{}{} ({:?}{}): {}",
                    h.name,
                    if h.default { " [default]" } else { "" },
                    h.kind,
                    h.target
                        .as_ref()
                        .map(|t| format!(", {t}"))
                        .unwrap_or_default(),
                    h.state
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        success(&result, text)
    }
}
