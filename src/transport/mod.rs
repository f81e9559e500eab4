//! The transport layer: given a command spec, start a process on some host and hand back a [`Process`].

mod local;
mod process;
mod ssh;

use std::collections::BTreeMap;
use std::time::Duration;

pub use local::Local;
pub use process::{ExitStatus, Output, OutputStream, Process, ProcessEvent, StdinWriter};
pub use ssh::Ssh;

use crate::error::Result;

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
pub enum Transport {
    Local(Local),
    Ssh(Ssh),
}

impl Transport {
    /// Starts `spec`; a failure to start is an error, a non-zero exit later is not.
    pub async fn spawn(&self, spec: CommandSpec) -> Result<Process> {
        match self {
            Transport::Local(local) => local.spawn(spec).await,
            Transport::Ssh(ssh) => ssh.spawn(spec).await,
        }
    }
}

/// Tuning shared by every backend.
#[derive(Debug, Clone, Copy)]
pub struct KillPolicy {
    /// Time between TERM and KILL.
    pub grace: Duration,
}
