//! outpost's JSON config file: its types (the source of `schemas/config.schema.json`), loading and saving.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod remote;
mod serve;

/// Sections left at their defaults are not written back to the file.
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

pub use remote::{HostKeyPolicy, PortOrAddress, RemoteConfig, RemoteKind, TunnelConfig};
pub use serve::{AuditSettings, JwtSettings, ServeSettings};

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
    pub groups: BTreeMap<String, Vec<String>>,
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
}

impl Default for SshSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 600,
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

impl Config {
    /// Where the config lives: `$OUTPOST_CONFIG`, else `~/.config/outpost/config.json`.
    pub fn default_path() -> PathBuf {
        if let Some(path) = std::env::var_os("OUTPOST_CONFIG") {
            return PathBuf::from(path);
        }
        dirs::home_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".config/outpost/config.json")
    }

    /// Reads the config at `path`; a missing file is the default config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(Error::ConfigRead {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text, path)
    }

    /// Parses config text, naming the file, line, column and field of any error.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut de = serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = match e.path().to_string() {
                p if p == "." => "(top level)".to_owned(),
                p => p,
            };
            let inner = e.into_inner();
            Error::ConfigInvalid {
                path: path.to_owned(),
                line: inner.line(),
                column: inner.column(),
                field,
                message: strip_position(&inner.to_string()),
            }
        })?;
        de.end().map_err(|e| Error::ConfigInvalid {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            field: "(top level)".to_owned(),
            message: strip_position(&e.to_string()),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let invalid = |field: String, message: String| Error::ConfigInvalid {
            path: path.to_owned(),
            line: 0,
            column: 0,
            field,
            message,
        };
        if self.exec.output_limit_bytes < 1024 {
            return Err(invalid(
                "exec.output_limit_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.exec.default_timeout_secs > self.exec.max_timeout_secs {
            return Err(invalid(
                "exec.default_timeout_secs".into(),
                "must not exceed exec.max_timeout_secs".into(),
            ));
        }
        if self.remotes.contains_key(crate::hosts::LOCAL) {
            return Err(invalid(
                "remotes.local".into(),
                "`local` is the built-in host for this machine; choose another name".into(),
            ));
        }
        for (name, remote) in &self.remotes {
            remote
                .check()
                .map_err(|(field, message)| invalid(format!("remotes.{name}.{field}"), message))?;
        }
        for (name, members) in &self.groups {
            self.check_group(name, members)
                .map_err(|message| invalid(format!("groups.{name}"), message))?;
        }
        Ok(())
    }

    fn check_group(&self, name: &str, members: &[String]) -> std::result::Result<(), String> {
        if name == crate::hosts::LOCAL || self.remotes.contains_key(name) {
            return Err(format!(
                "`{name}` already names a host; a group needs its own name"
            ));
        }
        if members.is_empty() {
            return Err("a group needs at least one member".into());
        }
        if let Some(nested) = members.iter().find(|m| self.groups.contains_key(*m)) {
            return Err(format!("member `{nested}` is a group; groups cannot nest"));
        }
        Ok(())
    }

    /// Writes the config atomically (temp file, fsync, rename), readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let write_err = |source| Error::ConfigWrite {
            path: path.to_owned(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| write_err(e.into()))?;
        text.push('\n');
        crate::atomic_file::write_atomic(path, text.as_bytes()).map_err(write_err)
    }
}

/// serde_json appends " at line L column C"; the error already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_file_line_and_field() {
        let text = "{\n  \"exec\": {\n    \"default_timeout_secs\": \"soon\"\n  }\n}";
        let err = Config::parse(text, Path::new("/x/config.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("config file /x/config.json:3:"), "{msg}");
        assert!(msg.contains("exec.default_timeout_secs"), "{msg}");
    }

    #[test]
    fn unknown_field_is_refused() {
        let text = "{\"remotes\": {\"gpu\": {\"host\": \"g\", \"prot\": 22}}}";
        let msg = Config::parse(text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("remotes.gpu"), "{msg}");
        assert!(msg.contains("unknown field `prot`"), "{msg}");
    }

    #[test]
    fn empty_object_is_default_and_round_trips() {
        let config = Config::parse("{}", Path::new("c.json")).unwrap();
        assert_eq!(config, Config::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.json");
        let mut config = Config {
            default_host: Some("gpu".into()),
            ..Config::default()
        };
        config.remotes.insert(
            "gpu".into(),
            RemoteConfig {
                host: "gpu.example".into(),
                user: Some("me".into()),
                port: Some(2222),
                strict_host_key_checking: Some(HostKeyPolicy::AcceptNew),
                forward_env: vec!["ANTHROPIC_API_KEY".into()],
                ..RemoteConfig::default()
            },
        );
        config.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Config::load(&path).unwrap(), config);
    }

    #[test]
    fn missing_file_is_default() {
        let config = Config::load(Path::new("/nonexistent/outpost.json")).unwrap();
        assert_eq!(config, Config::default());
    }
}
