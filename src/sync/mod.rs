//! `sync_sessions`: Claude's session files copied between this machine and a host — incrementally
//! (session logs only grow, so usually only the new tail moves), atomically, and never over a
//! destination that holds lines the source lacks.

mod plan;
mod project_dir;
mod report;
mod side;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

pub use report::{Conflict, Direction, SyncReport};

use plan::{Action, FileInfo};
use side::{Against, Project, Side, Tail};

use crate::error::{Error, Result};
use crate::hosts::{Hosts, LOCAL};
use crate::transport::{OutputStream, ProcessEvent, StdinWriter};

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

/// A session log that grew by at most this much since the destination's copy sends its new tail
/// with the listing: a sync that appends one turn takes one round trip to the source.
const TAIL_WITH_LISTING: u64 = 256 * 1024;

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

/// Runs `request` over the host's transport and the local one.
pub async fn sync_with_host(hosts: &Hosts, request: &SyncRequest) -> Result<SyncReport> {
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
    let (source, source_cwd, destination, destination_cwd) = match request.direction {
        Direction::Pull => (&remote, &remote_cwd, &local, &local_cwd),
        Direction::Push => (&local, &local_cwd, &remote, &remote_cwd),
    };
    SyncJob {
        source,
        source_cwd,
        destination,
        destination_cwd,
        session_id: request.session_id.as_deref(),
        settle_on: request.settle_on.as_deref(),
        max_bytes_per_sec: hosts.config().sync.max_bytes_per_sec,
    }
    .run()
    .await
}

/// A project path on one side.
#[derive(Debug, Clone)]
pub enum Cwd {
    /// As the user wrote it (`~/proj`, through a symlink, ...): resolved on that side first.
    Given(String),
    /// Already absolute with symlinks resolved there.
    Physical(String),
}

async fn resolve(side: &Side, cwd: &Cwd) -> Result<Project> {
    match cwd {
        Cwd::Given(cwd) => side.project(cwd).await,
        Cwd::Physical(path) => Ok(Project::at(path)),
    }
}

/// One sync between a source and a destination side.
struct SyncJob<'a> {
    source: &'a Side,
    source_cwd: &'a Cwd,
    destination: &'a Side,
    destination_cwd: &'a Cwd,
    /// Only this session's log and sidecar folder (else the whole project folder).
    session_id: Option<&'a str>,
    /// See [`SyncRequest::settle_on`].
    settle_on: Option<&'a str>,
    /// Pace transfers to this many bytes per second.
    max_bytes_per_sec: Option<u64>,
}

