//! outpost's JSON config file: its types (the source of `schemas/config.schema.json`); reading,
//! checking and changing the file are in the submodules.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod file;
mod policy;
mod remote;
mod serve;
mod validate;

/// The built-in host for the machine outpost runs on; no remote may take its name.
pub const LOCAL: &str = "local";

/// Sections left at their defaults are not written back to the file.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

pub use policy::{CommandPolicy, Confirm, ConfirmMode, EffectivePolicy, Level, Verdict};
pub use remote::{HostKeyPolicy, PortOrAddress, RemoteConfig, RemoteKind, TunnelConfig};
pub use serve::{AuditSettings, JwtSettings, PrincipalSettings, ServeSettings};

/// The whole config file. Every field is optional; no file at all means defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Editors' pointer to `schemas/config.schema.json`; ignored by outpost.
    #[serde(rename = "$schema", skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Host used when a tool call or `outpost exec` names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_host: Option<String>,
    /// Named remote hosts, by the name tools use for them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub remotes: BTreeMap<String, RemoteConfig>,
    /// Host groups: a call naming the group runs on its least busy healthy member.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupConfig>,
    /// Command policy on every host (groups and remotes may add their own).
    #[serde(skip_serializing_if = "is_default")]
    pub policy: CommandPolicy,
    /// Limits for running commands.
    #[serde(skip_serializing_if = "is_default")]
    pub exec: ExecConfig,
    /// SSH connection pool settings.
    #[serde(skip_serializing_if = "is_default")]
    pub ssh: SshSettings,
    /// Claude Code processes started by `spawn_claude`.
    #[serde(skip_serializing_if = "is_default")]
    pub claude: ClaudeSettings,
    /// Copying Claude's session files between hosts.
    #[serde(skip_serializing_if = "is_default")]
    pub sync: SyncSettings,
    /// Serving over the network: `outpost mcp serve --websocket` or `--http`.
    #[serde(skip_serializing_if = "is_default")]
    pub serve: ServeSettings,
    /// The audit log of tool calls.
    #[serde(skip_serializing_if = "is_default")]
    pub audit: AuditSettings,
    /// The file this config was read from (not part of the file).
    #[serde(skip)]
    pub origin: Origin,
}

/// Where a config was read from, for messages that tell which file to change. Not part of the
/// config's value: two configs read from different files compare equal.
#[derive(Debug, Clone, Default)]
pub struct Origin(Option<std::path::PathBuf>);

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Origin {
    /// The file, or where it would be by default.
    pub fn display(&self) -> String {
        match &self.0 {
            Some(path) => path.display().to_string(),
            None => "outpost's config file".to_owned(),
        }
    }
}

/// A host group: its members, or its members and its command policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GroupConfig {
    /// The members, in order.
    Members(Vec<String>),
    /// The members and the group's command policy.
    WithPolicy(GroupWithPolicy),
}

/// A group with a command policy of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupWithPolicy {
    /// The members, in order.
    pub members: Vec<String>,
    /// Command policy for commands on any member, however the call names it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: CommandPolicy,
}

impl GroupConfig {
    pub fn members(&self) -> &[String] {
        match self {
            GroupConfig::Members(members) => members,
            GroupConfig::WithPolicy(group) => &group.members,
        }
    }

    pub fn policy(&self) -> &CommandPolicy {
        static NONE: CommandPolicy = CommandPolicy {
            confirm: None,
            deny: Vec::new(),
        };
        match self {
            GroupConfig::Members(_) => &NONE,
            GroupConfig::WithPolicy(group) => &group.policy,
        }
    }
}

/// Where outpost keeps its state (the session registry, the audit log):
/// `$XDG_STATE_HOME/outpost` (or the platform's equivalent).
pub fn state_dir() -> std::path::PathBuf {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("outpost")
}

impl Config {
    /// The config file's JSON Schema (`schemas/config.schema.json`), portable to any validator.
    pub fn json_schema() -> serde_json::Value {
        let mut schema = schemars::schema_for!(Config);
        if let Some(map) = schema.as_object_mut() {
            crate::schema::make_portable(map);
        }
        schema.to_value()
    }
}

