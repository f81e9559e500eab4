//! The command policy at the point where tools start work: refused commands never start, and
//! those that need confirmation are shown to the person first (elicitation); with no answer
//! nothing runs.

use rmcp::{Peer, RoleServer};

use super::Outpost;
use super::ask::{self, Answer, Question};
use crate::audit::{Decision, Verdict as AuditVerdict};
use crate::auth::Principal;
use crate::claude::TurnRequest;
use crate::config::{Config, EffectivePolicy, Verdict};
use crate::error::{Error, Result};
use crate::sync::{Cwd, Direction, SyncRequest};

/// What a call is about to do on a host.
pub(super) enum Action<'a> {
    /// A shell command (`remote_exec`).
    Command {
        command: &'a str,
        cwd: Option<&'a str>,
        /// What it reads on stdin: a script given to `sh` is as much the command as its line.
        stdin: Option<&'a str>,
        /// The names of the variables it gets (their values may be secrets: never shown).
        env: Vec<&'a str>,
    },
    /// A Claude turn's prompt (`spawn_claude`).
    ClaudePrompt {
        prompt: &'a str,
        cwd: Option<&'a str>,
    },
    /// Copying session files here → the host (`sync_sessions` push).
    Push { cwd: &'a str },
    /// Copying files onto the destination's host (`transfer`), as `host:path`.
    Transfer {
        source: &'a str,
        destination: &'a str,
    },
}

impl Action<'_> {
    fn verdict(&self, policy: &EffectivePolicy) -> Verdict {
        match self {
            // The patterns see the command line and, after it, its stdin.
            Action::Command { command, stdin, .. } => match policy.command(command) {
                Verdict::Run => stdin.map_or(Verdict::Run, |stdin| policy.command(stdin)),
                verdict => verdict,
            },
            Action::ClaudePrompt { .. } | Action::Push { .. } | Action::Transfer { .. } => {
                policy.other()
            }
        }
    }

    fn what(&self) -> String {
        match self {
            Action::Command { command, .. } => format!("the command `{}`", excerpt(command)),
            Action::ClaudePrompt { .. } => "the Claude prompt".to_owned(),
            Action::Push { .. } => "the session push".to_owned(),
            Action::Transfer { destination, .. } => format!("the copy to {destination}"),
        }
    }

    /// The whole of it, as the person is shown it.
    fn shown(&self) -> String {
        let cwd = |cwd: Option<&str>| cwd.unwrap_or("(home)").to_owned();
        match self {
            Action::Command {
                command,
                cwd: dir,
                stdin,
                env,
            } => {
                let mut shown = format!("Directory: {}\nCommand:\n{command}", cwd(*dir));
                if !env.is_empty() {
                    shown.push_str(&format!("\nWith variables: {}", env.join(", ")));
                }
                if let Some(stdin) = stdin {
                    shown.push_str(&format!("\nOn its stdin:\n{}", head(stdin)));
                }
                shown
            }
            Action::ClaudePrompt { prompt, cwd: dir } => {
                format!("Directory: {}\nClaude prompt:\n{prompt}", cwd(*dir))
            }
            Action::Push { cwd: dir } => format!(
                "Copy Claude's session files of project {dir} from this machine to the host"
            ),
            Action::Transfer {
                source,
                destination,
            } => format!("Copy files\nfrom: {source}\nto: {destination}"),
        }
    }
}

/// What the policies say of `action` by `principal` on `host`: the host's levels, and then a
/// network principal's own (`serve.principals.<sub>.policy`), which can only add: its `deny`
/// refuses, and its `confirm` asks where the host's would run.
fn verdict(action: &Action<'_>, config: &Config, principal: &Principal, host: &str) -> Verdict {
    let of_host = action.verdict(&config.policy_for(host));
    let own = config
        .serve
        .principals
        .get(principal.as_str())
        .filter(|_| !principal.is_local())
        .map(|settings| EffectivePolicy::single(principal_field(principal), &settings.policy));
    match (of_host, own.map(|own| action.verdict(&own))) {
        (deny @ Verdict::Deny { .. }, _) => deny,
        (_, Some(deny @ Verdict::Deny { .. })) => deny,
        (confirm @ Verdict::Confirm { .. }, _) => confirm,
        (Verdict::Run, Some(mine)) => mine,
        (run, None) => run,
    }
}

/// Where a principal's own policy is set.
fn principal_field(principal: &Principal) -> String {
    format!("serve.principals.{}.policy", principal.as_str())
}