impl SyncJob<'_> {
    /// Runs the sync: find both project folders, list the destination, then the source (hashed
    /// against the destination's sizes), and move what is missing.
    async fn run(&self) -> Result<SyncReport> {
        let (src, dst) = tokio::try_join!(
            resolve(self.source, self.source_cwd),
            resolve(self.destination, self.destination_cwd)
        )?;
        let dest = self
            .destination
            .list(&dst.dir, self.session_id, None, None)
            .await?;
        let dest_files: HashMap<String, (u64, String)> = dest
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.size, f.hash.clone())))
            .collect();
        let against = Against {
            files: &dest_files,
            // A paced sync streams everything, so that the pace holds.
            send_tails_up_to: if self.max_bytes_per_sec.is_some_and(|r| r > 0) {
                0
            } else {
                TAIL_WITH_LISTING
            },
        };
        let source = self
            .source
            .list(&src.dir, self.session_id, Some(&against), self.settle_on)
            .await?;
        let dest_by_path: HashMap<&str, &FileInfo> =
            dest.files.iter().map(|f| (f.path.as_str(), f)).collect();
        let wanted: Vec<(String, u64)> = source
            .files
            .iter()
            .filter_map(|f| {
                let d = dest_by_path.get(f.path.as_str())?;
                plan::destination_prefix_needed(f, d).map(|n| (f.path.clone(), n))
            })
            .collect();
        let dest_prefix = self.destination.prefix_hashes(&dst.dir, &wanted).await?;
        let stamp = conflict_stamp();
        let mut report = SyncReport {
            source_dir: source.dir.clone(),
            destination_dir: dest.dir.clone(),
            files_examined: source.files.len(),
            ..SyncReport::default()
        };
        for file in &source.files {
            let prefix = dest_prefix.get(&file.path).map(String::as_str);
            let action = plan::decide(
                file,
                dest_by_path.get(file.path.as_str()).copied(),
                prefix,
                &stamp,
            );
            let tail = source.tails.get(&file.path);
            self.apply(&src, &dst, file, action, tail, &mut report)
                .await?;
        }
        Ok(report)
    }

    async fn apply(
        &self,
        src: &Project,
        dst: &Project,
        file: &FileInfo,
        action: Action,
        tail: Option<&Tail>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let (from, target) = match &action {
            Action::InSync => {
                report.files_in_sync += 1;
                return Ok(());
            }
            Action::DestinationAhead => {
                report.destination_ahead.push(file.path.clone());
                return Ok(());
            }
            Action::Append { from } => (*from, file.path.clone()),
            Action::Create | Action::Replace => (0, file.path.clone()),
            Action::Conflict { copy_to } => (0, copy_to.clone()),
        };
        let write = side::Write {
            path: &file.path,
            target: &target,
            base: from,
            len: file.size - from,
            mtime: file.mtime,
        };
        // The new tail came with the listing when the source saw the same append.
        let sent = tail
            .filter(|t| matches!(action, Action::Append { from } if from == t.from))
            .and_then(|t| t.data.get(..usize::try_from(write.len).ok()?));
        self.copy(src, dst, &write, sent).await?;
        report.files_transferred += 1;
        report.bytes_transferred += write.len;
        if let Action::Conflict { copy_to } = action {
            tracing::warn!(path = %file.path, copy = %copy_to, "sync conflict: destination kept, incoming copy written beside it");
            report.conflicts.push(Conflict {
                path: format!("{}/{}", report.destination_dir, file.path),
                incoming_copy: format!("{}/{copy_to}", report.destination_dir),
            });
        }
        Ok(())
    }

    /// Streams the bytes from the source's reader into the destination's atomic writer.
    /// Writes `write` on the destination with its bytes from `sent` (a tail that came with the
    /// listing), else streamed from the source as it reads them.
    async fn copy(
        &self,
        src: &Project,
        dst: &Project,
        write: &side::Write<'_>,
        sent: Option<&[u8]>,
    ) -> Result<()> {
        let mut writer = self.destination.write(&dst.dir, write).await?;
        let Some(mut stdin) = writer.take_stdin() else {
            return Err(self.destination_failed("no stdin for the writer"));
        };
        match sent {
            Some(data) => stdin
                .write_all(data)
                .await
                .map_err(|e| self.destination_failed(e))?,
            // On failure, dropping the writer kills it before it renames anything: the
            // destination stays as it was.
            None => self.stream(src, write, &mut stdin).await?,
        }
        stdin
            .shutdown()
            .await
            .map_err(|e| self.destination_failed(e))?;
        drop(stdin);
        let done = writer.output().await;
        if done.status.code != Some(0) {
            return Err(self.destination_failed(format!(
                "writing {}: {}",
                write.target,
                String::from_utf8_lossy(&done.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Feeds `stdin` the bytes of `write` as the source reads them, at the configured pace.
    async fn stream(
        &self,
        src: &Project,
        write: &side::Write<'_>,
        stdin: &mut StdinWriter,
    ) -> Result<()> {
        let mut reader = self
            .source
            .read(&src.dir, write.path, write.base, write.len)
            .await?;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut reader_err = Vec::new();
        let mut reader_status = None;
        while let Some(event) = reader.next_event().await {
            match event {
                ProcessEvent::Output(OutputStream::Stdout, data) => {
                    stdin
                        .write_all(&data)
                        .await
                        .map_err(|e| self.destination_failed(e))?;
                    sent += data.len() as u64;
                    self.pace(started, sent).await;
                }
                ProcessEvent::Output(OutputStream::Stderr, data) => {
                    reader_err.extend_from_slice(&data)
                }
                ProcessEvent::Exited(status) => reader_status = Some(status),
            }
        }
        if reader_status.and_then(|s| s.code) != Some(0) || sent != write.len {
            return Err(Error::Sync {
                host: self.source.host.clone(),
                reason: format!(
                    "reading {} gave {sent} of {} bytes: {}",
                    write.path,
                    write.len,
                    String::from_utf8_lossy(&reader_err).trim()
                ),
            });
        }
        Ok(())
    }

    /// Sleeps as needed to keep to `max_bytes_per_sec`.
    async fn pace(&self, started: Instant, sent: u64) {
        if let Some(rate) = self.max_bytes_per_sec.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64(sent as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
    }

    fn destination_failed(&self, detail: impl std::fmt::Display) -> Error {
        Error::Sync {
            host: self.destination.host.clone(),
            reason: detail.to_string(),
        }
    }
}

/// UTC time for conflict-copy names, e.g. `20261121T153045Z`.
fn conflict_stamp() -> String {
    let rfc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    rfc.chars().filter(|c| *c != '-' && *c != ':').collect()
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
