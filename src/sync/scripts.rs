//! The POSIX `sh` programs a sync runs on each side: find the project, list its files (with the
//! hashes and new tails the other side needs), hash windows, read a range, write atomically.
//!
//! Rules every program keeps: a file name reaches a command only as `./name` (so `--help` or
//! `-t..` is never taken for an option), names come from `find` or from Rust already checked, every
//! word built from data is quoted by `shell_words`, the C locale makes every byte one character,
//! and no symbolic link inside the project folder is followed, read or written through.

use shell_words::quote;

/// Starts every program but the project lookup. `_sum` hashes stdin (GNU, BSD/macOS or
/// openssl); `_tailsum FILE N` hashes the last 65536 bytes before offset N (all of them when N
/// is smaller): `tail -c +K` seeks, so a 50 MB log costs no more than a small one.
/// `_plain PATH` fails, leaving the link in `$_p`, when `./PATH` or any folder on the way
/// to it is a symbolic link.
const HELPERS: &str = r#"export LC_ALL=C
_sum() { { sha256sum || shasum -a 256 || openssl dgst -sha256 -r; } 2>/dev/null; }
_size() { stat -c %s "$1" 2>/dev/null || stat -f %z "$1"; }
_tailsum() { _k=$(($2>65536?$2-65535:1)); tail -c +$_k "$1"|head -c $(($2-_k+1))|_sum; }
_plain() { _p=.; _r=$1/; while [ -n "$_r" ]; do _p=$_p/${_r%%/*}; _r=${_r#*/}; [ ! -L "$_p" ] || return 1; done; }
"#;

/// Reads `length<TAB>hash<TAB>path` lines (a size and end-window hash the other side has for
/// `path`, `-` when not wanted) and prints `H<TAB>length<TAB>sha256<TAB>path` for the window of
/// the file here that ends at `min(length, size)`. Where that window matches, the file is a
/// session log (`.jsonl`) and it has grown by at most `$1` bytes, also prints
/// `D<TAB>length<TAB>len<TAB>path`, the `len` new bytes (the tail the other side lacks, in the
/// same round trip) and `<LF>E<TAB>path`: a log cut short while being read misplaces that end
/// line, and the listing is refused rather than misread. Paths through a link are passed over.
const COMPARE_AND_SEND: &str = r#"while IFS='	' read -r n h p; do
f=./$p; _plain "$p" && [ -f "$f" ] || continue
_s=$(_size "$f"); _n=$n; [ "$_s" -lt "$n" ] && _n=$_s
_h=$(_tailsum "$f" "$_n"); _h=${_h%% *}; printf 'H\t%s\t%s\t%s\n' "$n" "$_h" "$p"
_l=$((_s - n))
case $p in *.jsonl) if [ "$_h" = "$h" ] && [ "$_l" -gt 0 ] && [ "$_l" -le "$1" ]; then
printf 'D\t%s\t%s\t%s\n' "$n" "$_l" "$p"; tail -c +$((n+1)) "$f"|head -c $_l; printf '\nE\t%s\n' "$p"; fi;; esac
done"#;

/// Hashes each listed file's window ending at its own end: `H<TAB>size<TAB>sha256<TAB>path`.
const HASH_WHOLE: &str =
    r#"_h=$(_tailsum "$f" "$_s"); printf 'H\t%s\t%s\t%s\n' "$_s" "${_h%% *}" "${f#./}""#;

/// Exit status of a write refused for a reason that skips the file (stderr says why) rather
/// than failing the sync.
pub const SKIPPED: i32 = 5;

/// Prints the physical path of `cwd` on that side (`~` and `~/` expanded, symlinks resolved),
/// or the expanded path itself when it does not exist there.
pub fn project(cwd: &str) -> String {
    format!(
        r#"c={cwd}
(cd -- "$c" 2>/dev/null && pwd -P) || printf '%s\n' "$c""#,
        cwd = crate::home::shell_word(cwd)
    )
}

/// What [`list`] lists.
pub struct ListSpec<'a> {
    /// Shell word for the project folder.
    pub dir: &'a str,
    /// Only this session's log, its conflict copies and its sidecar folder (else everything).
    pub only: Option<&'a str>,
    /// With `only`: first wait up to 3 s for the log to contain this text.
    pub settle_on: Option<&'a str>,
    /// Hash each file's window ending at its own end (when no other side's sizes come on stdin).
    pub hash_whole: bool,
    /// Send the new tails of logs that grew by at most this much (see [`COMPARE_AND_SEND`]).
    pub send_tails_up_to: u64,
}

