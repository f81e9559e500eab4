//! `outpost remote add|list|remove|set-default|test`: the remotes in the config file, and a step-by-step connection check.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::claude::launch::{Locate, NOT_FOUND_MARKER, probe_line};
use crate::config::{Config, HostKeyPolicy, RemoteConfig, RemoteKind};
use crate::error::{Error, Result};
use crate::hosts::{Hosts, LOCAL};
use crate::ssh::connect::connect_timed;
use crate::ssh::target::split_destination;
use crate::transport::{Backend, CommandSpec, Transport};

/// `remote add`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct AddRemote {
    /// Name tools will use for it.
    pub name: String,
    /// SSH: `[user@]host[:port]`, or an ~/.ssh/config alias.
    #[arg(required_unless_present_any = ["docker", "kubernetes", "command"])]
    pub target: Option<String>,
    /// A running docker container (name or id) instead of an SSH host.
    #[arg(long, value_name = "CONTAINER", conflicts_with_all = ["target", "kubernetes", "command"])]
    pub docker: Option<String>,
    /// A Kubernetes pod, or a workload such as `deploy/api`, instead of an SSH host.
    #[arg(long, value_name = "POD", conflicts_with_all = ["target", "command"])]
    pub kubernetes: Option<String>,
    /// Any argv prefix that runs a program elsewhere with stdio attached (one shell-quoted string).
    #[arg(long, value_name = "PREFIX", conflicts_with = "target")]
    pub command: Option<String>,
    /// Kubernetes namespace.
    #[arg(long, requires = "kubernetes")]
    pub namespace: Option<String>,
    /// Kubernetes kubeconfig context.
    #[arg(long, requires = "kubernetes")]
    pub context: Option<String>,
    /// Kubernetes: the container in the pod.
    #[arg(long)]
    pub container: Option<String>,
    /// The engine's CLI (e.g. `podman`, `oc`, a full path).
    #[arg(long)]
    pub cli: Option<String>,
    /// Run the engine's CLI on this SSH host instead of here.
    #[arg(long, value_name = "HOST")]
    pub via: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// SSH: the login user. Docker: the user inside the container.
    #[arg(long)]
    pub user: Option<String>,
    /// Private key file to authenticate with.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Default working directory on the host.
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<String>,
    /// Make it the default host.
    #[arg(long)]
    pub set_default: bool,
    /// Record the host key on first connection instead of refusing it.
    #[arg(long)]
    pub accept_new: bool,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        field,
        reason: reason.into(),
    }
}

/// Adds a remote to the config file at `path` (locked, re-read, written atomically, mode 600).
pub fn add(path: &Path, add: AddRemote) -> Result<String> {
    if add.name == LOCAL || add.name.is_empty() || add.name.contains(['@', ':', ' ']) {
        return Err(invalid(
            "NAME",
            format!(
                "`{}` cannot name a remote: use letters, digits, `-`, `_`, `.`; `local` is built in",
                add.name
            ),
        ));
    }
    let remote = remote_of(&add)?;
    remote
        .check()
        .map_err(|(field, reason)| invalid("remote", format!("`{field}` {reason}")))?;
    Config::update(path, |config| {
        if config.remotes.contains_key(&add.name) {
            return Err(invalid(
                "NAME",
                format!(
                    "remote `{}` exists already; `outpost remote remove {}` first",
                    add.name, add.name
                ),
            ));
        }
        config.remotes.insert(add.name.clone(), remote);
        if add.set_default {
            config.default_host = Some(add.name.clone());
        }
        Ok(())
    })?;
    if let Some(home) = dirs::home_dir()
        && let Some(warning) = workspace_warning(add.workspace.as_deref(), &home)
    {
        eprintln!("outpost: warning: {warning}");
    }
    Ok(format!(
        "added remote `{}`{}",
        add.name,
        if add.set_default { " (default)" } else { "" }
    ))
}

/// A `--workspace` under this machine's home was most likely `~/...` expanded by the local
/// shell, so it names the local home rather than the remote's: say how to keep the `~`.
fn workspace_warning(workspace: Option<&str>, home: &Path) -> Option<String> {
    let rest = Path::new(workspace?).strip_prefix(home).ok()?;
    let meant = match rest.to_str()? {
        "" => "~".to_owned(),
        rest => format!("~/{rest}"),
    };
    Some(format!(
        "--workspace {} is under this machine's home ({}): if your shell expanded `~` and you \
         meant the remote's home, run the command again with it quoted: --workspace '{}'",
        workspace?,
        home.display(),
        meant
    ))
}

/// The config entry the flags describe.
fn remote_of(add: &AddRemote) -> Result<RemoteConfig> {
    // Flags that do not fit the kind are kept, so that `check` names them.
    let mut remote = RemoteConfig {
        workspace: add.workspace.clone(),
        user: add.user.clone(),
        port: add.port,
        identity_file: add.identity.clone(),
        strict_host_key_checking: add.accept_new.then_some(HostKeyPolicy::AcceptNew),
        cli: add.cli.clone(),
        via: add.via.clone(),
        container: add.container.clone(),
        ..RemoteConfig::default()
    };
    if let Some(container) = &add.docker {
        remote.kind = RemoteKind::Docker;
        remote.container = Some(container.clone());
    } else if let Some(target) = &add.kubernetes {
        remote.kind = RemoteKind::Kubernetes;
        let slot = if target.contains('/') {
            &mut remote.workload
        } else {
            &mut remote.pod
        };
        *slot = Some(target.clone());
        remote.namespace = add.namespace.clone();
        remote.context = add.context.clone();
    } else if let Some(prefix) = &add.command {
        remote.kind = RemoteKind::Command;
        remote.command =
            shell_words::split(prefix).map_err(|e| invalid("--command", e.to_string()))?;
    } else {
        let (user, host, port) = split_destination(add.target.as_deref().unwrap_or_default());
        remote.host = host;
        remote.user = add.user.clone().or(user);
        remote.port = add.port.or(port);
    }
    Ok(remote)
}

