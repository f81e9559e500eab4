//! One remote in the config: how it is reached (SSH, docker, kubernetes or any command prefix),
//! the checks on its fields, the engine argv built from them, and its port tunnels.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_default;

/// How a remote is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RemoteKind {
    /// Over SSH (`host`, `user`, `port`, `identity_file`).
    #[default]
    Ssh,
    /// Inside a running container: `docker exec -i` (`container`, `user`; `cli: "podman"` for podman).
    Docker,
    /// Inside a pod: `kubectl exec -i` (`pod` or `workload`, `namespace`, `container`, `context`).
    Kubernetes,
    /// Through any argv prefix that runs a program elsewhere with stdio attached (`command`).
    Command,
}

/// A named remote host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// How it is reached (default `ssh`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: RemoteKind,
    /// ssh: host name, IP address or `~/.ssh/config` alias to connect to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// ssh: login user (default: from ~/.ssh/config, else the local user). docker: the user inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// ssh: port (default: from ~/.ssh/config, else 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// ssh: private key file to authenticate with (default: ssh-agent, then ~/.ssh/id_*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// ssh: host-key policy: `yes` (unknown keys refused), `accept-new` (recorded) or `ask` (a
    /// person confirms them). Default: `~/.ssh/config`'s, else `ssh.strict_host_key_checking`, else `yes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_host_key_checking: Option<HostKeyPolicy>,
    /// docker: container name or id. kubernetes: container in the pod (`-c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// kubernetes: namespace (`-n`; default: the context's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// kubernetes: pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// kubernetes: workload instead of a pod, e.g. `deploy/api` (kubectl picks one of its pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// kubernetes: kubeconfig context (`--context`; default: the current one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// command: the argv prefix, e.g. `["podman", "exec", "-i", "web"]`; outpost appends `sh -c ...`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// docker, kubernetes: the engine's CLI (default `docker` / `kubectl`; e.g. `podman`, `oc`, a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cli: Option<String>,
    /// docker, kubernetes, command: the host the engine's CLI runs on: `local` (default) or an SSH host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Seconds to connect (ssh; overrides ConnectTimeout) or for the engine to start a command
    /// (default 10 for ssh, 30 otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_secs: Option<u64>,
    /// Directory commands run in when a call gives no `cwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Path of the `claude` executable on this host (default: searched for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_path: Option<String>,
    /// Local environment variables whose values are passed to Claude on this host (never in argv or logs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_env: Vec<String>,
    /// Fixed environment variables for Claude on this host (e.g. `CLAUDE_CONFIG_DIR`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claude_env: BTreeMap<String, String>,
    /// Sync this host's Claude sessions around `spawn_claude` turns (default: `sync.around_turns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_sessions: Option<bool>,
    /// ssh: port of `outpost mcp serve --websocket` on this host, for `outpost mcp connect --remote`
    /// (default 8001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve_port: Option<u16>,
    /// ssh: ports forwarded from this machine to the host by `outpost tunnel NAME` and
    /// `outpost mcp connect --remote NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<TunnelConfig>,
    /// Command policy on this host (with the global one's and its groups' `deny`).
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub policy: super::CommandPolicy,
}

/// What to do with a host key that is not in known_hosts yet. A changed key is always refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Refuse unknown keys.
    Yes,
    /// Record unknown keys in known_hosts and go on.
    AcceptNew,
    /// Ask the person through the MCP client (elicitation); record the key if they accept.
    Ask,
}

/// A local port forwarded to a port reachable from an SSH host, over its pooled connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// Local port (bound on 127.0.0.1), or `ADDRESS:PORT` to bind elsewhere.
    pub local: PortOrAddress,
    /// Port on the host's loopback, or `HOST:PORT` as the host resolves it.
    pub remote: PortOrAddress,
    /// What it is for, shown when it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A port on loopback, or an explicit `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PortOrAddress {
    Port(u16),
    Address(String),
}

