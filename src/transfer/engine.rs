//! The copy between two file systems: where the tree lands, the plan, then folders, files (a few
//! at once, each through a partial file renamed into place), links, and the folders' own modes
//! and times last.

use std::collections::HashSet;
use std::io;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::progress::Progress;
use super::tree::{self, Decision, Entry, FilePlan, Kind, Plan, join, split};
use super::{End, Options, Summary};
use crate::error::{Error, Result};

/// Files copied at once: small files are bound by round trips, not bandwidth.
const FILES_AT_ONCE: usize = 8;
/// Bytes read before each write: one SFTP write request's worth (see `sftp_fs::WRITE_PACKET`),
/// so a chunk never splits into a full request and a tiny one.
const CHUNK: usize = 248 << 10;
/// Conflicting paths an error lists by name.
const LISTED: usize = 5;

/// Copies `source` to `dest` as `options` say, moving `progress` along. Dropping the future
/// stops the copy: a file being written stays under its partial name (resumed next time), never
/// the final one.
pub async fn copy(
    source: &End,
    dest: &End,
    options: &Options,
    progress: &Progress,
) -> Result<Summary> {
    let started = Instant::now();
    let src_root = source.fs.resolve(&source.path);
    let src_root = src_root.trim_end_matches('/').to_owned();
    let read_error = |path: &str, e| io_error("read", source.place(path), e);
    let tree = (source.fs.tree(&src_root).await)
        .map_err(|e| read_error(&src_root, e))?
        .ok_or_else(|| read_error(&src_root, io::ErrorKind::NotFound.into()))?;
    let (_, name) = split(&src_root);
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidArgument {
            field: "source",
            reason: format!("`{src_root}` has no name to copy under; name a file or folder"),
        });
    }
    let target = landing(dest, name).await?;
    let there = (dest.fs.tree(&target).await)
        .map_err(|e| io_error("read", dest.place(&target), e))?
        .unwrap_or_default();
    let mut plan = tree::plan(&tree, &there, options.overwrite, options.verify);
    refuse(&plan, dest, &target)?;
    settle_compares(&mut plan, source, dest, &src_root, &target, options).await?;
    let mut summary = Summary::new(source, dest, &target);
    let to_copy: Vec<&FilePlan> = plan.files.iter().filter(|f| copies(f)).collect();
    let bytes: u64 = to_copy.iter().map(|f| f.entry.meta.size).sum();
    progress.plan(to_copy.len() as u64, bytes);
    summary.skipped = (plan.files.len() - to_copy.len()) as u64 + plan.links_same;
    summary.not_copied = plan.special.clone();

    let existing: HashSet<&str> = there.iter().map(|e| e.rel.as_str()).collect();
    for dir in &plan.dirs {
        if !existing.contains(dir.rel.as_str()) {
            let path = join(&target, &dir.rel);
            (dest.fs.mkdir(&path).await).map_err(|e| io_error("create", dest.place(&path), e))?;
            summary.dirs += 1;
        }
    }
    // A partial file inside the tree was listed with it; the root's sits beside the tree.
    let listed: HashSet<String> = existing.iter().map(|rel| join(&target, rel)).collect();
    // A loop rather than `buffer_unordered`: a closure making the futures would not be `Send`
    // for every lifetime, which a spawned job needs.
    let mut queue = to_copy.iter();
    let mut running = FuturesUnordered::new();
    let mut resumed = 0;
    loop {
        while running.len() < FILES_AT_ONCE {
            let Some(file) = queue.next() else { break };
            let partial = partial_path(&target, &file.entry);
            let resumable = file.entry.rel.is_empty() || listed.contains(&partial);
            running.push(copy_file(
                source, dest, &src_root, &target, file, resumable, progress,
            ));
        }
        match running.next().await {
            Some(done) => {
                resumed += done?;
                summary.files += 1;
            }
            None => break,
        }
    }
    remove_stale_partials(dest, &target, &there, &tree).await;
    if tree[0].meta.kind == Kind::File {
        remove_stale_partials_beside(dest, &target).await;
    }
    summary.resumed_bytes = resumed;
    for link in &plan.links {
        make_link(dest, &target, link, &listed).await?;
        summary.links += 1;
    }
    for dir in plan.dirs.iter().rev() {
        let path = join(&target, &dir.rel);
        let (mode, mtime) = (dir.meta.mode, dir.meta.mtime);
        (dest.fs.set_meta(&path, mode, mtime).await)
            .map_err(|e| io_error("set the mode and time of", dest.place(&path), e))?;
    }
    if options.verify {
        for file in &to_copy {
            verify(source, dest, &src_root, &target, &file.entry).await?;
        }
        summary.verified = Some(to_copy.len() as u64);
    }
    summary.bytes = progress.bytes_done();
    summary.finish(started.elapsed());
    Ok(summary)
}

