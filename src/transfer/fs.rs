//! A file system a transfer reads or writes file by file: this machine's, or an SSH host's
//! through SFTP on a pooled connection. One walk of a tree serves both.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

use super::local_fs::LocalFs;
use super::sftp_fs::SftpFs;
use super::shell_fs::ShellFs;
use super::tree::{Entry, Kind, Meta, join};

/// A file being read, from some offset on.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A file being written, from some offset on; `shutdown` flushes and closes it, and reports what
/// went wrong while writing (a full disk over SFTP shows only there).
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// A host's files, reached file by file.
pub enum Fs {
    Local(LocalFs),
    Sftp(SftpFs),
    /// Containers, pods and command prefixes: `sh` commands through the transport.
    Shell(ShellFs),
}

impl Fs {
    /// `path` as this file system takes it: `~` is the login user's home, and so is the folder
    /// a relative path starts from.
    pub fn resolve(&self, path: &str) -> String {
        match self {
            Fs::Local(fs) => fs.resolve(path),
            Fs::Sftp(_) => SftpFs::resolve(path),
            Fs::Shell(_) => ShellFs::resolve(path),
        }
    }

    /// What is at `path` (following a final symlink when `follow`); `None` when nothing is.
    pub async fn stat(&self, path: &str, follow: bool) -> io::Result<Option<Meta>> {
        let found = match self {
            Fs::Local(fs) => fs.stat(path, follow).await,
            Fs::Sftp(fs) => fs.stat(path, follow).await,
            Fs::Shell(fs) => fs.stat(path, follow).await,
        };
        match found {
            Ok(meta) => Ok(Some(meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The entries of folder `path`, by name, not following symlinks.
    pub async fn read_dir(&self, path: &str) -> io::Result<Vec<(String, Meta)>> {
        match self {
            Fs::Local(fs) => fs.read_dir(path).await,
            Fs::Sftp(fs) => fs.read_dir(path).await,
            Fs::Shell(fs) => fs.read_dir(path).await,
        }
    }

    /// The tree at `root` (the root itself followed if it is a symlink, nothing below it), parents
    /// before children; `None` when there is nothing at `root`.
    pub async fn tree(&self, root: &str) -> io::Result<Option<Vec<Entry>>> {
        let Some(meta) = self.stat(root, true).await? else {
            return Ok(None);
        };
        let is_dir = meta.kind == Kind::Dir;
        let mut entries = vec![Entry {
            rel: String::new(),
            meta,
        }];
        if let (Fs::Shell(fs), true) = (self, is_dir) {
            entries.extend(fs.read_tree(root).await?);
            return Ok(Some(entries));
        }
        let mut next = 0;
        while next < entries.len() {
            if entries[next].meta.kind == Kind::Dir {
                let rel = entries[next].rel.clone();
                let mut children = self.read_dir(&join(root, &rel)).await?;
                children.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, meta) in children {
                    entries.push(Entry {
                        rel: join(&rel, &name),
                        meta,
                    });
                }
            }
            next += 1;
        }
        Ok(Some(entries))
    }

    pub async fn open_read(&self, path: &str, offset: u64) -> io::Result<Reader> {
        match self {
            Fs::Local(fs) => fs.open_read(path, offset).await,
            Fs::Sftp(fs) => fs.open_read(path, offset).await,
            Fs::Shell(fs) => fs.open_read(path, offset).await,
        }
    }

    /// Opens `path` for writing at `offset`: 0 creates or empties it; more appends to a file of
    /// exactly that length.
    pub async fn open_write(&self, path: &str, offset: u64) -> io::Result<Writer> {
        match self {
            Fs::Local(fs) => fs.open_write(path, offset).await,
            Fs::Sftp(fs) => fs.open_write(path, offset).await,
            Fs::Shell(fs) => fs.open_write(path, offset).await,
        }
    }

    /// Sets the permission bits and the modification time of `path`.
    pub async fn set_meta(&self, path: &str, mode: u32, mtime: i64) -> io::Result<()> {
        match self {
            Fs::Local(fs) => fs.set_meta(path, mode, mtime).await,
            Fs::Sftp(fs) => fs.set_meta(path, mode, mtime).await,
            Fs::Shell(fs) => fs.set_meta(path, mode, mtime).await,
        }
    }

    pub async fn mkdir(&self, path: &str) -> io::Result<()> {
        match self {
            Fs::Local(fs) => fs.mkdir(path).await,
            Fs::Sftp(fs) => fs.mkdir(path).await,
            Fs::Shell(fs) => fs.mkdir(path).await,
        }
    }

    /// Creates a symlink at `path` pointing to `target`.
    pub async fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        match self {
            Fs::Local(fs) => fs.symlink(target, path).await,
            Fs::Sftp(fs) => fs.symlink(target, path).await,
            Fs::Shell(fs) => fs.symlink(target, path).await,
        }
    }

    /// Renames `from` to `to`; `to` must not exist (see [`Fs::replace`]).
    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        match self {
            Fs::Local(fs) => fs.rename(from, to).await,
            Fs::Sftp(fs) => fs.rename(from, to).await,
            Fs::Shell(fs) => fs.rename(from, to).await,
        }
    }

    /// Renames `from` over an existing `to`: atomically here and through `sh`; over SFTP (whose rename never
    /// replaces) `to` is removed just before.
    pub async fn replace(&self, from: &str, to: &str) -> io::Result<()> {
        match self {
            Fs::Local(fs) => fs.rename(from, to).await,
            Fs::Shell(fs) => fs.rename(from, to).await,
            Fs::Sftp(fs) => fs.replace(from, to).await,
        }
    }

    pub async fn remove(&self, path: &str) -> io::Result<()> {
        match self {
            Fs::Local(fs) => fs.remove(path).await,
            Fs::Sftp(fs) => fs.remove(path).await,
            Fs::Shell(fs) => fs.remove(path).await,
        }
    }

    /// Bytes free for the login user on the file system of `path`, when it can be told.
    pub async fn free_space(&self, path: &str) -> Option<u64> {
        match self {
            Fs::Local(fs) => fs.free_space(path).await,
            Fs::Sftp(fs) => fs.free_space(path).await,
            Fs::Shell(fs) => fs.free_space(path).await,
        }
    }
}

/// The metadata of an entry from its raw `st_mode` (type and permission bits), size and mtime.
pub fn meta_from_mode(mode: u32, size: u64, mtime: i64, link: Option<String>) -> Meta {
    const TYPE: u32 = 0o170000;
    let kind = match mode & TYPE {
        0o100000 => Kind::File,
        0o040000 => Kind::Dir,
        0o120000 => Kind::Symlink(link.unwrap_or_default()),
        _ => Kind::Other,
    };
    Meta {
        size: if kind == Kind::File { size } else { 0 },
        kind,
        mtime,
        mode: mode & 0o7777,
    }
}
