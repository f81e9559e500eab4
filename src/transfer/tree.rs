//! What a transfer sees of a file tree (entries with kind, size, mtime and mode) and the plan
//! that compares the source's tree with what the destination already holds.

use std::collections::HashMap;

/// What an entry is. Symlinks are never followed inside a tree: they are copied as links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    /// A symbolic link, with its target as written.
    Symlink(String),
    /// A socket, fifo or device: never copied.
    Other,
}

/// An entry's metadata, as both ends can keep it: mtimes in whole seconds (what SFTP and tar
/// carry), permission bits without the type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
}

/// One entry of a tree, by its path relative to the tree's root (`""` is the root itself).
#[derive(Debug, Clone)]
pub struct Entry {
    pub rel: String,
    pub meta: Meta,
}

/// What to do with one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not at the destination: copy it.
    Copy,
    /// At the destination and different: replace it (only with `overwrite`).
    Replace,
    /// The same size and mtime at the destination: leave it.
    Skip,
    /// The same size (`verify`): compare the contents' hashes to know.
    Compare,
}

/// A source file and what to do with it.
#[derive(Debug, Clone)]
pub struct FilePlan {
    pub entry: Entry,
    pub decision: Decision,
}

/// Everything a transfer will do, decided before anything is written.
#[derive(Debug, Default)]
pub struct Plan {
    /// Source folders, parents before children.
    pub dirs: Vec<Entry>,
    pub files: Vec<FilePlan>,
    /// Symlinks to create (or replace, with `overwrite`).
    pub links: Vec<Entry>,
    /// Symlinks already there with the same target.
    pub links_same: u64,
    /// Sockets, fifos and devices, which are not copied.
    pub special: Vec<String>,
    /// Destination entries that differ and are not replaced without `overwrite`.
    pub conflicts: Vec<String>,
    /// Destination entries of another kind (a folder where the source has a file...): never
    /// replaced.
    pub clashes: Vec<String>,
}

/// Compares `source` with `dest` (the destination's tree at the same root, empty when there is
/// none); `verify` turns a same-size file into a hash comparison instead of trusting mtimes.
pub fn plan(source: &[Entry], dest: &[Entry], overwrite: bool, verify: bool) -> Plan {
    let there: HashMap<&str, &Meta> = dest.iter().map(|e| (e.rel.as_str(), &e.meta)).collect();
    let mut plan = Plan::default();
    for entry in source {
        let existing = there.get(entry.rel.as_str()).copied();
        let place = || display_rel(&entry.rel);
        match (&entry.meta.kind, existing) {
            (Kind::Other, _) => plan.special.push(place()),
            (
                Kind::Dir,
                None
                | Some(Meta {
                    kind: Kind::Dir, ..
                }),
            ) => plan.dirs.push(entry.clone()),
            (Kind::Dir, Some(_)) => plan.clashes.push(place()),
            (
                Kind::Symlink(target),
                Some(Meta {
                    kind: Kind::Symlink(t),
                    ..
                }),
            ) if t == target => plan.links_same += 1,
            (Kind::Symlink(_), None) => plan.links.push(entry.clone()),
            (
                Kind::Symlink(_),
                Some(Meta {
                    kind: Kind::Dir, ..
                }),
            ) => plan.clashes.push(place()),
            (Kind::Symlink(_), Some(_)) if overwrite => plan.links.push(entry.clone()),
            (Kind::Symlink(_), Some(_)) => plan.conflicts.push(place()),
            (Kind::File, None) => plan.files.push(file(entry, Decision::Copy)),
            (Kind::File, Some(meta)) => match meta.kind {
                Kind::Dir => plan.clashes.push(place()),
                Kind::File if meta.size == entry.meta.size && verify => {
                    plan.files.push(file(entry, Decision::Compare))
                }
                Kind::File if meta.size == entry.meta.size && meta.mtime == entry.meta.mtime => {
                    plan.files.push(file(entry, Decision::Skip))
                }
                _ if overwrite => plan.files.push(file(entry, Decision::Replace)),
                _ => plan.conflicts.push(place()),
            },
        }
    }
    plan
}

fn file(entry: &Entry, decision: Decision) -> FilePlan {
    FilePlan {
        entry: entry.clone(),
        decision,
    }
}

