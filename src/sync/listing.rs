//! Reading what the listing program prints (see `scripts::list`): the files of one side, the
//! window hashes and new tails it sent along, and what it passed over — symbolic links, and names
//! the line protocol cannot carry (control bytes, invalid UTF-8).

use std::collections::HashMap;
use std::path::{Component, Path};

use super::plan::{FileInfo, is_conflict_copy};

/// A side's files, as its listing found them.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The project folder as a path on that side.
    pub dir: String,
    /// Regular files to sync (conflict copies left out), hashes not yet filled in.
    pub files: Vec<FileInfo>,
    /// Conflict copies (`<name>.conflict-<stamp>.<ext>`): never synced, but the destination's
    /// are compared with what comes in, so one divergence keeps one copy.
    pub copies: Vec<FileInfo>,
    /// Window hashes by (path, length the window ends at, as asked).
    pub hashes: HashMap<(String, u64), String>,
    /// New tails of session logs sent with the listing, by (path, offset they start at).
    pub tails: HashMap<(String, u64), Vec<u8>>,
    /// Symbolic links found (never followed).
    pub links: Vec<String>,
    /// Names passed over because they hold a control byte or are not UTF-8, shown escaped.
    pub unsayable: Vec<String>,
}

impl Listing {
    /// The hash of `path`'s window ending at `length`, when the listing sent one.
    pub fn hash(&self, path: &str, length: u64) -> Option<&str> {
        self.hashes
            .get(&(path.to_owned(), length))
            .map(String::as_str)
    }
}

/// Whether a name can travel in the listing protocol and the scripts: UTF-8 (a Rust string) with
/// no control character (a newline or tab would break the lines; others cannot be shown).
pub fn sayable(path: &str) -> bool {
    !path.chars().any(|c| c.is_ascii_control())
}

/// `path` when it stays inside the listed folder (no `..`, not absolute).
fn safe_relative(path: &str) -> Option<&str> {
    let inside = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    (inside && !path.is_empty()).then_some(path)
}

/// How one path field reads: a name to use, one to pass over, or a listing to refuse.
enum Name<'a> {
    Usable(&'a str),
    Unsayable(String),
}

/// Reads a path field. A path leaving the folder makes the whole listing suspect: `None`.
fn name(bytes: &[u8]) -> Option<Name<'_>> {
    let shown = || String::from_utf8_lossy(bytes).escape_debug().to_string();
    match std::str::from_utf8(bytes) {
        Ok(path) if sayable(path) => safe_relative(path).map(Name::Usable),
        _ => Some(Name::Unsayable(shown())),
    }
}

/// Splits `line` at its first `count - 1` tabs.
fn fields(line: &[u8], count: usize) -> Option<Vec<&[u8]>> {
    let parts: Vec<&[u8]> = line.splitn(count, |b| *b == b'\t').collect();
    (parts.len() == count).then_some(parts)
}

fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// Parses a listing: the folder, then `F`, `H`, `D` (with its bytes and end line), `L` and `X`
/// lines in any order. `None` when it is not a listing (cut short, or naming paths outside).
pub fn parse(out: &[u8]) -> Option<Listing> {
    let mut rest = out;
    let dir = std::str::from_utf8(next_line(&mut rest)?).ok()?.to_owned();
    let mut listing = Listing {
        dir,
        ..Listing::default()
    };
    while !rest.is_empty() {
        let (kind, line) = match next_line(&mut rest)? {
            [kind, b'\t', line @ ..] => (*kind, line),
            _ => return None,
        };
        match kind {
            b'F' => {
                let f = fields(line, 3)?;
                let path = match name(f[2])? {
                    Name::Usable(path) => path.to_owned(),
                    Name::Unsayable(shown) => {
                        listing.unsayable.push(shown);
                        continue;
                    }
                };
                let file = FileInfo {
                    size: number(f[0])?,
                    mtime: number(f[1])?,
                    hash: String::new(),
                    path,
                };
                match is_conflict_copy(&file.path) {
                    true => listing.copies.push(file),
                    false => listing.files.push(file),
                }
            }
            b'H' => {
                let f = fields(line, 3)?;
                if let Name::Usable(path) = name(f[2])? {
                    let hash = std::str::from_utf8(f[1]).ok()?.to_owned();
                    listing
                        .hashes
                        .insert((path.to_owned(), number(f[0])?), hash);
                }
            }
            b'D' => {
                let f = fields(line, 3)?;
                let Name::Usable(path) = name(f[2])? else {
                    return None;
                };
                let (from, len): (u64, usize) = (number(f[0])?, number(f[1])?);
                let data = rest.get(..len)?.to_vec();
                let end = format!("\nE\t{path}\n");
                rest = rest.get(len..)?.strip_prefix(end.as_bytes())?;
                listing.tails.insert((path.to_owned(), from), data);
            }
            b'L' => match name(line)? {
                Name::Usable(path) => listing.links.push(path.to_owned()),
                Name::Unsayable(shown) => listing.unsayable.push(shown),
            },
            b'X' => listing.unsayable.push(unhex(line)?),
            _ => return None,
        }
    }
    Some(listing)
}

