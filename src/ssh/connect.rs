//! Opening one SSH connection: TCP with a timeout, the host-key check against known_hosts, and key-only authentication.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use russh::client::{self, AuthResult, Handle};
use russh::keys::agent::client::AgentClient;
use russh::keys::{self, HashAlg, PrivateKeyWithHashAlg, PublicKey};

use super::target::SshTarget;
use crate::config::HostKeyPolicy;
use crate::error::{Error, Result, UnknownHostKey};

/// An authenticated connection, and the connection it tunnels through (kept open with it).
pub struct Connection {
    handle: Handle<HostKeyCheck>,
    _via: Option<Box<Connection>>,
}

impl std::ops::Deref for Connection {
    type Target = Handle<HostKeyCheck>;
    fn deref(&self) -> &Self::Target {
        &self.handle
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.handle
    }
}

/// russh's client handler: checks the server's key against known_hosts and remembers why it refused.
pub struct HostKeyCheck {
    target: SshTarget,
    refusal: Arc<Mutex<Option<Error>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            self.refuse(self.target.connect_error(
                "the server offered a host certificate; outpost checks plain host keys only",
            ));
            return Ok(false);
        };
        match self.verdict(key) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.refuse(e);
                Ok(false)
            }
        }
    }
}

impl HostKeyCheck {
    fn refuse(&self, error: Error) {
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    fn verdict(&self, key: &PublicKey) -> Result<()> {
        let t = &self.target;
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        match keys::check_known_hosts_path(&t.key_host, t.key_port, key, &t.known_hosts) {
            Ok(true) => Ok(()),
            // Known under another key type only: a different key, never new (OpenSSH does not
            // learn it silently either). Neither `accept-new` nor a person's yes takes it.
            Ok(false) if let Some(line) = recorded_line(t) => Err(Error::HostKeyChanged {
                host: t.name.clone(),
                key_host: known_hosts_name(t),
                fingerprint,
                path: t.known_hosts.display().to_string(),
                line,
            }),
            Ok(false) if t.host_key_policy == HostKeyPolicy::AcceptNew => {
                learn(&t.key_host, t.key_port, key, &t.known_hosts)
                    .map_err(|reason| t.connect_error(reason))?;
                tracing::warn!(host = %t.name, %fingerprint, "recorded a new host key (accept-new)");
                Ok(())
            }
            Ok(false) | Err(keys::Error::IO(_)) if t.host_key_policy == HostKeyPolicy::Ask => {
                Err(Error::HostKeyToConfirm(Box::new(UnknownHostKey {
                    host: t.name.clone(),
                    key_host: t.key_host.clone(),
                    key_port: t.key_port,
                    known_hosts: t.known_hosts.clone(),
                    algorithm: key.algorithm().to_string(),
                    fingerprint,
                    key: key.to_openssh().unwrap_or_default(),
                    command: trust_command(t, key),
                    why: "only an MCP client that supports elicitation is asked".to_owned(),
                })))
            }
            Ok(false) | Err(keys::Error::IO(_)) => Err(Error::HostKeyUnknown {
                host: t.name.clone(),
                algorithm: key.algorithm().to_string(),
                fingerprint,
                command: trust_command(t, key),
            }),
            Err(keys::Error::KeyChanged { line }) => Err(Error::HostKeyChanged {
                host: t.name.clone(),
                key_host: known_hosts_name(t),
                fingerprint,
                path: t.known_hosts.display().to_string(),
                line,
            }),
            Err(e) => Err(t.connect_error(format!("cannot read {}: {e}", t.known_hosts.display()))),
        }
    }
}

/// The line of known_hosts where the target already has a key (of any type), if it has one.
fn recorded_line(t: &SshTarget) -> Option<usize> {
    let known = keys::known_hosts::known_host_keys_path(&t.key_host, t.key_port, &t.known_hosts);
    known.ok()?.first().map(|(line, _)| *line)
}

/// Records `key` for `host:port` in the known_hosts file at `path`, as `accept-new` does.
fn learn(
    host: &str,
    port: u16,
    key: &PublicKey,
    path: &std::path::Path,
) -> std::result::Result<(), String> {
    keys::known_hosts::learn_known_hosts_path(host, port, key, path)
        .map_err(|e| format!("cannot record the new host key in {}: {e}", path.display()))
}

/// Records a key a person confirmed (`strict_host_key_checking: ask`), exactly as `accept-new`
/// records one.
pub fn record_confirmed_key(unknown: &UnknownHostKey) -> Result<()> {
    let failed = |reason: String| Error::SshConnect {
        host: unknown.host.clone(),
        addr: format!("{}:{}", unknown.key_host, unknown.key_port),
        reason,
    };
    let key = PublicKey::from_openssh(&unknown.key)
        .map_err(|e| failed(format!("cannot read back the confirmed host key: {e}")))?;
    learn(
        &unknown.key_host,
        unknown.key_port,
        &key,
        &unknown.known_hosts,
    )
    .map_err(failed)?;
    tracing::warn!(host = %unknown.host, fingerprint = %unknown.fingerprint, "recorded a host key a person confirmed");
    Ok(())
}

/// The host as known_hosts writes it: `name`, or `[name]:port` off port 22.
fn known_hosts_name(t: &SshTarget) -> String {
    if t.key_port == 22 {
        t.key_host.clone()
    } else {
        format!("[{}]:{}", t.key_host, t.key_port)
    }
}

/// The exact shell command that appends this key to the known_hosts file.
fn trust_command(t: &SshTarget, key: &PublicKey) -> String {
    let line = format!(
        "{} {}",
        known_hosts_name(t),
        key.to_openssh().unwrap_or_default()
    );
    format!(
        "echo {} >> {}",
        shell_words::quote(&line),
        shell_words::quote(&t.known_hosts.display().to_string())
    )
}

/// How long each step of a connection took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub tcp: Duration,
    /// Key exchange and the host-key check.
    pub handshake: Duration,
    pub auth: Duration,
}