fn copies(file: &FilePlan) -> bool {
    matches!(file.decision, Decision::Copy | Decision::Replace)
}

/// Where the source lands: inside `dest` when it is a folder (or is named `dir/`), else at
/// `dest` itself. Missing folders on the way are created.
async fn landing(dest: &End, name: &str) -> Result<String> {
    let resolved = dest.fs.resolve(&dest.path);
    let named_folder = resolved.ends_with('/');
    let path = resolved.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let found =
        (dest.fs.stat(path, true).await).map_err(|e| io_error("read", dest.place(path), e))?;
    match found.map(|m| m.kind) {
        Some(Kind::Dir) => Ok(join(path, name)),
        Some(_) if named_folder => Err(not_a_folder(dest, path)),
        Some(_) => Ok(path.to_owned()),
        None if named_folder => {
            make_dirs(dest, path).await?;
            Ok(join(path, name))
        }
        None => {
            let (parent, _) = split(path);
            if !parent.is_empty() {
                make_dirs(dest, parent).await?;
            }
            Ok(path.to_owned())
        }
    }
}

/// `mkdir -p path`: a file on the way is an error that says so.
async fn make_dirs(dest: &End, path: &str) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = path.to_owned();
    loop {
        let found =
            (dest.fs.stat(&at, true).await).map_err(|e| io_error("read", dest.place(&at), e))?;
        match found.map(|m| m.kind) {
            Some(Kind::Dir) => break,
            Some(_) => return Err(not_a_folder(dest, &at)),
            None => missing.push(at.clone()),
        }
        let (parent, _) = split(&at);
        if parent.is_empty() || parent == at {
            break;
        }
        at = parent.to_owned();
    }
    for dir in missing.iter().rev() {
        (dest.fs.mkdir(dir).await).map_err(|e| io_error("create", dest.place(dir), e))?;
    }
    Ok(())
}

fn not_a_folder(dest: &End, path: &str) -> Error {
    Error::Transfer {
        op: "copy into",
        place: dest.place(path),
        reason: "it is a file, not a folder; name a folder, or a new name to copy to".to_owned(),
    }
}

/// Refuses a plan that would change a kind of entry or (without `overwrite`) replace files.
fn refuse(plan: &Plan, dest: &End, target: &str) -> Result<()> {
    if let Some(clash) = plan.clashes.first() {
        return Err(Error::Transfer {
            op: "copy to",
            place: dest.place(&join(target, clash.trim_start_matches('.'))),
            reason: format!(
                "a folder and a file would swap there ({} such place(s)); nothing was copied. Remove it, or pick another destination",
                plan.clashes.len()
            ),
        });
    }
    if plan.conflicts.is_empty() {
        return Ok(());
    }
    let mut paths: Vec<String> = plan.conflicts.iter().take(LISTED).cloned().collect();
    if plan.conflicts.len() > LISTED {
        paths.push(format!("and {} more", plan.conflicts.len() - LISTED));
    }
    Err(Error::TransferWouldOverwrite {
        count: plan.conflicts.len(),
        paths: paths.join(", "),
    })
}