impl Outpost {
    /// Whether `action` may go ahead on `host` (for a group: on any member, since any may take
    /// it): refused when a member's policy denies it; asked of the person once when any member's
    /// policy wants confirmation; then the unknown host keys to confirm are met.
    pub(super) async fn clear_to_run(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        host: &str,
        action: Action<'_>,
    ) -> Result<()> {
        self.check_policy(peer, principal, host, &action).await?;
        self.confirm_host_keys(peer, principal, host).await
    }

    /// [`Outpost::clear_to_run`] for a Claude turn, on the host it will run on (a resumed
    /// session's own).
    pub(super) async fn clear_claude_turn(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        request: &TurnRequest,
    ) -> Result<()> {
        let (host, cwd) = self.claude.target(
            request.host.as_deref(),
            request.cwd.as_deref(),
            request.session_id.as_deref(),
        );
        let action = Action::ClaudePrompt {
            prompt: &request.prompt,
            cwd: cwd.as_deref(),
        };
        self.clear_to_run(peer, principal, &host, action).await
    }

    /// [`Outpost::clear_to_run`] for `sync_sessions`: a push is subject to the policy; both
    /// directions connect, so both meet unknown host keys.
    pub(super) async fn clear_sync(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        request: &SyncRequest,
    ) -> Result<()> {
        if request.direction == Direction::Push {
            let (Cwd::Given(cwd) | Cwd::Physical(cwd)) = &request.cwd;
            let action = Action::Push { cwd };
            self.check_policy(peer, principal, &request.host, &action)
                .await?;
        }
        self.confirm_host_keys(peer, principal, &request.host).await
    }

    /// [`Outpost::clear_to_run`] for `transfer`: writing at the destination is subject to its
    /// policy; both ends connect, so both meet unknown host keys.
    pub(super) async fn clear_transfer(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        source: &str,
        destination: &str,
        action: Action<'_>,
    ) -> Result<()> {
        self.check_policy(peer, principal, destination, &action)
            .await?;
        self.confirm_host_keys(peer, principal, source).await?;
        self.confirm_host_keys(peer, principal, destination).await
    }

    async fn check_policy(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        host: &str,
        action: &Action<'_>,
    ) -> Result<()> {
        let members = match self.hosts.group(host) {
            Some(members) => members.to_vec(),
            None => vec![host.to_owned()],
        };
        let mut to_confirm = Vec::new();
        for member in &members {
            if let Some(confirm) = self.judge(principal, member, action)? {
                to_confirm.push(confirm);
            }
        }
        let group = self.hosts.group(host).is_some();
        let place = |why: String, reasons: String| match group {
            true => format!("group `{host}` (any member may take it; {reasons})"),
            false => format!("`{host}` ({why})"),
        };
        self.confirm(peer, principal, host, action, &to_confirm, place)
            .await
            .map_err(|e| match e {
                Error::NotConfirmed {
                    what,
                    why,
                    field,
                    answer,
                    ..
                } if members.len() > 1 => Error::NotConfirmed {
                    what,
                    host: host.to_owned(),
                    why,
                    field,
                    answer,
                },
                other => other,
            })
    }

    /// The policy part of [`Outpost::clear_to_run`] for a fan-out over `hosts`, host by host: a
    /// host the policy denies is refused alone; those that want confirmation are asked about in
    /// one question, and a no refuses each of them.
    pub(super) async fn check_fanout_policy(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        hosts: &[String],
        action: &Action<'_>,
    ) -> Vec<Result<()>> {
        let mut verdicts: Vec<Result<()>> = Vec::new();
        let mut to_confirm = Vec::new();
        for host in hosts {
            match self.judge(principal, host, action) {
                Ok(Some(confirm)) => to_confirm.push((verdicts.len(), confirm)),
                Ok(None) => {}
                Err(denied) => {
                    verdicts.push(Err(denied));
                    continue;
                }
            }
            verdicts.push(Ok(()));
        }
        let asked: Vec<Confirm> = to_confirm.iter().map(|(_, c)| c.clone()).collect();
        let place = |_, reasons| format!("{} hosts of a fan-out ({reasons})", asked.len());
        let names: Vec<&str> = asked.iter().map(|(m, ..)| m.as_str()).collect();
        let label = names.join(", ");
        let confirmed = self.confirm(peer, principal, &label, action, &asked, place);
        if let Err(refused) = confirmed.await {
            for (i, (member, ..)) in &to_confirm {
                verdicts[*i] = Err(match &refused {
                    Error::NotConfirmed {
                        what,
                        why,
                        field,
                        answer,
                        ..
                    } => Error::NotConfirmed {
                        what: what.clone(),
                        host: member.clone(),
                        why: why.clone(),
                        field: field.clone(),
                        answer: answer.clone(),
                    },
                    other => Error::InvalidArgument {
                        field: "hosts",
                        reason: other.to_string(),
                    },
                });
            }
        }
        verdicts
    }