/// Connects, checks the host key and authenticates, all within the target's connect timeout.
pub async fn connect(target: &SshTarget) -> Result<Connection> {
    connect_timed(target)
        .await
        .map(|(connection, _)| connection)
}

/// A boxed connect future (boxed because ProxyJump makes connecting recursive).
type Connecting<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<(Connection, Timings)>> + Send + 'a>>;

/// [`connect`], also telling how long each step took. Through ProxyJump hosts when configured.
pub fn connect_timed(target: &SshTarget) -> Connecting<'_> {
    Box::pin(connect_direct_or_via(target))
}

async fn connect_direct_or_via(target: &SshTarget) -> Result<(Connection, Timings)> {
    let config = Arc::new(client::Config {
        nodelay: true,
        keepalive_interval: target.keepalive,
        keepalive_max: target.keepalive_max,
        ..Default::default()
    });
    let refusal = Arc::new(Mutex::new(None));
    let handler = HostKeyCheck {
        target: target.clone(),
        refusal: refusal.clone(),
    };
    let attempt = async {
        let mut timings = Timings::default();
        let started = Instant::now();
        let (stream, via) = open_stream(target).await?;
        timings.tcp = started.elapsed();
        let started = Instant::now();
        let handle = match client::connect_stream(config, stream, handler).await {
            Ok(handle) => handle,
            Err(e) => {
                if let Some(refused) = refusal.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Err(refused);
                }
                return Err(target.connect_error(e.to_string()));
            }
        };
        timings.handshake = started.elapsed();
        let started = Instant::now();
        let handle = authenticate(handle, target).await?;
        timings.auth = started.elapsed();
        Ok((Connection { handle, _via: via }, timings))
    };
    match tokio::time::timeout(target.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(target.connect_error(format!(
            "no answer within {}s (ConnectTimeout)",
            target.connect_timeout.as_secs_f64()
        ))),
    }
}

