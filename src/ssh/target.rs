//! Where an SSH host name leads: outpost's remote entry over the user's ~/.ssh/config, or `user@host[:port]`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{HostKeyPolicy, RemoteConfig};
use crate::error::Error;

/// Everything needed to reach one SSH host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SshTarget {
    /// The name the user gave (for messages).
    pub name: String,
    /// Address to connect to.
    pub hostname: String,
    pub port: u16,
    pub user: String,
    /// Keys to try after the agent, in order.
    pub identity_files: Vec<PathBuf>,
    /// Only the identity files, not every agent key.
    pub identities_only: bool,
    /// Name the host key is recorded under in known_hosts.
    pub key_host: String,
    /// Port the host key is recorded under: the target's, or 22 (none) for a `HostKeyAlias`,
    /// which OpenSSH looks up as given, without a port.
    pub key_port: u16,
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    pub connect_timeout: Duration,
    pub keepalive: Option<Duration>,
    pub keepalive_max: usize,
    /// The host to tunnel through (ProxyJump), itself possibly behind another.
    pub jump: Option<Box<SshTarget>>,
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

impl SshTarget {
    /// Resolves `name`: an outpost remote (if given), an ~/.ssh/config alias, or `user@host[:port]`.
    /// `key_policy` is the host-key policy where neither the remote nor ~/.ssh/config sets one.
    pub fn resolve(
        name: &str,
        remote: Option<&RemoteConfig>,
        ssh_config: Option<&ssh2_config::SshConfig>,
        home: &Path,
        key_policy: HostKeyPolicy,
    ) -> Self {
        let (mut target, hops) = Self::resolve_hop(name, remote, ssh_config, home, key_policy);
        target.jump = jump_chain(&hops, ssh_config, home, key_policy);
        target
    }

    /// One host's settings, and its ProxyJump hops (not followed here).
    fn resolve_hop(
        name: &str,
        remote: Option<&RemoteConfig>,
        ssh_config: Option<&ssh2_config::SshConfig>,
        home: &Path,
        key_policy: HostKeyPolicy,
    ) -> (Self, Vec<String>) {
        let (spec_user, spec_host, spec_port) = split_destination(match remote {
            Some(remote) => &remote.host,
            None => name,
        });
        let params = ssh_config.map(|c| c.query(&spec_host));
        let param = |f: fn(&ssh2_config::HostParams) -> Option<String>| params.as_ref().and_then(f);
        let hostname = param(|p| p.host_name.clone()).unwrap_or_else(|| spec_host.clone());
        let port = remote
            .and_then(|r| r.port)
            .or(spec_port)
            .or(params.as_ref().and_then(|p| p.port))
            .unwrap_or(22);
        let user = remote
            .and_then(|r| r.user.clone())
            .or(spec_user)
            .or(param(|p| p.user.clone()))
            .unwrap_or_else(local_user);
        let mut identity_files: Vec<PathBuf> = remote
            .and_then(|r| r.identity_file.clone())
            .map(|p| vec![expand_home(&p, home)])
            .or_else(|| params.as_ref().and_then(|p| p.identity_file.clone()))
            .unwrap_or_default();
        if identity_files.is_empty() {
            identity_files = ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|f| home.join(".ssh").join(f))
                .collect();
        }
        let unknown = |key: &str| {
            params.as_ref().and_then(|p| {
                p.ignored_fields
                    .iter()
                    .chain(p.unsupported_fields.iter())
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .and_then(|(_, v)| v.first().cloned())
            })
        };
        let identities_only =
            unknown("identitiesonly").is_some_and(|v| v.eq_ignore_ascii_case("yes"));
        let alias = unknown("hostkeyalias");
        let key_port = if alias.is_some() { 22 } else { port };
        let key_host = alias.unwrap_or_else(|| hostname.clone());
        let known_hosts = unknown("userknownhostsfile")
            .map(|p| expand_home(Path::new(&p), home))
            .unwrap_or_else(|| home.join(".ssh/known_hosts"));
        let host_key_policy = remote
            .and_then(|r| r.strict_host_key_checking)
            .or_else(|| {
                match unknown("stricthostkeychecking")?
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "yes" => Some(HostKeyPolicy::Yes),
                    "accept-new" => Some(HostKeyPolicy::AcceptNew),
                    "ask" => Some(HostKeyPolicy::Ask),
                    // `no`/`off` (accept anything, even a changed key): never followed.
                    _ => None,
                }
            })
            .unwrap_or(key_policy);
        let keepalive_max = unknown("serveralivecountmax")
            .and_then(|v| v.parse().ok())
            .unwrap_or(3);
        let hops = params
            .as_ref()
            .and_then(|p| p.proxy_jump.clone())
            .unwrap_or_default();
        let target = Self {
            name: name.to_owned(),
            hostname,
            port,
            user,
            identity_files,
            identities_only,
            key_host,
            key_port,
            known_hosts,
            host_key_policy,
            connect_timeout: remote
                .and_then(|r| r.connect_timeout_secs)
                .map(Duration::from_secs)
                .or(params.as_ref().and_then(|p| p.connect_timeout))
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            keepalive: Some(
                params
                    .as_ref()
                    .and_then(|p| p.server_alive_interval)
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_KEEPALIVE),
            ),
            keepalive_max,
            jump: None,
        };
        (target, hops)
    }

    /// A failure to connect to this host, with the address it was trying.
    pub fn connect_error(&self, reason: impl Into<String>) -> Error {
        Error::SshConnect {
            host: self.name.clone(),
            addr: self.display(),
            reason: reason.into(),
        }
    }

    /// `user@host:port`, for messages and `list_hosts`.
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.hostname, self.port)
    }
}

