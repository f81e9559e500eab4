//! The command policy at the point where tools start work: refused commands never start, and
//! those that need confirmation are shown to the person first (elicitation); with no answer
//! nothing runs.

use rmcp::{Peer, RoleServer};

use super::Outpost;
use super::ask::{self, Answer, Question};
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
    },
    /// A Claude turn's prompt (`spawn_claude`).
    ClaudePrompt {
        prompt: &'a str,
        cwd: Option<&'a str>,
    },
    /// Copying session files here → the host (`sync_sessions` push).
    Push { cwd: &'a str },
}

impl Action<'_> {
    fn verdict(&self, policy: &EffectivePolicy) -> Verdict {
        match self {
            Action::Command { command, .. } => policy.command(command),
            Action::ClaudePrompt { .. } | Action::Push { .. } => policy.other(),
        }
    }

    fn what(&self) -> String {
        match self {
            Action::Command { command, .. } => format!("the command `{}`", excerpt(command)),
            Action::ClaudePrompt { .. } => "the Claude prompt".to_owned(),
            Action::Push { .. } => "the session push".to_owned(),
        }
    }

    /// The whole of it, as the person is shown it.
    fn shown(&self) -> String {
        let cwd = |cwd: Option<&str>| cwd.unwrap_or("(home)").to_owned();
        match self {
            Action::Command { command, cwd: dir } => {
                format!("Directory: {}\nCommand:\n{command}", cwd(*dir))
            }
            Action::ClaudePrompt { prompt, cwd: dir } => {
                format!("Directory: {}\nClaude prompt:\n{prompt}", cwd(*dir))
            }
            Action::Push { cwd: dir } => format!(
                "Copy Claude's session files of project {dir} from this machine to the host"
            ),
        }
    }
}

/// The policy for `principal` on `host`. The one place a per-principal policy
/// (`serve.principals.<sub>.policy`) joins the config's levels.
pub(super) fn effective_policy(
    config: &Config,
    _principal: &Principal,
    host: &str,
) -> EffectivePolicy {
    config.policy_for(host)
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
        self.confirm_host_keys(peer, host).await
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
        self.confirm_host_keys(peer, &request.host).await
    }

    async fn check_policy(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        host: &str,
        action: &Action<'_>,
    ) -> Result<()> {
        let config = self.hosts.config();
        let file = config.origin.display();
        let members = match self.hosts.group(host) {
            Some(members) => members.to_vec(),
            None => vec![host.to_owned()],
        };
        let mut to_confirm = Vec::new();
        for member in &members {
            match action.verdict(&effective_policy(config, principal, member)) {
                Verdict::Run => {}
                Verdict::Deny { field, pattern } => {
                    return Err(Error::PolicyDenied {
                        what: action.what(),
                        host: member.clone(),
                        pattern,
                        field,
                        file,
                    });
                }
                Verdict::Confirm { field, why } => to_confirm.push((member.clone(), field, why)),
            }
        }
        let Some((first, field, why)) = to_confirm.first().cloned() else {
            return Ok(());
        };
        let reasons: Vec<String> = to_confirm
            .iter()
            .map(|(member, _, why)| format!("on {member}: {why}"))
            .collect();
        let place = match self.hosts.group(host) {
            Some(_) => format!(
                "group `{host}` (any member may take it; {})",
                reasons.join("; ")
            ),
            None => format!("`{host}` ({why})"),
        };
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
        let answer = match ask::ask(peer, &question, self.approval_timeout()).await {
            Answer::Chose { choice, .. } if choice == "run" => return Ok(()),
            Answer::Chose { .. } | Answer::Declined => "the person declined it".to_owned(),
            Answer::Unanswered(why) => why,
        };
        Err(Error::NotConfirmed {
            what: action.what(),
            host: if members.len() > 1 {
                host.to_owned()
            } else {
                first
            },
            why: format!("{}, in {file}", reasons.join("; ")),
            field,
            answer,
        })
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
