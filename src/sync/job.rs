//! One sync between a source and a destination side: list both, decide per file, and move what
//! is missing — a tail sent with the listing, else streamed from the source's reader into the
//! destination's atomic writer.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::Cwd;
use super::listing::Listing;
use super::plan::{self, Action, Copy, CopyWrite, FileInfo};
use super::report::{Conflict, CopyState, SyncReport};
use super::scripts::{SKIPPED, Write};
use super::side::{Against, Project, Side};
use crate::error::{Error, Result};
use crate::transport::{OutputStream, ProcessEvent, StdinWriter};

/// A session log that grew by at most this much since the destination's copy sends its new tail
/// with the listing: a sync that appends one turn takes one round trip to the source.
const TAIL_WITH_LISTING: u64 = 256 * 1024;

/// One sync between a source and a destination side.
pub struct SyncJob<'a> {
    pub source: &'a Side,
    pub source_cwd: &'a Cwd,
    pub destination: &'a Side,
    pub destination_cwd: &'a Cwd,
    /// Only this session's log and sidecar folder (else the whole project folder).
    pub session_id: Option<&'a str>,
    /// See [`super::SyncRequest::settle_on`].
    pub settle_on: Option<&'a str>,
    /// Pace transfers to this many bytes per second.
    pub max_bytes_per_sec: Option<u64>,
}

/// What became of one write.
enum Written {
    Done,
    /// Refused by the destination for a reason that skips the file (a link appeared on the way).
    Skipped(String),
}

async fn resolve(side: &Side, cwd: &Cwd) -> Result<Project> {
    match cwd {
        Cwd::Given(cwd) => side.project(cwd).await,
        Cwd::Physical(path) => Ok(Project::at(path)),
    }
}