/// The ProxyJump hops, first hop outermost: `a,b` reaches the target via b, reached via a.
/// The hops' own ProxyJump settings are not followed.
fn jump_chain(
    hops: &[String],
    ssh_config: Option<&ssh2_config::SshConfig>,
    home: &Path,
    key_policy: HostKeyPolicy,
) -> Option<Box<SshTarget>> {
    let mut via: Option<Box<SshTarget>> = None;
    for hop in hops.iter().filter(|h| !h.eq_ignore_ascii_case("none")) {
        let (mut target, _) = SshTarget::resolve_hop(hop, None, ssh_config, home, key_policy);
        target.jump = via;
        via = Some(Box::new(target));
    }
    via
}

/// Splits `user@host:port` (also `[v6]:port`) into its parts.
pub fn split_destination(dest: &str) -> (Option<String>, String, Option<u16>) {
    let (user, rest) = match dest.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, dest),
    };
    if let Some(v6) = rest.strip_prefix('[')
        && let Some((host, port)) = v6.split_once(']')
    {
        let port = port.strip_prefix(':').and_then(|p| p.parse().ok());
        return (user, host.to_owned(), port);
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (user, host.to_owned(), Some(port)),
            Err(_) => (user, rest.to_owned(), None),
        },
        _ => (user, rest.to_owned(), None),
    }
}

fn expand_home(path: &Path, home: &Path) -> PathBuf {
    crate::home::expand(&path.to_string_lossy(), home)
}

fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_split() {
        assert_eq!(
            split_destination("me@box:2222"),
            (Some("me".into()), "box".into(), Some(2222))
        );
        assert_eq!(split_destination("box"), (None, "box".into(), None));
        assert_eq!(
            split_destination("[::1]:22"),
            (None, "::1".into(), Some(22))
        );
        assert_eq!(
            split_destination("a@b@c"),
            (Some("a@b".into()), "c".into(), None)
        );
    }

    fn ssh_config(text: &str, home: &Path) -> ssh2_config::SshConfig {
        ssh2_config::SshConfig::default()
            .home_dir(home)
            .parse(
                &mut text.as_bytes(),
                ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS
                    | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .unwrap()
    }

    #[test]
    fn ssh_config_fields_are_honoured() {
        let text = "Host gpu\n  HostName 10.1.2.3\n  User alice\n  Port 2200\n  IdentityFile ~/.ssh/gpu_key\n  IdentitiesOnly yes\n  HostKeyAlias gpu-alias\n  UserKnownHostsFile ~/.ssh/kh2\n  StrictHostKeyChecking accept-new\n  ConnectTimeout 4\n  ServerAliveInterval 7\n  ServerAliveCountMax 5\n";
        let home = Path::new("/home/alice");
        let config = ssh_config(text, home);
        let t = SshTarget::resolve("gpu", None, Some(&config), home, HostKeyPolicy::Yes);
        assert_eq!(
            (t.hostname.as_str(), t.port, t.user.as_str()),
            ("10.1.2.3", 2200, "alice")
        );
        assert_eq!(
            t.identity_files,
            vec![PathBuf::from("/home/alice/.ssh/gpu_key")]
        );
        assert!(t.identities_only);
        assert_eq!(t.key_host, "gpu-alias");
        assert_eq!(
            t.key_port, 22,
            "an alias is looked up without the port, as OpenSSH does"
        );
        assert_eq!(t.known_hosts, PathBuf::from("/home/alice/.ssh/kh2"));
        assert_eq!(t.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(t.connect_timeout, Duration::from_secs(4));
        assert_eq!(
            (t.keepalive, t.keepalive_max),
            (Some(Duration::from_secs(7)), 5)
        );
    }

    #[test]
    fn remote_entry_wins_over_ssh_config() {
        let remote = RemoteConfig {
            host: "bob@gpu".into(),
            user: None,
            port: Some(2022),
            ..RemoteConfig::default()
        };
        let home = Path::new("/h");
        let t = SshTarget::resolve("work", Some(&remote), None, home, HostKeyPolicy::Yes);
        assert_eq!(
            (t.hostname.as_str(), t.port, t.user.as_str()),
            ("gpu", 2022, "bob")
        );
        assert_eq!(t.identity_files[0], PathBuf::from("/h/.ssh/id_ed25519"));
    }

    #[test]
    fn host_key_policy_remote_then_ssh_config_then_the_global_default() {
        let text = "Host asks\n  StrictHostKeyChecking ask\nHost strict\n  StrictHostKeyChecking yes\nHost lax\n  StrictHostKeyChecking no\n";
        let home = Path::new("/h");
        let config = ssh_config(text, home);
        let policy = |name: &str, remote: Option<&RemoteConfig>| {
            SshTarget::resolve(name, remote, Some(&config), home, HostKeyPolicy::Ask)
                .host_key_policy
        };
        assert_eq!(policy("strict", None), HostKeyPolicy::Yes);
        assert_eq!(policy("asks", None), HostKeyPolicy::Ask);
        // `no` is never followed: the global default applies.
        assert_eq!(policy("lax", None), HostKeyPolicy::Ask);
        assert_eq!(policy("other", None), HostKeyPolicy::Ask);
        let remote = RemoteConfig {
            host: "strict".into(),
            strict_host_key_checking: Some(HostKeyPolicy::AcceptNew),
            ..RemoteConfig::default()
        };
        assert_eq!(policy("x", Some(&remote)), HostKeyPolicy::AcceptNew);
    }
}
