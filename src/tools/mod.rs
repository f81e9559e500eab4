//! The MCP server: its identity, its tools, and the state they share (hosts and jobs).

mod approvals;
mod ask;
mod claude;
mod claude_job;
mod exec;
mod fanout;
mod fanout_result;
mod foreground;
mod guard;
mod host_key;
mod hosts;
mod jobs;
mod list_jobs;
mod policy;
mod progress;
mod reply;
mod resources;
mod scope;
mod sessions;
mod sudo;
mod sync;
mod tasks;
mod transfer;
mod untyped;
mod watch;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
#[allow(deprecated)]
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, CustomRequest, CustomResult,
    ErrorData, GetTaskParams, GetTaskResult, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, LoggingLevel, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{RoleServer, ServerHandler, tool_handler};

use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::auth::Principal;
use crate::claude::Claude;
use crate::hosts::Hosts;
use crate::jobs::JobManager;

pub use claude::{SpawnClaudeParams, SpawnClaudeResult};
pub use exec::{ExecResult, RemoteExecParams};
pub use guard::CallPolicy;
pub use jobs::{JobKillParams, JobOutputParams, JobOutputResult, JobView};
pub use sessions::{ListSessionsParams, ListSessionsResult};
pub use sync::{SyncSessionsParams, SyncSessionsResult};
pub use transfer::{TransferParams, TransferResult};

/// The outpost MCP service. Cheap to clone: one per client connection, all sharing hosts, jobs,
/// Claude processes and the call policy.
#[derive(Clone)]
pub struct Outpost {
    hosts: Arc<Hosts>,
    jobs: Arc<JobManager>,
    claude: Arc<Claude>,
    /// Remote Claude's permission prompts waiting for a person, shared by every connection.
    approvals: Arc<approvals::Approvals>,
    policy: Arc<CallPolicy>,
    /// Who this connection's calls are attributed to (HTTP requests may carry their own).
    principal: Principal,
    /// Cancelled when this connection closes: its running calls are cancelled with it.
    closed: CancellationToken,
    /// The least severe log level the client wants (`logging/setLevel`), as a rank (0 = debug).
    log_level: Arc<AtomicU8>,
    /// This connection's `resources/subscribe` subscriptions.
    subscriptions: Arc<watch::Subscriptions>,
    /// Tasks working for this connection after its calls returned (end-of-job messages); they
    /// stop when `closed` is cancelled.
    connection_tasks: TaskTracker,
    /// Cancels `closed` when the last clone of a connection's service is dropped (an HTTP
    /// session that ended), so what the connection started for itself ends with it.
    _connection: Option<Arc<DropGuard>>,
    tool_router: ToolRouter<Self>,
}

/// Log messages below this rank are not sent until the client asks for them.
const DEFAULT_LOG_RANK: u8 = 1;

impl Outpost {
    pub fn new(hosts: Arc<Hosts>, jobs: Arc<JobManager>, claude: Arc<Claude>) -> Self {
        Self {
            hosts,
            jobs,
            claude,
            approvals: Arc::default(),
            policy: Arc::new(CallPolicy::default()),
            principal: Principal::stdio(),
            closed: CancellationToken::new(),
            log_level: Arc::new(AtomicU8::new(DEFAULT_LOG_RANK)),
            subscriptions: Arc::default(),
            connection_tasks: TaskTracker::new(),
            _connection: None,
            tool_router: portable(Self::router()),
        }
    }

    fn router() -> ToolRouter<Self> {
        Self::exec_tools()
            + Self::job_tools()
            + Self::list_job_tools()
            + Self::host_tools()
            + Self::claude_tools()
            + Self::session_tools()
            + Self::sync_tools()
            + Self::transfer_tools()
    }

    /// The name of every tool (what `serve.principals` and token scopes may name).
    pub fn tool_names() -> Vec<String> {
        let tools = Self::router().list_all();
        tools.into_iter().map(|t| t.name.into_owned()).collect()
    }

    /// The same service with calls audited and limited by `policy`.
    pub fn with_policy(mut self, policy: Arc<CallPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// The service for one connection of `principal`; cancelling `closed` cancels its calls.
    /// Each connection gets its own log level and resource subscriptions. Dropping the last
    /// clone of the service counts as the connection closing.
    pub fn for_connection(&self, principal: Principal, closed: CancellationToken) -> Self {
        let closed = closed.child_token();
        Self {
            principal,
            _connection: Some(Arc::new(closed.clone().drop_guard())),
            closed,
            log_level: Arc::new(AtomicU8::new(DEFAULT_LOG_RANK)),
            subscriptions: Arc::default(),
            connection_tasks: TaskTracker::new(),
            ..self.clone()
        }
    }

    /// Whether the client asked for debug-level log messages.
    fn wants_debug_log(&self) -> bool {
        self.log_level.load(Ordering::Relaxed) == 0
    }

    /// Whether the client wants log messages of `level`, asked whenever one is to be sent (the
    /// client may change its level meanwhile).
    #[allow(deprecated)]
    fn wants_log(&self, level: LoggingLevel) -> impl Fn() -> bool + Send + 'static {
        let wanted = self.log_level.clone();
        move || rank(level) >= wanted.load(Ordering::Relaxed)
    }

