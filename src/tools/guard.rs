//! Around every tool call: who the caller is, their rate limit, cancelling the call when its
//! connection closes, and the audit record.

use std::num::NonZeroU32;
use std::time::Instant;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rmcp::RoleServer;
use rmcp::model::{CallToolRequestParams, CallToolResponse, ErrorCode, ErrorData};
use rmcp::service::RequestContext;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditLog, AuditRecord, Decision, millis, now};
use crate::auth::Principal;

/// JSON-RPC error code of a call refused by the rate limit.
const RATE_LIMITED: ErrorCode = ErrorCode(-32029);
/// Principals remembered by the rate limiter before stale ones are forgotten.
const LIMITER_KEYS: usize = 1024;

/// The rules every call passes through; shared by all connections of a server.
#[derive(Default)]
pub struct CallPolicy {
    audit: Option<AuditLog>,
    limiter: Option<DefaultKeyedRateLimiter<Principal>>,
}

impl CallPolicy {
    /// Calls are recorded in `audit` (when open) and limited to `calls_per_minute` per
    /// principal (0: no limit).
    pub fn new(audit: Option<AuditLog>, calls_per_minute: u32) -> Self {
        let limiter = NonZeroU32::new(calls_per_minute)
            .map(|rate| RateLimiter::keyed(Quota::per_minute(rate)));
        Self { audit, limiter }
    }

    /// `Err` when `principal` has used up its calls for now.
    pub fn admit(&self, principal: &Principal) -> Result<(), ErrorData> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if limiter.len() > LIMITER_KEYS {
            limiter.retain_recent();
        }
        limiter.check_key(principal).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ErrorData::new(
                RATE_LIMITED,
                format!(
                    "rate limit reached for `{principal}`; retry in {:.1} s (serve.calls_per_minute)",
                    wait.as_secs_f64()
                ),
                None,
            )
        })
    }

    /// Writes the audit record of a decision (who allowed or denied what), when there is an
    /// audit log.
    pub fn record_decision(&self, decision: &Decision<'_>) {
        if let Some(audit) = &self.audit {
            audit.decision(decision);
        }
    }

    /// Writes the audit record of one finished call, when there is an audit log.
    pub fn record(&self, call: &CallFacts, result: &Result<CallToolResponse, ErrorData>) {
        let Some(audit) = &self.audit else { return };
        let (outcome, exit_code, error) = outcome_of(result, call.cancelled.is_cancelled());
        audit.write(&AuditRecord {
            time: now(),
            principal: call.principal.to_string(),
            tool: call.tool.clone(),
            host: call.host.clone(),
            input: call.input.as_deref().map(|text| audit.excerpt(text)),
            outcome,
            exit_code,
            error: error.map(|text| audit.excerpt(&text)),
            duration_ms: millis(call.started.elapsed()),
        });
    }
}

/// What is known of a call before it runs.
pub struct CallFacts {
    pub principal: Principal,
    pub tool: String,
    pub host: Option<String>,
    /// The command, the prompt, or the arguments as JSON.
    pub input: Option<String>,
    pub started: Instant,
    /// The call's own cancellation (client cancel or connection closed).
    pub cancelled: CancellationToken,
}