/// The link on the destination that `path` would be written through (or over), if any.
fn blocking_link<'a>(links: &'a [String], path: &str) -> Option<&'a str> {
    links
        .iter()
        .find(|link| {
            path.strip_prefix(link.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .map(String::as_str)
}

impl SyncJob<'_> {
    /// Runs the sync: find both project folders, list the destination, then the source (hashed
    /// against the destination's sizes), and move what is missing.
    pub async fn run(&self) -> Result<SyncReport> {
        let (src, dst) = tokio::try_join!(
            resolve(self.source, self.source_cwd),
            resolve(self.destination, self.destination_cwd)
        )?;
        let dest = self
            .destination
            .list(&dst.dir, self.session_id, None, None)
            .await?;
        let sized = |f: &FileInfo| (f.size, f.hash.clone());
        let dest_files: HashMap<String, (u64, String)> = dest
            .files
            .iter()
            .map(|f| (f.path.clone(), sized(f)))
            .collect();
        let copies = plan::latest_copies(&dest.copies);
        let copy_sizes = copies.iter().map(|(p, c)| (p.clone(), sized(c))).collect();
        let against = Against {
            files: &dest_files,
            copies: &copy_sizes,
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
        let mut report = SyncReport {
            source_dir: source.dir.clone(),
            destination_dir: dest.dir.clone(),
            files_examined: source.files.len(),
            warnings: self.passed_over(&source),
            ..SyncReport::default()
        };
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
        for file in &source.files {
            if let Some(link) = blocking_link(&dest.links, &file.path) {
                report.warnings.push(format!(
                    "skipped `{}`: `{link}` on {} is a symbolic link, and the sync never writes through links",
                    file.path, self.destination.host
                ));
                continue;
            }
            let copy = copies.get(&file.path).map(|c| Copy {
                file: c,
                source_hash: source.hash(&file.path, c.size),
            });
            let prefix = dest_prefix.get(&file.path).map(String::as_str);
            let dest_file = dest_by_path.get(file.path.as_str()).copied();
            let action = plan::decide(file, dest_file, prefix, copy, &stamp);
            self.apply(&src, &dst, file, action, &source.tails, &mut report)
                .await?;
        }
        Ok(report)
    }

    /// Warnings for what the source's listing passed over.
    fn passed_over(&self, source: &Listing) -> Vec<String> {
        let host = &self.source.host;
        let links = source.links.iter().map(|link| {
            format!("skipped `{link}` on {host}: it is a symbolic link, and the sync never follows links")
        });
        let names = source.unsayable.iter().map(|name| {
            format!("skipped `{name}` on {host}: its name holds a newline, another control character or bytes that are not UTF-8, which the sync cannot carry; rename it to sync it")
        });
        links.chain(names).collect()
    }

    async fn apply(
        &self,
        src: &Project,
        dst: &Project,
        file: &FileInfo,
        action: Action,
        tails: &HashMap<(String, u64), Vec<u8>>,
        report: &mut SyncReport,
    ) -> Result<()> {
        let (base, target, conflict) = match action {
            Action::InSync => {
                report.files_in_sync += 1;
                return Ok(());
            }
            Action::DestinationAhead => {
                report.destination_ahead.push(file.path.clone());
                return Ok(());
            }
            Action::Append { from } => (from, file.path.clone(), None),
            Action::Create | Action::Replace => (0, file.path.clone(), None),
            Action::Conflict { copy_to, write } => {
                let (base, state) = match write {
                    CopyWrite::New => (0, CopyState::New),
                    CopyWrite::Replace => (0, CopyState::Updated),
                    CopyWrite::Append { from } => (from, CopyState::Updated),
                    CopyWrite::Unchanged => {
                        report.conflicts.push(self.conflict(
                            report,
                            file,
                            &copy_to,
                            CopyState::Unchanged,
                        ));
                        return Ok(());
                    }
                };
                (base, copy_to, Some(state))
            }
        };
        let write = Write {
            target: &target,
            base,
            len: file.size - base,
            mtime: file.mtime,
        };
        // The new tail came with the listing when the source saw the same append.
        let sent = tails
            .get(&(file.path.clone(), base))
            .filter(|_| base > 0)
            .and_then(|data| data.get(..usize::try_from(write.len).ok()?));
        if let Written::Skipped(why) = self.copy(src, dst, &file.path, &write, sent).await? {
            report.warnings.push(format!(
                "skipped `{target}` on {}: {why}",
                self.destination.host
            ));
            return Ok(());
        }
        report.files_transferred += 1;
        report.bytes_transferred += write.len;
        if let Some(state) = conflict {
            tracing::warn!(path = %file.path, copy = %target, "sync conflict: destination kept, incoming version in the copy beside it");
            report
                .conflicts
                .push(self.conflict(report, file, &target, state));
        }
        Ok(())
    }

    fn conflict(
        &self,
        report: &SyncReport,
        file: &FileInfo,
        copy: &str,
        state: CopyState,
    ) -> Conflict {
        Conflict {
            path: format!("{}/{}", report.destination_dir, file.path),
            incoming_copy: format!("{}/{copy}", report.destination_dir),
            copy: state,
        }
    }

    /// Writes `write` on the destination with its bytes from `sent` (a tail that came with the
    /// listing), else streamed from the source's `path` as it reads them.
    async fn copy(
        &self,
        src: &Project,
        dst: &Project,
        path: &str,
        write: &Write<'_>,
        sent: Option<&[u8]>,
    ) -> Result<Written> {
        let mut writer = self.destination.write(&dst.dir, write).await?;
        let Some(mut stdin) = writer.take_stdin() else {
            return Err(self.destination_failed("no stdin for the writer"));
        };
        // On failure, dropping the writer kills it before it renames anything: the destination
        // stays as it was.
        let fed = match sent {
            Some(data) => stdin
                .write_all(data)
                .await
                .map_err(|e| self.destination_failed(e)),
            None => self.stream(src, path, write, &mut stdin).await,
        };
        let closed = stdin.shutdown().await;
        drop(stdin);
        let done = writer.output().await;
        let stderr = String::from_utf8_lossy(&done.stderr).trim().to_owned();
        if done.status.code == Some(SKIPPED) {
            return Ok(Written::Skipped(stderr));
        }
        fed?;
        closed.map_err(|e| self.destination_failed(e))?;
        if done.status.code != Some(0) {
            return Err(self.destination_failed(format!("writing {}: {stderr}", write.target)));
        }
        Ok(Written::Done)
    }

    /// Feeds `stdin` the bytes of `write` as the source reads them from `path`, at the
    /// configured pace.
    async fn stream(
        &self,
        src: &Project,
        path: &str,
        write: &Write<'_>,
        stdin: &mut StdinWriter,
    ) -> Result<()> {
        let len = write.len;
        let mut reader = self.source.read(&src.dir, path, write.base, len).await?;
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
        if reader_status.and_then(|s| s.code) != Some(0) || sent != len {
            return Err(Error::Sync {
                host: self.source.host.clone(),
                reason: format!(
                    "reading {path} gave {sent} of {len} bytes: {}",
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
    fn a_link_blocks_what_lies_under_it_and_nothing_else() {
        let links = ["memory".to_owned(), "a/b".to_owned()];
        assert_eq!(blocking_link(&links, "memory/MEMORY.md"), Some("memory"));
        assert_eq!(blocking_link(&links, "memory"), Some("memory"));
        assert_eq!(blocking_link(&links, "memory2/x.md"), None);
        assert_eq!(blocking_link(&links, "a/b/c/d.jsonl"), Some("a/b"));
        assert_eq!(blocking_link(&links, "a/bc.jsonl"), None);
    }
}
