//! Host groups: which member takes a call (healthy ones only, the least busy, ties in turn), and
//! moving on to the next member when the chosen one cannot be reached.

use std::collections::HashMap;
use std::sync::Mutex;

use schemars::JsonSchema;
use serde::Serialize;

use super::{HostEntry, HostKind, HostSource, Hosts, LOCAL};
use crate::error::{Error, Result};
use crate::transport::{CommandSpec, Health, Process, Ticket};

/// Per group, how many ties have been broken, so equal members take turns. Held while a pick
/// reads the members' load and reserves its choice, so concurrent picks (on any runtime thread)
/// see each other's reservations.
#[derive(Debug, Default)]
pub(super) struct Rotation(Mutex<HashMap<String, usize>>);

impl Rotation {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The next turn of `group` in a held rotation.
fn next_turn(turns: &mut HashMap<String, usize>, group: &str) -> usize {
    let turn = turns.entry(group.to_owned()).or_default();
    *turn = turn.wrapping_add(1);
    *turn - 1
}

/// A group member, as `list_hosts` shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MemberEntry {
    pub name: String,
    /// `ready`, `connected (...)`, `not connected`, or why it is skipped.
    pub state: String,
    /// Commands, jobs and Claude processes running there now.
    pub running: usize,
}

/// The host a call runs on, chosen by [`Hosts::pick`].
#[derive(Debug)]
pub struct Picked {
    /// The host itself, or the chosen member of the group.
    pub host: String,
    /// The group it was chosen from, if any.
    pub group: Option<String>,
    /// Counts the call on the member until it holds a process of its own, so concurrent picks spread.
    reservation: Option<Ticket>,
}

impl Hosts {
    /// The members of group `name`, if it is one.
    pub fn group(&self, name: &str) -> Option<&[String]> {
        self.config.groups.get(name).map(|g| g.members())
    }

    /// Whether `name` names a host (not a group) this server can run on.
    fn is_host(&self, name: &str) -> bool {
        name == LOCAL || self.config.remotes.contains_key(name) || self.ssh_target(name).is_some()
    }

    /// The host a call on `name` runs on: `name` itself, or for a group its best member now:
    /// healthy before recently failed (down ones are skipped), then the fewest running
    /// processes, then in turn.
    pub fn pick(&self, name: &str) -> Result<Picked> {
        self.pick_excluding(name, &[])
    }

    /// [`Hosts::pick`], passing over the members in `tried`.
    pub fn pick_excluding(&self, name: &str, tried: &[String]) -> Result<Picked> {
        let Some(members) = self.group(name) else {
            return Ok(Picked {
                host: name.to_owned(),
                group: None,
                reservation: None,
            });
        };
        let mut turns = self.rotation.lock();
        let ranked = self.candidates(members, tried);
        let Some(best) = ranked
            .iter()
            .map(|(rank, running, _)| (*rank, *running))
            .min()
        else {
            return Err(Error::NoHealthyMember {
                group: name.to_owned(),
                states: self.member_states(members),
            });
        };
        let ties: Vec<&String> = ranked
            .iter()
            .filter(|(rank, running, _)| (*rank, *running) == best)
            .map(|(.., m)| *m)
            .collect();
        let host = ties[next_turn(&mut turns, name) % ties.len()].clone();
        Ok(Picked {
            reservation: Some(self.activity.ticket(&host)),
            host,
            group: Some(name.to_owned()),
        })
    }

