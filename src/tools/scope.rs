//! What a network principal may reach: the hosts and tools its token claims and
//! `serve.principals` allow (a call must pass both), checked before a call runs; `tools/list`,
//! `list_hosts` and `list_sessions` show only what is allowed. The stdio client is never limited.
//!
//! A group in a scope allows the group and each of its members by name: a call on the group
//! may land on any member anyway, and a resumed session goes back to the member it ran on.

use std::sync::Arc;

use rmcp::model::{CallToolRequestParams, CallToolResult, ErrorData, ListToolsResult, Tool};
use serde_json::Value;

use super::Outpost;
use super::reply::failure;
use crate::auth::{Principal, Scope};
use crate::claude::registry::SessionRecord;
use crate::error::{Error, Result};
use crate::hosts::Hosts;
use crate::jobs::Job;

/// Tools that run on a host their call names (or the default host).
const HOSTED_TOOLS: [&str; 4] = ["remote_exec", "spawn_claude", "sync_sessions", "transfer"];

/// Every limit on one principal; a call must pass all of them. None: not limited.
pub(super) struct Limits(Vec<Scope>);

impl Limits {
    /// Whether `principal` may call `tool`.
    pub fn allows_tool(&self, tool: &str) -> bool {
        self.0.iter().all(|scope| scope.allows_tool(tool))
    }

    /// Whether `host` (a host or group name) may be named.
    pub fn allows_host(&self, hosts: &Hosts, host: &str) -> bool {
        self.0.iter().all(|scope| {
            scope.hosts.as_ref().is_none_or(|allowed| {
                allowed.contains(host)
                    || (allowed.iter())
                        .any(|g| hosts.group(g).is_some_and(|m| m.iter().any(|m| m == host)))
            })
        })
    }
}

impl Outpost {
    /// The limits on `principal`: its token's claims and its `serve.principals` entry.
    pub(super) fn limits(&self, principal: &Principal) -> Limits {
        let Some(claimed) = principal.claimed() else {
            return Limits(Vec::new());
        };
        let configured = self.hosts.config().serve.principals.get(principal.as_str());
        let configured = configured.map(|p| Scope::new(p.hosts.as_deref(), p.tools.as_deref()));
        Limits(std::iter::once(claimed.clone()).chain(configured).collect())
    }

    /// `tools/list` for a principal: only the tools it may call.
    pub(super) fn tool_list(&self, limits: &Limits) -> ListToolsResult {
        let tools: Vec<Tool> = (self.tools().into_iter())
            .filter(|tool| limits.allows_tool(&tool.name))
            .collect();
        ListToolsResult::with_all_items(tools)
    }

    /// The answer to a call of a tool that does not exist or that the caller may not call: the
    /// same for both, naming only the tools it may call.
    pub(super) fn unknown_tool(&self, name: &str, limits: &Limits) -> ErrorData {
        let known = self.tool_list(limits).tools;
        let known: Vec<&str> = known.iter().map(|t| t.name.as_ref()).collect();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        ErrorData::invalid_params(
            format!("unknown tool `{name}`; the tools are: {known}"),
            None,
        )
    }

    /// Why `principal` may not make this call (an `isError` result), if it may not: a host
    /// outside its scope, or a Claude session another principal started.
    pub(super) fn out_of_scope(
        &self,
        principal: &Principal,
        limits: &Limits,
        request: &CallToolRequestParams,
    ) -> Option<CallToolResult> {
        if principal.is_local() || !HOSTED_TOOLS.contains(&request.name.as_ref()) {
            return None;
        }
        let argument = |key: &str| {
            let value = request.arguments.as_ref().and_then(|a| a.get(key));
            value
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
        };
        let session_id = argument("session_id");
        if request.name == "sync_sessions" && session_id.is_none() {
            // A project's files hold the sessions of whoever worked there.
            return Some(failure(&Error::InvalidArgument {
                field: "session_id",
                reason: "is required over the network: a principal syncs its own sessions one at a time (see `list_sessions`), since a whole project's files may hold other principals' sessions".into(),
            }));
        }
        let record = session_id.and_then(|id| self.claude.registry().get(id));
        if let Some(record) = record.filter(|r| !r.belongs_to(principal)) {
            return Some(failure(&Error::NotYourSession {
                principal: principal.to_string(),
                session_id: record.session_id,
            }));
        }
        let named = self.hosts.effective_name(argument("host"));
        // A resumed session runs where it ran before: that host must be allowed too.
        let (target, _) = self.claude.target(argument("host"), None, session_id);
        let mut fanout = self.fanout_hosts(request);
        // A transfer touches its two ends' hosts, and no other.
        if request.name == "transfer" {
            let ends = ["source", "destination"].into_iter().filter_map(argument);
            let ends =
                ends.filter_map(|text| crate::transfer::Location::parse(text, "source").ok());
            fanout.extend(ends.map(|location| location.host));
        }
        // A fan-out runs on its `hosts` only, never on the default host.
        let single = fanout.is_empty().then_some([named, target]);
        let refused = (single.into_iter().flatten())
            .chain(fanout)
            .find(|h| !limits.allows_host(&self.hosts, h))?;
        Some(failure(&Error::HostOutOfScope {
            principal: principal.to_string(),
            host: refused,
            allowed: self.allowed_hosts(limits).join(", "),
        }))
    }

    /// The hosts of a fan-out call (`hosts`, groups expanded): each must be allowed, or the
    /// whole call is refused. A list that does not expand fails the call later, on its own.
    fn fanout_hosts(&self, request: &CallToolRequestParams) -> Vec<String> {
        let hosts = request.arguments.as_ref().and_then(|a| a.get("hosts"));
        let names: Option<Vec<String>> = hosts.and_then(|h| serde_json::from_value(h.clone()).ok());
        names
            .and_then(|names| self.hosts.expand(&names).ok())
            .unwrap_or_default()
    }

    /// The names the limits allow: of the hosts `list_hosts` knows and those the scopes name.
    fn allowed_hosts(&self, limits: &Limits) -> Vec<String> {
        let mut names = self.hosts.names();
        let named = limits.0.iter().filter_map(|s| s.hosts.as_ref()).flatten();
        names.extend(named.cloned());
        names.sort();
        names.dedup();
        names.retain(|name| limits.allows_host(&self.hosts, name));
        if names.is_empty() {
            names.push("none".to_owned());
        }
        names
    }

    /// Whether `principal` may see `record` in `list_sessions`: its own, on a host it may use.
    pub(super) fn shows_session(
        &self,
        principal: &Principal,
        limits: &Limits,
        record: &SessionRecord,
    ) -> bool {
        record.belongs_to(principal) && limits.allows_host(&self.hosts, &record.host)
    }
}

impl Outpost {
    /// `principal`'s job `id`, when its scope still reaches the job's host: another's job, or
    /// one on a host this principal may not name (a narrower token of the same `sub`), is an
    /// unknown job, word for word.
    pub(super) fn job_for(&self, id: &str, principal: &Principal) -> Result<Arc<Job>> {
        let job = self.jobs.get_for(id, principal)?;
        match self.limits(principal).allows_host(&self.hosts, &job.host) {
            true => Ok(job),
            false => Err(Error::UnknownJob(id.to_owned())),
        }
    }

    /// `principal`'s jobs on hosts its scope reaches, newest first.
    pub(super) fn jobs_for(&self, principal: &Principal) -> Vec<Arc<Job>> {
        let limits = self.limits(principal);
        let mut jobs = self.jobs.list_for(principal);
        jobs.retain(|job| limits.allows_host(&self.hosts, &job.host));
        jobs
    }
}
