//! The POSIX `sh` script that kills process groups on a host (TERM, grace, KILL) and says, for each,
//! whether it is confirmed gone: the one piece of shell text every remote kill runs.

use std::time::Duration;

/// One process group to kill: its id, and its leader's start time as the wrapper reported it
/// (`/proc/PID/stat` field 22), which `exec` cannot change and which tells a reused pid apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    pub pgid: u32,
    /// None where the host has no `/proc` (the identity check is then skipped).
    pub start: Option<u64>,
}

/// What the script says of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Nothing of it was left to kill (already ended, or the pid now belongs to another process).
    Gone,
    /// Signalled, and now confirmed gone (members that are only zombies count as gone).
    Dead,
    /// Still there after KILL and a wait (uninterruptible sleep, a stuck filesystem).
    Alive,
    /// The host refused to let it be signalled (its processes changed user, e.g. `sudo`).
    Denied,
}

impl Verdict {
    /// Whether the group is confirmed gone.
    pub fn confirmed(self) -> bool {
        matches!(self, Verdict::Gone | Verdict::Dead)
    }

    /// Why a kill is not confirmed, for a result or a log line; None when it is.
    pub fn doubt(self) -> Option<&'static str> {
        match self {
            Verdict::Gone | Verdict::Dead => None,
            Verdict::Alive => Some("part of the process group was still alive after SIGKILL"),
            Verdict::Denied => Some(
                "the host did not permit signalling part of the process group: it runs as another user (e.g. started with sudo) and may still be running",
            ),
        }
    }
}

/// How long after SIGKILL the script still waits for the group to be gone.
pub(super) const AFTER_KILL: Duration = Duration::from_secs(1);

/// Lists, in the shell's `L`, every pid and process group that has a member that is not a zombie.
const SCAN: &str = r#"scan() { L=" "; for f in /proc/[0-9]*/stat; do read -r l 2>/dev/null < "$f" || continue; r=${l##*) }; set -- $r; [ "$1" = Z ] || L="$L${l%% *} $3 "; done; }"#;

/// Whether signalling group (or process) `$1` is refused: it is there, but its processes run as
/// another user (after `sudo`), so `kill -0` failing says nothing about it being gone.
const DENIED: &str =
    r#"denied() { case $(kill -0 -$1 2>&1; kill -0 $1 2>&1) in *ermit*) true;; *) false;; esac; }"#;

/// Waits up to `$1` polls for the groups in `w` to be gone, printing `PGID dead` for each that
/// goes. `kill -0` first (cheap; a refused one counts as still there); where it still finds a group and `/proc` exists, the group is
/// gone if all that is left of it are zombies (dead, waiting for a parent that may never reap).
const WAIT_FOR: &str = r#"wait_for() { i=0; while [ -n "$w" ] && [ $i -lt $1 ]; do if [ $i = 0 ]; then sleep 0.02; else sleep 0.1; fi; i=$((i+1)); v=; for p in $w; do if kill -0 -$p 2>/dev/null || kill -0 $p 2>/dev/null || denied $p; then v="$v $p"; else echo "$p dead"; fi; done; w=$v; [ -n "$w" ] && [ -d /proc/self ] || continue; scan; v=; for p in $w; do case "$L" in *" $p "*) v="$v $p";; *) echo "$p dead";; esac; done; w=$v; done; }"#;

/// Checks each group's identity, sends TERM, waits up to the grace for each to be gone, sends
/// KILL to the rest and waits a little more. Prints one line per group as soon as it is known:
/// `PGID gone|dead|alive|denied`. Uses only `sh` builtins, `/proc` where it exists, and `sleep`.
/// Contains no single quote. No `--` before a negative id: dash's `kill` refuses it.
pub fn kill_script(groups: &[Group], grace: Duration) -> String {
    let list: Vec<String> = groups
        .iter()
        .map(|g| match g.start {
            Some(start) => format!("{}:{start}", g.pgid),
            None => format!("{}:-", g.pgid),
        })
        .collect();
    let polls = (grace.as_millis() / 100).max(1);
    let after = AFTER_KILL.as_millis() / 100;
    format!(
        r#"{SCAN}; {DENIED}; {WAIT_FOR}; sig() {{ e=$(kill -$1 -$2 2>&1) || e=$(kill -$1 $2 2>&1); }}; w=; for x in {list}; do p=${{x%:*}}; t=${{x#*:}}; if [ "$t" != - ] && read -r l 2>/dev/null < /proc/$p/stat; then r=${{l##*) }}; set -- $r; if [ "${{20}}" != "$t" ]; then echo "$p gone"; continue; fi; fi; if sig TERM $p; then w="$w $p"; else case "$e" in *ermit*) echo "$p denied";; *) echo "$p gone";; esac; fi; done; wait_for {polls}; for p in $w; do sig KILL $p; done; wait_for {after}; for p in $w; do if denied $p; then echo "$p denied"; else echo "$p alive"; fi; done; true"#,
        list = list.join(" "),
    )
}

