//! The sync programs run under the real `/bin/sh` (dash on Debian) against real files: names that
//! look like options or hold control bytes, links leading out of the folder, partial writes.

use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::super::listing::{self, Listing};
use super::*;

struct Ran {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

fn sh(script: &str, stdin: &[u8]) -> Ran {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    // A program that refuses early closes its stdin: that is not a failure of the test.
    let _ = child.stdin.take().expect("stdin").write_all(stdin);
    let out = child.wait_with_output().expect("sh ends");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A project folder (`proj`) and a folder outside it, in a fresh temp dir.
struct Scene {
    _tmp: tempfile::TempDir,
    proj: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (proj, outside) = (tmp.path().join("proj"), tmp.path().join("outside"));
        std::fs::create_dir_all(&proj).expect("proj");
        std::fs::create_dir_all(&outside).expect("outside");
        Self {
            _tmp: tmp,
            proj,
            outside,
        }
    }

    fn dir(&self) -> String {
        quote(self.proj.to_str().expect("utf-8 temp path")).into_owned()
    }

    fn put(&self, name: &[u8], content: &[u8]) {
        let path = self.proj.join(std::ffi::OsStr::from_bytes(name));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("folders");
        std::fs::write(path, content).expect("file");
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.proj.join(name)).expect("readable")
    }

    fn write(&self, target: &str, base: u64, data: &[u8]) -> Ran {
        let write = Write {
            target,
            base,
            len: data.len() as u64,
            mtime: 1_795_000_000,
        };
        sh(&super::write(&self.dir(), &write), data)
    }

    fn list(&self, only: Option<&str>, input: &[u8], tails: u64) -> Listing {
        let spec = ListSpec {
            dir: &self.dir(),
            only,
            settle_on: None,
            hash_whole: input.is_empty(),
            send_tails_up_to: tails,
        };
        let ran = sh(&list(&spec), input);
        assert_eq!(ran.code, 0, "{}", ran.stderr);
        listing::parse(&ran.stdout).expect("a listing")
    }
}

/// Every path under `root` whose name starts with the temp-file prefix.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).expect("folder").flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(temp_files(&path));
        } else if entry.file_name().as_bytes().starts_with(b".outpost-tmp-") {
            found.push(path);
        }
    }
    found
}

#[test]
fn names_like_options_are_written_whole_and_nothing_is_left_behind() {
    let scene = Scene::new();
    for name in ["--help", "-t..", "--", "-d/-e.jsonl", "-"] {
        let ran = scene.write(name, 0, b"hello");
        assert_eq!((ran.code, ran.stderr.as_str()), (0, ""), "{name}");
        let ran = scene.write(name, 5, b" world");
        assert_eq!(ran.code, 0, "{name}: {}", ran.stderr);
        assert_eq!(scene.read(name), b"hello world", "{name}");
        let mtime = std::fs::metadata(scene.proj.join(name))
            .expect("written")
            .modified();
        let secs = mtime.expect("mtime").duration_since(std::time::UNIX_EPOCH);
        assert_eq!(secs.expect("after 1970").as_secs(), 1_795_000_000);
    }
    // Short of the announced length: refused, the file as it was, the temp file gone.
    let write = Write {
        target: "--help",
        base: 11,
        len: 10,
        mtime: 0,
    };
    let ran = sh(&super::write(&scene.dir(), &write), b"abc");
    assert_eq!(ran.code, 4, "{}", ran.stderr);
    // The base no longer matching (the file changed under the sync): refused the same way.
    let ran = scene.write("--", 3, b"x");
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert_eq!(scene.read("--help"), b"hello world");
    assert_eq!(temp_files(&scene.proj), Vec::<PathBuf>::new());
}

#[test]
fn temp_files_of_killed_writers_are_removed_by_the_next_write() {
    let scene = Scene::new();
    // No PID is ever this large (pid_max is at most 2^22); this test's own PID is alive.
    let dead = ".outpost-tmp-999999999";
    let live = format!(".outpost-tmp-{}", std::process::id());
    scene.put(dead.as_bytes(), b"partial");
    scene.put(live.as_bytes(), b"being written");
    scene.put(b"sub/.outpost-tmp-999999998", b"partial, another folder");
    let ran = scene.write("s.jsonl", 0, b"x");
    assert_eq!((ran.code, ran.stderr.as_str()), (0, ""));
    let mut left = temp_files(&scene.proj);
    left.sort_unstable();
    assert_eq!(
        left,
        [
            scene.proj.join(&live),
            scene.proj.join("sub/.outpost-tmp-999999998")
        ]
    );
}

