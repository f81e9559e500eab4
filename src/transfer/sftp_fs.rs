//! An SSH host's files for a transfer: one SFTP session (russh-sftp) on a channel of the pooled
//! connection, with reads and writes pipelined by the crate.

use std::io;
use std::sync::Arc;

use std::time::Duration;

use russh::ChannelMsg;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::AsyncSeekExt;

use super::fs::{Reader, Writer, meta_from_mode};
use super::tree::Meta;
use crate::error::{Error, Result};
use crate::ssh::SshTarget;
use crate::ssh::pool::{Lease, OnRefusal, PooledConnection, SshPool};

/// Seconds an SFTP request may wait for its answer before the transfer fails (a stalled link).
const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Seconds the server gets to answer the start of a session: one without the sftp subsystem
/// never does.
const START_TIMEOUT_SECS: u64 = 10;
/// Requests in flight per file: with 255 KiB each, enough to keep a fast link busy while
/// bounding what waits in buffers (4 MiB a file).
const IN_FLIGHT: usize = 16;
/// Bytes a write request carries at most: OpenSSH's server takes up to 256 KiB messages, and
/// fewer, larger requests cost less than 32 KiB ones.
const WRITE_PACKET: u32 = 255 << 10;

/// An SFTP session on `host`. Dropping it closes the session and frees its channel slot.
pub struct SftpFs {
    sftp: SftpSession,
    _lease: Lease,
}

impl SftpFs {
    /// Opens an SFTP session to `target` on a pooled connection.
    pub async fn open(pool: &SshPool, target: &SshTarget) -> Result<Self> {
        let open = |c: Arc<PooledConnection>| async move { c.handle.channel_open_session().await };
        let (lease, mut channel) = pool
            .open_channel(target, OnRefusal::TryAnotherConnection, open)
            .await?;
        let unavailable = |reason: String| Error::Transfer {
            op: "start SFTP on",
            place: target.name.clone(),
            reason: format!(
                "{reason}; enable the sftp subsystem in the host's sshd_config (`Subsystem sftp internal-sftp`)"
            ),
        };
        (channel.request_subsystem(true, "sftp").await).map_err(|e| unavailable(e.to_string()))?;
        // The server's answer first: one without the subsystem refuses, and would never speak.
        let answer = tokio::time::timeout(Duration::from_secs(START_TIMEOUT_SECS), async {
            loop {
                match channel.wait().await {
                    Some(ChannelMsg::Success) => return Ok(()),
                    Some(ChannelMsg::Failure) => return Err("the server has no sftp subsystem"),
                    Some(ChannelMsg::Close | ChannelMsg::Eof) | None => {
                        return Err("the server closed the channel");
                    }
                    Some(_) => {}
                }
            }
        });
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(unavailable(why.to_owned())),
            Err(_) => return Err(unavailable("the server did not answer".to_owned())),
        }
        let config = russh_sftp::client::Config {
            max_concurrent_reads: IN_FLIGHT,
            max_concurrent_writes: IN_FLIGHT,
            max_write_packet_len: WRITE_PACKET,
            request_timeout_secs: START_TIMEOUT_SECS,
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), config)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        sftp.set_timeout(REQUEST_TIMEOUT_SECS);
        Ok(Self {
            sftp,
            _lease: lease,
        })
    }

    /// SFTP paths start from the login user's home: `~/x` is `x` there.
    pub fn resolve(path: &str) -> String {
        match crate::home::in_home(path) {
            Some("") => ".".to_owned(),
            Some(rest) => rest.to_owned(),
            None if path.is_empty() => ".".to_owned(),
            None => path.to_owned(),
        }
    }

    pub async fn stat(&self, path: &str, follow: bool) -> io::Result<Meta> {
        let attrs = if follow {
            self.sftp.metadata(path).await
        } else {
            self.sftp.symlink_metadata(path).await
        };
        let attrs = attrs.map_err(to_io)?;
        let link = if attrs.is_symlink() {
            Some(self.sftp.read_link(path).await.map_err(to_io)?)
        } else {
            None
        };
        Ok(meta_of(&attrs, link))
    }

    pub async fn read_dir(&self, path: &str) -> io::Result<Vec<(String, Meta)>> {
        let entries = self.sftp.read_dir(path).await.map_err(to_io)?;
        let mut out = Vec::new();
        for entry in entries {
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let attrs = entry.metadata();
            let link = if attrs.is_symlink() {
                Some(self.sftp.read_link(entry.path()).await.map_err(to_io)?)
            } else {
                None
            };
            out.push((name, meta_of(&attrs, link)));
        }
        Ok(out)
    }

    pub async fn open_read(&self, path: &str, offset: u64) -> io::Result<Reader> {
        let mut file = self.sftp.open(path).await.map_err(to_io)?;
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(Box::new(file))
    }

    pub async fn open_write(&self, path: &str, offset: u64) -> io::Result<Writer> {
        let flags = if offset == 0 {
            OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::WRITE
        } else {
            OpenFlags::WRITE
        };
        let mut file = self
            .sftp
            .open_with_flags(path, flags)
            .await
            .map_err(to_io)?;
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(Box::new(file))
    }

    pub async fn set_meta(&self, path: &str, mode: u32, mtime: i64) -> io::Result<()> {
        let time = mtime.clamp(0, u32::MAX as i64) as u32;
        let attrs = FileAttributes {
            permissions: Some(mode),
            atime: Some(time),
            mtime: Some(time),
            ..FileAttributes::empty()
        };
        self.sftp.set_metadata(path, attrs).await.map_err(to_io)
    }

    pub async fn mkdir(&self, path: &str) -> io::Result<()> {
        self.sftp.create_dir(path).await.map_err(to_io)
    }

    pub async fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        // OpenSSH's sftp-server takes SSH_FXP_SYMLINK's two paths in the opposite order to the
        // draft (target first), and every deployed server follows it.
        self.sftp.symlink(target, path).await.map_err(to_io)
    }

    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.sftp.rename(from, to).await.map_err(to_io)
    }

    /// Renames `from` over an existing `to`: SFTP v3's rename never replaces, so `to` is removed
    /// just before (russh-sftp does not offer `posix-rename@openssh.com`).
    pub async fn replace(&self, from: &str, to: &str) -> io::Result<()> {
        match self.remove(to).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.rename(from, to).await
    }

    pub async fn remove(&self, path: &str) -> io::Result<()> {
        self.sftp.remove_file(path).await.map_err(to_io)
    }

    pub async fn free_space(&self, path: &str) -> Option<u64> {
        let info = self.sftp.fs_info(path).await.ok()??;
        Some(info.blocks_avail.saturating_mul(info.fragment_size))
    }
}

fn meta_of(attrs: &FileAttributes, link: Option<String>) -> Meta {
    let mode = attrs.permissions.unwrap_or(0);
    let mtime = attrs.mtime.unwrap_or(0) as i64;
    meta_from_mode(mode, attrs.size.unwrap_or(0), mtime, link)
}

/// An SFTP failure as an I/O error of the matching kind, its text kept.
pub fn to_io(error: SftpError) -> io::Error {
    let kind = match &error {
        SftpError::Status(status) => match status.status_code {
            StatusCode::NoSuchFile => io::ErrorKind::NotFound,
            StatusCode::PermissionDenied => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        },
        SftpError::Timeout => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error)
}
