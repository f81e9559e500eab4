//! Tool `list_hosts`: every host name the caller can use, with its kind and state.

use rmcp::handler::server::tool::schema_for_output;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Serialize;

use super::reply::success;
use super::{Outpost, guard};
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
    async fn list_hosts(&self, context: RequestContext<RoleServer>) -> CallToolResult {
        let limits = self.limits(&guard::principal_of(&context, &self.principal));
        let mut hosts = self.hosts.list();
        hosts.retain(|h| limits.allows_host(&self.hosts, &h.name));
        let result = HostList {
            default_host: self.hosts.effective_name(None),
            hosts,
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
