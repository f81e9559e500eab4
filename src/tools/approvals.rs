//! Remote Claude's permission prompts on their way to a person. A turn's open prompt waits here
//! until a call from a client that can ask its user takes it — the call that started the turn,
//! or later a `job_output` of its job — or until `claude.approval_timeout_secs` has passed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rmcp::{Peer, RoleServer};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::ask::{self, Answer, Question};
use super::{CallPolicy, Outpost};
use crate::audit::{Decision as AuditDecision, Verdict};
use crate::auth::Principal;
use crate::claude::permission::{Approval, Decision, PermissionRequest};
use crate::jobs::Job;

/// A prompt waiting for a person.
pub struct Open {
    request: PermissionRequest,
    /// Where the turn's job is and works: shown to the person.
    place: String,
    deadline: Instant,
    decide: oneshot::Sender<Decision>,
}

/// The open prompts of every job, by job id (Claude waits on one prompt at a time).
#[derive(Default)]
pub struct Approvals {
    open: Mutex<HashMap<String, Open>>,
}

impl Approvals {
    fn open(&self) -> MutexGuard<'_, HashMap<String, Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the open prompt of `job_id`, to ask about it; nobody else can meanwhile.
    fn take(&self, job_id: &str) -> Option<Open> {
        self.open().remove(job_id)
    }

    /// Leaves `open` for a call to take (again, after one could not get an answer).
    fn offer(&self, job_id: &str, open: Open) {
        self.open().insert(job_id.to_owned(), open);
    }
}

/// Decides the prompts of one turn's job as they come: each waits in `approvals` for a person
/// until `timeout`; a prompt nobody took by then is denied, saying so. The job shows what it
/// waits for meanwhile. Returns when the turn sends no more.
pub async fn decide_prompts(
    approvals: Arc<Approvals>,
    audit: Arc<CallPolicy>,
    job: Arc<Job>,
    place: String,
    timeout: Duration,
    mut prompts: mpsc::UnboundedReceiver<Approval>,
) {
    while let Some(Approval {
        request,
        mut decide,
    }) = prompts.recv().await
    {
        let (answer, decision) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        let what = format!("{}: {}", request.tool_name, request.what());
        let open = Open {
            request,
            place: place.clone(),
            deadline,
            decide: answer,
        };
        approvals.offer(&job.id, open);
        job.set_awaiting(Some(what.clone()));
        job.record_line(&format!("waiting for approval: {what}"));
        let outcome = tokio::select! {
            decided = decision => decided.ok(),
            _ = tokio::time::sleep_until(deadline) => None,
            // Claude dropped the prompt (the turn was interrupted, or it ended).
            () = decide.closed() => {
                approvals.take(&job.id);
                job.set_awaiting(None);
                job.record_line(&format!("prompt withdrawn (the turn ended): {what}"));
                continue;
            }
        };
        let decision = match outcome {
            Some(decision) => decision,
            None => {
                approvals.take(&job.id);
                let why = format!(
                    "nobody approved it within {} s (claude.approval_timeout_secs): no client able to ask its user answered",
                    timeout.as_secs()
                );
                let no_one = Verdict::Unanswered;
                record(&audit, &job, &what, no_one, "timeout", Some(&why));
                Decision::Deny(why)
            }
        };
        job.set_awaiting(None);
        job.record_line(&match &decision {
            Decision::Allow => format!("approved: {what}"),
            Decision::AllowTool => format!("approved for the session: {what}"),
            Decision::Deny(why) => format!("denied: {what} ({why})"),
        });
        let _ = decide.send(decision);
    }
}

impl Outpost {
    /// Asks the person behind `peer` about every prompt `job` opens, until the job ends. The
    /// call that started the turn (`starter`) denies at once what its client cannot ask about;
    /// another call leaves such prompts for a client that can.
    pub(super) async fn serve_approvals(
        &self,
        job: &Arc<Job>,
        peer: &Peer<RoleServer>,
        answerer: &Principal,
        starter: bool,
    ) -> Infallible {
        if !starter && !ask::can_ask(peer) {
            return std::future::pending().await;
        }
        let mut changes = job.subscribe();
        while !job.is_finished() {
            self.ask_once(job, peer, answerer, starter);
            if changes.changed().await.is_err() {
                break;
            }
        }
        std::future::pending().await
    }

