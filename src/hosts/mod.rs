//! Host names: the built-in `local`, configured remotes and `~/.ssh/config` aliases, resolved to a transport.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use crate::config::{Config, RemoteKind};
use crate::error::{Error, Result};
use crate::ssh::{SshPool, SshTarget};
use crate::transport::{
    Activity, Backend, CommandPrefix, Health, KillPolicy, Local, Ssh, SshKills, Transport,
};

pub mod fanout;
mod groups;
mod host_keys;

pub use groups::{MemberEntry, Picked};

pub use crate::config::LOCAL;

/// How long an engine (docker, kubectl, ...) gets to start a command when the remote sets no
/// `connect_timeout_secs`.
const ENGINE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How a host is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostKind {
    /// This machine.
    Local,
    /// Over SSH.
    Ssh,
    /// Inside a docker (or podman) container.
    Docker,
    /// Inside a Kubernetes pod.
    Kubernetes,
    /// Through a configured command prefix.
    Command,
    /// A group: calls go to its least busy healthy member.
    Group,
}

impl From<RemoteKind> for HostKind {
    fn from(kind: RemoteKind) -> Self {
        match kind {
            RemoteKind::Ssh => HostKind::Ssh,
            RemoteKind::Docker => HostKind::Docker,
            RemoteKind::Kubernetes => HostKind::Kubernetes,
            RemoteKind::Command => HostKind::Command,
        }
    }
}

/// Where outpost learnt of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostSource {
    /// Always there.
    Builtin,
    /// `remotes` or `groups` in outpost's config file.
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
    /// Where it points: `user@host:port`, the engine command, or the members of a group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether calls without `host` go here.
    pub default: bool,
    /// `ready`, `connected (...)` or `not connected` for hosts that can take work; otherwise why not.
    pub state: String,
    /// Commands, jobs and Claude processes running there now.
    pub running: usize,
    /// A group's members, in the order they were listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberEntry>,
}

/// Every host the server knows, and how to run things on each.
pub struct Hosts {
    config: Config,
    home: PathBuf,
    ssh_config: Option<ssh2_config::SshConfig>,
    ssh_aliases: Vec<String>,
    kill: KillPolicy,
    local: Local,
    pool: Arc<SshPool>,
    kills: SshKills,
    activity: Activity,
    rotation: groups::Rotation,
}