    /// How long a kill is waited for before answering: the kill's own bound (grace, verdict).
    fn kill_wait(&self) -> std::time::Duration {
        let grace = self.hosts.config().exec.kill_grace();
        crate::transport::KillPolicy { grace }.verdict_within()
    }

    /// Every tool as `tools/list` shows it.
    pub fn tools(&self) -> Vec<Tool> {
        self.tool_router.list_all()
    }
}

/// A log level's severity rank (0 = debug).
#[allow(deprecated)]
fn rank(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

/// The router with every tool's input and output schema made portable (what `tools/list` serves).
fn portable(mut router: ToolRouter<Outpost>) -> ToolRouter<Outpost> {
    for route in router.map.values_mut() {
        let tool = &mut route.attr;
        crate::schema::make_portable_tool_input(Arc::make_mut(&mut tool.input_schema));
        if let Some(output) = &mut tool.output_schema {
            crate::schema::make_portable(Arc::make_mut(output));
        }
    }
    router
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Outpost {
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let principal = guard::principal_of(&context, &self.principal);
        let limits = self.limits(&principal);
        if !self.tool_router.has_route(&request.name) || !limits.allows_tool(&request.name) {
            return Err(self.unknown_tool(&request.name, &limits));
        }
        let facts = guard::CallFacts::of(principal, &request, &context);
        let refused = self.out_of_scope(&facts.principal, &limits, &request);
        let result = match (self.policy.admit(&facts.principal), refused) {
            (Err(limited), _) => Err(limited),
            (Ok(()), Some(refused)) => Ok(CallToolResponse::Complete(refused)),
            (Ok(()), None) => match self.call_as_task(&request, &context).await {
                Some(task) => Ok(task),
                None => {
                    let call = self
                        .tool_router
                        .call(ToolCallContext::new(self, request, context));
                    guard::cancel_when_closed(call, facts.cancelled.clone(), &self.closed).await
                }
            },
        };
        self.policy.record(&facts, &result);
        result
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let principal = guard::principal_of(&context, &self.principal);
        Ok(self.tool_list(&self.limits(&principal)))
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.log_level.store(rank(request.level), Ordering::Relaxed);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let principal = guard::principal_of(&context, &self.principal);
        Ok(ListResourcesResult::with_all_items(
            self.job_resources(&principal),
        ))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            Self::job_resource_template(),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let principal = guard::principal_of(&context, &self.principal);
        let contents = self.read_job_resource(&request.uri, &principal)?;
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let principal = guard::principal_of(&context, &self.principal);
        self.subscribe_job(request.uri, &principal, context.peer.clone())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.unsubscribe_job(&request.uri);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(self.job_subscription_filter(requested))
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        self.listen_jobs(context).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.task_state(&request.task_id, &context)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.cancel_task_job(&request.task_id, &context).await
    }

    /// rmcp hands over untyped the requests it could not read, those of known methods too.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        Err(untyped::refusal(&request))
    }

    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("outpost", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Run commands on this machine (`local`) and remote hosts, and Claude Code there \
                 (`spawn_claude`). `list_hosts` shows the host names; long work goes on as a job \
                 (`background: true`, or a call that returns `running`), followed with \
                 `job_output`; `list_jobs` finds jobs again.",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::claude::registry::Registry;
    use crate::config::Config;

    #[tokio::test]
    async fn a_connection_closes_when_its_last_service_clone_is_dropped() {
        let hosts = Arc::new(Hosts::new(Config::default()));
        let state = tempfile::tempdir().unwrap();
        let registry = Registry::new(state.path().join("sessions.json"));
        let jobs = Arc::new(JobManager::new(Duration::from_secs(60)));
        let server = Outpost::new(hosts.clone(), jobs, Claude::new(hosts, registry));
        let stop = CancellationToken::new();
        let connection = server.for_connection(Principal::anonymous(), stop.clone());
        let closed = connection.closed.clone();
        let clone = connection.clone();
        drop(connection);
        assert!(
            !closed.is_cancelled(),
            "a clone still serves the connection"
        );
        drop(clone);
        assert!(closed.is_cancelled());
        assert!(!stop.is_cancelled(), "the server goes on");
        // The server's own stop closes every connection too.
        let connection = server.for_connection(Principal::anonymous(), stop.clone());
        stop.cancel();
        assert!(connection.closed.is_cancelled());
    }
}
