//! `sync_sessions`: Claude's session files copied between this machine and a host — incrementally
//! (session logs only grow, so usually only the new tail moves), atomically, never over a
//! destination that holds lines the source lacks, and never through a symbolic link.

mod job;
mod listing;
mod plan;
mod project_dir;
mod report;
mod scripts;
mod side;

use std::collections::BTreeMap;

pub use report::{Conflict, CopyState, Direction, SyncReport};

use job::SyncJob;
use side::Side;

use crate::error::{Error, Result};
use crate::hosts::{Hosts, LOCAL};

/// A sync between this machine and `host`, as the tool and `spawn_claude` ask for it.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub host: String,
    /// The project path on the host (`Cwd::Physical` when Claude reported it: no lookup needed).
    pub cwd: Cwd,
    /// The same project's path here (default: the host's physical path).
    pub local_cwd: Option<String>,
    pub direction: Direction,
    pub session_id: Option<String>,
    /// With `session_id`: first wait (briefly) until the source's session log contains this text
    /// (Claude writes a turn's records just after printing its result).
    pub settle_on: Option<String>,
}

/// The variable that moves Claude's config (and session) directory.
const CONFIG_DIR_VAR: &str = "CLAUDE_CONFIG_DIR";

/// A session id names files in the project folder: letters, digits, `-` and `_` only (Claude's
/// are UUIDs). Anything else (`..`, `/`, a glob, empty) could lead the file scripts elsewhere.
fn check_session_id(id: &str) -> Result<()> {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !id.is_empty() && id.chars().all(plain) {
        return Ok(());
    }
    Err(Error::InvalidArgument {
        field: "session_id",
        reason: format!("`{id}` is not a Claude session id (a UUID)"),
    })
}

/// A checked sync whose project path on the host is resolved: what a caller may wait on (the
/// pull after a turn of that project) before running it.
pub struct PreparedSync {
    remote: Side,
    local: Side,
    remote_cwd: Cwd,
    local_cwd: Cwd,
    direction: Direction,
    session_id: Option<String>,
    settle_on: Option<String>,
    max_bytes_per_sec: Option<u64>,
}

/// Checks `request` and finds the project on the host (one round trip when its path is given
/// rather than known).
pub async fn prepare(hosts: &Hosts, request: &SyncRequest) -> Result<PreparedSync> {
    if request.host == LOCAL {
        return Err(Error::InvalidArgument {
            field: "host",
            reason: "sync_sessions moves files between this machine and another host; `local` is this machine".into(),
        });
    }
    if let Some(id) = &request.session_id {
        check_session_id(id)?;
    }
    // The scripts only need to know where Claude's files are, not the forwarded secrets.
    let mut env = hosts.claude_environment(&request.host);
    env.retain(|name, _| name == CONFIG_DIR_VAR);
    let remote = Side::new(request.host.clone(), hosts.resolve(&request.host)?, env);
    let local = Side::new(LOCAL.to_owned(), hosts.resolve(LOCAL)?, BTreeMap::new());
    let remote_cwd = match &request.cwd {
        Cwd::Given(cwd) => Cwd::Physical(remote.project(cwd).await?.physical_cwd),
        physical => physical.clone(),
    };
    let local_cwd = match &request.local_cwd {
        Some(cwd) => Cwd::Given(cwd.clone()),
        None => remote_cwd.clone(),
    };
    Ok(PreparedSync {
        remote,
        local,
        remote_cwd,
        local_cwd,
        direction: request.direction,
        session_id: request.session_id.clone(),
        settle_on: request.settle_on.clone(),
        max_bytes_per_sec: hosts.config().sync.max_bytes_per_sec,
    })
}

impl PreparedSync {
    /// The project's physical path on the host.
    pub fn remote_cwd(&self) -> &str {
        match &self.remote_cwd {
            Cwd::Given(path) | Cwd::Physical(path) => path,
        }
    }

    /// Runs the sync over the host's transport and the local one.
    pub async fn run(&self) -> Result<SyncReport> {
        let (source, source_cwd, destination, destination_cwd) = match self.direction {
            Direction::Pull => (&self.remote, &self.remote_cwd, &self.local, &self.local_cwd),
            Direction::Push => (&self.local, &self.local_cwd, &self.remote, &self.remote_cwd),
        };
        SyncJob {
            source,
            source_cwd,
            destination,
            destination_cwd,
            session_id: self.session_id.as_deref(),
            settle_on: self.settle_on.as_deref(),
            max_bytes_per_sec: self.max_bytes_per_sec,
        }
        .run()
        .await
    }
}

/// Prepares and runs `request`.
pub async fn sync_with_host(hosts: &Hosts, request: &SyncRequest) -> Result<SyncReport> {
    prepare(hosts, request).await?.run().await
}

/// A project path on one side.
#[derive(Debug, Clone)]
pub enum Cwd {
    /// As the user wrote it (`~/proj`, through a symlink, ...): resolved on that side first.
    Given(String),
    /// Already absolute with symlinks resolved there.
    Physical(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_cannot_leave_the_project_folder() {
        assert!(check_session_id("0b8f7c1e-3a52-4c1e-9d2b-6f1e2a3b4c5d").is_ok());
        for bad in ["", "..", "../../.ssh/authorized_keys", "a/b", "*"] {
            assert!(check_session_id(bad).is_err(), "{bad}");
        }
    }
}
