//! Writing a file so that readers see the old content or the new, never half of either, and
//! locking it so that concurrent read-modify-write cycles do not lose each other's changes.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` (temp file in the same directory, fsync, rename), readable by
/// its owner only. Creates missing parent directories.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The lock file of `path`: beside it, its extension replaced by `lock` (`config.lock`). The file
/// itself cannot carry the lock: every write replaces it by a rename.
pub fn lock_path(path: &Path) -> PathBuf {
    path.with_extension("lock")
}

/// Takes the exclusive advisory lock of `path` (waiting for it), held until the returned file is
/// dropped: read, change and [`write_atomic`] under it. Creates missing parent directories.
pub fn lock(path: &Path) -> std::io::Result<File> {
    let lock_path = lock_path(path);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = File::create(lock_path)?;
    file.lock()?;
    Ok(file)
}
