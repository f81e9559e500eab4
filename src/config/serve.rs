//! Config for serving outpost over the network (`outpost mcp serve --websocket|--http`) and the audit log.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_default;
use super::policy::CommandPolicy;

/// Authentication and limits of `outpost mcp serve --websocket` and `--http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ServeSettings {
    /// JWT authentication (`--auth jwt`).
    #[serde(skip_serializing_if = "is_default")]
    pub jwt: JwtSettings,
    /// Largest incoming message in bytes; a bigger one is refused.
    pub max_message_bytes: usize,
    /// Authenticated connections served at once (WebSocket or HTTP); more are answered 503.
    /// As many again may be waiting to authenticate; past that the longest-waiting is closed.
    pub max_connections: usize,
    /// Seconds a connection gets to send a complete request head (the WebSocket upgrade, or
    /// each HTTP request's headers, also between requests on a kept-alive connection).
    pub header_timeout_secs: u64,
    /// Tool calls per minute for one principal (JWT `sub`); 0 means no limit.
    pub calls_per_minute: u32,
    /// Seconds a connection may stay silent with no call running before it is closed.
    pub idle_timeout_secs: u64,
    /// Names clients may reach the server by in the `Host` header (guards against DNS
    /// rebinding); loopback names and the bound address are always allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// What each network principal (JWT `sub`, or `anonymous` without authentication) may
    /// reach. A token's own `hosts`/`tools` claims limit it further. The stdio client is never
    /// limited.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub principals: BTreeMap<String, PrincipalSettings>,
}

/// The hosts and tools one principal may use; an absent list means no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PrincipalSettings {
    /// Hosts and groups it may name (a group also allows each of its members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
    /// Tools it may see and call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    /// Its own command policy, on top of the hosts' (it can only add: its `deny` refuses, its
    /// `confirm` asks where a host's policy would not).
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: CommandPolicy,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            jwt: JwtSettings::default(),
            max_message_bytes: 4 << 20,
            max_connections: 64,
            header_timeout_secs: 10,
            calls_per_minute: 120,
            idle_timeout_secs: 600,
            allowed_hosts: Vec::new(),
            principals: BTreeMap::new(),
        }
    }
}

/// How bearer tokens are checked. HS256 with a shared secret unless a public key is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// File holding the HS256 secret (at least 32 bytes). `--jwt-secret-file` and
    /// `$OUTPOST_JWT_SECRET` take precedence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// PEM public key: tokens must then be RS256 (RSA key) or EdDSA (Ed25519 key), not HS256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// Required `iss` claim, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Clock skew allowed when checking `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            secret_file: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
        }
    }
}

/// The audit log: one JSON line per tool call and per decision a person (or a timeout) made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Whether to keep one. Default: on when serving on the network (`--websocket`/`--http`),
    /// off on stdio unless `path` is set. `false` turns it off everywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// File to append to (created 0600, its directory 0700). Default:
    /// `$XDG_STATE_HOME/outpost/audit/audit.log`. `--audit-log` overrides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Rotate once the file has grown past this many bytes (at least 1024).
    pub max_bytes: u64,
    /// Rotated files kept, at least 1 (`audit.log.1` is the newest).
    pub keep: usize,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: None,
            path: None,
            max_bytes: 10 << 20,
            keep: 5,
        }
    }
}