/// Copying Claude's session files between hosts (`sync_sessions`, and around `spawn_claude` turns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// Pull a remote session's files here after each `spawn_claude` turn, and push the local copy
    /// before resuming it on a host when it is newer. Per remote: `sync_sessions`.
    pub around_turns: bool,
    /// Limit transfers to this many bytes per second (default: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_sec: Option<u64>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        Self {
            around_turns: true,
            max_bytes_per_sec: None,
        }
    }
}

/// Claude Code processes started by `spawn_claude`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClaudeSettings {
    /// Seconds a Claude process waiting for its next prompt stays alive.
    pub idle_timeout_secs: u64,
    /// Live Claude processes per host; beyond it the least recently used idle one is closed.
    pub max_processes_per_host: usize,
    /// Timeout of a turn when the call gives none, in seconds.
    pub default_timeout_secs: u64,
    /// Seconds an interrupted turn gets to stop before its process is killed.
    pub interrupt_grace_secs: u64,
    /// Seconds a question to the person (a remote Claude's permission prompt, a command to
    /// confirm, an unknown host key) waits for an answer before it counts as unanswered: denied.
    pub approval_timeout_secs: u64,
    /// Local environment variables passed to Claude on every host (e.g. `ANTHROPIC_API_KEY`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forward_env: Vec<String>,
}

impl Default for ClaudeSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 900,
            max_processes_per_host: 4,
            default_timeout_secs: 1800,
            interrupt_grace_secs: 5,
            approval_timeout_secs: 300,
            forward_env: Vec::new(),
        }
    }
}

/// SSH connection pool settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SshSettings {
    /// Seconds a connection with no command running stays open.
    pub idle_timeout_secs: u64,
    /// Host-key policy of every SSH host whose remote entry and `~/.ssh/config` set none
    /// (`~/.ssh/config` aliases too): `yes` (default), `accept-new` or `ask`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strict_host_key_checking: Option<HostKeyPolicy>,
    /// Keep one login shell started ahead on each connection in use, waiting for the next
    /// command, so a warm call skips the shell's start (default true). It runs nothing until a
    /// command comes, and ends when its connection closes; its startup files ran when it started.
    pub warm_shell: bool,
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 600,
            strict_host_key_checking: None,
            warm_shell: true,
        }
    }
}

/// Limits for running commands and keeping their output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Timeout of a foreground command when the call gives none, in seconds.
    pub default_timeout_secs: u64,
    /// Timeout of a background job when the call gives none, in seconds.
    pub default_background_timeout_secs: u64,
    /// Largest `timeout_secs` a call may ask for.
    pub max_timeout_secs: u64,
    /// Bytes of stdout+stderr a result carries; beyond it, head and tail are kept.
    pub output_limit_bytes: usize,
    /// Bytes of a job's most recent output kept for `job_output`.
    pub job_log_bytes: usize,
    /// How long a finished job stays retrievable, in seconds.
    pub job_retention_secs: u64,
    /// Grace between SIGTERM and SIGKILL when a process tree is killed, in milliseconds.
    pub kill_grace_ms: u64,
    /// How long a job keeps holding output back for a `job_output` reader with `follow` after
    /// its last read, in milliseconds.
    pub follow_grace_ms: u64,
    /// A foreground `remote_exec` or `spawn_claude` still running after this many seconds returns
    /// `status: running` with its `job_id` and keeps running as a job, before MCP clients give up
    /// on the call (most do after 60 s). 0: never.
    pub detach_after_secs: u64,
    /// Most hosts a `remote_exec` with `hosts` connects to and starts its command on at once.
    pub fanout_concurrency: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            default_timeout_secs: 120,
            default_background_timeout_secs: 3600,
            max_timeout_secs: 24 * 3600,
            output_limit_bytes: 30_000,
            job_log_bytes: 8 << 20,
            job_retention_secs: 3600,
            kill_grace_ms: 1000,
            follow_grace_ms: 2000,
            detach_after_secs: 45,
            fanout_concurrency: 32,
        }
    }
}

impl ExecConfig {
    pub fn kill_grace(&self) -> Duration {
        Duration::from_millis(self.kill_grace_ms)
    }

    pub fn follow_grace(&self) -> Duration {
        Duration::from_millis(self.follow_grace_ms)
    }
}
