//! The small POSIX-sh wrapper every remote command runs under: it reads cwd, env and the command from stdin
//! (so no secret is ever in argv or `ps`), starts the command as the leader of its own process group,
//! reports that group's id, and passes on the command's exit code or signal.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

use super::kill_script::Group;
use crate::error::Result;

/// Reads the header up to the nonce line (input that ends before it runs nothing: a shell started
/// ahead of time, whose channel closes before a command comes, just exits), applies it, checks cwd (without one: home, where `$HOME`
/// is a directory; an engine's exec would otherwise start in the image's WORKDIR), reports `$$`, its start time
/// (field 22 of `/proc/$$/stat`, as OUTER read it when INNER runs in its shell; `-` without
/// `/proc`; the fields after the first `) `, which ends the shell's own name, `sh`, `bash`, ...:
/// `${x##*) }`, right for any name, costs dash some 0.15 ms per use) and the login shell (`$SHELL`), runs the
/// command with no positional parameters. `$1` is the nonce. Contains no single quote, so it fits in a
/// single-quoted argument of any shell.
const INNER: &str = r#"s=; while IFS= read -r l; do [ "$l" = "$1" ] && break; s="$s$l
"; done; [ "$l" = "$1" ] || exit 125; eval "$s"; unset s l; __o_n=$1; if [ -n "${__o_cwd-}" ]; then cd -- "$__o_cwd" 2>/dev/null || { printf "%s nocwd\n" "$__o_n"; exit 127; }; elif [ -n "${HOME-}" ]; then cd -- "$HOME" 2>/dev/null || :; fi; __o_t=${__o_st-}; [ -n "$__o_t" ] || read -r __o_t 2>/dev/null < /proc/$$/stat || __o_t=; __o_t=${__o_t#*) }; set -- $__o_t; __o_t=${20:--}; set --; unset __o_st; printf "%s\n" "$__o_n" >&2; printf "%s pid %s %s %s\n" "$__o_n" "$$" "$__o_t" "${SHELL-}"; unset __o_n __o_t; eval "$__o_cmd""#;

/// Runs INNER as the leader of its own process group, and dies by the same signal as the command
/// if it did. `$1` is the nonce, `$2` is INNER.
///
/// Where this shell already leads its process group (sshd makes every command a session leader),
/// which the one read of `/proc/$$/stat` (`__o_st`, reused by INNER) tells, INNER runs right here:
/// no fork, no `setsid`, no second shell. Elsewhere (a wrapper), and whenever a `$3` asks for the
/// report below, INNER is started in a new session when `setsid` exists, and waited for; the
/// shell's own `Terminated` notice is silenced (the command did not print it). The report, for an
/// engine (whose exec makes a session leader too, but passes on a death by signal N only as exit
/// code 128+N): a command that died by signal N is also announced as `NONCE signal N` on stderr.
const OUTER: &str = r#"if [ -z "${3-}" ] && read -r __o_st 2>/dev/null < /proc/$$/stat && __o_pg=${__o_st#*) } && __o_pg=${__o_pg#* * } && [ "${__o_pg%% *}" = "$$" ]; then eval "$2"; st=$?; else exec 3<&0; if command -v setsid >/dev/null 2>&1; then setsid sh -c "$2" outpost "$1" 0<&3 & else sh -c "$2" outpost "$1" 0<&3 & fi; exec 3<&-; wait $! 2>/dev/null; st=$?; [ $st -le 128 ] || [ -z "${3-}" ] || printf "%s signal %s\n" "$1" $((st - 128)) >&2; fi; if [ $st -gt 128 ]; then kill -s $((st - 128)) $$ 2>/dev/null; fi; exit $st"#;

/// One remote invocation: the exec string (public) and the stdin header (may hold secrets).
pub struct Invocation {
    pub nonce: String,
    pub header: Vec<u8>,
}