/// A byte stream to the target's SSH port: TCP, or a direct-tcpip channel through the jump host.
async fn open_stream(target: &SshTarget) -> Result<(Box<dyn Stream>, Option<Box<Connection>>)> {
    match &target.jump {
        None => {
            let tcp = TcpStream::connect((target.hostname.as_str(), target.port))
                .await
                .map_err(|e| target.connect_error(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            Ok((Box::new(tcp), None))
        }
        Some(jump) => {
            let (via, _) = connect_timed(jump).await.map_err(|e| match e {
                // The jump host's own key, for the person to confirm.
                e @ Error::HostKeyToConfirm(_) => e,
                e => target.connect_error(format!("through ProxyJump `{}`: {e}", jump.name)),
            })?;
            let channel = via
                .channel_open_direct_tcpip(
                    target.hostname.clone(),
                    u32::from(target.port),
                    "127.0.0.1",
                    0,
                )
                .await
                .map_err(|e| {
                    target.connect_error(format!(
                        "ProxyJump `{}` would not open a tunnel: {e}",
                        jump.name
                    ))
                })?;
            Ok((Box::new(channel.into_stream()), Some(Box::new(via))))
        }
    }
}

/// What an SSH session can run over.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// Tries the agent's keys, then the identity files. Never a password.
async fn authenticate(
    mut handle: Handle<HostKeyCheck>,
    target: &SshTarget,
) -> Result<Handle<HostKeyCheck>> {
    let mut tried = Vec::new();
    if try_agent(&mut handle, target, &mut tried).await {
        return Ok(handle);
    }
    for path in &target.identity_files {
        if !path.exists() {
            continue;
        }
        let key = match keys::load_secret_key(path, None) {
            Ok(key) => key,
            Err(keys::Error::KeyIsEncrypted) => {
                tried.push(format!(
                    "{} (passphrase-protected: add it to the agent with `ssh-add {}`)",
                    path.display(),
                    path.display()
                ));
                continue;
            }
            Err(e) => {
                tried.push(format!("{} (unreadable: {e})", path.display()));
                continue;
            }
        };
        let hash = rsa_hash(&handle, key.algorithm()).await;
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        match handle.authenticate_publickey(&target.user, key).await {
            Ok(AuthResult::Success) => return Ok(handle),
            Ok(_) => tried.push(format!("{} (refused)", path.display())),
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    if tried.is_empty() {
        tried.push("no agent keys and no identity files".into());
    }
    Err(Error::AuthFailed {
        host: target.name.clone(),
        user: target.user.clone(),
        tried: tried.join("; "),
    })
}

/// The signature hash an RSA key should use with this server (asking costs a round trip, so
/// only for RSA); `None` for other keys.
async fn rsa_hash(handle: &Handle<HostKeyCheck>, algorithm: keys::Algorithm) -> Option<HashAlg> {
    if !algorithm.is_rsa() {
        return None;
    }
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}

/// Offers the agent's keys (only those matching identity files when IdentitiesOnly is set).
async fn try_agent(
    handle: &mut Handle<HostKeyCheck>,
    target: &SshTarget,
    tried: &mut Vec<String>,
) -> bool {
    let Ok(mut agent) = AgentClient::connect_env().await else {
        return false;
    };
    let identities = match agent.request_identities().await {
        Ok(ids) => ids,
        Err(e) => {
            tried.push(format!("ssh-agent ({e})"));
            return false;
        }
    };
    let wanted: Vec<PublicKey> = target
        .identity_files
        .iter()
        .filter_map(|p| keys::load_public_key(format!("{}.pub", p.display())).ok())
        .collect();
    for identity in identities {
        let key = identity.public_key().into_owned();
        if target.identities_only && !wanted.iter().any(|w| w.key_data() == key.key_data()) {
            continue;
        }
        let hash = rsa_hash(handle, key.algorithm()).await;
        let comment = key.comment().to_owned();
        match handle
            .authenticate_publickey_with(&target.user, key, hash, &mut agent)
            .await
        {
            Ok(AuthResult::Success) => return true,
            _ => tried.push(format!("agent key {comment}")),
        }
    }
    false
}
