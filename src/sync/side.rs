//! One end of a sync — a host reached through any transport — and the small POSIX shell programs
//! that list, hash, read and atomically write Claude's files there. The same code serves this
//! machine (through the local transport) and remote hosts, so nothing but `sh` and coreutils is
//! needed on either side.

use std::collections::{BTreeMap, HashMap};

use shell_words::quote;

use super::plan::FileInfo;
use crate::error::{Error, Result};
use crate::transport::{CommandSpec, Process, Stdin, Transport};

/// The sha256, stat and window-hash helpers every script starts with (GNU, BSD/macOS, or
/// openssl). `__o_tailsum FILE N` hashes the last 65536 bytes before offset N (all of them when N
/// is smaller): `tail -c +K` seeks, so a 50 MB log costs no more than a small one.
const HELPERS: &str = r#"__o_sum() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$@"; elif command -v shasum >/dev/null 2>&1; then shasum -a 256 "$@"; else openssl dgst -sha256 -r "$@"; fi; }
__o_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }
__o_tailsum() { __o_k=$(( $2 > 65536 ? $2 - 65535 : 1 )); tail -c +"$__o_k" "$1" | head -c $(( $2 - __o_k + 1 )) | __o_sum; }
"#;

/// Reads `length<TAB>hash<TAB>path` lines (the other side's size and end-window hash of each of
/// its files, `-` when not wanted) and prints `H<TAB>sha256<TAB>path` for the window of each file
/// here that ends at `min(length, size)`. Where that window matches, the file is a session log (`.jsonl`) and it has
/// grown by at most `$1` bytes, also prints `D<TAB>from<TAB>len<TAB>path`, the `len` new bytes
/// (the tail the destination lacks, in the same round trip) and `<LF>E<TAB>path`: a log cut short
/// while being read misplaces that end line, and the listing is refused rather than misread.
const COMPARE_AND_SEND: &str = r#"while IFS='	' read -r n h f; do
  [ -f "$f" ] || continue
  __o_s=$(__o_size "$f"); __o_n=$n; [ "$__o_s" -lt "$n" ] && __o_n=$__o_s
  __o_h=$(__o_tailsum "$f" "$__o_n"); __o_h=${__o_h%% *}; printf 'H\t%s\t%s\n' "$__o_h" "$f"
  __o_l=$((__o_s - n))
  case $f in *.jsonl) if [ "$__o_h" = "$h" ] && [ "$__o_l" -gt 0 ] && [ "$__o_l" -le "$1" ]; then
    printf 'D\t%s\t%s\t%s\n' "$n" "$__o_l" "$f"; tail -c +$((n + 1)) "$f" | head -c "$__o_l"; printf '\nE\t%s\n' "$f"; fi;; esac
done"#;

/// Where a project's Claude files live on one side.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project path with symlinks resolved (as given when it does not exist there).
    pub physical_cwd: String,
    /// Shell word for `<config dir>/projects/<name>`: the config dir is `$CLAUDE_CONFIG_DIR`,
    /// else `~/.claude`, as that side's Claude sees it.
    pub dir: String,
}

impl Project {
    /// The project of `physical_cwd` (already resolved on that side): no round trip needed.
    pub fn at(physical_cwd: &str) -> Self {
        let name = super::project_dir::project_dir_name(physical_cwd);
        Self {
            physical_cwd: physical_cwd.to_owned(),
            dir: format!(
                "\"${{CLAUDE_CONFIG_DIR:-$HOME/.claude}}\"/projects/{}",
                quote(&name)
            ),
        }
    }
}

/// A side's files, as [`Side::list`] found them.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The project folder as a path on that side.
    pub dir: String,
    pub files: Vec<FileInfo>,
    /// New tails of session logs sent with the listing, by path (see [`Side::list`]).
    pub tails: HashMap<String, Tail>,
}

/// Bytes `from..from + data.len()` of a file, as the source sent them with its listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub from: u64,
    pub data: Vec<u8>,
}

/// What [`Side::list`] compares against: the other side's files, `path → (size, end-window hash)`.
pub struct Against<'a> {
    pub files: &'a HashMap<String, (u64, String)>,
    /// Session logs that grew by at most this many bytes past the other side's matching copy
    /// come back with their new tail in [`Listing::tails`] (0: none).
    pub send_tails_up_to: u64,
}

/// A host taking part in a sync.
pub struct Side {
    pub host: String,
    transport: Transport,
    /// The environment Claude gets there (it may set `CLAUDE_CONFIG_DIR`).
    env: BTreeMap<String, String>,
}