/// Removes a remote; the default falls back to `local` if it was this one.
pub fn remove(path: &Path, name: &str) -> Result<String> {
    Config::update(path, |config| {
        if config.remotes.remove(name).is_none() {
            return Err(invalid(
                "NAME",
                format!("no remote `{name}` in {}", path.display()),
            ));
        }
        if config.default_host.as_deref() == Some(name) {
            config.default_host = None;
        }
        Ok(())
    })?;
    Ok(format!("removed remote `{name}`"))
}

/// Makes `name` (any known host, as the config file has it now) the default.
pub fn set_default(path: &Path, name: &str) -> Result<String> {
    Config::update(path, |config| {
        Hosts::new(config.clone()).resolve(name)?;
        config.default_host = (name != LOCAL).then(|| name.to_owned());
        Ok(())
    })?;
    Ok(format!("default host is now `{name}`"))
}

/// One line per known host: name, kind, where it points, default marker.
pub fn list(hosts: &Hosts) -> String {
    let mut out = String::new();
    for host in hosts.list() {
        out.push_str(&format!(
            "{:<20} {:<10} {:<11} {}{}\n",
            host.name,
            format!("{:?}", host.kind).to_lowercase(),
            format!("{:?}", host.source).to_lowercase(),
            host.target.unwrap_or_else(|| "-".into()),
            if host.default { "  (default)" } else { "" }
        ));
    }
    out
}

/// Checks a host step by step, printing each step's time. Ok(false) when a step failed.
pub async fn test(hosts: &Hosts, name: &str) -> Result<bool> {
    let total = Instant::now();
    let transport = hosts.resolve(name)?;
    if let Backend::Ssh(_) = transport.backend()
        && let Some(target) = hosts.ssh_target(name)
    {
        println!("target     {}", target.display());
        match connect_timed(&target).await {
            Ok((connection, t)) => {
                step("tcp", t.tcp, "connected");
                step(
                    "host key",
                    t.handshake,
                    &format!("matches {}", target.known_hosts.display()),
                );
                step("auth", t.auth, &format!("as {}", target.user));
                // The command below runs on this same connection.
                hosts.pool().adopt(&target, connection).await;
            }
            Err(e) => {
                println!("FAILED     {e}");
                return Ok(false);
            }
        }
    }
    let started = Instant::now();
    match run(&transport, "uname -sm").await {
        Ok((0, out)) => step(
            "command",
            started.elapsed(),
            &format!("ran `uname -sm`: {}", out.trim()),
        ),
        Ok((code, out)) => {
            println!("FAILED     `uname -sm` exited {code}: {}", out.trim());
            return Ok(false);
        }
        Err(e) => {
            println!("FAILED     {e}");
            return Ok(false);
        }
    }
    let started = Instant::now();
    let locate = Locate::configured(hosts.config().remotes.get(name));
    let found = match run(&transport, &probe_line(locate)).await {
        Ok((0, out)) => format!("installed: {}", out.trim()),
        Ok((_, out)) => {
            let tried = out.split_once(NOT_FOUND_MARKER).map(|(_, t)| t.trim());
            format!(
                "not found (spawn_claude needs the Claude Code CLI on this host, or `claude_path`); tried: {}",
                tried.unwrap_or("the usual places")
            )
        }
        Err(e) => format!("could not look for it: {e}"),
    };
    step("claude", started.elapsed(), &found);
    step("total", total.elapsed(), "ok");
    Ok(true)
}

async fn run(transport: &Transport, command: &str) -> Result<(i32, String)> {
    let spec = CommandSpec {
        command: command.into(),
        ..Default::default()
    };
    let process = transport.spawn(spec).await?;
    let output = tokio::time::timeout(Duration::from_secs(30), process.output())
        .await
        .map_err(|_| invalid("command", "no answer within 30s"))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Ok((output.status.shell_code(), text))
}

fn step(name: &str, took: Duration, detail: &str) {
    println!(
        "{name:<10} {:>7.1} ms  {detail}",
        took.as_secs_f64() * 1000.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_under_the_local_home_is_warned_about() {
        let home = Path::new("/home/me");
        let warn = |w: &str| workspace_warning(Some(w), home);
        assert!(
            warn("/home/me/work")
                .unwrap()
                .contains("--workspace '~/work'")
        );
        assert!(warn("/home/me").unwrap().contains("--workspace '~'"));
        assert_eq!(warn("/home/meg/work"), None);
        assert_eq!(warn("~/work"), None);
        assert_eq!(warn("/srv/app"), None);
        assert_eq!(workspace_warning(None, home), None);
    }
}
