//! This machine's files for a transfer, through tokio's file system calls.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncSeekExt, BufWriter};

use super::fs::{Reader, Writer, meta_from_mode};
use super::tree::Meta;

/// Bytes gathered before each write to a local file.
const WRITE_BUFFER: usize = 256 << 10;

/// The local file system; relative paths and `~` start from `home`.
pub struct LocalFs {
    home: PathBuf,
}

impl LocalFs {
    pub fn new(home: PathBuf) -> Self {
        Self { home }
    }

    pub fn resolve(&self, path: &str) -> String {
        let expanded = crate::home::expand(path, &self.home);
        let absolute = if expanded.is_absolute() {
            expanded
        } else {
            self.home.join(expanded)
        };
        let text = absolute.to_string_lossy().into_owned();
        // `dir/` keeps its slash: it says "into this folder".
        if path.ends_with('/') && !text.ends_with('/') {
            format!("{text}/")
        } else {
            text
        }
    }

    pub async fn stat(&self, path: &str, follow: bool) -> io::Result<Meta> {
        let meta = if follow {
            tokio::fs::metadata(path).await?
        } else {
            tokio::fs::symlink_metadata(path).await?
        };
        let link = if meta.file_type().is_symlink() {
            Some(link_text(path).await?)
        } else {
            None
        };
        Ok(meta_from_mode(meta.mode(), meta.size(), meta.mtime(), link))
    }

    pub async fn read_dir(&self, path: &str) -> io::Result<Vec<(String, Meta)>> {
        let mut dir = tokio::fs::read_dir(path).await?;
        let mut entries = Vec::new();
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let full = entry.path();
            let meta = tokio::fs::symlink_metadata(&full).await?;
            let link = if meta.file_type().is_symlink() {
                Some(link_text(&full).await?)
            } else {
                None
            };
            let meta = meta_from_mode(meta.mode(), meta.size(), meta.mtime(), link);
            entries.push((name, meta));
        }
        Ok(entries)
    }

    pub async fn open_read(&self, path: &str, offset: u64) -> io::Result<Reader> {
        let mut file = tokio::fs::File::open(path).await?;
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(Box::new(file))
    }

    pub async fn open_write(&self, path: &str, offset: u64) -> io::Result<Writer> {
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create(true).truncate(offset == 0);
        let mut file = options.open(path).await?;
        if offset > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
        }
        Ok(Box::new(BufWriter::with_capacity(WRITE_BUFFER, file)))
    }

    pub async fn set_meta(&self, path: &str, mode: u32, mtime: i64) -> io::Result<()> {
        let path = PathBuf::from(path);
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
        blocking(move || {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
            let file = std::fs::File::open(&path)?;
            file.set_modified(time)
        })
        .await
    }

    pub async fn mkdir(&self, path: &str) -> io::Result<()> {
        tokio::fs::create_dir(path).await
    }

    pub async fn symlink(&self, target: &str, path: &str) -> io::Result<()> {
        tokio::fs::symlink(target, path).await
    }

    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        tokio::fs::rename(from, to).await
    }

    pub async fn remove(&self, path: &str) -> io::Result<()> {
        tokio::fs::remove_file(path).await
    }

    pub async fn free_space(&self, path: &str) -> Option<u64> {
        let path = PathBuf::from(path);
        let stat = blocking(move || nix::sys::statvfs::statvfs(&path).map_err(io::Error::from));
        let stat = stat.await.ok()?;
        Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
    }
}

async fn link_text(path: impl AsRef<Path>) -> io::Result<String> {
    Ok(tokio::fs::read_link(path)
        .await?
        .to_string_lossy()
        .into_owned())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(io::Error::other)?
}