impl Side {
    pub fn new(host: String, transport: Transport, env: BTreeMap<String, String>) -> Self {
        Self {
            host,
            transport,
            env,
        }
    }

    fn failed(&self, what: &str, detail: impl std::fmt::Display) -> Error {
        Error::Sync {
            host: self.host.clone(),
            reason: format!("{what}: {detail}"),
        }
    }

    async fn spawn(&self, command: String, stdin: Stdin) -> Result<Process> {
        let spec = CommandSpec {
            command,
            cwd: None,
            env: self.env.clone(),
            stdin,
        };
        self.transport.spawn(spec).await
    }

    /// Runs a short script to its end; a non-zero exit is an error naming `what`.
    async fn run(&self, what: &str, command: String, stdin: Stdin) -> Result<String> {
        let out = self.run_bytes(what, command, stdin).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// [`Side::run`], with stdout as bytes.
    async fn run_bytes(&self, what: &str, command: String, stdin: Stdin) -> Result<Vec<u8>> {
        let output = self.spawn(command, stdin).await?.output().await;
        if output.status.code != Some(0) {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(self.failed(what, stderr.trim()));
        }
        Ok(output.stdout)
    }

    /// Resolves `cwd` on this side (`~/` expanded, symlinks resolved when it exists).
    pub async fn project(&self, cwd: &str) -> Result<Project> {
        let script = format!(
            r#"__o_cwd={cwd}
case $__o_cwd in "~") __o_cwd=$HOME;; "~/"*) __o_cwd="$HOME/${{__o_cwd#"~/"}}";; esac
(cd "$__o_cwd" 2>/dev/null && pwd -P) || printf '%s\n' "$__o_cwd""#,
            cwd = quote(cwd)
        );
        let out = self.run("finding the project", script, Stdin::Null).await?;
        let physical = out.trim_end_matches('\n');
        if !physical.starts_with('/') {
            return Err(self.failed(
                "finding the project",
                format!("`{cwd}` is not an absolute path"),
            ));
        }
        Ok(Project::at(physical))
    }

    /// Every file of the project folder (or only one session's log and sidecar folder) with size
    /// and mtime, leaving out conflict copies and temp files. `against` lists the other side's
    /// files: each file found there gets the sha256 of its window ending at `min(size here, size
    /// there)`, and a session log that only grew comes with its new tail (see [`Against`]);
    /// `None` hashes each file's window ending at its end. With `settle_on`, first waits up to
    /// 3 s for the session log to contain that text.
    pub async fn list(
        &self,
        dir: &str,
        only: Option<&str>,
        against: Option<&Against<'_>>,
        settle_on: Option<&str>,
    ) -> Result<Listing> {
        let roots = match only {
            Some(id) => format!(
                "{} {}",
                quote(&format!("./{id}.jsonl")),
                quote(&format!("./{id}"))
            ),
            None => ".".to_owned(),
        };
        // Before `cd`: the folder itself may not exist until Claude writes the log.
        let settle = match (only, settle_on) {
            (Some(id), Some(needle)) => format!(
                "__o_i=0; while ! grep -F -q -e {} {dir}/{} 2>/dev/null && [ $__o_i -lt 60 ]; do sleep 0.05; __o_i=$((__o_i+1)); done\n",
                quote(needle),
                quote(&format!("{id}.jsonl"))
            ),
            _ => String::new(),
        };
        let (hashing, input, tail_limit) = match against {
            None => (
                "__o_h=$(__o_tailsum \"$f\" \"$(__o_size \"$f\")\"); printf 'H\\t%s\\t%s\\n' \"${__o_h%% *}\" \"${f#./}\"",
                Vec::new(),
                0,
            ),
            Some(other) => (
                "",
                other
                    .files
                    .iter()
                    // `-` for a hash the other side could not compute: never equal to one.
                    .map(|(p, (n, h))| {
                        format!("{n}\t{}\t{p}\n", if h.is_empty() { "-" } else { h })
                    })
                    .collect::<String>()
                    .into_bytes(),
                other.send_tails_up_to,
            ),
        };
        let script = format!(
            r#"{HELPERS}{settle}cd {dir} 2>/dev/null || {{ printf '%s\n' {dir}; exit 0; }}
pwd
find {roots} -type f ! -name '*.conflict-*' ! -name '.outpost-tmp-*' 2>/dev/null | while IFS= read -r f; do
  __o_m=$(stat -c %Y "$f" 2>/dev/null || stat -f %m "$f")
  printf 'F\t%s\t%s\t%s\n' "$(__o_size "$f")" "$__o_m" "${{f#./}}"
  {hashing}
done
set -- {tail_limit}
{COMPARE_AND_SEND}"#,
        );
        let stdin = if input.is_empty() {
            Stdin::Null
        } else {
            Stdin::Bytes(input)
        };
        let out = self.run_bytes("listing files", script, stdin).await?;
        parse_listing(&out).ok_or_else(|| {
            let shown = String::from_utf8_lossy(&out[..out.len().min(500)]).into_owned();
            self.failed("listing files", format!("unreadable listing `{shown}`"))
        })
    }

    /// sha256 of the window ending at `len` of each `(path, len)`, keyed by path.
    pub async fn prefix_hashes(
        &self,
        dir: &str,
        wanted: &[(String, u64)],
    ) -> Result<HashMap<String, String>> {
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let requests: String = wanted
            .iter()
            .map(|(p, n)| format!("{n}\t-\t{p}\n"))
            .collect();
        let script = format!("{HELPERS}cd {dir} || exit 1\nset -- 0\n{COMPARE_AND_SEND}");
        let out = self
            .run("hashing files", script, Stdin::Bytes(requests.into_bytes()))
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix("H\t")?.split_once('\t'))
            .map(|(hash, path)| (path.to_owned(), hash.to_owned()))
            .collect())
    }

    /// A process printing bytes `from..from+len` of `path`.
    pub async fn read(&self, dir: &str, path: &str, from: u64, len: u64) -> Result<Process> {
        let script = format!(
            "cd {dir} && tail -c +{start} {path} | head -c {len}",
            start = from + 1,
            path = quote(path),
        );
        self.spawn(script, Stdin::Null).await
    }

    /// A process that writes `target` atomically from its stdin: a temp file in the same folder
    /// holding `base` bytes of the existing `path` (0: none) plus exactly `len` bytes of stdin,
    /// given the mtime `mtime`, synced, then renamed over `target`. Anything else leaves `target`
    /// untouched and the temp file removed.
    pub async fn write(&self, dir: &str, write: &Write<'_>) -> Result<Process> {
        let copy_base = if write.base > 0 {
            format!(
                r#"[ "$(__o_size "$__o_src")" = {base} ] || {{ echo "$__o_src changed during the sync" >&2; exit 3; }}
cp -p "$__o_src" "$__o_tmp" || exit 1"#,
                base = write.base
            )
        } else {
            ": > \"$__o_tmp\" || exit 1".to_owned()
        };
        let script = format!(
            r#"{HELPERS}mkdir -p {dir}/{folder} && cd {dir} || exit 1
__o_src={path}; __o_dst={target}; __o_dir={folder}
__o_tmp="$__o_dir/.outpost-tmp-$$-${{__o_dst##*/}}"
trap 'rm -f "$__o_tmp"' EXIT
trap 'rm -f "$__o_tmp"; exit 1' HUP INT TERM
{copy_base}
cat >> "$__o_tmp" || exit 1
__o_got=$(__o_size "$__o_tmp")
[ "$__o_got" = {total} ] || {{ echo "incomplete transfer: $__o_got of {total} bytes" >&2; exit 4; }}
TZ=UTC0 touch -t {stamp} "$__o_tmp" || exit 1
sync "$__o_tmp" 2>/dev/null || sync
mv -f "$__o_tmp" "$__o_dst" || exit 1
trap - EXIT"#,
            folder = quote(folder_of(write.target)),
            path = quote(write.path),
            target = quote(write.target),
            total = write.base + write.len,
            stamp = touch_stamp(write.mtime),
        );
        self.spawn(script, Stdin::Pipe).await
    }
}