    /// Asks about `job`'s open prompt, if any. The question is a task of this connection, so
    /// it outlives the call that asked it (a detach, the end of a long-poll): the person's answer
    /// still counts. A prompt the client could not answer, or whose connection closed, goes
    /// back for another client until its deadline.
    pub(super) fn ask_once(
        &self,
        job: &Arc<Job>,
        peer: &Peer<RoleServer>,
        answerer: &Principal,
        starter: bool,
    ) {
        if job.is_finished() {
            return;
        }
        let Some(open) = self.approvals.take(&job.id) else {
            return;
        };
        if !ask::can_ask(peer) {
            if !starter {
                return self.approvals.offer(&job.id, open);
            }
            let why = "the MCP client cannot ask its user (no elicitation support); allow the tool with allowed_tools or permission_mode, or use a client that supports elicitation";
            let what = open.what();
            if open.decide.send(Decision::Deny(why.to_owned())).is_ok() {
                let no_one = Verdict::Unanswered;
                record(&self.policy, job, &what, no_one, "no client", Some(why));
            }
            return;
        }
        let held = Held {
            approvals: self.approvals.clone(),
            job: job.clone(),
            open: Some(open),
        };
        let (peer, answerer) = (peer.clone(), answerer.clone());
        let (audit, closed) = (self.policy.clone(), self.closed.clone());
        self.connection_tasks.spawn(async move {
            tokio::select! {
                () = held.ask(&peer, &answerer, &audit) => {}
                // Dropping `held` offers the prompt again.
                _ = closed.cancelled() => {}
            }
        });
    }
}

/// A prompt taken to be asked about; dropped before it is decided, it is offered again (unless
/// Claude has withdrawn it).
struct Held {
    approvals: Arc<Approvals>,
    job: Arc<Job>,
    open: Option<Open>,
}

impl Held {
    async fn ask(mut self, peer: &Peer<RoleServer>, answerer: &Principal, audit: &CallPolicy) {
        let Some(open) = self.open.as_ref() else {
            return;
        };
        let (question, deadline) = (question(open), open.deadline);
        let left = deadline.saturating_duration_since(Instant::now());
        let decision = match ask::ask(peer, &question, left).await {
            Answer::Chose { choice, note } => match choice.as_str() {
                "allow" => Decision::Allow,
                "allow_tool" => Decision::AllowTool,
                _ => Decision::Deny(note.unwrap_or_else(|| "denied by the user".to_owned())),
            },
            Answer::Declined => Decision::Deny("the user declined".to_owned()),
            Answer::Unanswered(why) => {
                // Left for another client; past the deadline, the turn's own timeout denies it.
                tracing::info!(job = %self.job.id, %why, "permission prompt not answered");
                return;
            }
        };
        let Some(open) = self.open.take() else {
            return;
        };
        let what = open.what();
        let (verdict, reason) = match &decision {
            Decision::Allow => (Verdict::Allowed, None),
            Decision::AllowTool => (Verdict::AllowedForSession, None),
            Decision::Deny(why) => (Verdict::Denied, Some(why.clone())),
        };
        // Recorded only when it took effect: an answer after the timeout changes nothing.
        if open.decide.send(decision).is_ok() {
            let by = answerer.to_string();
            record(audit, &self.job, &what, verdict, &by, reason.as_deref());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(open) = self.open.take()
            && !open.decide.is_closed()
        {
            self.approvals.offer(&self.job.id, open);
        }
    }
}

impl Open {
    /// The prompt as the audit log names it.
    fn what(&self) -> String {
        format!(
            "claude tool {}: {}",
            self.request.tool_name,
            self.request.what()
        )
    }
}

/// Writes a decision on one of `job`'s prompts to the audit log (its owner raised it).
fn record(
    audit: &CallPolicy,
    job: &Job,
    what: &str,
    verdict: Verdict,
    decided_by: &str,
    reason: Option<&str>,
) {
    audit.record_decision(&AuditDecision {
        principal: &job.owner,
        host: Some(&job.host),
        what,
        verdict,
        decided_by,
        reason,
    });
}

/// What the person is asked about a prompt.
fn question(open: &Open) -> Question {
    let request = &open.request;
    let mut message = format!(
        "Claude on {} wants to use {}:\n{}",
        open.place,
        request.tool_name,
        request.what()
    );
    if let Some(description) = &request.description {
        message.push_str(&format!("\n({description})"));
    }
    Question {
        message,
        choices: vec![
            ("allow", "Allow once".to_owned()),
            (
                "allow_tool",
                format!("Allow {} for the rest of this session", request.tool_name),
            ),
            ("deny", "Deny".to_owned()),
        ],
        note: Some("Reason (told to Claude when you deny)"),
    }
}