impl Invocation {
    /// Builds the invocation for `command` in `cwd` with `env`. Env names must be shell names.
    pub fn new(command: &str, cwd: Option<&str>, env: &BTreeMap<String, String>) -> Result<Self> {
        super::check_env_names(env)?;
        Ok(Self::with_nonce(fresh_nonce(), command, cwd, env))
    }

    /// The invocation for a wrapper already started with `nonce` (see [`exec_line`]), with env
    /// names already checked (`check_env_names`).
    pub fn with_nonce(
        nonce: String,
        command: &str,
        cwd: Option<&str>,
        env: &BTreeMap<String, String>,
    ) -> Self {
        let mut header = String::new();
        for (name, value) in env {
            header.push_str(&format!("export {name}={}\n", shell_words::quote(value)));
        }
        if let Some(cwd) = cwd {
            header.push_str(&format!("__o_cwd={}\n", crate::home::shell_word(cwd)));
        }
        header.push_str(&format!(
            "__o_cmd={}\n{nonce}\n",
            shell_words::quote(command)
        ));
        Self {
            nonce,
            header: header.into_bytes(),
        }
    }

    /// The command string for a login shell to run: [`exec_line`] with this nonce.
    pub fn exec(&self, in_place: Option<&str>) -> String {
        exec_line(&self.nonce, in_place)
    }

    /// The wrapper as an argv, for a prefix that runs a program (`docker exec -i CONTAINER` + this),
    /// asking for the death-by-signal line that [`super::trailer::LastWord`] reads.
    pub fn argv(&self) -> [&str; 7] {
        [
            "sh",
            "-c",
            OUTER,
            "outpost",
            &self.nonce,
            INNER,
            "report-signal",
        ]
    }

    /// Reads the wrapper's report line (`NONCE pid N START [SHELL]` or `NONCE nocwd`), which may
    /// follow text a shell startup file printed without a newline.
    pub fn parse_report(&self, line: &str) -> Option<Report> {
        let at = line.find(&self.nonce)?;
        let rest = line[at + self.nonce.len()..].trim();
        if rest == "nocwd" {
            return Some(Report::NoCwd);
        }
        let mut fields = rest.strip_prefix("pid ")?.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let start = fields.next()?.parse().ok();
        let login_shell = fields.next().map(str::to_owned);
        Some(Report::Started {
            group: Group { pgid: pid, start },
            login_shell,
        })
    }
}

/// A fresh nonce: it ends the header and marks the wrapper's report lines.
pub fn fresh_nonce() -> String {
    format!(
        "__outpost_{:016x}{:016x}",
        RandomState::new().hash_one(1u8),
        RandomState::new().hash_one(2u8)
    )
}

/// The command string for a login shell to run the wrapper with `nonce`, which then waits for
/// its header on stdin. Any login shell (fish, csh, ...) can `exec sh -c '…'`; a login shell that
/// runs POSIX sh text (see [`in_place_prelude`]) runs the wrapper itself, after `in_place`, which
/// saves starting a second shell.
pub fn exec_line(nonce: &str, in_place: Option<&str>) -> String {
    match in_place {
        Some(prelude) => format!("{prelude}set -- {nonce} '{INNER}'; {OUTER}"),
        None => format!("exec sh -c '{OUTER}' outpost {nonce} '{INNER}'"),
    }
}

/// What a login shell at `path` (`$SHELL`) needs before the wrapper's POSIX sh text to run it
/// itself: nothing for `sh`, `dash`, `ash` and `bash`; sh emulation for `zsh` (which would
/// otherwise not split words). `None`: it cannot (fish, csh, unknown shells), so the wrapper
/// runs under `exec sh -c`. In place, the command runs in that shell too, as `ssh host CMD` runs
/// it; otherwise in `sh`.
pub fn in_place_prelude(path: &str) -> Option<&'static str> {
    match path.rsplit('/').next() {
        Some("sh" | "dash" | "ash" | "bash") => Some(""),
        Some("zsh") => Some("emulate sh; "),
        _ => None,
    }
}