/// One atomic write on the destination.
pub struct Write<'a> {
    /// The destination file whose first `base` bytes are kept.
    pub path: &'a str,
    /// The file written: `path`, or a conflict copy beside it.
    pub target: &'a str,
    pub base: u64,
    /// Bytes that follow on stdin.
    pub len: u64,
    /// Modification time to give the file (the source's).
    pub mtime: i64,
}

fn folder_of(path: &str) -> &str {
    path.rfind('/').map_or(".", |i| &path[..i])
}

/// The listing script's output: the folder, then `F\tsize\tmtime\tpath` and `H\thash\tpath` lines.
/// `path` when it stays inside the listed folder (no `..`, not absolute); a listing naming
/// any other path is refused as a whole.
fn safe_relative(path: &str) -> Option<&str> {
    let inside = std::path::Path::new(path).components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    });
    (inside && !path.is_empty()).then_some(path)
}

fn parse_listing(out: &[u8]) -> Option<Listing> {
    let mut rest = out;
    let dir = next_line(&mut rest)?.to_owned();
    let mut files = Vec::new();
    let mut hashes = HashMap::new();
    let mut tails = HashMap::new();
    while !rest.is_empty() {
        match next_line(&mut rest)?.split_once('\t')? {
            ("F", line) => {
                let mut fields = line.splitn(3, '\t');
                files.push(FileInfo {
                    size: fields.next()?.trim().parse().ok()?,
                    mtime: fields.next()?.trim().parse().ok()?,
                    path: safe_relative(fields.next()?)?.to_owned(),
                    hash: String::new(),
                });
            }
            ("H", line) => {
                let (hash, path) = line.split_once('\t')?;
                hashes.insert(path.trim_start_matches("./").to_owned(), hash.to_owned());
            }
            ("D", line) => {
                let mut fields = line.splitn(3, '\t');
                let from: u64 = fields.next()?.parse().ok()?;
                let len: usize = fields.next()?.parse().ok()?;
                let path = safe_relative(fields.next()?)?.to_owned();
                let data = rest.get(..len)?.to_vec();
                let end = format!("\nE\t{path}\n");
                rest = rest.get(len..)?.strip_prefix(end.as_bytes())?;
                tails.insert(path, Tail { from, data });
            }
            _ => return None,
        }
    }
    for file in &mut files {
        file.hash = hashes.remove(&file.path).unwrap_or_default();
    }
    Some(Listing { dir, files, tails })
}