impl CallFacts {
    pub fn of(
        principal: Principal,
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Self {
        let arguments = request.arguments.as_ref();
        let text = |key: &str| arguments.and_then(|a| a.get(key));
        let input = match (text("command"), text("prompt")) {
            (Some(Value::String(command)), _) => Some(command.clone()),
            (Some(Value::Array(argv)), _) => Some(
                argv.iter()
                    .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            (_, Some(Value::String(prompt))) => Some(prompt.clone()),
            _ => arguments
                .filter(|a| !a.is_empty())
                .map(|a| Value::Object(a.clone()).to_string()),
        };
        Self {
            principal,
            tool: request.name.to_string(),
            host: text("host").and_then(Value::as_str).map(str::to_owned),
            input,
            started: Instant::now(),
            cancelled: context.ct.clone(),
        }
    }
}

/// The principal of a call: set by the HTTP server on the request, else the connection's own.
pub fn principal_of(context: &RequestContext<RoleServer>, connection: &Principal) -> Principal {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>())
        .unwrap_or(connection)
        .clone()
}

/// Runs `call`; when `closed` fires first, cancels the call's token and lets it finish its
/// cleanup (kill its process) instead of dropping it.
pub async fn cancel_when_closed<F: Future>(
    call: F,
    own: CancellationToken,
    closed: &CancellationToken,
) -> F::Output {
    tokio::pin!(call);
    tokio::select! {
        output = &mut call => return output,
        _ = closed.cancelled() => own.cancel(),
    }
    call.await
}

/// (`outcome`, exit code, error text) of a result.
fn outcome_of(
    result: &Result<CallToolResponse, ErrorData>,
    cancelled: bool,
) -> (String, Option<i64>, Option<String>) {
    let complete = match result {
        Err(error) => return ("rejected".into(), None, Some(error.message.to_string())),
        Ok(CallToolResponse::Complete(complete)) => complete,
        Ok(_) => return ("ok".into(), None, None),
    };
    let structured = complete.structured_content.as_ref();
    let field = |key: &str| structured.and_then(|s| s.get(key));
    let exit_code = field("exit_code").and_then(Value::as_i64);
    let failed = complete.is_error == Some(true);
    // A timed-out command is a failed result that still has its status.
    let outcome = match field("status").and_then(Value::as_str) {
        _ if cancelled => "cancelled",
        Some(status) => status,
        None if failed => "error",
        None => "ok",
    };
    let error = failed.then(|| {
        (complete.content.iter())
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect::<Vec<_>>()
            .join(" ")
    });
    (outcome.to_owned(), exit_code, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{CallToolResult, ContentBlock};

    fn result(failed: bool, structured: Option<Value>) -> Result<CallToolResponse, ErrorData> {
        let content = vec![ContentBlock::text("what happened")];
        let mut result = if failed {
            CallToolResult::error(content)
        } else {
            CallToolResult::success(content)
        };
        result.structured_content = structured;
        Ok(CallToolResponse::Complete(result))
    }

    #[test]
    fn decisions_are_recorded_with_who_decided() {
        use crate::audit::Verdict;
        use crate::config::AuditSettings;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let settings = AuditSettings {
            path: Some(path.clone()),
            ..AuditSettings::default()
        };
        let audit = AuditLog::open(&settings, vec!["hunter2-secret".into()]).unwrap();
        let policy = CallPolicy::new(audit, 0);
        let ana = Principal::new("ana");
        policy.record_decision(&Decision {
            principal: &ana,
            host: Some("gpu1"),
            what: "claude tool Bash: curl -H hunter2-secret x",
            verdict: Verdict::Denied,
            decided_by: "ana",
            reason: Some("not that"),
        });
        policy.record_decision(&Decision {
            principal: &ana,
            host: None,
            what: "command: reboot",
            verdict: Verdict::Unanswered,
            decided_by: "timeout",
            reason: None,
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        assert_eq!(first["event"], "decision");
        assert_eq!(first["principal"], "ana");
        assert_eq!(first["host"], "gpu1");
        assert_eq!(first["what"], "claude tool Bash: curl -H [REDACTED] x");
        assert_eq!(first["decision"], "denied");
        assert_eq!(first["decided_by"], "ana");
        assert_eq!(first["reason"], "not that");
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["decision"], "unanswered");
        assert_eq!(lines[1]["decided_by"], "timeout");
        assert!(lines[1].get("host").is_none() && lines[1].get("reason").is_none());
        // Without an audit log there is nothing to write to, and nothing fails.
        CallPolicy::default().record_decision(&Decision {
            principal: &ana,
            host: None,
            what: "x",
            verdict: Verdict::Allowed,
            decided_by: "ana",
            reason: None,
        });
    }

    #[test]
    fn outcomes_keep_the_status_of_failed_results() {
        let timed_out = serde_json::json!({"status": "timed_out", "exit_code": null});
        let (outcome, _, error) = outcome_of(&result(true, Some(timed_out)), false);
        assert_eq!(
            (outcome.as_str(), error.as_deref()),
            ("timed_out", Some("what happened"))
        );
        let exited = serde_json::json!({"status": "exited", "exit_code": 3});
        assert_eq!(
            outcome_of(&result(false, Some(exited.clone())), false),
            ("exited".into(), Some(3), None)
        );
        assert_eq!(outcome_of(&result(true, Some(exited)), true).0, "cancelled");
        assert_eq!(outcome_of(&result(true, None), false).0, "error");
        assert_eq!(outcome_of(&result(false, None), false).0, "ok");
        let refused = Err(ErrorData::invalid_params("no", None));
        assert_eq!(outcome_of(&refused, false).0, "rejected");
    }
}
