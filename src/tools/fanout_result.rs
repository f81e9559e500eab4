//! The result of `remote_exec` with `hosts`: one entry per host (the usual fields, or the
//! error that kept it from running), a summary, each host's output within its share of the
//! budget, and the text form of it all.

use std::sync::Arc;

use rmcp::handler::server::tool::schema_for_output;
use rmcp::model::JsonObject;
use schemars::JsonSchema;
use serde::Serialize;

use super::exec::ExecResult;
use crate::error::Error;
use crate::jobs::JobStatus;

/// Result of a fan-out.
#[derive(Debug, Serialize, JsonSchema)]
pub struct FanoutResult {
    /// One entry per host, in the order the call named them.
    pub hosts: Vec<HostResult>,
    pub summary: Summary,
}

/// One host's part of a fan-out.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum HostResult {
    /// The command ran (or runs) there.
    Ran(ExecResult),
    /// It could not run there.
    Failed {
        host: String,
        /// Why nothing ran on this host.
        error: String,
        /// `unreachable` (unknown host, no connection, no process) or `refused` (policy, a person, a host key).
        reason: FailReason,
    },
}

/// Why a host of a fan-out ran nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    Unreachable,
    Refused,
}

impl FailReason {
    pub fn of(error: &Error) -> Self {
        match error {
            Error::PolicyDenied { .. }
            | Error::NotConfirmed { .. }
            | Error::HostKeyDeclined { .. }
            | Error::HostKeyChanged { .. }
            | Error::SudoNeedsPassword { .. }
            | Error::SudoEnvRefused { .. } => FailReason::Refused,
            _ => FailReason::Unreachable,
        }
    }
}

/// How the hosts of a fan-out fared.
#[derive(Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Summary {
    /// Hosts where the command exited with 0.
    pub succeeded: usize,
    /// Hosts where it ended otherwise: a non-zero exit, a signal, a timeout.
    pub failed: usize,
    /// Hosts it could not start on: unknown, no connection, no process, no `sudo` there.
    pub unreachable: usize,
    /// Hosts a policy, a person or a host key kept it from.
    pub refused: usize,
    /// Hosts where it still runs (background, detached): follow their `job_id`s.
    pub running: usize,
}

impl Summary {
    pub fn of(hosts: &[HostResult]) -> Self {
        let mut summary = Summary::default();
        for host in hosts {
            let count = match host {
                HostResult::Failed {
                    reason: FailReason::Refused,
                    ..
                } => &mut summary.refused,
                HostResult::Failed { .. } => &mut summary.unreachable,
                HostResult::Ran(r) if r.outcome.status == JobStatus::Running => {
                    &mut summary.running
                }
                HostResult::Ran(r) if r.outcome.exit_code == Some(0) => &mut summary.succeeded,
                HostResult::Ran(_) => &mut summary.failed,
            };
            *count += 1;
        }
        summary
    }

    /// `3 succeeded, 1 failed, 1 unreachable` (the counts that are not 0).
    pub fn line(&self) -> String {
        let counts = [
            (self.succeeded, "succeeded"),
            (self.failed, "failed"),
            (self.unreachable, "unreachable"),
            (self.refused, "refused"),
            (self.running, "running"),
        ];
        let parts: Vec<String> = (counts.iter())
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        parts.join(", ")
    }
}

impl HostResult {
    pub fn failed(host: String, error: &Error) -> Self {
        HostResult::Failed {
            host,
            error: error.to_string(),
            reason: FailReason::of(error),
        }
    }

    fn host(&self) -> &str {
        match self {
            HostResult::Ran(r) => &r.host,
            HostResult::Failed { host, .. } => host,
        }
    }
}

/// Each host's share of `output_limit` bytes (stdout and stderr as JSON text, escapes
/// included) when `hosts` share one result.
pub fn share(output_limit: usize, hosts: usize) -> usize {
    output_limit / hosts.max(1)
}

/// The schema `remote_exec` answers with: one host's fields, or with `hosts` in the call, the
/// `hosts` list and `summary` of a fan-out.
#[derive(JsonSchema)]
#[allow(dead_code)] // A schema only: results are an ExecResult or a FanoutResult.
struct ExecOutput {
    #[serde(flatten)]
    one: Option<ExecResult>,
    #[serde(flatten)]
    many: Option<FanoutResult>,
}

pub fn exec_output_schema() -> Arc<JsonObject> {
    schema_for_output::<ExecOutput>()
}

/// The text form of a fan-out: the summary, then each host's outcome and output, each line
/// prefixed by the host's name.
pub fn render_text(result: &FanoutResult) -> String {
    let mut text = format!("{} hosts: {}", result.hosts.len(), result.summary.line());
    for entry in &result.hosts {
        let host = entry.host();
        let ran = match entry {
            HostResult::Failed { error, .. } => {
                text.push_str(&format!("\n{host}: error: {error}"));
                continue;
            }
            HostResult::Ran(ran) => ran,
        };
        let outcome = &ran.outcome;
        let end = match (&outcome.exit_code, &outcome.signal) {
            _ if outcome.status == JobStatus::Running => {
                format!("running as {}", ran.job_id.as_deref().unwrap_or("?"))
            }
            (Some(code), _) => format!("exit {code}"),
            (None, Some(signal)) => format!("killed by {signal}"),
            _ => format!("{:?}", outcome.status),
        };
        text.push_str(&format!("\n{host}: [{end}]"));
        for line in ran.stdout.lines() {
            text.push_str(&format!("\n{host}: {line}"));
        }
        for line in ran.stderr.lines() {
            text.push_str(&format!("\n{host} (stderr): {line}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::jobs::{JobKind, JobManager, JobSpec};

    /// Bytes `text` takes as a JSON string, without the quotes.
    fn json_len(text: &str) -> usize {
        serde_json::to_string(text).unwrap().len() - 2
    }

    #[test]
    fn the_budget_is_split_evenly_and_never_exceeded() {
        assert_eq!(share(30_000, 1), 30_000);
        assert_eq!(share(30_000, 7), 4285);
        assert!(share(30_000, 7) * 7 <= 30_000);
        assert_eq!(share(30_000, 0), 30_000);
    }

    /// Output of three hosts, measured the way the model receives it, stays within the budget.
    #[tokio::test]
    async fn each_hosts_output_stays_within_its_share_as_json() {
        let limit = 3000;
        let jobs = JobManager::new(Duration::from_secs(60));
        let mut total = 0;
        for host in ["a", "b", "c"] {
            let spec = JobSpec {
                kind: JobKind::Exec,
                owner: crate::auth::Principal::stdio(),
                host: host.into(),
                group: None,
                command: "test".into(),
                timeout: Duration::from_secs(60),
                output_limit: share(limit, 3),
                log_bytes: 1 << 20,
                follow_grace: Duration::from_secs(2),
                hold_for_first_reader: false,
            };
            let job = jobs.start_task(spec, |_| async {}).unwrap();
            // Quotes and tabs take two bytes each in JSON: twice what they are raw.
            for _ in 0..200 {
                job.record_line("\"quoted\"\t\\");
            }
            job.finish_with(JobStatus::Exited, serde_json::Value::Null);
            let rendered = job.rendered();
            assert!(rendered.truncated);
            let cost = json_len(&rendered.stdout) + json_len(&rendered.stderr);
            assert!(cost <= share(limit, 3), "{host}: {cost}");
            assert!(cost > share(limit, 3) / 2, "the share is used: {cost}");
            total += cost;
        }
        assert!(total <= limit);
    }
}