/// The text line at the start of `rest` (without its newline), moving `rest` past it.
fn next_line<'a>(rest: &mut &'a [u8]) -> Option<&'a str> {
    let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
    let line = std::str::from_utf8(&rest[..end]).ok();
    *rest = rest.get(end + 1..).unwrap_or_default();
    line
}

/// `touch -t` form (`CCYYMMDDhhmm.SS`, UTC) of a Unix time.
fn touch_stamp(mtime: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
    let rfc = humantime::format_rfc3339_seconds(time).to_string(); // 2026-11-21T15:30:45Z
    let digits: String = rfc.chars().filter(char::is_ascii_digit).collect(); // 20261121153045
    format!("{}.{}", &digits[..12], &digits[12..14])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_manifest_lines() {
        assert_eq!(touch_stamp(1_795_000_000), "202611181106.40");
        let listing = parse_listing(
            b"/d\nF\t12\t1795000000\tsub dir/x\ty.jsonl\nH\tabc\tsub dir/x\ty.jsonl\n",
        )
        .unwrap();
        let f = &listing.files[0];
        assert_eq!(listing.dir, "/d");
        assert_eq!(
            (f.size, f.mtime, f.path.as_str(), f.hash.as_str()),
            (12, 1_795_000_000, "sub dir/x\ty.jsonl", "abc")
        );
        assert!(parse_listing(b"/d\nnonsense").is_none());
        for outside in ["../x.jsonl", "a/../../x.jsonl", "/etc/passwd", ""] {
            let line = format!("/d\nF\t1\t1\t{outside}\n");
            assert!(parse_listing(line.as_bytes()).is_none(), "{outside}");
            let tail = format!("/d\nD\t0\t1\t{outside}\nx\nE\t{outside}\n");
            assert!(parse_listing(tail.as_bytes()).is_none(), "{outside}");
        }
        assert_eq!(folder_of("a/b/c.jsonl"), "a/b");
    }

    #[test]
    fn tails_sent_with_the_listing_are_taken_exactly_or_refused() {
        // Any bytes at all, newlines and tabs included, framed by length and an end line.
        let out = b"/d\nF\t7\t1\ta.jsonl\nH\th\ta.jsonl\nD\t3\t4\ta.jsonl\n\n\tx\xff\nE\ta.jsonl\nH\tg\tb.jsonl\n";
        let listing = parse_listing(out).unwrap();
        let tail = &listing.tails["a.jsonl"];
        assert_eq!((tail.from, tail.data.as_slice()), (3, &b"\n\tx\xff"[..]));
        assert_eq!(listing.files[0].hash, "h");
        // A log cut short while it was read: fewer bytes than announced, so the end line is
        // not where it should be.
        let short = b"/d\nD\t3\t4\ta.jsonl\nab\nE\ta.jsonl\nH\tg\tb.jsonl\n";
        assert!(parse_listing(short).is_none());
        assert!(parse_listing(b"/d\nD\t3\t4\ta.jsonl\nab").is_none());
        assert_eq!(folder_of("c.jsonl"), ".");
    }
}