impl Hosts {
    /// Builds the registry from outpost's config and the user's `~/.ssh/config` (if any).
    pub fn new(config: Config) -> Self {
        let kill = KillPolicy {
            grace: config.exec.kill_grace(),
        };
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("/"));
        let ssh_config = parse_ssh_config(&home.join(".ssh/config"), &home);
        let ssh_aliases = ssh_config.as_ref().map(concrete_hosts).unwrap_or_default();
        let idle = Duration::from_secs(config.ssh.idle_timeout_secs);
        let pool = Arc::new(SshPool::new(idle).with_spares(config.ssh.warm_shell));
        Self {
            config,
            home,
            ssh_config,
            ssh_aliases,
            kill,
            local: Local::new(LOCAL, kill),
            kills: SshKills::new(pool.clone(), kill.grace),
            pool,
            activity: Activity::default(),
            rotation: groups::Rotation::default(),
        }
    }

    /// Where an SSH host name leads, if it is one: an ssh remote, an ssh alias, or `user@host[:port]`.
    pub fn ssh_target(&self, name: &str) -> Option<SshTarget> {
        let remote = self.config.remotes.get(name);
        if remote.is_some_and(|r| r.kind != RemoteKind::Ssh)
            || self.config.groups.contains_key(name)
        {
            return None;
        }
        let known =
            remote.is_some() || self.ssh_aliases.iter().any(|a| a == name) || name.contains('@');
        let key_policy = self.config.ssh.strict_host_key_checking;
        let key_policy = key_policy.unwrap_or(crate::config::HostKeyPolicy::Yes);
        known.then(|| {
            SshTarget::resolve(
                name,
                remote,
                self.ssh_config.as_ref(),
                &self.home,
                key_policy,
            )
        })
    }

    /// The directory a call without `cwd` runs in on `name`, if configured.
    pub fn workspace(&self, name: &str) -> Option<String> {
        self.config.remotes.get(name)?.workspace.clone()
    }

    /// The environment Claude gets on `name`: the remote's `claude_env`, then the values of the
    /// local variables named in `claude.forward_env` and the remote's `forward_env` (when set).
    pub fn claude_environment(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        let remote = self.config.remotes.get(name);
        let mut env = remote.map(|r| r.claude_env.clone()).unwrap_or_default();
        let forwarded = self.config.claude.forward_env.iter();
        for var in forwarded.chain(remote.into_iter().flat_map(|r| r.forward_env.iter())) {
            if let Ok(value) = std::env::var(var) {
                env.insert(var.clone(), value);
            }
        }
        env
    }

    /// Whether Claude sessions on `name` are synced around `spawn_claude` turns.
    pub fn syncs_sessions(&self, name: &str) -> bool {
        name != LOCAL
            && self
                .config
                .remotes
                .get(name)
                .and_then(|r| r.sync_sessions)
                .unwrap_or(self.config.sync.around_turns)
    }

    /// This machine's home directory (`~` on `local`).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The SSH connections shared by every call.
    pub fn pool(&self) -> &SshPool {
        &self.pool
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

    /// The transport for host `name` (not a group: see [`Hosts::pick`]).
    pub fn resolve(&self, name: &str) -> Result<Transport> {
        if let Some(group) = self.config.groups.get(name) {
            return Err(Error::IsGroup {
                group: name.to_owned(),
                members: group.members().join(", "),
            });
        }
        Ok(Transport::new(
            name,
            self.backend(name)?,
            self.activity.clone(),
        ))
    }

    fn backend(&self, name: &str) -> Result<Backend> {
        if let Some(remote) = self.config.remotes.get(name)
            && let Some(prefix) = remote.command_prefix()
        {
            let via = remote.via.as_deref().unwrap_or(LOCAL);
            // Never another engine: the config refuses those, and looking one up here would
            // recurse (forever, for a cycle).
            let base = self.direct_backend(via).ok_or_else(|| Error::InvalidArgument {
                field: "via",
                reason: format!(
                    "remote `{name}` runs its engine via `{via}`, which is neither `local` nor an SSH host (a remote of kind ssh, an ~/.ssh/config alias or user@host)"
                ),
            })?;
            let start_timeout = remote
                .connect_timeout_secs
                .map_or(ENGINE_START_TIMEOUT, Duration::from_secs);
            let base = Transport::new(via, base, self.activity.clone());
            let prefixed = CommandPrefix::new(name, prefix, base, self.kill, start_timeout);
            return Ok(Backend::Command(prefixed));
        }
        self.direct_backend(name).ok_or_else(|| Error::UnknownHost {
            name: name.to_owned(),
            known: self.names().join(", "),
        })
    }

    /// The backend of `local` or an SSH host: the hosts that run things themselves.
    fn direct_backend(&self, name: &str) -> Option<Backend> {
        if name == LOCAL {
            return Some(Backend::Local(self.local.clone()));
        }
        let target = self.ssh_target(name)?;
        Some(Backend::Ssh(Ssh::new(
            target,
            self.pool.clone(),
            self.kills.clone(),
            self.kill,
        )))
    }

    /// The name of every host [`Hosts::list`] shows.
    pub fn names(&self) -> Vec<String> {
        self.list().into_iter().map(|h| h.name).collect()
    }

    /// Every host: `local`, then configured remotes, then ssh aliases not shadowed by a remote,
    /// then groups.
    pub fn list(&self) -> Vec<HostEntry> {
        let default = self.effective_name(None);
        let mut hosts = vec![self.entry(LOCAL, HostSource::Builtin, &default)];
        for name in self.config.remotes.keys() {
            hosts.push(self.entry(name, HostSource::Config, &default));
        }
        for alias in &self.ssh_aliases {
            if !self.config.remotes.contains_key(alias) && alias != LOCAL {
                hosts.push(self.entry(alias, HostSource::SshConfig, &default));
            }
        }
        for (name, group) in &self.config.groups {
            hosts.push(self.group_entry(name, group.members(), &default));
        }
        hosts
    }

    fn entry(&self, name: &str, source: HostSource, default: &str) -> HostEntry {
        let remote = self.config.remotes.get(name);
        let (kind, target) = match remote {
            _ if name == LOCAL => (HostKind::Local, None),
            Some(r) if r.kind != RemoteKind::Ssh => {
                let prefix = r.command_prefix().unwrap_or_default().join(" ");
                let via = r.via.as_deref().unwrap_or(LOCAL);
                (r.kind.into(), Some(format!("{prefix} (on {via})")))
            }
            _ => (HostKind::Ssh, self.ssh_target(name).map(|t| t.display())),
        };
        HostEntry {
            name: name.to_owned(),
            kind,
            source,
            target,
            default: name == default,
            state: self.state(name),
            running: self.activity.running(name),
            members: Vec::new(),
        }
    }

    /// What is known of `name`'s reachability, for people: its recent failures, else its SSH
    /// connections.
    fn state(&self, name: &str) -> String {
        let target = self.ssh_target(name);
        let health = match &target {
            // The pool words its own failures (`unreachable: ...`).
            Some(_) => self.activity.health(name),
            None => self.health(name),
        };
        match health {
            Health::Down { reason, retry_in } => {
                format!(
                    "down: {reason} (retry in {:.0}s)",
                    retry_in.as_secs_f64().ceil()
                )
            }
            Health::Suspect(reason) => format!("failed last time: {reason}"),
            Health::Ready => match target {
                Some(target) => self.pool.state(&target),
                None => "ready".to_owned(),
            },
        }
    }

    /// Whether `name` is worth a try: an SSH host's connection attempts; for an engine remote, its
    /// own failures, or its `via` host's when that is down.
    fn health(&self, name: &str) -> Health {
        if let Some(target) = self.ssh_target(name) {
            return worse(self.pool.health(&target), self.activity.health(name));
        }
        let via = self.config.remotes.get(name).and_then(|r| r.via.as_deref());
        if let Some(target) = via.and_then(|via| self.ssh_target(via))
            && let down @ Health::Down { .. } = self.pool.health(&target)
        {
            return down;
        }
        self.activity.health(name)
    }
}

