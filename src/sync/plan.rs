//! What to do with each file: the pure decision between "in sync", "send the new tail", "copy it",
//! and "keep the destination and write the incoming copy beside it".

/// One file on one side, as its listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Path relative to the project directory.
    pub path: String,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// sha256 (hex) of the (at most 64 KiB) window that ends at the compared length: on the
    /// destination, its size; on the source, `min(size, destination size)` (empty when the
    /// destination has no such file). Session logs only grow, so equal sizes and equal windows
    /// mean the same log, without reading all of a 50 MB file on every sync.
    pub hash: String,
}

/// The decision for one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Same bytes on both sides.
    InSync,
    /// The destination is a prefix of the source: send bytes `from..` and append them.
    Append { from: u64 },
    /// No destination file: copy the whole file.
    Create,
    /// A rewritten file (not a session log) that is newer at the source: replace the destination.
    Replace,
    /// The destination has what the source lacks: keep it, write the source beside it at `copy_to`.
    Conflict { copy_to: String },
    /// The destination already holds all of the source and more: nothing to send.
    DestinationAhead,
}

/// Session logs only ever grow; everything else (memory notes, sidecar files) may be rewritten.
pub fn is_append_only(path: &str) -> bool {
    path.ends_with(".jsonl")
}

/// The length at which the destination's prefix hash is needed: when a session log there is
/// longer than the source (is the source a prefix of it, or did they diverge?).
pub fn destination_prefix_needed(source: &FileInfo, dest: &FileInfo) -> Option<u64> {
    (is_append_only(&source.path) && dest.size > source.size).then_some(source.size)
}

/// Decides what to do with `source`, given the destination's file (if any) and, where
/// [`destination_prefix_needed`] asked for it, the hash of the destination's first
/// `source.size` bytes. `stamp` names conflict copies (`<id>.conflict-<stamp>.jsonl`).
pub fn decide(
    source: &FileInfo,
    dest: Option<&FileInfo>,
    dest_prefix: Option<&str>,
    stamp: &str,
) -> Action {
    let Some(dest) = dest else {
        return Action::Create;
    };
    if source.size == dest.size && source.hash == dest.hash {
        return Action::InSync;
    }
    let conflict = || Action::Conflict {
        copy_to: conflict_name(&source.path, stamp),
    };
    if !is_append_only(&source.path) {
        return if source.mtime > dest.mtime {
            Action::Replace
        } else {
            conflict()
        };
    }
    if dest.size < source.size && source.hash == dest.hash {
        return Action::Append { from: dest.size };
    }
    if dest.size > source.size && dest_prefix == Some(source.hash.as_str()) {
        return Action::DestinationAhead;
    }
    conflict()
}

/// `dir/name.ext` → `dir/name.conflict-STAMP.ext`.
pub fn conflict_name(path: &str, stamp: &str) -> String {
    let (dir, file) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    match file.rfind('.').filter(|i| *i > 0) {
        Some(i) => format!("{dir}{}.conflict-{stamp}{}", &file[..i], &file[i..]),
        None => format!("{dir}{file}.conflict-{stamp}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, mtime: i64, hash: &str) -> FileInfo {
        FileInfo {
            path: path.into(),
            size,
            mtime,
            hash: hash.into(),
        }
    }

    #[test]
    fn session_logs_append_stay_or_conflict() {
        let src = file("s.jsonl", 100, 5, "full");
        assert_eq!(decide(&src, None, None, "T"), Action::Create);
        assert_eq!(decide(&src, Some(&src.clone()), None, "T"), Action::InSync);
        // The source's hash covers its first 60 bytes: the destination's length.
        let prefix_src = file("s.jsonl", 100, 5, "h60");
        let shorter = file("s.jsonl", 60, 9, "h60");
        assert_eq!(destination_prefix_needed(&prefix_src, &shorter), None);
        assert_eq!(
            decide(&prefix_src, Some(&shorter), None, "T"),
            Action::Append { from: 60 }
        );
        let diverged = file("s.jsonl", 60, 9, "other");
        assert_eq!(
            decide(&prefix_src, Some(&diverged), None, "T"),
            Action::Conflict {
                copy_to: "s.conflict-T.jsonl".into()
            }
        );
        let longer = file("s.jsonl", 150, 1, "h150");
        assert_eq!(destination_prefix_needed(&src, &longer), Some(100));
        assert_eq!(
            decide(&src, Some(&longer), Some("full"), "T"),
            Action::DestinationAhead
        );
        assert!(matches!(
            decide(&src, Some(&longer), Some("x"), "T"),
            Action::Conflict { .. }
        ));
        let same_size = file("s.jsonl", 100, 1, "different");
        assert!(matches!(
            decide(&src, Some(&same_size), None, "T"),
            Action::Conflict { .. }
        ));
    }

    #[test]
    fn rewritten_files_go_by_mtime_and_never_lose_the_newer() {
        let src = file("memory/MEMORY.md", 10, 200, "new");
        let older = file("memory/MEMORY.md", 12, 100, "old");
        assert_eq!(destination_prefix_needed(&src, &older), None);
        assert_eq!(decide(&src, Some(&older), None, "T"), Action::Replace);
        let newer = file("memory/MEMORY.md", 12, 300, "mine");
        assert_eq!(
            decide(&src, Some(&newer), None, "T"),
            Action::Conflict {
                copy_to: "memory/MEMORY.conflict-T.md".into()
            }
        );
    }

    #[test]
    fn conflict_names_keep_directory_and_extension() {
        assert_eq!(conflict_name("a/b/README", "X"), "a/b/README.conflict-X");
        assert_eq!(conflict_name(".hidden", "X"), ".hidden.conflict-X");
        assert_eq!(conflict_name("id.jsonl", "X"), "id.conflict-X.jsonl");
    }
}