/// Under `verify`, same-size files are compared by hash: equal ones are skipped, others
/// replaced with `overwrite` or refused.
async fn settle_compares(
    plan: &mut Plan,
    source: &End,
    dest: &End,
    src_root: &str,
    target: &str,
    options: &Options,
) -> Result<()> {
    for file in plan.files.iter_mut() {
        if file.decision != Decision::Compare {
            continue;
        }
        let rel = &file.entry.rel;
        let (src, dst) = (join(src_root, rel), join(target, rel));
        let (a, b) = tokio::try_join!(hash(source, &src), hash(dest, &dst))?;
        let same = a == b;
        file.decision = match same {
            true => Decision::Skip,
            false if options.overwrite => Decision::Replace,
            false => {
                plan.conflicts.push(tree::display_rel(rel));
                continue;
            }
        };
    }
    refuse(plan, dest, target)
}

/// The partial file of `entry` of the tree at `root`, beside where the entry goes.
fn partial_path(root: &str, entry: &Entry) -> String {
    let full = join(root, &entry.rel);
    let (dir, name) = split(&full);
    join(
        dir,
        &tree::partial_name(name, entry.meta.size, entry.meta.mtime),
    )
}

/// Copies one file through its partial file (resumed when `resumable`); returns the bytes the
/// resume saved.
async fn copy_file(
    source: &End,
    dest: &End,
    src_root: &str,
    target: &str,
    file: &FilePlan,
    resumable: bool,
    progress: &Progress,
) -> Result<u64> {
    let entry = &file.entry;
    let from = join(src_root, &entry.rel);
    let to = join(target, &entry.rel);
    let partial = partial_path(target, entry);
    let offset = match resumable {
        true => (dest.fs.stat(&partial, false).await.ok().flatten())
            .filter(|m| m.kind == Kind::File && m.size <= entry.meta.size)
            .map_or(0, |m| m.size),
        false => 0,
    };
    progress.add_bytes(offset);
    let read_error = |e| io_error("read", source.place(&from), e);
    let mut reader = (source.fs.open_read(&from, offset).await).map_err(read_error)?;
    let write_error = |e| io_error("write", dest.place(&partial), e);
    let mut writer = (dest.fs.open_write(&partial, offset).await).map_err(write_error)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut left = entry.meta.size - offset;
    while left > 0 {
        let want = buffer.len().min(left as usize);
        let n = reader.read(&mut buffer[..want]).await.map_err(read_error)?;
        if n == 0 {
            return Err(read_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter while it was copied; copy it again once it is no longer written to",
            )));
        }
        if let Err(e) = writer.write_all(&buffer[..n]).await {
            // Closing tells more (the reason a command or server gave up) than a broken pipe.
            let e = writer.shutdown().await.err().unwrap_or(e);
            return Err(full_or(dest, &partial, left, e).await);
        }
        progress.add_bytes(n as u64);
        left -= n as u64;
    }
    if let Err(e) = writer.shutdown().await {
        return Err(full_or(dest, &partial, left, e).await);
    }
    drop(writer);
    // To its end: a command reading the file (`cat` in a container) then exits by itself, and
    // is not killed as a reader dropped midway would be. A file that grew meanwhile is copied
    // as it was listed.
    let _ = reader.read(&mut buffer).await;
    drop(reader);
    let (mode, mtime) = (entry.meta.mode, entry.meta.mtime);
    (dest.fs.set_meta(&partial, mode, mtime).await)
        .map_err(|e| io_error("set the mode and time of", dest.place(&partial), e))?;
    let placed = match file.decision {
        Decision::Replace => dest.fs.replace(&partial, &to).await,
        _ => dest.fs.rename(&partial, &to).await,
    };
    placed.map_err(|e| io_error("move into place", dest.place(&to), e))?;
    progress.file_done();
    Ok(offset)
}

