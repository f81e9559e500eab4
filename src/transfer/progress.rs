//! How far a transfer has got: files and bytes done of those planned, shared between the copy
//! and whoever reports on it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters a running transfer moves forward; readers may look at any time.
#[derive(Debug, Default)]
pub struct Progress {
    files_total: AtomicU64,
    files_done: AtomicU64,
    bytes_total: AtomicU64,
    bytes_done: AtomicU64,
}

impl Progress {
    pub(super) fn plan(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Relaxed);
        self.bytes_total.store(bytes, Relaxed);
    }

    pub(super) fn add_bytes(&self, bytes: u64) {
        self.bytes_done.fetch_add(bytes, Relaxed);
    }

    pub(super) fn file_done(&self) {
        self.files_done.fetch_add(1, Relaxed);
    }

    /// Bytes moved so far (resumed bytes count as moved).
    pub fn bytes_done(&self) -> u64 {
        self.bytes_done.load(Relaxed)
    }

    /// Bytes the transfer will move, once planned (0 before).
    pub fn bytes_total(&self) -> u64 {
        self.bytes_total.load(Relaxed)
    }

    /// One line for people: `3/10 files, 12.0 MB of 200.0 MB (34.1 MB/s)`.
    pub fn line(&self, elapsed: Duration) -> String {
        let done = self.bytes_done();
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        format!(
            "{}/{} files, {} of {} ({}/s)",
            self.files_done.load(Relaxed),
            self.files_total.load(Relaxed),
            megabytes(done),
            megabytes(self.bytes_total()),
            megabytes(rate as u64)
        )
    }
}

/// `bytes` in MB (10^6), one decimal.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_counts_files_bytes_and_rate() {
        let progress = Progress::default();
        progress.plan(10, 200_000_000);
        progress.add_bytes(12_000_000);
        progress.file_done();
        assert_eq!(
            progress.line(Duration::from_secs(2)),
            "1/10 files, 12.0 MB of 200.0 MB (6.0 MB/s)"
        );
    }
}
