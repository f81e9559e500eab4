//! What a sync was asked to do and what it did: the types the `sync_sessions` tool returns.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which way files move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Host → this machine.
    Pull,
    /// This machine → host.
    Push,
}

/// What a sync did to the conflict copy of a diverged file (one per file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    /// Written now: the first divergence seen.
    New,
    /// Brought up to the source's newer version (its new tail appended, or replaced).
    Updated,
    /// Already held the source's version: nothing written.
    Unchanged,
}

/// A destination file that was kept because it holds what the source lacks.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Conflict {
    /// The destination file, left as it was.
    pub path: String,
    /// The file's conflict copy, which holds the source's version.
    pub incoming_copy: String,
    pub copy: CopyState,
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct SyncReport {
    /// The project folder read from (on the source side).
    pub source_dir: String,
    /// The project folder written to (on the destination side).
    pub destination_dir: String,
    pub files_examined: usize,
    pub files_transferred: usize,
    /// Bytes of file content sent (a tail when only a tail was new).
    pub bytes_transferred: u64,
    pub files_in_sync: usize,
    /// Destination files that already hold all of the source and more (left alone).
    pub destination_ahead: Vec<String>,
    pub conflicts: Vec<Conflict>,
    /// Files passed over (symbolic links, names the sync cannot carry) and why.
    pub warnings: Vec<String>,
}