/// Prints the folder (`pwd`), then for each regular file not inside a link
/// `F<TAB>size<TAB>mtime<TAB>path` (and its `H` line with `hash_whole`), `L<TAB>path` for each
/// symbolic link (never followed), and `X<TAB>hex` for each name holding a control byte (a
/// newline would break the lines; its subtree is not entered). Then runs [`COMPARE_AND_SEND`]
/// on stdin. A folder that does not exist prints only its path.
///
/// The `X` lines go to the program's stdout through fd 3, outside the pipe into the loop, so
/// they can never split a line the loop reads.
pub fn list(spec: &ListSpec<'_>) -> String {
    let dir = spec.dir;
    let (roots, settle) = match spec.only {
        Some(id) => {
            // The id is letters, digits, `-` and `_` (checked): `$i.conflict-*` globs only the
            // log's conflict copies.
            let roots = format!(
                "i={}; find \"$i.jsonl\" \"$i\".conflict-* \"$i\"",
                quote(&format!("./{id}"))
            );
            // Before `cd`: the folder itself may not exist until Claude writes the log.
            let settle = spec.settle_on.map_or(String::new(), |needle| {
                let log = format!("\"$d\"/{}", quote(&format!("{id}.jsonl")));
                format!(
                    "_i=0; while [ ! -L {log} ] && ! grep -F -q -e {} -- {log} 2>/dev/null && [ $_i -lt 60 ]; do sleep 0.05; _i=$((_i+1)); done\n",
                    quote(needle),
                )
            });
            (roots, settle)
        }
        None => ("find .".to_owned(), String::new()),
    };
    let hashing = if spec.hash_whole { HASH_WHOLE } else { "" };
    format!(
        r#"{HELPERS}d={dir}; {settle}cd -- "$d" 2>/dev/null || {{ printf '%s\n' "$d"; exit 0; }}
pwd
{{ {roots} -path '*[[:cntrl:]]*' -prune -exec sh -c 'for f; do printf "X\t%s\n" "$(printf %s "$f"|od -An -tx1|tr -d " \n")"; done >&3' sh {{}} + -o ! -name '.outpost-tmp-*' \( -type f -o -type l \) -print 2>/dev/null | while IFS= read -r f; do
[ -L "$f" ] && {{ printf 'L\t%s\n' "${{f#./}}"; continue; }}
set -- $(stat -c '%s %Y' "$f" 2>/dev/null || stat -f '%z %m' "$f"); [ -n "$2" ] || continue; _s=$1
printf 'F\t%s\t%s\t%s\n' "$1" "$2" "${{f#./}}"
{hashing}
done; }} 3>&1
set -- {tail_limit}
{COMPARE_AND_SEND}"#,
        tail_limit = spec.send_tails_up_to,
    )
}

/// The window hashes of the `length<TAB>-<TAB>path` lines on stdin (see [`COMPARE_AND_SEND`]).
pub fn prefix_hashes(dir: &str) -> String {
    format!("{HELPERS}cd -- {dir} || exit 1\nset -- 0\n{COMPARE_AND_SEND}")
}

/// Prints bytes `from..from+len` of `path`; prints nothing when the path leads through a link.
pub fn read(dir: &str, path: &str, from: u64, len: u64) -> String {
    format!(
        "{HELPERS}cd -- {dir} && _plain {path} && tail -c +{start} {file} | head -c {len}",
        path = quote(path),
        file = quote(&format!("./{path}")),
        start = from + 1,
    )
}

/// One atomic write on the destination.
pub struct Write<'a> {
    /// The file written (relative to the project folder). Its first `base` bytes are kept.
    pub target: &'a str,
    pub base: u64,
    /// Bytes that follow on stdin.
    pub len: u64,
    /// Modification time to give the file (the source's).
    pub mtime: i64,
}

/// Writes `target` atomically from stdin: a temp file in the same folder holding the first
/// `base` bytes of `target` plus exactly `len` bytes of stdin, given the mtime, synced, then
/// renamed over `target`. Anything else leaves `target` untouched and the temp file removed.
/// Temp files left by a writer that was killed outright (SIGKILL: no trap runs) are removed by
/// the next write into that folder once their writer's PID is gone.
/// A target through a link, or one that is a folder here, is refused with [`SKIPPED`].
pub fn write(dir: &str, write: &Write<'_>) -> String {
    let folder = folder_of(write.target);
    let copy_base = if write.base > 0 {
        format!(
            r#"[ "$(_size "$_dst")" = {base} ] || {{ echo "${{_dst#./}} changed during the sync" >&2; exit 3; }}
cp -p "$_dst" "$_tmp" || exit 1"#,
            base = write.base
        )
    } else {
        ": > \"$_tmp\" || exit 1".to_owned()
    };
    format!(
        r#"{HELPERS}mkdir -p -- {dir} && cd -- {dir} || exit 1
_dst={target}
_plain {path} || {{ echo "\`${{_p#./}}\` is a symbolic link there (never written through)" >&2; exit {SKIPPED}; }}
[ -d "$_dst" ] && {{ echo "it is a folder there" >&2; exit {SKIPPED}; }}
mkdir -p {folder} || exit 1
for _o in {folder}/.outpost-tmp-*; do _n=${{_o##*-}}; [ -f "$_o" ] && ! kill -0 "$_n" 2>/dev/null && ! [ -d "/proc/$_n" ] && rm -f -- "$_o"; done
_tmp={folder}/.outpost-tmp-$$
trap 'rm -f "$_tmp"' EXIT
trap 'rm -f "$_tmp"; exit 1' HUP INT TERM
{copy_base}
cat >> "$_tmp" || exit 1
_got=$(_size "$_tmp")
[ "$_got" = {total} ] || {{ echo "incomplete transfer: $_got of {total} bytes" >&2; exit 4; }}
TZ=UTC0 touch -t {stamp} "$_tmp" || exit 1
sync "$_tmp" 2>/dev/null || sync
mv -f "$_tmp" "$_dst" || exit 1
trap - EXIT"#,
        path = quote(write.target),
        target = quote(&format!("./{}", write.target)),
        folder = quote(&format!("./{folder}")),
        total = write.base + write.len,
        stamp = touch_stamp(write.mtime),
    )
}

/// The folder part of a relative path (`.` for a top-level file).
pub fn folder_of(path: &str) -> &str {
    path.rfind('/').map_or(".", |i| &path[..i])
}

/// `touch -t` form (`CCYYMMDDhhmm.SS`, UTC) of a Unix time.
fn touch_stamp(mtime: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
    let rfc = humantime::format_rfc3339_seconds(time).to_string(); // 2026-11-21T15:30:45Z
    let digits: String = rfc.chars().filter(char::is_ascii_digit).collect(); // 20261121153045
    format!("{}.{}", &digits[..12], &digits[12..14])
}

#[cfg(test)]
#[path = "scripts_tests.rs"]
mod tests;
