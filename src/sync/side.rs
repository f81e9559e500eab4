//! One end of a sync — a host reached through any transport — running the small POSIX shell
//! programs of [`super::scripts`] there. The same code serves this machine (through the local
//! transport) and remote hosts, so nothing but `sh` and coreutils is needed on either side.

use std::collections::{BTreeMap, HashMap};

use shell_words::quote;

use super::listing::{self, Listing};
use super::scripts::{self, ListSpec};
use crate::error::{Error, Result};
use crate::transport::{CommandSpec, Process, Stdin, Transport};

/// Where a project's Claude files live on one side.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project path with symlinks resolved (as given when it does not exist there).
    pub physical_cwd: String,
    /// Shell word for `<config dir>/projects/<name>`: the config dir is `$CLAUDE_CONFIG_DIR`,
    /// else `~/.claude`, as that side's Claude sees it.
    pub dir: String,
}

impl Project {
    /// The project of `physical_cwd` (already resolved on that side): no round trip needed.
    pub fn at(physical_cwd: &str) -> Self {
        let name = super::project_dir::project_dir_name(physical_cwd);
        Self {
            physical_cwd: physical_cwd.to_owned(),
            dir: format!(
                "\"${{CLAUDE_CONFIG_DIR:-$HOME/.claude}}\"/projects/{}",
                quote(&name)
            ),
        }
    }
}

/// What [`Side::list`] compares against: the other side's files, `path → (size, end-window hash)`.
pub struct Against<'a> {
    pub files: &'a HashMap<String, (u64, String)>,
    /// The other side's conflict copy of a file, by the file's path, likewise.
    pub copies: &'a HashMap<String, (u64, String)>,
    /// Session logs that grew by at most this many bytes past the other side's matching copy
    /// come back with their new tail in [`Listing::tails`] (0: none).
    pub send_tails_up_to: u64,
}

/// A host taking part in a sync.
pub struct Side {
    pub host: String,
    transport: Transport,
    /// The environment Claude gets there (it may set `CLAUDE_CONFIG_DIR`).
    env: BTreeMap<String, String>,
}

impl Side {
    pub fn new(host: String, transport: Transport, env: BTreeMap<String, String>) -> Self {
        Self {
            host,
            transport,
            env,
        }
    }

    fn failed(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        Error::Sync {
            host: self.host.clone(),
            reason: format!("{what}: {detail}"),
        }
    }

    async fn spawn(&self, command: String, stdin: Stdin) -> Result<Process> {
        let spec = CommandSpec {
            command,
            cwd: None,
            env: self.env.clone(),
            stdin,
        };
        self.transport.spawn(spec).await
    }

    /// Runs a short program to its end, giving its stdout; a non-zero exit is an error naming `what`.
    async fn run(&self, what: &str, command: String, stdin: Stdin) -> Result<Vec<u8>> {
        let output = self.spawn(command, stdin).await?.output().await;
        if output.status.code != Some(0) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(self.failed(what, stderr.trim()));
        }
        Ok(output.stdout)
    }

    /// Resolves `cwd` on this side (`~/` expanded, symlinks resolved when it exists).
    pub async fn project(&self, cwd: &str) -> Result<Project> {
        let out = self
            .run("finding the project", scripts::project(cwd), Stdin::Null)
            .await?;
        let out = String::from_utf8_lossy(&out);
        let physical = out.trim_end_matches('\n');
        if !physical.starts_with('/') {
            return Err(self.failed(
                "finding the project",
                format!("`{cwd}` is not an absolute path"),
            ));
        }
        Ok(Project::at(physical))
    }

    /// Every file of the project folder (or only one session's log, its conflict copies and its
    /// sidecar folder) with size and mtime, and what was passed over (see [`Listing`]). `against`
    /// lists the other side's files: each file found there gets the sha256 of its window ending
    /// at `min(size here, size there)`, and a session log that only grew comes with its new tail
    /// (see [`Against`]); `None` hashes each file's window ending at its end. With `settle_on`,
    /// first waits up to 3 s for the session log to contain that text.
    pub async fn list(
        &self,
        dir: &str,
        only: Option<&str>,
        against: Option<&Against<'_>>,
        settle_on: Option<&str>,
    ) -> Result<Listing> {
        let spec = ListSpec {
            dir,
            only,
            settle_on,
            hash_whole: against.is_none(),
            send_tails_up_to: against.map_or(0, |a| a.send_tails_up_to),
        };
        let input: String = against.map_or_else(String::new, |other| {
            other
                .files
                .iter()
                .chain(other.copies.iter())
                // `-` for a hash the other side could not compute: never equal to one.
                .map(|(p, (n, h))| format!("{n}\t{}\t{p}\n", if h.is_empty() { "-" } else { h }))
                .collect()
        });
        let stdin = match input.is_empty() {
            true => Stdin::Null,
            false => Stdin::Bytes(input.into_bytes()),
        };
        let out = self
            .run("listing files", scripts::list(&spec), stdin)
            .await?;
        let Some(mut found) = listing::parse(&out) else {
            let shown = String::from_utf8_lossy(&out[..out.len().min(500)]).into_owned();
            return Err(self.failed("listing files", format!("unreadable listing `{shown}`")));
        };
        // Each file's hash is the one of the window ending where the other side's copy ends.
        let Listing {
            files,
            copies,
            hashes,
            ..
        } = &mut found;
        for file in files.iter_mut().chain(copies.iter_mut()) {
            let at = match against {
                None => Some(file.size),
                Some(other) => other.files.get(&file.path).map(|(n, _)| *n),
            };
            if let Some(hash) = at.and_then(|n| hashes.get(&(file.path.clone(), n))) {
                file.hash = hash.clone();
            }
        }
        Ok(found)
    }

    /// sha256 of the window ending at `len` of each `(path, len)`, keyed by path.
    pub async fn prefix_hashes(
        &self,
        dir: &str,
        wanted: &[(String, u64)],
    ) -> Result<HashMap<String, String>> {
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let requests: String = wanted
            .iter()
            .map(|(p, n)| format!("{n}\t-\t{p}\n"))
            .collect();
        let out = self
            .run(
                "hashing files",
                scripts::prefix_hashes(dir),
                Stdin::Bytes(requests.into_bytes()),
            )
            .await?;
        Ok(listing::parse_hashes(&out))
    }

    /// A process printing bytes `from..from+len` of `path`.
    pub async fn read(&self, dir: &str, path: &str, from: u64, len: u64) -> Result<Process> {
        self.spawn(scripts::read(dir, path, from, len), Stdin::Null)
            .await
    }

    /// A process that writes `write` atomically from its stdin (see [`scripts::write`]).
    pub async fn write(&self, dir: &str, write: &scripts::Write<'_>) -> Result<Process> {
        self.spawn(scripts::write(dir, write), Stdin::Pipe).await
    }
}