    /// What the policies say of `action` on the host `member`: run (None), confirm first
    /// (what to ask about), or refused (recorded in the audit log).
    fn judge(
        &self,
        principal: &Principal,
        member: &str,
        action: &Action<'_>,
    ) -> Result<Option<Confirm>> {
        let config = self.hosts.config();
        match verdict(action, config, principal, member) {
            Verdict::Run => Ok(None),
            Verdict::Deny { field, pattern } => {
                self.record(
                    principal,
                    member,
                    action,
                    AuditVerdict::Denied,
                    "policy",
                    Some(&format!("{field}: {pattern}")),
                );
                Err(Error::PolicyDenied {
                    what: action.what(),
                    host: member.to_owned(),
                    pattern,
                    field,
                    file: config.origin.display(),
                })
            }
            Verdict::Confirm { field, why } => Ok(Some((member.to_owned(), field, why))),
        }
    }

    /// Asks the person once whether `action` may run on the hosts of `to_confirm` (none: it
    /// may); `place` says where, given the first reason and all of them; the audit log names
    /// `host`.
    async fn confirm(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        host: &str,
        action: &Action<'_>,
        to_confirm: &[Confirm],
        place: impl FnOnce(String, String) -> String,
    ) -> Result<()> {
        let Some((first, field, why)) = to_confirm.first().cloned() else {
            return Ok(());
        };
        let file = self.hosts.config().origin.display();
        let reasons: Vec<String> = to_confirm
            .iter()
            .map(|(member, _, why)| format!("on {member}: {why}"))
            .collect();
        let place = place(why, reasons.join("; "));
        let question = Question {
            message: format!(
                "Run this on {place}?\n{}\n(policy in {file})",
                action.shown()
            ),
            choices: vec![
                ("run", "Run it".to_owned()),
                ("refuse", "Refuse: run nothing".to_owned()),
            ],
            note: None,
        };
        let by = principal.to_string();
        let answer = match ask::ask(peer, &question, self.approval_timeout()).await {
            Answer::Chose { choice, .. } if choice == "run" => {
                self.record(principal, host, action, AuditVerdict::Allowed, &by, None);
                return Ok(());
            }
            Answer::Chose { .. } | Answer::Declined => {
                self.record(principal, host, action, AuditVerdict::Denied, &by, None);
                "the person declined it".to_owned()
            }
            Answer::Unanswered(why) => {
                self.record(
                    principal,
                    host,
                    action,
                    AuditVerdict::Unanswered,
                    "no one",
                    Some(&why),
                );
                why
            }
        };
        Err(Error::NotConfirmed {
            what: action.what(),
            host: first,
            why: format!("{}, in {file}", reasons.join("; ")),
            field,
            answer,
        })
    }
}

/// A host whose policy wants confirmation: (host, the level's field, why).
type Confirm = (String, String, String);

impl Outpost {
    /// Writes a decision on `action` to the audit log.
    fn record(
        &self,
        principal: &Principal,
        host: &str,
        action: &Action<'_>,
        verdict: AuditVerdict,
        decided_by: &str,
        reason: Option<&str>,
    ) {
        self.policy.record_decision(&Decision {
            principal,
            host: Some(host),
            what: &action.what(),
            verdict,
            decided_by,
            reason,
        });
    }
}

/// Most of stdin shown to the person.
const STDIN_SHOWN: usize = 2000;

/// `text` whole, or its first STDIN_SHOWN characters and how long it is.
fn head(text: &str) -> String {
    match text.char_indices().nth(STDIN_SHOWN) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &text[..cut], text.len()),
        None => text.to_owned(),
    }
}

/// The start of a long command, for one-line messages.
fn excerpt(command: &str) -> String {
    let line = command.lines().next().unwrap_or_default();
    match line.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None if line.len() < command.len() => format!("{line} …"),
        None => line.to_owned(),
    }
}
