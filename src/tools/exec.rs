//! Tool `remote_exec`: run a shell command on a host, in the foreground with progress, or as a background job.

use std::collections::BTreeMap;
use std::time::Duration;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Outpost;
use super::foreground::Waited;
use super::guard;
use super::policy::Action;
use super::reply::{failed_with, failure, seconds, success};
use super::sudo::SudoRun;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::jobs::{Job, JobKind, JobSpec, JobStatus, Outcome};
use crate::transport::{CommandSpec, Stdin};

/// Parameters of `remote_exec`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteExecParams {
    /// Host to run on: `local`, a configured remote, an ~/.ssh/config alias or a group (see `list_hosts`). Default: the default host.
    #[serde(default)]
    pub host: Option<String>,
    /// Run on each of these hosts at once instead of one `host`: names, `@group` for every member of a group. One result per host, and a summary.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// Shell command line, run by `sh` (or by a bash or zsh login shell).
    pub command: String,
    /// Working directory (default: home). `~/` is expanded.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Extra environment variables; values are never logged. With `sudo`, passed by name only (the rule needs `SETENV:`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Text written to the command's stdin, then EOF (default: empty stdin).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Seconds before the command's process tree is killed (default 120; 3600 in the background).
    #[serde(default)]
    pub timeout_secs: Option<f64>,
    /// Return a `job_id` at once and keep running; read it with `job_output`.
    #[serde(default)]
    pub background: bool,
    /// Seconds until the call returns `running` with a `job_id` while the command goes on (default 45; 0: never).
    #[serde(default)]
    pub detach_after_secs: Option<f64>,
    /// Run through `sudo -n` (never prompts): needs a NOPASSWD sudoers rule, else the error names it.
    #[serde(default)]
    pub sudo: bool,
    /// User sudo runs the command as (default `root`).
    #[serde(default)]
    pub sudo_user: Option<String>,
}

/// Result of `remote_exec`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ExecResult {
    /// Host the command ran on (for a group: the member that took it).
    pub host: String,
    /// The group `host` was chosen from, when the call named a group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Standard output (head and tail when truncated).
    pub stdout: String,
    /// Standard error (head and tail when truncated).
    pub stderr: String,
    /// Whether output was cut to the budget; the whole of it is in `job_output`.
    pub truncated: bool,
    /// Job to follow with `job_output` / `job_kill` (background, or truncated output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// While it runs: how to follow it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[tool_router(router = exec_tools, vis = "pub(super)")]
impl Outpost {
    #[tool(
        title = "Run a command",
        description = "Run a shell command on a host and return exit code, stdout and stderr. Long or open-ended work: background=true, then job_output.",
        output_schema = super::fanout_result::exec_output_schema(),
        annotations(
            title = "Run a command",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn remote_exec(
        &self,
        Parameters(params): Parameters<RemoteExecParams>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        if params.hosts.is_some() {
            return self.fan_out(params, context).await;
        }
        let background = params.background;
        let detach_at = match self.detach_at(params.detach_after_secs) {
            Ok(detach_at) => detach_at,
            Err(e) => return failure(&e),
        };
        let named_timeout = params.timeout_secs.is_some();
        let sudo = match SudoRun::from_params(&params) {
            Ok(sudo) => sudo,
            Err(e) => return failure(&e),
        };
        let owner = guard::principal_of(&context, &self.principal);
        let start = self.start_exec(params, owner, &context.peer);
        let job = match self.start_unless_cancelled(start, &context.ct).await {
            Ok(job) => job,
            Err(answer) => return answer,
        };
        if background {
            self.notify_when_done(&job, &context.peer);
            let result = self.exec_result(&job, true);
            let text = format!("started in the background as {} on {}", job.id, job.host);
            return success(&result, text);
        }
        match (self.wait_foreground(&job, detach_at, named_timeout, &context)).await {
            Waited::Finished => {}
            Waited::Cancelled(answer) => return answer,
            Waited::Detached => {
                let result = self.exec_result(&job, true);
                let text = format!("still running on {} as {}", job.host, job.id);
                return success(&result, text);
            }
        }
        let result = self.exec_result(&job, false);
        if let Some(sudo) = &sudo
            && let Some(refused) = self.sudo_refusal(sudo, &result).await
        {
            return failure(&refused);
        }
        reply(&result)
    }
}

/// The command as the policy judges it and as the host runs it: with `sudo`, the policy sees
/// `sudo -n -u USER -- COMMAND` (so rules on `sudo` hold) and the host runs sudo's shell text.
pub(super) fn exec_lines(params: &RemoteExecParams) -> Result<(String, String)> {
    Ok(match SudoRun::from_params(params)? {
        Some(sudo) => (sudo.as_typed(), sudo.line()),
        None => (params.command.clone(), params.command.clone()),
    })
}

/// What the policy is shown of a call's command: `checked` (see [`exec_lines`]), its stdin
/// and the names of its variables, in `cwd`.
pub(super) fn command_action<'a>(
    params: &'a RemoteExecParams,
    checked: &'a str,
    cwd: Option<&'a str>,
) -> Action<'a> {
    Action::Command {
        command: checked,
        cwd,
        stdin: params.stdin.as_deref(),
        env: params.env.keys().map(String::as_str).collect(),
    }
}

/// The call's answer for `result`: an error when the command timed out, else a success.
pub(super) fn reply(result: &ExecResult) -> CallToolResult {
    match failure_headline(result) {
        Some(headline) => failed_with(result, &headline),
        None => success(result, render_text(result)),
    }
}

