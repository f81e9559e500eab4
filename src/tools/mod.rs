//! The MCP server: its identity, its tools, and the state they share (hosts and jobs).

mod exec;
mod hosts;
mod jobs;
mod reply;

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, Implementation, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, tool_handler};

use crate::hosts::Hosts;
use crate::jobs::JobManager;

pub use exec::{ExecResult, RemoteExecParams};
pub use jobs::{JobKillParams, JobOutputParams, JobOutputResult, JobView};

/// The outpost MCP service. Cheap to clone: one per client connection, all sharing hosts and jobs.
#[derive(Clone)]
pub struct Outpost {
    hosts: Arc<Hosts>,
    jobs: Arc<JobManager>,
    tool_router: ToolRouter<Self>,
}

impl Outpost {
    pub fn new(hosts: Arc<Hosts>, jobs: Arc<JobManager>) -> Self {
        Self {
            hosts,
            jobs,
            tool_router: Self::exec_tools() + Self::job_tools() + Self::host_tools(),
        }
    }

    /// Every tool as `tools/list` shows it.
    pub fn tools(&self) -> Vec<Tool> {
        self.tool_router.list_all()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Outpost {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tool_router.has_route(&request.name) {
            let known: Vec<String> = self.tools().iter().map(|t| t.name.to_string()).collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; the tools are: {}",
                    request.name,
                    known.join(", ")
                ),
                None,
            ));
        }
        let call = ToolCallContext::new(self, request, context);
        self.tool_router.call(call).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("outpost", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Run commands on this machine (`local`) and remote hosts. \
                 `list_hosts` shows the host names; long commands go in the background \
                 (`background: true`) and are followed with `job_output`.",
            )
    }
}
