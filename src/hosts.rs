//! Host names: the built-in `local`, configured remotes and `~/.ssh/config` aliases, resolved to a transport.

use std::io::BufReader;
use std::path::Path;

use schemars::JsonSchema;
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::transport::{KillPolicy, Local, Transport};

/// The built-in host for the machine outpost runs on.
pub const LOCAL: &str = "local";

/// How a host is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostKind {
    /// This machine.
    Local,
    /// Over SSH.
    Ssh,
}

/// Where outpost learnt of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostSource {
    /// Always there.
    Builtin,
    /// `remotes` in outpost's config file.
    Config,
    /// A `Host` alias in ~/.ssh/config.
    SshConfig,
}

/// One known host, as `list_hosts` shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostEntry {
    /// The name to pass as `host`.
    pub name: String,
    pub kind: HostKind,
    pub source: HostSource,
    /// Where it points (`user@host:port`), for remote hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether calls without `host` go here.
    pub default: bool,
    /// `ready` for hosts that can run commands now; otherwise why not.
    pub state: String,
}

/// Every host the server knows, and how to run things on each.
#[derive(Debug, Clone)]
pub struct Hosts {
    config: Config,
    ssh_aliases: Vec<String>,
    local: Transport,
}

impl Hosts {
    /// Builds the registry from outpost's config and the user's `~/.ssh/config` (if any).
    pub fn new(config: Config) -> Self {
        let kill = KillPolicy {
            grace: config.exec.kill_grace(),
        };
        let ssh_aliases = dirs::home_dir()
            .map(|home| ssh_config_aliases(&home.join(".ssh/config")))
            .unwrap_or_default();
        Self {
            config,
            ssh_aliases,
            local: Transport::Local(Local::new(LOCAL, kill)),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The name a call runs on: the one given, else the default host, else `local`.
    pub fn effective_name(&self, name: Option<&str>) -> String {
        match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => name.to_owned(),
            None => self
                .config
                .default_host
                .clone()
                .unwrap_or_else(|| LOCAL.to_owned()),
        }
    }

    /// The transport for `name` (see [`Hosts::effective_name`]).
    pub fn resolve(&self, name: &str) -> Result<Transport> {
        if name == LOCAL {
            return Ok(self.local.clone());
        }
        if self.config.remotes.contains_key(name) || self.ssh_aliases.iter().any(|a| a == name) {
            return Err(Error::UnsupportedHost {
                host: name.to_owned(),
                kind: "SSH",
            });
        }
        Err(Error::UnknownHost {
            name: name.to_owned(),
            known: self.names().join(", "),
        })
    }

    fn names(&self) -> Vec<String> {
        self.list().into_iter().map(|h| h.name).collect()
    }

    /// Every host: `local`, then configured remotes, then ssh aliases not shadowed by a remote.
    pub fn list(&self) -> Vec<HostEntry> {
        let default = self.effective_name(None);
        let mut hosts = vec![HostEntry {
            name: LOCAL.to_owned(),
            kind: HostKind::Local,
            source: HostSource::Builtin,
            target: None,
            default: default == LOCAL,
            state: "ready".to_owned(),
        }];
        for (name, remote) in &self.config.remotes {
            let mut target = remote.host.clone();
            if let Some(user) = &remote.user {
                target = format!("{user}@{target}");
            }
            if let Some(port) = remote.port {
                target = format!("{target}:{port}");
            }
            hosts.push(self.remote_entry(name, HostSource::Config, Some(target), &default));
        }
        for alias in &self.ssh_aliases {
            if !self.config.remotes.contains_key(alias) && alias != LOCAL {
                hosts.push(self.remote_entry(alias, HostSource::SshConfig, None, &default));
            }
        }
        hosts
    }

    fn remote_entry(
        &self,
        name: &str,
        source: HostSource,
        target: Option<String>,
        default: &str,
    ) -> HostEntry {
        HostEntry {
            name: name.to_owned(),
            kind: HostKind::Ssh,
            source,
            target,
            default: name == default,
            state: "unavailable: SSH transport not built into this version".to_owned(),
        }
    }
}

/// Concrete `Host` names of an ssh_config file (no wildcards, no negations), following `Include`.
fn ssh_config_aliases(path: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let rules = ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS
        | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS;
    let config = match ssh2_config::SshConfig::default().parse(&mut BufReader::new(file), rules) {
        Ok(config) => config,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot parse ssh config; ignoring its hosts");
            return Vec::new();
        }
    };
    let mut aliases: Vec<String> = Vec::new();
    for host in config.get_hosts() {
        for clause in &host.pattern {
            let concrete = !clause.negated && !clause.pattern.contains(['*', '?', '!']);
            if concrete && !aliases.contains(&clause.pattern) {
                aliases.push(clause.pattern.clone());
            }
        }
    }
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_skip_wildcards_and_follow_include() {
        let dir = tempfile::tempdir().unwrap();
        let extra = dir.path().join("extra.conf");
        std::fs::write(&extra, "Host included\n  HostName 10.0.0.9\n").unwrap();
        let main = dir.path().join("config");
        std::fs::write(
            &main,
            format!(
                "ServerAliveInterval 30\nInclude {}\nHost gpu gpu-? *.corp !bad\n  User me\nHost db\n  Port 2200\nMatch all\n  User x\n",
                extra.display()
            ),
        )
        .unwrap();
        let aliases = ssh_config_aliases(&main);
        assert_eq!(aliases, vec!["included", "gpu", "db"]);
    }

    #[test]
    fn unknown_host_names_the_known_ones() {
        let hosts = Hosts::new(Config::default());
        let err = hosts.resolve("nope").unwrap_err().to_string();
        assert!(err.contains("unknown host `nope`"), "{err}");
        assert!(err.contains("local"), "{err}");
    }
}