#[test]
fn writes_never_go_through_links_out_of_the_folder() {
    let scene = Scene::new();
    std::fs::write(scene.outside.join("f.jsonl"), b"private").expect("outside file");
    symlink(&scene.outside, scene.proj.join("memory")).expect("link");
    symlink(scene.outside.join("f.jsonl"), scene.proj.join("x.jsonl")).expect("link");
    symlink(scene.outside.join("gone"), scene.proj.join("dangling")).expect("link");
    std::fs::create_dir(scene.proj.join("folder")).expect("folder");
    for target in ["memory/MEMORY.md", "x.jsonl", "dangling/a/b.md", "memory"] {
        let ran = scene.write(target, 0, b"data");
        assert_eq!(ran.code, SKIPPED, "{target}: {}", ran.stderr);
        let link = target.split('/').next().unwrap_or(target);
        assert!(
            ran.stderr.contains(&format!("`{link}` is a symbolic link")),
            "{}",
            ran.stderr
        );
    }
    let ran = scene.write("folder", 0, b"data");
    assert_eq!(
        (ran.code, ran.stderr.trim()),
        (SKIPPED, "it is a folder there")
    );
    let outside: Vec<_> = std::fs::read_dir(&scene.outside)
        .expect("outside")
        .flatten()
        .collect();
    assert_eq!(outside.len(), 1, "nothing created outside");
    assert_eq!(
        std::fs::read(scene.outside.join("f.jsonl")).expect("kept"),
        b"private"
    );
    assert_eq!(temp_files(&scene.proj), Vec::<PathBuf>::new());
}

#[test]
fn the_listing_reads_every_name_and_names_what_it_passed_over() {
    let scene = Scene::new();
    let plain = [
        "--help",
        "-t..",
        "--",
        "-d/-e.jsonl",
        "sp ace.md",
        "*",
        "\\",
    ];
    for name in plain {
        scene.put(name.as_bytes(), name.as_bytes());
    }
    for name in [
        &b"a\nb.jsonl"[..],
        b"dir\nx/inner.jsonl",
        b"tab\tx.md",
        b"caf\xe9.md",
    ] {
        scene.put(name, b"x");
    }
    scene.put(b".outpost-tmp-1", b"partial");
    scene.put(b"s.conflict-20261121T153045Z.jsonl", b"theirs");
    std::fs::write(scene.outside.join("secret.jsonl"), b"private").expect("outside");
    symlink(&scene.outside, scene.proj.join("memory")).expect("link");
    symlink(
        scene.outside.join("secret.jsonl"),
        scene.proj.join("l.jsonl"),
    )
    .expect("link");
    let listing = scene.list(None, b"", 0);
    let mut files: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
    files.sort_unstable();
    let mut expected = plain.to_vec();
    expected.sort_unstable();
    assert_eq!(files, expected);
    for file in &listing.files {
        assert_eq!(file.size, file.path.len() as u64);
        assert_eq!(listing.hash(&file.path, file.size).map(str::len), Some(64));
    }
    let copies: Vec<&str> = listing.copies.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(copies, ["s.conflict-20261121T153045Z.jsonl"]);
    let mut links = listing.links.clone();
    links.sort_unstable();
    assert_eq!(links, ["l.jsonl", "memory"]);
    let mut unsayable = listing.unsayable.clone();
    unsayable.sort_unstable();
    assert_eq!(
        unsayable,
        ["a\\nb.jsonl", "caf\u{fffd}.md", "dir\\nx", "tab\\tx.md"]
    );
    // A folder that is not there yet lists as empty.
    std::fs::remove_dir_all(&scene.proj).expect("removed");
    let empty = scene.list(None, b"", 0);
    assert!(
        empty.files.is_empty() && empty.dir.ends_with("/proj"),
        "{empty:?}"
    );
}

