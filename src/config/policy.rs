//! Command policy: which commands need a person's confirmation and which are refused, set
//! globally, per group and per remote; the levels that apply to a host, and what they say of a
//! command.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Config;

/// What needs a person's confirmation and what is refused outright, on the hosts it is set for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandPolicy {
    /// `never`, `always` (every command, Claude prompt and session push), or regular expressions:
    /// a command any of them matches (anywhere; anchor with `^`/`$`) is confirmed first.
    /// Unset: the next less specific level decides (default `never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<Confirm>,
    /// Regular expressions: a command any of them matches is refused before anything starts.
    /// A guard rail against mistakes, not a security boundary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

/// When a person confirms first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Confirm {
    /// `never` or `always`.
    Mode(ConfirmMode),
    /// Commands matching any of these regular expressions.
    Matching(Vec<String>),
}

/// `never` or `always`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmMode {
    Never,
    Always,
}

impl CommandPolicy {
    /// Each pattern that does not compile, as (field under the policy, error).
    pub fn invalid_patterns(&self) -> Vec<(String, String)> {
        let confirm = match &self.confirm {
            Some(Confirm::Matching(patterns)) => patterns.as_slice(),
            _ => &[],
        };
        let fields = [("confirm", confirm), ("deny", self.deny.as_slice())];
        let mut invalid = Vec::new();
        for (field, patterns) in fields {
            for (i, pattern) in patterns.iter().enumerate() {
                if let Err(e) = Regex::new(pattern) {
                    invalid.push((format!("{field}[{i}]"), e.to_string()));
                }
            }
        }
        invalid
    }
}

/// A config level a policy is set at: where, for messages (`policy`, `groups.prod.policy`,
/// `remotes.db.policy`), and the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub field: String,
    pub policy: CommandPolicy,
}

/// Every level that applies to one host, least specific first: the global `policy`, each group
/// the host is a member of (by name), the remote's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub levels: Vec<Level>,
}

/// What a policy says of one command (or Claude prompt, or session push).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run it.
    Run,
    /// Refused by `pattern` of the level at `field`.
    Deny { field: String, pattern: String },
    /// A person confirms first: `why` names the level (and the pattern, if any).
    Confirm { field: String, why: String },
}

impl Config {
    /// The policy levels that apply to host `name` (a host, not a group).
    pub fn policy_for(&self, name: &str) -> EffectivePolicy {
        let mut levels = vec![Level {
            field: "policy".to_owned(),
            policy: self.policy.clone(),
        }];
        for (group, entry) in &self.groups {
            if entry.members().iter().any(|m| m == name) {
                levels.push(Level {
                    field: format!("groups.{group}.policy"),
                    policy: entry.policy().clone(),
                });
            }
        }
        if let Some(remote) = self.remotes.get(name) {
            levels.push(Level {
                field: format!("remotes.{name}.policy"),
                policy: remote.policy.clone(),
            });
        }
        levels.retain(|l| l.policy != CommandPolicy::default());
        EffectivePolicy { levels }
    }
}

impl EffectivePolicy {
    /// One level alone: `policy`, set at `field`.
    pub fn single(field: String, policy: &CommandPolicy) -> Self {
        let levels = vec![Level {
            field,
            policy: policy.clone(),
        }];
        Self { levels }
    }

    /// The verdict on running `command`: refused when any level's `deny` matches; else
    /// confirmed when the deciding `confirm` says so. The most specific level that sets
    /// `confirm` decides; several groups at the same level decide together (any `always`, else
    /// any matching pattern).
    pub fn command(&self, command: &str) -> Verdict {
        for level in &self.levels {
            for pattern in &level.policy.deny {
                if matches(pattern, command) {
                    return Verdict::Deny {
                        field: format!("{}.deny", level.field),
                        pattern: pattern.clone(),
                    };
                }
            }
        }
        self.confirm(Some(command))
    }

    /// The verdict on something that is not a command (a Claude prompt, a session push): only
    /// `confirm: "always"` asks; patterns are for commands.
    pub fn other(&self) -> Verdict {
        self.confirm(None)
    }

    fn confirm(&self, command: Option<&str>) -> Verdict {
        for tier in self.deciding_tier() {
            let field = format!("{}.confirm", tier.field);
            match &tier.policy.confirm {
                Some(Confirm::Mode(ConfirmMode::Always)) => {
                    let why = format!("`{field}` is \"always\"");
                    return Verdict::Confirm { field, why };
                }
                Some(Confirm::Matching(patterns)) => {
                    let hit = command.and_then(|c| patterns.iter().find(|p| matches(p, c)));
                    if let Some(pattern) = hit {
                        let why = format!("it matches `{pattern}` of `{field}`");
                        return Verdict::Confirm { field, why };
                    }
                }
                _ => {}
            }
        }
        Verdict::Run
    }