/// A relative path as messages show it (`.` for the root).
pub fn display_rel(rel: &str) -> String {
    if rel.is_empty() {
        ".".to_owned()
    } else {
        rel.to_owned()
    }
}

/// `root` and `rel` joined with `/` (`rel` empty: `root`).
pub fn join(root: &str, rel: &str) -> String {
    match (root, rel) {
        (_, "") => root.to_owned(),
        ("", _) => rel.to_owned(),
        (r, _) if r.ends_with('/') => format!("{root}{rel}"),
        _ => format!("{root}/{rel}"),
    }
}

/// The folder part and the name of `path` (`a/b/c` → (`a/b`, `c`); `c` → (``, `c`)).
pub fn split(path: &str) -> (&str, &str) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(0) => ("/", &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => ("", trimmed),
    }
}

/// The name under which a partial copy of a file of `size` bytes modified at `mtime` waits in
/// its folder: a later transfer of the very same source file resumes it, any other starts over.
pub fn partial_name(name: &str, size: u64, mtime: i64) -> String {
    format!(".{name}.{size:x}-{mtime:x}.outpost-part")
}

/// The file `name` is a partial copy of, when it is one (of any version of that file).
pub fn partial_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".outpost-part")?;
    let (file, marker) = rest.rsplit_once('.')?;
    let (size, mtime) = marker.split_once('-')?;
    (is_hex(size) && is_hex(mtime) && !file.is_empty()).then_some(file)
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(rel: &str, kind: Kind, size: u64, mtime: i64) -> Entry {
        Entry {
            rel: rel.into(),
            meta: Meta {
                kind,
                size,
                mtime,
                mode: 0o644,
            },
        }
    }

    #[test]
    fn unchanged_files_are_skipped_and_changed_ones_need_overwrite() {
        let source = [
            e("", Kind::Dir, 0, 1),
            e("same", Kind::File, 3, 10),
            e("newer", Kind::File, 3, 11),
            e("new", Kind::File, 1, 1),
            e("link", Kind::Symlink("same".into()), 0, 1),
            e("sock", Kind::Other, 0, 1),
        ];
        let dest = [
            e("", Kind::Dir, 0, 5),
            e("same", Kind::File, 3, 10),
            e("newer", Kind::File, 3, 10),
            e("link", Kind::Symlink("same".into()), 0, 9),
        ];
        let plan = super::plan(&source, &dest, false, false);
        let decisions: Vec<_> = plan
            .files
            .iter()
            .map(|f| (f.entry.rel.as_str(), f.decision.clone()))
            .collect();
        assert_eq!(
            decisions,
            [("same", Decision::Skip), ("new", Decision::Copy)]
        );
        assert_eq!(plan.conflicts, ["newer"]);
        assert_eq!((plan.links_same, plan.links.len()), (1, 0));
        assert_eq!(plan.special, ["sock"]);
        assert_eq!(plan.dirs.len(), 1);

        let plan = super::plan(&source, &dest, true, false);
        assert!(plan.conflicts.is_empty());
        assert!(plan.files.iter().any(|f| f.decision == Decision::Replace));
    }

    #[test]
    fn verify_compares_same_size_files_and_kinds_never_change() {
        let source = [e("a", Kind::File, 3, 10), e("d", Kind::Dir, 0, 1)];
        let dest = [e("a", Kind::File, 3, 99), e("d", Kind::File, 1, 1)];
        let plan = super::plan(&source, &dest, true, true);
        assert_eq!(plan.files[0].decision, Decision::Compare);
        assert_eq!(plan.clashes, ["d"]);
    }

    #[test]
    fn paths_split_and_join() {
        assert_eq!(split("a/b/c"), ("a/b", "c"));
        assert_eq!(split("/c"), ("/", "c"));
        assert_eq!(split("c/"), ("", "c"));
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("a", ""), "a");
        assert_eq!(join("", "x"), "x");
        let part = partial_name("m.ckpt", 255, 16);
        assert_eq!(part, ".m.ckpt.ff-10.outpost-part");
        assert_eq!(partial_of(&part), Some("m.ckpt"));
        assert_eq!(partial_of(".m.ckpt.zz-1.outpost-part"), None);
        assert_eq!(partial_of("m.ckpt"), None);
    }
}