impl PortOrAddress {
    /// `(host, port)`, with loopback for a bare port; None when not `host:port`.
    pub fn split(&self) -> Option<(String, u16)> {
        match self {
            PortOrAddress::Port(port) => Some(("127.0.0.1".to_owned(), *port)),
            PortOrAddress::Address(address) => {
                let (host, port) = address.rsplit_once(':')?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                Some((host.to_owned(), port.parse().ok()?)).filter(|(h, _)| !h.is_empty())
            }
        }
    }
}

/// Fields that belong to some kinds only: (name, set?, kinds it belongs to).
type FieldUse<'a> = (&'static str, bool, &'a [RemoteKind]);

impl RemoteConfig {
    /// Checks that the fields fit the kind: `Err((field, message))` otherwise.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        use RemoteKind::*;
        let engines = &[Docker, Kubernetes, Command][..];
        let fields: [FieldUse; 14] = [
            ("host", !self.host.is_empty(), &[Ssh]),
            ("user", self.user.is_some(), &[Ssh, Docker]),
            ("port", self.port.is_some(), &[Ssh]),
            ("identity_file", self.identity_file.is_some(), &[Ssh]),
            (
                "strict_host_key_checking",
                self.strict_host_key_checking.is_some(),
                &[Ssh],
            ),
            ("serve_port", self.serve_port.is_some(), &[Ssh]),
            ("tunnels", !self.tunnels.is_empty(), &[Ssh]),
            ("container", self.container.is_some(), &[Docker, Kubernetes]),
            ("namespace", self.namespace.is_some(), &[Kubernetes]),
            ("pod", self.pod.is_some(), &[Kubernetes]),
            ("workload", self.workload.is_some(), &[Kubernetes]),
            ("context", self.context.is_some(), &[Kubernetes]),
            ("cli", self.cli.is_some(), &[Docker, Kubernetes]),
            ("via", self.via.is_some(), engines),
        ];
        let kind = format!("{:?}", self.kind).to_lowercase();
        for (field, set, kinds) in fields {
            if set && !kinds.contains(&self.kind) {
                return Err((
                    field,
                    format!("does not apply to a remote of kind `{kind}`"),
                ));
            }
        }
        if !self.command.is_empty() && self.kind != Command {
            return Err((
                "command",
                format!("does not apply to a remote of kind `{kind}`"),
            ));
        }
        let required = match self.kind {
            Ssh => self.host.is_empty().then_some(("host", "is required for an ssh remote")),
            Docker => self.container.is_none().then_some(("container", "is required for a docker remote")),
            Kubernetes => (self.pod.is_some() == self.workload.is_some())
                .then_some(("pod", "a kubernetes remote needs exactly one of `pod` and `workload`")),
            Command => self.command.is_empty().then_some(("command", "a command remote needs its argv prefix, e.g. [\"podman\", \"exec\", \"-i\", \"web\"]")),
        };
        if let Some((field, message)) = required {
            return Err((field, message.to_owned()));
        }
        for tunnel in &self.tunnels {
            for end in [&tunnel.local, &tunnel.remote] {
                if end.split().is_none() {
                    return Err((
                        "tunnels",
                        format!("{end:?} is neither a port nor `host:port`"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The argv that runs a program inside, for docker, kubernetes and command remotes.
    pub fn command_prefix(&self) -> Option<Vec<String>> {
        let mut argv: Vec<String> = Vec::new();
        let mut push = |words: &[&str]| argv.extend(words.iter().map(|w| (*w).to_owned()));
        match self.kind {
            RemoteKind::Ssh => return None,
            RemoteKind::Command => return Some(self.command.clone()),
            RemoteKind::Docker => {
                push(&[self.cli.as_deref().unwrap_or("docker"), "exec", "-i"]);
                if let Some(user) = &self.user {
                    push(&["--user", user]);
                }
                push(&["--", self.container.as_deref().unwrap_or_default()]);
            }
            RemoteKind::Kubernetes => {
                push(&[self.cli.as_deref().unwrap_or("kubectl")]);
                if let Some(context) = &self.context {
                    push(&["--context", context]);
                }
                push(&["exec", "-i"]);
                if let Some(namespace) = &self.namespace {
                    push(&["--namespace", namespace]);
                }
                if let Some(container) = &self.container {
                    push(&["--container", container]);
                }
                let target = self.pod.as_deref().or(self.workload.as_deref());
                push(&[target.unwrap_or_default(), "--"]);
            }
        }
        Some(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(json: &str) -> RemoteConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn docker_argv() {
        let r = remote(r#"{"kind": "docker", "container": "web", "user": "app"}"#);
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            r.command_prefix().unwrap(),
            ["docker", "exec", "-i", "--user", "app", "--", "web"]
        );
        let podman = remote(r#"{"kind": "docker", "container": "db", "cli": "podman"}"#);
        assert_eq!(
            podman.command_prefix().unwrap(),
            ["podman", "exec", "-i", "--", "db"]
        );
    }

    #[test]
    fn kubernetes_argv() {
        let pod = remote(
            r#"{"kind": "kubernetes", "pod": "trainer-0", "namespace": "ml", "container": "main", "context": "prod"}"#,
        );
        assert_eq!(pod.check(), Ok(()));
        assert_eq!(
            pod.command_prefix().unwrap(),
            [
                "kubectl",
                "--context",
                "prod",
                "exec",
                "-i",
                "--namespace",
                "ml",
                "--container",
                "main",
                "trainer-0",
                "--"
            ]
        );
        let workload = remote(r#"{"kind": "kubernetes", "workload": "deploy/api", "cli": "oc"}"#);
        assert_eq!(
            workload.command_prefix().unwrap(),
            ["oc", "exec", "-i", "deploy/api", "--"]
        );
    }

    #[test]
    fn command_argv_is_taken_as_is() {
        let r = remote(r#"{"kind": "command", "command": ["nsenter", "-t", "42", "-a", "--"]}"#);
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            r.command_prefix().unwrap(),
            ["nsenter", "-t", "42", "-a", "--"]
        );
        assert_eq!(remote(r#"{"host": "h"}"#).command_prefix(), None);
    }

    #[test]
    fn fields_must_fit_the_kind() {
        let cases = [
            (r#"{"kind": "docker"}"#, "container"),
            (
                r#"{"kind": "docker", "container": "c", "port": 22}"#,
                "port",
            ),
            (
                r#"{"kind": "kubernetes", "pod": "p", "workload": "deploy/x"}"#,
                "pod",
            ),
            (r#"{"kind": "kubernetes"}"#, "pod"),
            (r#"{"kind": "kubernetes", "pod": "p", "user": "u"}"#, "user"),
            (r#"{"kind": "command"}"#, "command"),
            (r#"{"host": "h", "container": "c"}"#, "container"),
            (r#"{"host": "h", "via": "gpu"}"#, "via"),
            (r#"{}"#, "host"),
            (
                r#"{"host": "h", "tunnels": [{"local": 1, "remote": "nope"}]}"#,
                "tunnels",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(remote(json).check().unwrap_err().0, field, "{json}");
        }
    }

    #[test]
    fn tunnel_ends() {
        assert_eq!(
            PortOrAddress::Port(8888).split(),
            Some(("127.0.0.1".into(), 8888))
        );
        assert_eq!(
            PortOrAddress::Address("db.internal:5432".into()).split(),
            Some(("db.internal".into(), 5432))
        );
        assert_eq!(
            PortOrAddress::Address("[::1]:80".into()).split(),
            Some(("::1".into(), 80))
        );
        assert_eq!(PortOrAddress::Address(":80".into()).split(), None);
    }
}