    /// The levels that decide `confirm`: a principal's own (alone in its policy), else the
    /// remote's when it sets it, else the groups' that set it, else the global one.
    fn deciding_tier(&self) -> Vec<&Level> {
        let sets = |l: &&Level| l.policy.confirm.is_some();
        let tier = |prefix: &str| -> Vec<&Level> {
            let levels = self.levels.iter().filter(|l| l.field.starts_with(prefix));
            levels.filter(sets).collect()
        };
        for prefix in ["serve.principals.", "remotes.", "groups.", "policy"] {
            let levels = tier(prefix);
            if !levels.is_empty() {
                return levels;
            }
        }
        Vec::new()
    }
}

/// Whether `pattern` matches anywhere in `text`. Patterns are checked when the config is
/// loaded; one that does not compile (a config built in code) matches everything, so nothing
/// slips through.
fn matches(pattern: &str, text: &str) -> bool {
    Regex::new(pattern).map_or(true, |re| re.is_match(text))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(json: &str) -> Config {
        Config::parse(json, Path::new("/etc/o.json")).unwrap()
    }

    const LAYERED: &str = r#"{
        "policy": {"deny": ["rm -rf /$"], "confirm": ["^sudo "]},
        "remotes": {
            "prod": {"host": "p", "policy": {"confirm": "always", "deny": ["reboot"]}},
            "dev": {"host": "d", "policy": {"confirm": "never"}},
            "web": {"host": "w"}
        },
        "groups": {
            "fleet": {"members": ["web", "dev"], "policy": {"confirm": ["\\bkill\\b"]}},
            "all": ["prod", "web", "dev"]
        }
    }"#;

    #[test]
    fn deny_applies_from_every_level() {
        let c = config(LAYERED);
        let prod = c.policy_for("prod");
        assert_eq!(
            prod.command("sudo reboot"),
            Verdict::Deny {
                field: "remotes.prod.policy.deny".into(),
                pattern: "reboot".into()
            }
        );
        // The global deny reaches a host whose own level says confirm never.
        assert!(matches!(
            c.policy_for("dev").command("rm -rf /"),
            Verdict::Deny { field, .. } if field == "policy.deny"
        ));
        assert_eq!(c.policy_for("web").command("ls"), Verdict::Run);
    }

    #[test]
    fn the_most_specific_confirm_decides() {
        let c = config(LAYERED);
        assert!(matches!(
            c.policy_for("prod").command("ls"),
            Verdict::Confirm { field, .. } if field == "remotes.prod.policy.confirm"
        ));
        // dev's own `never` overrides its group's and the global patterns.
        assert_eq!(c.policy_for("dev").command("sudo kill 1"), Verdict::Run);
        // web: the group decides, so the global `^sudo ` no longer applies.
        let web = c.policy_for("web");
        assert_eq!(web.command("sudo ls"), Verdict::Run);
        match web.command("kill 12") {
            Verdict::Confirm { field, why } => {
                assert_eq!(field, "groups.fleet.policy.confirm");
                assert!(why.contains("\\bkill\\b"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // An alias outpost has no remote for: the global level only.
        let alias = c.policy_for("someone@elsewhere");
        assert!(matches!(alias.command("sudo ls"), Verdict::Confirm { .. }));
        assert_eq!(alias.command("ls"), Verdict::Run);
    }

    #[test]
    fn prompts_and_pushes_are_confirmed_only_by_always() {
        let c = config(LAYERED);
        assert!(matches!(
            c.policy_for("prod").other(),
            Verdict::Confirm { .. }
        ));
        assert_eq!(c.policy_for("web").other(), Verdict::Run);
        assert_eq!(Config::default().policy_for("local").other(), Verdict::Run);
    }

    #[test]
    fn bad_patterns_are_refused_at_load_naming_the_field() {
        let text = r#"{"remotes": {"db": {"host": "d", "policy": {"deny": ["ok", "(unclosed"]}}}}"#;
        let msg = Config::parse(text, Path::new("/etc/o.json"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("config file /etc/o.json: remotes.db.policy.deny[1]:"),
            "{msg}"
        );
        let text = r#"{"policy": {"confirm": ["["]}}"#;
        let msg = Config::parse(text, Path::new("o.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("policy.confirm[0]"), "{msg}");
        let text = r#"{"groups": {"g": {"members": ["a"], "policy": {"deny": ["*"]}}}}"#;
        let msg = Config::parse(text, Path::new("o.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("groups.g.policy.deny[0]"), "{msg}");
    }
}