/// What the wrapper said before the command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The command runs as process group `group` (or process, where it leads none);
    /// `login_shell` is `$SHELL` there, if set.
    Started {
        group: Group,
        login_shell: Option<String>,
    },
    /// The working directory does not exist.
    NoCwd,
}

#[cfg(test)]
mod tests {
    use super::super::kill_script::{Verdict, kill_script, parse_verdicts};
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs the exec string with the local `sh`, as sshd would, feeding header + input.
    fn run(inv: &Invocation, input: &[u8]) -> (String, String, Option<i32>) {
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(inv.exec(None));
        feed(sh, inv, input)
    }

    /// Starts `command`, writes the header and `input` to it, and collects what it printed.
    fn feed(mut command: Command, inv: &Invocation, input: &[u8]) -> (String, String, Option<i32>) {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&inv.header).unwrap();
        stdin.write_all(input).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.code(),
        )
    }

    #[test]
    fn runs_with_env_cwd_and_stdin_and_reports_its_group() {
        let env = BTreeMap::from([("SECRET".to_owned(), "it's\n\"multi\" $line".to_owned())]);
        let inv = Invocation::new(
            "printf '[%s]\\n' \"$SECRET\"; pwd; cat; exit 3",
            Some("/tmp"),
            &env,
        )
        .unwrap();
        for in_place in [None, Some(""), Some("emulate sh; ")] {
            let exec = inv.exec(in_place);
            assert!(!exec.contains("SECRET") && !exec.contains("printf '["));
        }
        let (out, _, code) = run(&inv, b"input");
        let (report, rest) = out.split_once('\n').unwrap();
        assert!(
            matches!(inv.parse_report(report), Some(Report::Started { .. })),
            "{report}"
        );
        assert_eq!(rest, "[it's\n\"multi\" $line]\n/tmp\ninput");
        assert_eq!(code, Some(3));
    }

    #[test]
    fn a_header_cut_before_its_nonce_line_runs_nothing() {
        // A shell started ahead of time whose channel closes before (all of) a command came.
        let inv = Invocation::new("echo ran", None, &BTreeMap::new()).unwrap();
        let len = inv.header.len();
        // Before the nonce line, within it (no newline yet), or nothing at all.
        for cut in [len - inv.nonce.len() - 1, len - 5, 0] {
            for in_place in [None, Some("")] {
                let mut sh = Command::new("sh");
                sh.arg("-c").arg(inv.exec(in_place));
                let partial = Invocation {
                    nonce: inv.nonce.clone(),
                    header: inv.header[..cut].to_vec(),
                };
                let (out, err, code) = feed(sh, &partial, b"");
                assert_eq!((out.as_str(), err.as_str(), code), ("", "", Some(125)));
            }
        }
        // The whole nonce line but its newline: the header is complete, the command runs.
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(inv.exec(None));
        let whole = Invocation {
            nonce: inv.nonce.clone(),
            header: inv.header[..len - 1].to_vec(),
        };
        let (out, _, _) = feed(sh, &whole, b"");
        assert!(out.ends_with("ran\n"), "{out}");
    }

    #[test]
    fn as_a_group_leader_it_runs_in_place_and_the_whole_group_still_dies() {
        // Run by a login shell that runs the wrapper itself (sh, bash, zsh emulating sh), or by
        // any other shell through `exec sh -c`.
        for shell in ["sh", "bash", "zsh"] {
            let login = format!("/bin/{shell}");
            leader_runs_in_place_and_dies_whole(shell, &login, in_place_prelude(&login));
        }
        leader_runs_in_place_and_dies_whole("sh", "/usr/bin/fish", None);
    }

    fn leader_runs_in_place_and_dies_whole(shell: &str, login: &str, in_place: Option<&str>) {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let env = BTreeMap::from([("TOKEN".to_owned(), "t0k".to_owned())]);
        let inv = Invocation::new(
            "echo $TOKEN; pwd; sleep 304 & echo $!; wait",
            Some("/tmp"),
            &env,
        )
        .unwrap();
        // As sshd starts a command: the leader of its own process group.
        let mut child = Command::new(shell)
            .arg("-c")
            .arg(inv.exec(in_place))
            .env("SHELL", login)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&inv.header).unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        for _ in 0..4 {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            lines.push(line.trim_end().to_owned());
        }
        let Some(Report::Started { group, login_shell }) = inv.parse_report(&lines[0]) else {
            panic!("no report: {}", lines[0]);
        };
        assert_eq!(
            group.pgid,
            child.id(),
            "the command runs in the wrapper's own shell"
        );
        assert_eq!(login_shell.as_deref(), Some(login));
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        let after_name = stat.rsplit_once(") ").unwrap().1;
        let start = after_name.split_whitespace().nth(19).unwrap().parse().ok();
        assert_eq!(group.start, start, "field 22 of the leader's stat");
        assert_eq!(&lines[1..3], ["t0k", "/tmp"]);
        let background: i32 = lines[3].parse().unwrap();
        let reused = Group {
            pgid: group.pgid,
            start: group.start.map(|s| s + 1),
        };
        assert_eq!(run_kill_script(&reused, 300), Verdict::Gone);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "killed by another run's kill"
        );
        assert_eq!(run_kill_script(&group, 300), Verdict::Dead);
        assert_eq!(child.wait().unwrap().signal(), Some(15));
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let stat = std::fs::read_to_string(format!("/proc/{background}/stat"));
            stat.map_or(true, |s| s.contains(") Z "))
        });
        assert!(gone, "the background child of the group survived");
    }

    #[test]
    fn login_shells_that_run_sh_text_are_told_from_others() {
        for sh in ["/bin/sh", "/usr/bin/dash", "/bin/ash", "sh", "/bin/bash"] {
            assert_eq!(in_place_prelude(sh), Some(""), "{sh}");
        }
        assert_eq!(in_place_prelude("/usr/bin/zsh"), Some("emulate sh; "));
        for other in ["/usr/bin/fish", "/bin/tcsh", "/bin/csh", "", "/bin/shx"] {
            assert_eq!(in_place_prelude(other), None, "{other}");
        }
        let inv = Invocation::new("true", None, &BTreeMap::new()).unwrap();
        let report = format!("{} pid 42 9876 /bin/bash", inv.nonce);
        let started = |start: Option<u64>, login_shell: Option<&str>| Report::Started {
            group: Group { pgid: 42, start },
            login_shell: login_shell.map(str::to_owned),
        };
        assert_eq!(
            inv.parse_report(&report),
            Some(started(Some(9876), Some("/bin/bash")))
        );
        // No /proc (start `-`) and no $SHELL.
        let bare = format!("{} pid 42 - ", inv.nonce);
        assert_eq!(inv.parse_report(&bare), Some(started(None, None)));
    }

    #[test]
    fn missing_cwd_is_reported() {
        let inv = Invocation::new("true", Some("/no/such dir"), &BTreeMap::new()).unwrap();
        let (out, _, _) = run(&inv, b"");
        assert_eq!(inv.parse_report(out.trim_end()), Some(Report::NoCwd));
    }

    #[test]
    fn death_by_signal_is_passed_on() {
        use std::os::unix::process::ExitStatusExt;
        let inv = Invocation::new("kill -TERM $$", None, &BTreeMap::new()).unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(inv.exec(None))
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(&inv.header)?;
                c.wait()
            })
            .unwrap();
        assert_eq!(status.signal(), Some(15));
    }

    /// Runs the argv form as an engine's exec does (a process group leader) from `/` with `HOME`.
    fn run_argv(inv: &Invocation, home: &str) -> (String, String, Option<i32>) {
        use std::os::unix::process::CommandExt;
        let [program, args @ ..] = inv.argv();
        let mut command = Command::new(program);
        command
            .args(args)
            .process_group(0)
            .current_dir("/")
            .env("HOME", home);
        feed(command, inv, b"")
    }

    #[test]
    fn under_an_engine_a_death_by_signal_is_reported_from_inside() {
        let inv = Invocation::new("echo out; kill -TERM $$", None, &BTreeMap::new()).unwrap();
        let (_, err, _) = run_argv(&inv, "/tmp");
        // The marker, then the report; no `Terminated` from the shell that waited.
        assert_eq!(err, format!("{0}\n{0} signal 15\n", inv.nonce));
        let inv = Invocation::new("exit 3", None, &BTreeMap::new()).unwrap();
        let (_, err, code) = run_argv(&inv, "/tmp");
        assert_eq!((err, code), (format!("{}\n", inv.nonce), Some(3)));
    }

    #[test]
    fn without_cwd_the_command_runs_in_home_where_there_is_one() {
        let home = tempfile::tempdir().unwrap();
        let home = home.path().to_str().unwrap();
        let inv = Invocation::new("pwd", None, &BTreeMap::new()).unwrap();
        let (out, _, _) = run_argv(&inv, home);
        assert_eq!(out.lines().nth(1), Some(home));
        // No such home: where it was started, as sshd does.
        let (out, _, _) = run_argv(&inv, "/no/such/home");
        assert_eq!(out.lines().nth(1), Some("/"));
    }

    #[test]
    fn without_setsid_the_command_still_runs_and_dies_by_kill_script() {
        use std::io::{BufRead, BufReader};
        // A PATH with `sh` and `sleep` but no `setsid`, as on macOS.
        let bin = tempfile::tempdir().unwrap();
        for tool in ["sh", "sleep"] {
            let real = which(tool);
            std::os::unix::fs::symlink(real, bin.path().join(tool)).unwrap();
        }
        let inv = Invocation::new("exec sleep 300", None, &BTreeMap::new()).unwrap();
        let mut child = Command::new(bin.path().join("sh"))
            .arg("-c")
            .arg(inv.exec(None))
            .env("PATH", bin.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&inv.header).unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(Report::Started { group, .. }) = inv.parse_report(line.trim_end()) else {
            panic!("no report: {line}");
        };
        assert_eq!(run_kill_script(&group, 200), Verdict::Dead);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(15));
    }

    #[test]
    fn kill_script_takes_the_whole_group_under_dash() {
        use std::io::{BufRead, BufReader};
        let inv = Invocation::new(
            "sleep 301 & echo $!; exec sleep 302",
            None,
            &BTreeMap::new(),
        )
        .unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(inv.exec(None))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&inv.header).unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut report, mut background) = (String::new(), String::new());
        out.read_line(&mut report).unwrap();
        out.read_line(&mut background).unwrap();
        let Some(Report::Started { group, .. }) = inv.parse_report(report.trim_end()) else {
            panic!("no report: {report}");
        };
        let background: i32 = background.trim().parse().unwrap();
        // A kill meant for another run (another pod's pid 7, a reused pid) leaves the group alone.
        let other = Group {
            pgid: group.pgid,
            start: group.start.map(|s| s - 1),
        };
        assert_eq!(run_kill_script(&other, 500), Verdict::Gone);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "killed by another run's kill"
        );
        // Debian's `sh` is dash, whose `kill` takes no `--`.
        assert_eq!(run_kill_script(&group, 500), Verdict::Dead);
        child.wait().unwrap();
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let stat = std::fs::read_to_string(format!("/proc/{background}/stat"));
            stat.map_or(true, |s| s.contains(") Z "))
        });
        assert!(gone, "the background child of the group survived");
    }

    fn run_kill_script(group: &Group, grace_ms: u64) -> Verdict {
        let script = kill_script(
            std::slice::from_ref(group),
            std::time::Duration::from_millis(grace_ms),
        );
        let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(out.status.success());
        let verdicts = parse_verdicts(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(verdicts.len(), 1, "{verdicts:?}");
        verdicts[0].1
    }

    fn which(tool: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn bad_env_names_are_refused() {
        let env = BTreeMap::from([("A;rm".to_owned(), "x".to_owned())]);
        assert!(Invocation::new("true", None, &env).is_err());
    }
}
