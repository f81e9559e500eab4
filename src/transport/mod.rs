//! The transport layer: given a command spec, start a process on some host and hand back a [`Process`].

mod activity;
mod command;
mod kill_script;
mod local;
mod process;
mod reaper;
mod ssh;
mod ssh_kill;
mod startup;
pub mod sudo;
mod trailer;
mod wrapper;

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::health::Health;
pub use activity::{Activity, Ticket};
pub use command::CommandPrefix;
pub use kill_script::{Group, Verdict};
pub use local::Local;
pub use process::{
    ExitStatus, KillReporter, KillState, Output, OutputStream, Process, ProcessEvent, StdinWriter,
};
pub use reaper::Reaper;
pub use ssh::Ssh;
pub use ssh_kill::SshKills;

use crate::error::{Error, Result};

/// What to run: a `sh -c` command line, where, with what environment and stdin.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    /// Shell command line, run with `sh -c`.
    pub command: String,
    /// Working directory; the transport's default (home) when `None`.
    pub cwd: Option<String>,
    /// Extra environment variables. Values may be secrets: never log them.
    pub env: BTreeMap<String, String>,
    /// What the process reads on stdin.
    pub stdin: Stdin,
}

/// The stdin a process gets.
#[derive(Debug, Clone, Default)]
pub enum Stdin {
    /// Empty: EOF at once.
    #[default]
    Null,
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
    /// A pipe the caller writes to through [`Process::take_stdin`].
    Pipe,
}

/// One way of running processes. A closed set: one variant (and one file) per backend.
#[derive(Debug, Clone)]
pub enum Backend {
    /// This machine.
    Local(Local),
    /// A host over SSH.
    Ssh(Ssh),
    /// Inside a container, pod or other wrapper, through an argv prefix run by another backend.
    Command(CommandPrefix),
}

/// A named host's backend, counting what runs there in the shared [`Activity`].
#[derive(Debug, Clone)]
pub struct Transport {
    host: String,
    backend: Backend,
    activity: Activity,
}

impl Transport {
    pub fn new(host: impl Into<String>, backend: Backend, activity: Activity) -> Self {
        Self {
            host: host.into(),
            backend,
            activity,
        }
    }

    /// The host name this transport runs on.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Starts `spec`; a failure to start is an error, a non-zero exit later is not.
    /// The process counts as load on the host until it ends; a host that cannot be reached is
    /// remembered as down for a while.
    pub async fn spawn(&self, spec: CommandSpec) -> Result<Process> {
        self.spawn_holding(spec, None).await
    }

    /// [`Transport::spawn`], counting the process with `reserved` (taken when the host was
    /// picked) instead of a new ticket.
    pub async fn spawn_holding(
        &self,
        spec: CommandSpec,
        reserved: Option<Ticket>,
    ) -> Result<Process> {
        check_env_names(&spec.env)?;
        let ticket = reserved.unwrap_or_else(|| self.activity.ticket(&self.host));
        let attempt = tokio::time::Instant::now();
        let started = match &self.backend {
            Backend::Local(local) => local.spawn(spec).await,
            Backend::Ssh(ssh) => ssh.spawn(spec).await,
            Backend::Command(prefix) => prefix.spawn(spec).await,
        };
        match &started {
            Ok(_) => self.activity.succeeded(&self.host),
            // SSH connection failures are the pool's to remember (it refuses during backoff).
            Err(Error::SshConnect { .. }) => {}
            Err(e) if e.is_unreachable() => {
                self.activity.failed(&self.host, attempt, e.to_string())
            }
            Err(_) => {}
        }
        Ok(started?.holding(ticket))
    }
}

/// Refuses environment variable names a shell cannot set (`A;B`, `A B`, `A=C`, empty), the same
/// way on every backend.
pub(crate) fn check_env_names(env: &BTreeMap<String, String>) -> Result<()> {
    let bad = env.keys().find(|name| {
        let mut chars = name.chars();
        let first = chars.next();
        !(matches!(first, Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    });
    match bad {
        None => Ok(()),
        Some(name) => Err(Error::InvalidArgument {
            field: "env",
            reason: format!(
                "`{name}` is not a valid variable name (letters, digits and _, not starting with a digit)"
            ),
        }),
    }
}

/// Events buffered between a backend and the process's consumer: a slow consumer slows the reads.
const EVENT_BUFFER: usize = 16;

/// Tuning shared by every backend.
#[derive(Debug, Clone, Copy)]
pub struct KillPolicy {
    /// Time between TERM and KILL.
    pub grace: Duration,
}

/// Beyond the grace, how long a kill may take to be confirmed before a process stops waiting for
/// its verdict (the kill goes on, and its outcome is recorded when it comes).
pub(crate) const VERDICT_SLACK: Duration = Duration::from_secs(4);

impl KillPolicy {
    /// The most a caller waits for a killed process to end: its verdict, and a moment to close.
    pub fn verdict_within(&self) -> Duration {
        self.grace + VERDICT_SLACK + Duration::from_secs(1)
    }
}