/// Removes partial files of older versions of the source's files (a newer source cannot resume
/// them); a failure to remove one only leaves it there.
async fn remove_stale_partials(dest: &End, target: &str, there: &[Entry], tree: &[Entry]) {
    let files: HashSet<&str> = tree.iter().map(|e| e.rel.as_str()).collect();
    for entry in there {
        let (dir, name) = split(&entry.rel);
        let Some(file) = tree::partial_of(name) else {
            continue;
        };
        if entry.meta.kind == Kind::File && files.contains(join(dir, file).as_str()) {
            let path = join(target, &entry.rel);
            if let Err(e) = dest.fs.remove(&path).await {
                tracing::debug!(path, error = %e, "cannot remove a stale partial file");
            }
        }
    }
}

/// Removes partial files of older versions of the file at `target`, from its folder.
async fn remove_stale_partials_beside(dest: &End, target: &str) {
    let (dir, name) = split(target);
    let folder = if dir.is_empty() { "." } else { dir };
    let Ok(entries) = dest.fs.read_dir(folder).await else {
        return;
    };
    for (entry, meta) in entries {
        if meta.kind == Kind::File && tree::partial_of(&entry) == Some(name) {
            let path = join(dir, &entry);
            if let Err(e) = dest.fs.remove(&path).await {
                tracing::debug!(path, error = %e, "cannot remove a stale partial file");
            }
        }
    }
}

/// A write failure, told as a full disk when the destination has less room than was left to
/// write (SFTP reports a full disk only as a generic failure).
async fn full_or(dest: &End, path: &str, left: u64, e: io::Error) -> Error {
    let (dir, _) = split(path);
    let full = e.kind() == io::ErrorKind::StorageFull
        || dest
            .fs
            .free_space(dir)
            .await
            .is_some_and(|free| free < left.max(1));
    match full {
        true => io_error("write", dest.place(path), io::ErrorKind::StorageFull.into()),
        false => io_error("write", dest.place(path), e),
    }
}

/// Creates a symlink as a partial entry (replacing one an earlier copy left, among `listed`),
/// then renames it into place.
async fn make_link(dest: &End, target: &str, link: &Entry, listed: &HashSet<String>) -> Result<()> {
    let Kind::Symlink(points_to) = &link.meta.kind else {
        return Ok(());
    };
    let to = join(target, &link.rel);
    let partial = partial_path(target, link);
    let fail = |e| io_error("create the link", dest.place(&to), e);
    if listed.contains(&partial) {
        let _ = dest.fs.remove(&partial).await;
    }
    dest.fs.symlink(points_to, &partial).await.map_err(fail)?;
    dest.fs.replace(&partial, &to).await.map_err(fail)
}

async fn verify(
    source: &End,
    dest: &End,
    src_root: &str,
    target: &str,
    entry: &Entry,
) -> Result<()> {
    let (from, to) = (join(src_root, &entry.rel), join(target, &entry.rel));
    let (a, b) = tokio::try_join!(hash(source, &from), hash(dest, &to))?;
    if a == b {
        return Ok(());
    }
    Err(Error::Transfer {
        op: "verify",
        place: dest.place(&to),
        reason: "its contents differ from the source's after the copy (the source changed while it was copied, or the disk is failing); copy it again".to_owned(),
    })
}

/// SHA-256 of the file at `path`, read through its file system.
async fn hash(end: &End, path: &str) -> Result<[u8; 32]> {
    let fail = |e| io_error("read", end.place(path), e);
    let mut reader = end.fs.open_read(path, 0).await.map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buffer).await.map_err(fail)?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buffer[..n]);
    }
}

/// An I/O failure at `place` as the error a user reads: the cause and what to do.
pub fn io_error(op: &'static str, place: String, e: io::Error) -> Error {
    let reason = match e.kind() {
        io::ErrorKind::NotFound => "it does not exist; check the path".to_owned(),
        io::ErrorKind::PermissionDenied => {
            "permission denied; pick a path the login user may use, or change its permissions"
                .to_owned()
        }
        io::ErrorKind::StorageFull => {
            "no space left on the device; free some space there or pick another destination"
                .to_owned()
        }
        io::ErrorKind::NotADirectory => "a part of the path is a file, not a folder".to_owned(),
        io::ErrorKind::IsADirectory => "it is a folder".to_owned(),
        _ => e.to_string(),
    };
    Error::Transfer { op, place, reason }
}
