//! Decisions in the audit log: who answered a question outpost asked before running something
//! (a Claude tool use, a command a policy wants confirmed, an unknown host key), and how.

use serde::Serialize;

use crate::auth::Principal;

/// How a question was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Allowed this once.
    Allowed,
    /// Allowed for the rest of the session (e.g. a Claude tool for the session).
    AllowedForSession,
    /// Refused.
    Denied,
    /// Nobody answered in time, or no client could be asked: treated as refused.
    Unanswered,
}

/// One decision to record.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'a> {
    /// The principal whose call raised the question.
    pub principal: &'a Principal,
    /// The host it concerns, when there is one.
    pub host: Option<&'a str>,
    /// What was asked about, e.g. `claude tool Bash: rm -rf build`, `command: reboot`,
    /// `host key ssh-ed25519 SHA256:…` (redacted and cut like a call's input).
    pub what: &'a str,
    pub verdict: Verdict,
    /// Who answered: the principal whose client answered, or `timeout`, `policy`, `no client`.
    pub decided_by: &'a str,
    /// The reason given with a denial (or why nobody could answer).
    pub reason: Option<&'a str>,
}

/// A decision as the audit log writes it: one JSON line, told apart from call records by
/// `"event": "decision"`.
#[derive(Debug, Serialize)]
pub(super) struct DecisionRecord {
    pub time: String,
    pub event: &'static str,
    pub principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub what: String,
    pub decision: Verdict,
    pub decided_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
