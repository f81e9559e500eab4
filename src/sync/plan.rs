//! What to do with each file: the pure decision between "in sync", "send the new tail", "copy it",
//! and "keep the destination and write the incoming copy beside it" — one copy per diverged
//! file, brought up to date rather than written again.

use std::collections::HashMap;

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
    /// The destination has what the source lacks: keep it, and hold the source's version in its
    /// conflict copy at `copy_to` (the one already there, else a new one).
    Conflict { copy_to: String, write: CopyWrite },
    /// The destination already holds all of the source and more: nothing to send.
    DestinationAhead,
}

/// What a conflict does to the destination's conflict copy of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyWrite {
    /// No copy yet: write the source's version as a new one.
    New,
    /// The copy already holds the source's version: nothing to write.
    Unchanged,
    /// The copy holds an earlier state of the source's log: append bytes `from..`.
    Append { from: u64 },
    /// The copy holds another version: replace it with the source's.
    Replace,
}

/// The destination's conflict copy of a file, as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    pub file: &'a FileInfo,
    /// The source's hash of its window ending at the copy's size.
    pub source_hash: Option<&'a str>,
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
/// `source.size` bytes. A conflict goes to `copy`, the destination's conflict copy of the file,
/// when there is one; else to a new one named with `stamp` (`<id>.conflict-<stamp>.jsonl`).
pub fn decide(
    source: &FileInfo,
    dest: Option<&FileInfo>,
    dest_prefix: Option<&str>,
    copy: Option<Copy<'_>>,
    stamp: &str,
) -> Action {
    let Some(dest) = dest else {
        return Action::Create;
    };
    if source.size == dest.size && source.hash == dest.hash {
        return Action::InSync;
    }
    let conflict = || match copy {
        Some(copy) => Action::Conflict {
            copy_to: copy.file.path.clone(),
            write: copy_write(source, copy),
        },
        None => Action::Conflict {
            copy_to: conflict_name(&source.path, stamp),
            write: CopyWrite::New,
        },
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

/// How the existing conflict copy takes the source's version: the same window at the same size
/// is the same version; a log that grew past the copy's end adds its tail.
fn copy_write(source: &FileInfo, copy: Copy<'_>) -> CopyWrite {
    let same_window = copy
        .source_hash
        .is_some_and(|h| !h.is_empty() && h == copy.file.hash);
    if same_window && source.size == copy.file.size {
        CopyWrite::Unchanged
    } else if same_window && is_append_only(&source.path) && copy.file.size < source.size {
        CopyWrite::Append {
            from: copy.file.size,
        }
    } else {
        CopyWrite::Replace
    }
}

/// The newest conflict copy of each file, by the file's path (the stamp in the name sorts by time).
pub fn latest_copies(copies: &[FileInfo]) -> HashMap<String, &FileInfo> {
    let mut latest: HashMap<String, &FileInfo> = HashMap::new();
    for copy in copies {
        let Some(original) = original_of(&copy.path) else {
            continue;
        };
        let newer = latest.get(&original).is_none_or(|c| c.path < copy.path);
        if newer {
            latest.insert(original, copy);
        }
    }
    latest
}

/// Whether `path` names a conflict copy (`….conflict-…`); those are never synced themselves.
pub fn is_conflict_copy(path: &str) -> bool {
    split_name(path).1.contains(".conflict-")
}

/// `dir/name.conflict-STAMP.ext` → `dir/name.ext` (the inverse of [`conflict_name`]).
fn original_of(copy: &str) -> Option<String> {
    let (dir, file) = split_name(copy);
    let at = file.rfind(".conflict-")?;
    let after = &file[at + ".conflict-".len()..];
    let ext = after.find('.').map_or("", |i| &after[i..]);
    Some(format!("{dir}{}{ext}", &file[..at]))
}

/// `(folder with its slash, file name)`.
fn split_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// `dir/name.ext` → `dir/name.conflict-STAMP.ext`.
pub fn conflict_name(path: &str, stamp: &str) -> String {
    let (dir, file) = split_name(path);
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
        assert_eq!(decide(&src, None, None, None, "T"), Action::Create);
        assert_eq!(
            decide(&src, Some(&src.clone()), None, None, "T"),
            Action::InSync
        );
        // The source's hash covers its first 60 bytes: the destination's length.
        let prefix_src = file("s.jsonl", 100, 5, "h60");
        let shorter = file("s.jsonl", 60, 9, "h60");
        assert_eq!(destination_prefix_needed(&prefix_src, &shorter), None);
        assert_eq!(
            decide(&prefix_src, Some(&shorter), None, None, "T"),
            Action::Append { from: 60 }
        );
        let diverged = file("s.jsonl", 60, 9, "other");
        assert_eq!(
            decide(&prefix_src, Some(&diverged), None, None, "T"),
            Action::Conflict {
                copy_to: "s.conflict-T.jsonl".into(),
                write: CopyWrite::New
            }
        );
        let longer = file("s.jsonl", 150, 1, "h150");
        assert_eq!(destination_prefix_needed(&src, &longer), Some(100));
        assert_eq!(
            decide(&src, Some(&longer), Some("full"), None, "T"),
            Action::DestinationAhead
        );
        assert!(matches!(
            decide(&src, Some(&longer), Some("x"), None, "T"),
            Action::Conflict { .. }
        ));
        let same_size = file("s.jsonl", 100, 1, "different");
        assert!(matches!(
            decide(&src, Some(&same_size), None, None, "T"),
            Action::Conflict { .. }
        ));
    }

    #[test]
    fn rewritten_files_go_by_mtime_and_never_lose_the_newer() {
        let src = file("memory/MEMORY.md", 10, 200, "new");
        let older = file("memory/MEMORY.md", 12, 100, "old");
        assert_eq!(destination_prefix_needed(&src, &older), None);
        assert_eq!(decide(&src, Some(&older), None, None, "T"), Action::Replace);
        let newer = file("memory/MEMORY.md", 12, 300, "mine");
        assert_eq!(
            decide(&src, Some(&newer), None, None, "T"),
            Action::Conflict {
                copy_to: "memory/MEMORY.conflict-T.md".into(),
                write: CopyWrite::New
            }
        );
    }

    #[test]
    fn conflict_names_keep_directory_and_extension() {
        for (path, copy) in [
            ("a/b/README", "a/b/README.conflict-X"),
            (".hidden", ".hidden.conflict-X"),
            ("id.jsonl", "id.conflict-X.jsonl"),
            ("m/a.tar.gz", "m/a.tar.conflict-X.gz"),
            ("--help", "--help.conflict-X"),
        ] {
            assert_eq!(conflict_name(path, "X"), copy);
            assert!(is_conflict_copy(copy) && !is_conflict_copy(path));
            assert_eq!(original_of(copy).as_deref(), Some(path));
        }
        assert!(!is_conflict_copy("a.conflict-x/b.jsonl"));
    }

    #[test]
    fn one_divergence_keeps_one_copy_brought_up_to_date() {
        let dest = file("s.jsonl", 60, 9, "mine");
        let copy = file("s.conflict-OLD.jsonl", 80, 5, "c80");
        let src = file("s.jsonl", 80, 5, "h60");
        let with = |source_hash| Copy {
            file: &copy,
            source_hash: Some(source_hash),
        };
        let to_copy = |write| Action::Conflict {
            copy_to: copy.path.clone(),
            write,
        };
        // The same incoming version again: nothing written.
        let same = decide(&src, Some(&dest), None, Some(with("c80")), "NEW");
        assert_eq!(same, to_copy(CopyWrite::Unchanged));
        // The host's log grew past the copy: only the tail goes to the copy.
        let grown = file("s.jsonl", 95, 6, "h60");
        let appended = decide(&grown, Some(&dest), None, Some(with("c80")), "NEW");
        assert_eq!(appended, to_copy(CopyWrite::Append { from: 80 }));
        // Another version altogether replaces the copy, under the same name.
        let other = decide(&grown, Some(&dest), None, Some(with("zz")), "NEW");
        assert_eq!(other, to_copy(CopyWrite::Replace));
        let unknown = Copy {
            file: &copy,
            source_hash: None,
        };
        let unknown = decide(&grown, Some(&dest), None, Some(unknown), "NEW");
        assert_eq!(unknown, to_copy(CopyWrite::Replace));
        // A rewritten file is never appended to.
        let notes = file("n.md", 95, 6, "x");
        let notes_copy = file("n.conflict-OLD.md", 80, 5, "c80");
        let notes_dest = file("n.md", 60, 9, "mine");
        let copy = Copy {
            file: &notes_copy,
            source_hash: Some("c80"),
        };
        assert!(matches!(
            decide(&notes, Some(&notes_dest), None, Some(copy), "NEW"),
            Action::Conflict {
                write: CopyWrite::Replace,
                ..
            }
        ));
    }

    #[test]
    fn the_newest_copy_of_each_file_is_the_one_kept_current() {
        let copies = [
            file("s.conflict-20260101T000000Z.jsonl", 1, 1, ""),
            file("s.conflict-20261121T153045Z.jsonl", 1, 1, ""),
            file("m/n.conflict-20260101T000000Z.md", 1, 1, ""),
        ];
        let latest = latest_copies(&copies);
        assert_eq!(latest["s.jsonl"].path, "s.conflict-20261121T153045Z.jsonl");
        assert_eq!(latest["m/n.md"].path, "m/n.conflict-20260101T000000Z.md");
        assert_eq!(latest.len(), 2);
    }
}