impl Outpost {
    /// Resolves the host, checks the arguments and starts the command as a job.
    pub(super) async fn start_exec(
        &self,
        params: RemoteExecParams,
        owner: Principal,
        peer: &Peer<RoleServer>,
    ) -> Result<std::sync::Arc<Job>> {
        let timeout = self.exec_timeout(&params)?;
        let (checked, _) = exec_lines(&params)?;
        let name = self.hosts.effective_name(params.host.as_deref());
        let cwd = params.cwd.clone().or_else(|| self.hosts.workspace(&name));
        let action = command_action(&params, &checked, cwd.as_deref());
        self.clear_to_run(peer, &owner, &name, action).await?;
        let limit = self.hosts.config().exec.output_limit_bytes;
        self.launch_exec(params, &name, timeout, owner, limit).await
    }

    /// The call's timeout, once its arguments are found sound.
    pub(super) fn exec_timeout(&self, params: &RemoteExecParams) -> Result<Duration> {
        let settings = &self.hosts.config().exec;
        let timeout = match params.timeout_secs {
            Some(secs) => seconds("timeout_secs", secs, settings.max_timeout_secs)?,
            None if params.background => {
                Duration::from_secs(settings.default_background_timeout_secs)
            }
            None => Duration::from_secs(settings.default_timeout_secs),
        };
        if params.command.trim().is_empty() {
            return Err(Error::InvalidArgument {
                field: "command",
                reason: "is empty".into(),
            });
        }
        Ok(timeout)
    }

    /// Starts the command of a call cleared to run on `name` as a job whose result carries at
    /// most `output_limit` bytes of output.
    pub(super) async fn launch_exec(
        &self,
        params: RemoteExecParams,
        name: &str,
        timeout: Duration,
        owner: Principal,
        output_limit: usize,
    ) -> Result<std::sync::Arc<Job>> {
        let settings = &self.hosts.config().exec;
        let (_, line) = exec_lines(&params)?;
        let stdin = params.stdin.map(String::into_bytes);
        let spec = |host: &str| CommandSpec {
            command: line.clone(),
            cwd: params.cwd.clone().or_else(|| self.hosts.workspace(host)),
            env: params.env.clone(),
            stdin: stdin.clone().map_or(Stdin::Null, Stdin::Bytes),
        };
        let (picked, process) = self.hosts.spawn(name, spec).await?;
        let host = picked.host;
        tracing::info!(%host, group = ?picked.group, pid = process.pid(), background = params.background, "remote_exec started");
        self.jobs.start(
            process,
            JobSpec {
                kind: JobKind::Exec,
                owner,
                host,
                group: picked.group,
                command: params.command,
                timeout,
                output_limit,
                log_bytes: settings.job_log_bytes,
                follow_grace: settings.follow_grace(),
                hold_for_first_reader: params.background,
            },
        )
    }

    /// The result for `job` as it stands. A finished foreground job whose output fit and whose
    /// kill (if any) is confirmed is forgotten; otherwise `job_output` can still tell about it.
    pub(super) fn exec_result(&self, job: &Job, background: bool) -> ExecResult {
        // Taken first: output arriving while the rest is read is after the offset `next` gives.
        let end = job.log_end();
        let rendered = job.rendered();
        let outcome = job.outcome();
        let keep = background || rendered.truncated || outcome.kill_unconfirmed.is_some();
        let outcome_running = outcome.status == JobStatus::Running;
        if !keep {
            self.jobs.forget(&job.id);
        }
        ExecResult {
            host: job.host.clone(),
            group: job.group.clone(),
            outcome,
            stdout: rendered.stdout,
            stderr: rendered.stderr,
            truncated: rendered.truncated,
            job_id: keep.then(|| job.id.clone()),
            next: outcome_running.then(|| follow_up(job, end)),
        }
    }
}

/// The sentence that tells the model how to follow a running job whose output up to `offset`
/// it has seen.
pub(super) fn follow_up(job: &Job, offset: u64) -> String {
    format!(
        "Still running: call job_output with job_id {} and offset {offset} (wait_secs up to {}) while status is running or more is true, or job_kill to stop it.",
        job.id,
        super::jobs::MAX_WAIT_SECS
    )
}

/// What went wrong, when the result is an error (the command ran past its timeout); the
/// result's fields follow it in the error's text.
fn failure_headline(result: &ExecResult) -> Option<String> {
    let outcome = &result.outcome;
    (outcome.status == JobStatus::TimedOut).then(|| {
        let killed = match &outcome.kill_unconfirmed {
            None => "the process tree was killed",
            Some(_) => "the kill is not confirmed (kill_unconfirmed says why)",
        };
        format!(
            "timed out after {:.1}s on {}; {killed}; the output so far is below. Raise timeout_secs or use background: true.",
            outcome.duration_ms as f64 / 1000.0,
            result.host
        )
    })
}

/// The short text form of a successful result, for clients that ignore structured content.
fn render_text(result: &ExecResult) -> String {
    let outcome = &result.outcome;
    let secs = outcome.duration_ms as f64 / 1000.0;
    let mut text = match (&outcome.exit_code, &outcome.signal) {
        (Some(code), _) => format!("exit {code} on {} in {secs:.1}s", result.host),
        (None, Some(signal)) => {
            format!("killed by {signal} on {} after {secs:.1}s", result.host)
        }
        _ => format!("{:?} on {} after {secs:.1}s", outcome.status, result.host),
    };
    if !result.stdout.is_empty() {
        text.push('\n');
        text.push_str(&result.stdout);
    }
    if !result.stderr.is_empty() {
        text.push_str("\n--- stderr ---\n");
        text.push_str(&result.stderr);
    }
    if let (true, Some(job)) = (result.truncated, &result.job_id) {
        text.push_str(&format!(
            "\n[output truncated; all of it: job_output job_id={job}]"
        ));
    }
    text
}
