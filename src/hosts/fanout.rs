//! The host list of a fan-out: names as given, `@group` for every member of a group,
//! duplicates dropped in first-seen order.

use super::Hosts;
use crate::error::{Error, Result};

/// Prefix that makes a name in a host list mean every member of that group.
pub const GROUP_PREFIX: char = '@';

impl Hosts {
    /// The hosts a fan-out over `names` runs on: each name as it is (an unknown one fails
    /// later, on its own), `@group` replaced by the group's members, each host once.
    pub fn expand(&self, names: &[String]) -> Result<Vec<String>> {
        let mut hosts: Vec<String> = Vec::new();
        let mut add = |host: &str| {
            if !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_owned());
            }
        };
        for name in names.iter().map(|n| n.trim()) {
            if name.is_empty() {
                return Err(Error::InvalidArgument {
                    field: "hosts",
                    reason: "has an empty name; give host names or @group".into(),
                });
            }
            match name.strip_prefix(GROUP_PREFIX) {
                Some(group) => match self.group(group) {
                    Some(members) => members.iter().for_each(|m| add(m)),
                    None => return Err(self.unknown_group(group)),
                },
                None => add(name),
            }
        }
        if hosts.is_empty() {
            return Err(Error::InvalidArgument {
                field: "hosts",
                reason: "is empty; give at least one host name or @group".into(),
            });
        }
        Ok(hosts)
    }

    fn unknown_group(&self, group: &str) -> Error {
        let mut known: Vec<&str> = self.config.groups.keys().map(String::as_str).collect();
        known.sort_unstable();
        let known = match known.is_empty() {
            true => "none; define one under `groups` in the config file".to_owned(),
            false => known
                .iter()
                .map(|g| format!("@{g}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        Error::InvalidArgument {
            field: "hosts",
            reason: format!("`@{group}` names no group; the groups are: {known}"),
        }
    }
}

/// A command line's host list: `gpu1,gpu2,@gpus` split at commas, blanks trimmed.
pub fn split_list(list: &str) -> Vec<String> {
    list.split(',').map(|s| s.trim().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hosts() -> Hosts {
        let member = r#"{"kind": "command", "command": ["true"]}"#;
        let text = format!(
            r#"{{"remotes": {{"a": {member}, "b": {member}, "c": {member}}},
                "groups": {{"ab": ["a", "b"], "bc": ["b", "c"]}}}}"#
        );
        Hosts::new(Config::parse(&text, std::path::Path::new("c.json")).unwrap())
    }

    fn names(list: &str) -> Vec<String> {
        split_list(list)
    }

    #[test]
    fn groups_expand_to_their_members_and_each_host_comes_once() {
        let hosts = hosts();
        assert_eq!(
            hosts.expand(&names("c, @ab,a,@bc,local")).unwrap(),
            ["c", "a", "b", "local"]
        );
        // A name without @ stays a name (a group named so picks one member when it runs).
        assert_eq!(
            hosts.expand(&names("ab,nowhere")).unwrap(),
            ["ab", "nowhere"]
        );
    }

    #[test]
    fn an_unknown_group_or_an_empty_name_is_refused_with_what_to_give() {
        let hosts = hosts();
        let unknown = hosts.expand(&names("a,@gpus")).unwrap_err().to_string();
        assert!(unknown.contains("`@gpus` names no group"), "{unknown}");
        assert!(unknown.contains("@ab, @bc"), "{unknown}");
        let empty = hosts.expand(&names("a,,b")).unwrap_err().to_string();
        assert!(empty.contains("empty name"), "{empty}");
        assert!(
            hosts
                .expand(&[])
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
    }

    #[test]
    fn a_command_line_list_splits_at_commas() {
        assert_eq!(split_list("gpu1"), ["gpu1"]);
        assert_eq!(split_list("gpu1, gpu2,@gpus"), ["gpu1", "gpu2", "@gpus"]);
    }
}