#[test]
fn compare_hashes_and_sends_tails_by_name_never_through_a_link() {
    let scene = Scene::new();
    scene.put(b"-x.jsonl", b"abc\ndef\n");
    scene.put(b"--", b"0123456789");
    scene.put(b"prefix.jsonl", b"abc\n");
    std::fs::write(scene.outside.join("n.jsonl"), b"abc\nsecret\n").expect("outside");
    symlink(&scene.outside, scene.proj.join("memory")).expect("link");
    let whole = scene.list(None, b"", 0);
    let abc = whole.hash("prefix.jsonl", 4).expect("hashed").to_owned();
    let input = format!("4\t{abc}\t-x.jsonl\n4\t{abc}\tmemory/n.jsonl\n10\t-\t--\n");
    let listing = scene.list(None, input.as_bytes(), 1000);
    assert_eq!(listing.hash("-x.jsonl", 4), Some(abc.as_str()));
    assert_eq!(listing.tails[&("-x.jsonl".to_owned(), 4)], b"def\n");
    assert_eq!(listing.hash("--", 10), whole.hash("--", 10));
    assert_eq!(listing.hash("memory/n.jsonl", 4), None);
    assert_eq!(listing.tails.len(), 1, "nothing read through the link");
    let hashes = sh(&prefix_hashes(&scene.dir()), input.as_bytes());
    let hashes = listing::parse_hashes(&hashes.stdout);
    assert_eq!(hashes.get("-x.jsonl"), Some(&abc));
    assert!(hashes.contains_key("--") && !hashes.contains_key("memory/n.jsonl"));
}

#[test]
fn reads_take_names_as_names_and_stop_at_links() {
    let scene = Scene::new();
    scene.put(b"--help", b"0123456789");
    std::fs::write(scene.outside.join("n.jsonl"), b"secret").expect("outside");
    symlink(&scene.outside, scene.proj.join("memory")).expect("link");
    let ran = sh(&read(&scene.dir(), "--help", 2, 3), b"");
    assert_eq!((ran.code, ran.stdout.as_slice()), (0, &b"234"[..]));
    let ran = sh(&read(&scene.dir(), "memory/n.jsonl", 0, 6), b"");
    assert!(ran.stdout.is_empty(), "read through a link");
}

#[test]
fn one_session_lists_its_log_copies_and_sidecar_only() {
    let scene = Scene::new();
    for name in [
        "s1.jsonl",
        "s1/tool.json",
        "s1.conflict-20260101T000000Z.jsonl",
        "s2.jsonl",
    ] {
        scene.put(name.as_bytes(), b"{}\n");
    }
    let listing = scene.list(Some("s1"), b"", 0);
    let mut files: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
    files.sort_unstable();
    assert_eq!(files, ["s1.jsonl", "s1/tool.json"]);
    assert_eq!(listing.copies.len(), 1);
    // Without conflict copies the unmatched pattern is no error.
    std::fs::remove_file(scene.proj.join("s1.conflict-20260101T000000Z.jsonl")).expect("rm");
    assert_eq!(scene.list(Some("s1"), b"", 0).files.len(), 2);
}

#[test]
fn the_project_is_found_by_its_physical_path() {
    let scene = Scene::new();
    let real = scene.proj.join("real");
    std::fs::create_dir(&real).expect("real");
    symlink(&real, scene.proj.join("-via")).expect("link");
    let home = scene.proj.to_str().expect("utf-8");
    let run = |cwd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(project(cwd))
            .env("HOME", home)
            .output()
            .expect("sh runs");
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    };
    let physical = std::fs::canonicalize(&real).expect("canonical");
    assert_eq!(run("~/-via"), physical.to_str().expect("utf-8"));
    assert_eq!(
        run(&format!("{home}/-via")),
        physical.to_str().expect("utf-8")
    );
    assert_eq!(run("~/missing"), format!("{home}/missing"));
}

#[test]
fn stamps() {
    assert_eq!(touch_stamp(1_795_000_000), "202611181106.40");
    assert_eq!(folder_of("a/b/c.jsonl"), "a/b");
    assert_eq!(folder_of("c.jsonl"), ".");
}