/// The less healthy of two verdicts.
fn worse(a: Health, b: Health) -> Health {
    let rank = |h: &Health| match h {
        Health::Ready => 0,
        Health::Suspect(_) => 1,
        Health::Down { .. } => 2,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

/// The user's ssh_config (following `Include`), or `None` when absent or unparsable.
fn parse_ssh_config(path: &Path, home: &Path) -> Option<ssh2_config::SshConfig> {
    let file = std::fs::File::open(path).ok()?;
    let rules = ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS
        | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS;
    match ssh2_config::SshConfig::default()
        .home_dir(home)
        .parse(&mut BufReader::new(file), rules)
    {
        Ok(config) => Some(config),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot parse ssh config; ignoring it");
            None
        }
    }
}

/// Concrete `Host` names (no wildcards, no negations), in file order.
fn concrete_hosts(config: &ssh2_config::SshConfig) -> Vec<String> {
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
        let config = parse_ssh_config(&main, dir.path()).unwrap();
        assert_eq!(concrete_hosts(&config), vec!["included", "gpu", "db"]);
    }

    #[test]
    fn unknown_host_names_the_known_ones() {
        let hosts = Hosts::new(Config::default());
        let err = hosts.resolve("nope").unwrap_err().to_string();
        assert!(err.contains("unknown host `nope`"), "{err}");
        assert!(err.contains("local"), "{err}");
    }

    #[test]
    fn an_engine_via_another_engine_is_refused_without_recursing() {
        // Built in code, so config validation (which refuses this) never ran.
        let mut config = Config::default();
        for (name, via) in [("a", "b"), ("b", "a"), ("c", "c")] {
            let remote = crate::config::RemoteConfig {
                kind: RemoteKind::Docker,
                container: Some("box".into()),
                via: Some(via.into()),
                ..Default::default()
            };
            config.remotes.insert(name.into(), remote);
        }
        let hosts = Hosts::new(config);
        for name in ["a", "c"] {
            let err = hosts.resolve(name).err().map(|e| e.to_string());
            let err = err.unwrap_or_default();
            assert!(err.contains("neither `local` nor an SSH host"), "{err}");
        }
    }
}
