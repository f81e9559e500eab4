//! Copying files and folders between any two hosts outpost knows, without the bytes passing
//! through the model: SFTP for SSH hosts, the file system here, and small `sh` commands over the
//! transport's stdin and stdout for containers and pods; host to host through this machine.

mod engine;
mod fs;
mod local_fs;
mod progress;
mod sftp_fs;
mod shell_fs;
mod tree;

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use engine::copy;
pub use progress::{Progress, megabytes};

use crate::error::{Error, Result};
use crate::hosts::{Hosts, LOCAL};
use crate::ssh::SshTarget;
use crate::transport::Transport;
use fs::Fs;

/// `host:path`, or a bare path on `local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub host: String,
    pub path: String,
}

impl Location {
    /// Reads `host:path`, given as argument `field`; a path with no `host:` before it (nothing
    /// before a `:`, or a `/` there) is on `local`.
    pub fn parse(text: &str, field: &'static str) -> Result<Self> {
        let text = text.trim();
        let (host, path) = match text.split_once(':') {
            Some((host, path)) if !host.is_empty() && !host.contains('/') => (host, path),
            _ => (LOCAL, text),
        };
        let path = if path.is_empty() { "~/" } else { path };
        if text.is_empty() {
            return Err(Error::InvalidArgument {
                field,
                reason: "is empty: give `host:path`, or a path on this machine".to_owned(),
            });
        }
        Ok(Self {
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.path)
    }
}

/// What a transfer may do at the destination.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Replace destination files that differ from the source.
    pub overwrite: bool,
    /// Judge unchanged files by hash, not size and mtime, and check every copy by hash.
    pub verify: bool,
}

/// One end of a transfer: a host's files, and the path given there.
pub struct End {
    pub host: String,
    pub path: String,
    fs: Fs,
}

/// How an end's host is reached, decided without connecting.
enum Reach {
    Local,
    Sftp(SshTarget),
    Shell(Transport),
}

impl Reach {
    /// `local`, an SSH host, or any other host's transport; an unknown host or a group fails.
    fn of(hosts: &Hosts, host: &str) -> Result<Self> {
        if host == LOCAL {
            return Ok(Reach::Local);
        }
        match hosts.ssh_target(host) {
            Some(target) => Ok(Reach::Sftp(target)),
            None => Ok(Reach::Shell(hosts.resolve(host)?)),
        }
    }
}

impl End {
    /// Fails as opening would for an unknown host or a group, without connecting.
    pub fn check(hosts: &Hosts, location: &Location) -> Result<()> {
        Reach::of(hosts, &location.host).map(drop)
    }

    /// Opens `location` on its host: the local file system, an SFTP session, or `sh` commands
    /// through the host's transport (containers, pods, command prefixes).
    pub async fn open(hosts: &Hosts, location: &Location) -> Result<Self> {
        let fs = match Reach::of(hosts, &location.host)? {
            Reach::Local => Fs::Local(local_fs::LocalFs::new(hosts.home().to_owned())),
            Reach::Sftp(target) => Fs::Sftp(sftp_fs::SftpFs::open(hosts.pool(), &target).await?),
            Reach::Shell(transport) => Fs::Shell(shell_fs::ShellFs::new(transport)),
        };
        Ok(Self {
            host: location.host.clone(),
            path: location.path.clone(),
            fs,
        })
    }

    /// `host:path` for messages.
    fn place(&self, path: &str) -> String {
        format!("{}:{path}", self.host)
    }
}

/// Opens both ends at once, then copies `source` to `dest` (see [`copy`]).
pub async fn open_and_copy(
    hosts: &Hosts,
    source: &Location,
    dest: &Location,
    options: &Options,
    progress: &Progress,
) -> Result<Summary> {
    let (from, to) = tokio::try_join!(End::open(hosts, source), End::open(hosts, dest))?;
    copy(&from, &to, options, progress).await
}

/// What a transfer did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    /// Where the copy came from (`host:path`).
    pub source: String,
    /// Where the copy now is (`host:path`): inside the destination when that was a folder.
    pub destination: String,
    /// Files copied.
    pub files: u64,
    /// Files and links left alone because the destination already had them unchanged.
    pub skipped: u64,
    /// Folders created.
    pub dirs: u64,
    /// Symlinks created (as links: never followed).
    pub links: u64,
    /// Bytes sent this time.
    pub bytes: u64,
    /// Bytes not sent again because a partial file from an interrupted transfer was resumed.
    pub resumed_bytes: u64,
    /// With `verify`: files whose copy was checked by SHA-256 against the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<u64>,
    /// Sockets, fifos and devices in the source: not copied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_copied: Vec<String>,
    pub duration_ms: u64,
    /// Bytes sent per second, in MB (10^6).
    pub mb_per_s: f64,
}

impl Summary {
    fn new(source: &End, dest: &End, target: &str) -> Self {
        Self {
            source: source.place(&source.path),
            destination: dest.place(target),
            ..Self::default()
        }
    }

    fn finish(&mut self, took: Duration) {
        self.bytes = self.bytes.saturating_sub(self.resumed_bytes);
        self.duration_ms = took.as_millis().min(u64::MAX as u128) as u64;
        let rate = self.bytes as f64 / took.as_secs_f64().max(0.001) / 1e6;
        self.mb_per_s = (rate * 10.0).round() / 10.0;
    }

    /// One line for people: `copied 3 files (12.0 MB) to gpu1:/x in 1.2s (10.0 MB/s); 2 skipped`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "copied {} file(s) ({}) to {} in {:.1}s ({:.1} MB/s)",
            self.files,
            megabytes(self.bytes),
            self.destination,
            self.duration_ms as f64 / 1000.0,
            self.mb_per_s
        );
        for (count, what) in [
            (self.skipped, "unchanged, skipped"),
            (self.dirs, "folder(s) created"),
            (self.links, "link(s) created"),
        ] {
            if count > 0 {
                line.push_str(&format!("; {count} {what}"));
            }
        }
        if self.resumed_bytes > 0 {
            line.push_str(&format!("; resumed {}", megabytes(self.resumed_bytes)));
        }
        if let Some(verified) = self.verified {
            line.push_str(&format!("; {verified} verified by SHA-256"));
        }
        if !self.not_copied.is_empty() {
            line.push_str(&format!(
                "; not copied (not files): {}",
                self.not_copied.join(", ")
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_name_a_host_or_mean_local() {
        let at = |text: &str| {
            let l = Location::parse(text, "source").unwrap();
            (l.host, l.path)
        };
        let pair = |h: &str, p: &str| (h.to_owned(), p.to_owned());
        assert_eq!(
            at("gpu1:~/run/model.ckpt"),
            pair("gpu1", "~/run/model.ckpt")
        );
        assert_eq!(at("me@box:/tmp/x"), pair("me@box", "/tmp/x"));
        assert_eq!(at("/tmp/a:b"), pair("local", "/tmp/a:b"));
        assert_eq!(at("./a:b"), pair("local", "./a:b"));
        assert_eq!(at("ckpt/"), pair("local", "ckpt/"));
        assert_eq!(at("gpu1:"), pair("gpu1", "~/"));
        assert!(Location::parse("  ", "source").is_err());
    }
}