    /// The members worth a try, not in `tried`: (0 healthy or 1 failed last time, running, name).
    fn candidates<'a>(
        &self,
        members: &'a [String],
        tried: &[String],
    ) -> Vec<(u8, usize, &'a String)> {
        members
            .iter()
            .filter(|m| self.is_host(m) && !tried.contains(m))
            .filter_map(|m| {
                let rank = match self.health(m) {
                    Health::Ready => 0,
                    Health::Suspect(_) => 1,
                    Health::Down { .. } => return None,
                };
                Some((rank, self.activity.running(m), m))
            })
            .collect()
    }

    /// Starts a process on `name` (a host, or a group's member per [`Hosts::pick`]). For a group,
    /// a member that cannot be reached is marked down and the next one tried. `spec` builds
    /// the command for the chosen host (its workspace may differ).
    pub async fn spawn(
        &self,
        name: &str,
        spec: impl Fn(&str) -> CommandSpec,
    ) -> Result<(Picked, Process)> {
        let mut tried = Vec::new();
        loop {
            let mut picked = self.pick_excluding(name, &tried)?;
            let transport = self.resolve(&picked.host)?;
            let reserved = picked.reservation.take();
            match transport.spawn_holding(spec(&picked.host), reserved).await {
                Ok(process) => return Ok((picked, process)),
                Err(e) if picked.group.is_some() && e.is_unreachable() => {
                    tracing::warn!(group = name, member = %picked.host, error = %e, "member unreachable; trying another");
                    tried.push(picked.host);
                    let members = self.group(name).unwrap_or_default();
                    if self.candidates(members, &tried).is_empty() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn member_states(&self, members: &[String]) -> String {
        let states: Vec<String> = self
            .members(members)
            .into_iter()
            .map(|m| format!("{}: {}", m.name, m.state))
            .collect();
        states.join("; ")
    }

    fn members(&self, members: &[String]) -> Vec<MemberEntry> {
        members
            .iter()
            .map(|m| MemberEntry {
                name: m.clone(),
                state: if self.is_host(m) {
                    self.state(m)
                } else {
                    "unknown host: not local, a remote or an ~/.ssh/config alias".to_owned()
                },
                running: self.activity.running(m),
            })
            .collect()
    }

    pub(super) fn group_entry(&self, name: &str, names: &[String], default: &str) -> HostEntry {
        let members = self.members(names);
        let usable = self.candidates(names, &[]).len();
        HostEntry {
            name: name.to_owned(),
            kind: HostKind::Group,
            source: HostSource::Config,
            target: Some(
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            default: name == default,
            state: format!("{usable} of {} members can take work", members.len()),
            running: members.iter().map(|m| m.running).sum(),
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hosts(groups: &str) -> Hosts {
        let member = r#"{"kind": "command", "command": ["true"]}"#;
        let text = format!(
            r#"{{"remotes": {{"a": {member}, "b": {member}, "c": {member}}}, "groups": {groups}}}"#
        );
        Hosts::new(Config::parse(&text, std::path::Path::new("c.json")).unwrap())
    }

    #[test]
    fn least_busy_member_wins_and_ties_take_turns() {
        let hosts = hosts(r#"{"pool": ["a", "b", "c"]}"#);
        let busy = hosts.activity.ticket("a");
        let first = hosts.pick("pool").unwrap();
        let second = hosts.pick("pool").unwrap();
        assert_ne!(first.host, "a");
        assert_ne!(second.host, "a");
        assert_ne!(
            first.host, second.host,
            "the reservation spreads concurrent picks"
        );
        // Now all three run one each: a tie, broken in turn.
        let third = hosts.pick("pool").unwrap();
        let fourth = hosts.pick("pool").unwrap();
        assert_ne!(third.host, fourth.host);
        drop(busy);
        assert_eq!(first.group.as_deref(), Some("pool"));
    }

    #[test]
    fn down_members_are_skipped_and_all_down_says_why() {
        let hosts = hosts(r#"{"pool": ["a", "b", "nosuch"]}"#);
        hosts.activity.failed(
            "a",
            tokio::time::Instant::now(),
            "connection refused".into(),
        );
        for _ in 0..3 {
            assert_eq!(hosts.pick("pool").unwrap().host, "b");
        }
        hosts
            .activity
            .failed("b", tokio::time::Instant::now(), "timed out".into());
        let err = hosts.pick("pool").unwrap_err().to_string();
        assert!(err.contains("a: down: connection refused"), "{err}");
        assert!(err.contains("b: down: timed out"), "{err}");
        assert!(err.contains("nosuch: unknown host"), "{err}");
    }

    #[test]
    fn a_plain_host_is_picked_as_itself_and_groups_do_not_resolve() {
        let hosts = hosts(r#"{"pool": ["a"]}"#);
        assert_eq!(hosts.pick("local").unwrap().host, "local");
        assert!(hosts.pick("local").unwrap().group.is_none());
        let err = hosts.resolve("pool").unwrap_err().to_string();
        assert!(err.contains("is a group (a)"), "{err}");
    }

    #[test]
    fn groups_must_not_shadow_hosts_or_nest() {
        for groups in [
            r#"{"a": ["b"]}"#,
            r#"{"g": []}"#,
            r#"{"g": ["h"], "h": ["a"]}"#,
        ] {
            let text = format!(
                r#"{{"remotes": {{"a": {{"host": "x"}}, "b": {{"host": "y"}}}}, "groups": {groups}}}"#
            );
            assert!(
                Config::parse(&text, std::path::Path::new("c.json")).is_err(),
                "{groups}"
            );
        }
    }
}
