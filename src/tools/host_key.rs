//! Unknown host keys confirmed by a person (`strict_host_key_checking: ask`): before a call
//! connects, each unknown key is shown to the user through the client; accepted keys are recorded
//! in known_hosts as `accept-new` records them, declined ones stop the call.

use rmcp::{Peer, RoleServer};

use super::Outpost;
use super::ask::{self, Answer, Question};
use crate::audit::{Decision, Verdict};
use crate::auth::Principal;
use crate::error::{Error, Result, UnknownHostKey};
use crate::ssh::connect::record_confirmed_key;

impl Outpost {
    /// Meets the unknown host keys a call on `host` (any member, for a group) would meet under
    /// `ask`, asking the person about each once. A changed key is never asked about: the call
    /// itself refuses it.
    pub(super) async fn confirm_host_keys(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        host: &str,
    ) -> Result<()> {
        let mut asked: Vec<String> = Vec::new();
        loop {
            let unknown = match self.hosts.meet_host_keys(host).await {
                Err(Error::HostKeyToConfirm(unknown)) => unknown,
                other => return other,
            };
            let id = format!("{} {}", unknown.host, unknown.fingerprint);
            if asked.contains(&id) {
                // Recorded, yet still unknown (e.g. a known_hosts the check does not read).
                return Err(Error::HostKeyToConfirm(unknown));
            }
            asked.push(id);
            self.ask_about_key(peer, principal, *unknown).await?;
        }
    }

    async fn ask_about_key(
        &self,
        peer: &Peer<RoleServer>,
        principal: &Principal,
        mut unknown: UnknownHostKey,
    ) -> Result<()> {
        let question = Question {
            message: format!(
                "outpost does not know the SSH host key of `{}` ({} port {}).\nKey type: {}\nFingerprint: {}\nTrusting it records it in {}. Compare the fingerprint with the host's own (`ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub` there) before trusting it.",
                unknown.host,
                unknown.key_host,
                unknown.key_port,
                unknown.algorithm,
                unknown.fingerprint,
                unknown.known_hosts.display(),
                key_file_kind(&unknown.algorithm),
            ),
            choices: vec![
                ("trust", "Trust this key, record it and connect".to_owned()),
                ("refuse", "Refuse: connect to nothing".to_owned()),
            ],
            note: None,
        };
        let can_ask = ask::can_ask(peer);
        let what = format!("host key {} {}", unknown.algorithm, unknown.fingerprint);
        let by = principal.to_string();
        let record = |verdict, decided_by: &str, reason: Option<&str>| {
            self.policy.record_decision(&Decision {
                principal,
                host: Some(&unknown.host),
                what: &what,
                verdict,
                decided_by,
                reason,
            })
        };
        let answer = ask::ask(peer, &question, self.approval_timeout()).await;
        match &answer {
            Answer::Chose { choice, .. } if choice == "trust" => {
                record(Verdict::Allowed, &by, None)
            }
            Answer::Chose { .. } | Answer::Declined => record(Verdict::Denied, &by, None),
            Answer::Unanswered(why) => record(Verdict::Unanswered, "no one", Some(why)),
        }
        match answer {
            Answer::Chose { choice, .. } if choice == "trust" => record_confirmed_key(&unknown),
            Answer::Chose { .. } | Answer::Declined => Err(Error::HostKeyDeclined {
                host: unknown.host,
                algorithm: unknown.algorithm,
                fingerprint: unknown.fingerprint,
                known_hosts: unknown.known_hosts.display().to_string(),
            }),
            Answer::Unanswered(why) => {
                unknown.why = if can_ask {
                    why
                } else {
                    format!(
                        "{why}; a client that supports elicitation would have been asked to confirm it"
                    )
                };
                Err(Error::HostKeyToConfirm(Box::new(unknown)))
            }
        }
    }

    /// How long a question to the person waits for an answer.
    pub(super) fn approval_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.hosts.config().claude.approval_timeout_secs)
    }
}

/// The part of the host key file's name for `algorithm` (`ssh-ed25519` → `ed25519`).
fn key_file_kind(algorithm: &str) -> &str {
    match algorithm {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" | "rsa-sha2-256" | "rsa-sha2-512" => "rsa",
        a if a.starts_with("ecdsa") => "ecdsa",
        _ => "*",
    }
}