/// The `H<TAB>length<TAB>hash<TAB>path` lines of a hashing program, by path.
pub fn parse_hashes(out: &[u8]) -> HashMap<String, String> {
    let hash = |line: &[u8]| {
        let f = fields(line.strip_prefix(b"H\t")?, 3)?;
        let Name::Usable(path) = name(f[2])? else {
            return None;
        };
        Some((path.to_owned(), std::str::from_utf8(f[1]).ok()?.to_owned()))
    };
    out.split(|b| *b == b'\n').filter_map(hash).collect()
}

/// A name the listing sent as hex (it holds a control byte), shown escaped.
fn unhex(hex: &[u8]) -> Option<String> {
    let bytes = hex
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let shown = String::from_utf8_lossy(&bytes);
    Some(shown.trim_start_matches("./").escape_debug().to_string())
}

/// The line at the start of `rest` (without its newline), moving `rest` past it.
fn next_line<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let line = rest.get(..end)?;
    *rest = rest.get(end + 1..).unwrap_or_default();
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hashes_and_what_was_passed_over() {
        let out = b"/d\nF\t12\t1795000000\tsub dir/-x.jsonl\nH\t12\tabc\tsub dir/-x.jsonl\n\
L\tmemory\nF\t3\t1\tbad\xff.md\nX\t2e2f610a62\nF\t4\t2\tid.conflict-20261121T153045Z.jsonl\n";
        let listing = parse(out).unwrap();
        assert_eq!(listing.dir, "/d");
        let f = &listing.files[0];
        assert_eq!(
            (f.size, f.mtime, f.path.as_str()),
            (12, 1_795_000_000, "sub dir/-x.jsonl")
        );
        assert_eq!(listing.hash("sub dir/-x.jsonl", 12), Some("abc"));
        assert_eq!(listing.hash("sub dir/-x.jsonl", 11), None);
        assert_eq!(listing.links, ["memory"]);
        assert_eq!(listing.unsayable, ["bad\u{fffd}.md", "a\\nb"]);
        assert_eq!(listing.files.len(), 1);
        assert_eq!(listing.copies[0].path, "id.conflict-20261121T153045Z.jsonl");
        // A tab that reached an F line is passed over too (find prunes it before that).
        let tab = parse(b"/d\nF\t1\t1\ta\tb.md\n").unwrap();
        assert_eq!(
            (tab.files.len(), tab.unsayable.as_slice()),
            (0, &["a\\tb.md".to_owned()][..])
        );
        assert!(parse(b"/d\nnonsense").is_none());
        assert!(parse(b"/d\nX\tzz\n").is_none());
    }

    #[test]
    fn paths_leaving_the_folder_refuse_the_whole_listing() {
        for outside in ["../x.jsonl", "a/../../x.jsonl", "/etc/passwd", ""] {
            let line = format!("/d\nF\t1\t1\t{outside}\n");
            assert!(parse(line.as_bytes()).is_none(), "{outside}");
            let link = format!("/d\nL\t{outside}\n");
            assert!(parse(link.as_bytes()).is_none(), "{outside}");
            let tail = format!("/d\nD\t0\t1\t{outside}\nx\nE\t{outside}\n");
            assert!(parse(tail.as_bytes()).is_none(), "{outside}");
        }
    }

    #[test]
    fn tails_sent_with_the_listing_are_taken_exactly_or_refused() {
        // Any bytes at all, newlines and tabs included, framed by length and an end line.
        let out = b"/d\nF\t7\t1\ta.jsonl\nH\t3\th\ta.jsonl\nD\t3\t4\ta.jsonl\n\n\tx\xff\nE\ta.jsonl\nH\t9\tg\tb.jsonl\n";
        let listing = parse(out).unwrap();
        let tail = &listing.tails[&("a.jsonl".to_owned(), 3)];
        assert_eq!(tail.as_slice(), &b"\n\tx\xff"[..]);
        assert_eq!(listing.hash("a.jsonl", 3), Some("h"));
        // A log cut short while it was read: fewer bytes than announced, so the end line is
        // not where it should be.
        let short = b"/d\nD\t3\t4\ta.jsonl\nab\nE\ta.jsonl\nH\t9\tg\tb.jsonl\n";
        assert!(parse(short).is_none());
        assert!(parse(b"/d\nD\t3\t4\ta.jsonl\nab").is_none());
    }

    #[test]
    fn hashes_by_path() {
        let hashes = parse_hashes(b"H\t5\tabc\t--help\nH\t7\tdef\tm/x.md\n");
        assert_eq!(hashes["--help"], "abc");
        assert_eq!(hashes["m/x.md"], "def");
        assert!(parse_hashes(b"").is_empty());
    }
}