/// Reads the script's output: each group's verdict, in the order they were printed. Groups the
/// output does not mention (the script could not run, or was cut off) are not in it.
pub fn parse_verdicts(output: &str) -> Vec<(u32, Verdict)> {
    output
        .lines()
        .filter_map(|line| {
            let (pgid, word) = line.trim().split_once(' ')?;
            let verdict = match word {
                "gone" => Verdict::Gone,
                "dead" => Verdict::Dead,
                "alive" => Verdict::Alive,
                "denied" => Verdict::Denied,
                _ => return None,
            };
            Some((pgid.parse().ok()?, verdict))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// Starts `script` under `sh` as the leader of its own group; returns it, its leader's start
    /// time, and the first line it prints.
    fn leader(script: &str) -> (std::process::Child, u64, String) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let start = start_time(child.id());
        (child, start, line.trim().to_owned())
    }

    fn start_time(pid: u32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = stat.rsplit_once(") ").unwrap().1;
        rest.split_whitespace().nth(19).unwrap().parse().unwrap()
    }

    /// Runs the script with `sh` (dash on Debian) and returns what it says.
    fn run(groups: &[Group], grace_ms: u64) -> Vec<(u32, Verdict)> {
        let script = kill_script(groups, Duration::from_millis(grace_ms));
        assert!(
            !script.contains('\''),
            "the script must fit in single quotes"
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_verdicts(&String::from_utf8_lossy(&out.stdout))
    }

    /// Whether `pid` is gone (or a zombie) within 5 s.
    fn gone(pid: i32) -> bool {
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            gone_now(pid)
        })
    }

    #[test]
    fn a_group_whose_leader_execs_with_a_clean_environment_still_dies_whole() {
        let (mut child, start, background) = leader("sleep 4711 & echo $!; exec env -i sleep 4712");
        let pgid = child.id();
        let verdicts = run(
            &[Group {
                pgid,
                start: Some(start),
            }],
            500,
        );
        assert_eq!(verdicts, [(pgid, Verdict::Dead)]);
        child.wait().unwrap();
        assert!(
            gone(background.parse().unwrap()),
            "the background child survived"
        );
    }

    #[test]
    fn another_processs_start_time_leaves_the_group_alone() {
        let (mut child, start, _) = leader("echo up; exec sleep 4713");
        let pgid = child.id();
        let verdicts = run(
            &[Group {
                pgid,
                start: Some(start + 1),
            }],
            300,
        );
        assert_eq!(verdicts, [(pgid, Verdict::Gone)]);
        assert!(
            child.try_wait().unwrap().is_none(),
            "a reused pid was killed"
        );
        run(
            &[Group {
                pgid,
                start: Some(start),
            }],
            300,
        );
        child.wait().unwrap();
    }

    #[test]
    fn a_group_whose_leader_has_exited_is_still_killed() {
        // The leader prints its background child's pid and exits; the child keeps the group.
        let (mut child, start, background) = leader("sleep 4714 & echo $!");
        let pgid = child.id();
        child.wait().unwrap();
        let background: i32 = background.parse().unwrap();
        assert!(!gone_now(background));
        let verdicts = run(
            &[Group {
                pgid,
                start: Some(start),
            }],
            300,
        );
        assert_eq!(verdicts, [(pgid, Verdict::Dead)]);
        assert!(gone(background));
    }

    fn gone_now(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    }

    #[test]
    fn zombies_count_as_dead_and_term_is_not_waited_out() {
        // The leader dies at TERM but stays a zombie: this test has not reaped it yet. Waiting
        // for it would take the whole (long) grace and still end in `alive`.
        let (mut child, start, _) = leader("sleep 4715 & echo up; exec sleep 4716");
        let pgid = child.id();
        let verdicts = run(
            &[Group {
                pgid,
                start: Some(start),
            }],
            60_000,
        );
        assert_eq!(verdicts, [(pgid, Verdict::Dead)], "waited for a zombie?");
        child.wait().unwrap();
    }

    #[test]
    fn many_groups_in_one_run_each_get_a_verdict() {
        let mut children = Vec::new();
        let mut groups = Vec::new();
        for _ in 0..12 {
            let (child, start, _) = leader("echo up; exec sleep 4717");
            groups.push(Group {
                pgid: child.id(),
                start: Some(start),
            });
            children.push(child);
        }
        groups.push(Group {
            pgid: 999_999_999,
            start: None,
        });
        let mut verdicts = run(&groups, 500);
        verdicts.sort();
        let mut expected: Vec<(u32, Verdict)> =
            children.iter().map(|c| (c.id(), Verdict::Dead)).collect();
        expected.push((999_999_999, Verdict::Gone));
        expected.sort();
        assert_eq!(verdicts, expected);
        for mut child in children {
            child.wait().unwrap();
        }
    }

    #[test]
    fn a_group_that_ignores_term_is_killed_after_the_grace() {
        let (mut child, start, _) = leader("trap \"\" TERM; echo up; while :; do sleep 1; done");
        let pgid = child.id();
        let verdicts = run(
            &[Group {
                pgid,
                start: Some(start),
            }],
            200,
        );
        assert_eq!(verdicts, [(pgid, Verdict::Dead)]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }

    #[test]
    fn verdict_lines_are_parsed_and_noise_is_not() {
        let out = "12 dead\nnoise\n13 gone\nx alive\n14 alive\n15 denied\n";
        assert_eq!(
            parse_verdicts(out),
            [
                (12, Verdict::Dead),
                (13, Verdict::Gone),
                (14, Verdict::Alive),
                (15, Verdict::Denied)
            ]
        );
    }
}
