//! The local transport against real processes: output, exit status, stdin, cwd, env, and whole-tree kills.

use std::collections::BTreeMap;
use std::time::Duration;

use outpost::Error;
use outpost::transport::{
    CommandSpec, ExitStatus, KillPolicy, KillState, Local, OutputStream, Process, ProcessEvent,
    Stdin,
};

/// Bound on any single wait, so a broken kill fails the test instead of hanging it.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn local(grace_ms: u64) -> Local {
    Local::new(
        "local",
        KillPolicy {
            grace: Duration::from_millis(grace_ms),
        },
    )
}

fn spec(command: &str) -> CommandSpec {
    CommandSpec {
        command: command.into(),
        ..Default::default()
    }
}

struct Collected {
    stdout: String,
    stderr: String,
    exit: ExitStatus,
}

async fn collect(mut process: Process) -> Collected {
    let mut out = Collected {
        stdout: String::new(),
        stderr: String::new(),
        exit: ExitStatus::default(),
    };
    tokio::time::timeout(HANG_GUARD, async {
        while let Some(event) = process.next_event().await {
            match event {
                ProcessEvent::Output(OutputStream::Stdout, d) => {
                    out.stdout.push_str(&String::from_utf8_lossy(&d))
                }
                ProcessEvent::Output(OutputStream::Stderr, d) => {
                    out.stderr.push_str(&String::from_utf8_lossy(&d))
                }
                ProcessEvent::Exited(status) => out.exit = status,
            }
        }
    })
    .await
    .expect("process did not finish");
    out
}

/// Reads stdout until `lines` whole lines have arrived.
async fn read_lines(process: &mut Process, lines: usize) -> Vec<String> {
    let mut text = String::new();
    tokio::time::timeout(HANG_GUARD, async {
        while text.lines().count() < lines || !text.ends_with('\n') {
            match process.next_event().await {
                Some(ProcessEvent::Output(OutputStream::Stdout, d)) => {
                    text.push_str(&String::from_utf8_lossy(&d))
                }
                Some(_) => {}
                None => panic!("process ended early: {text}"),
            }
        }
    })
    .await
    .expect("lines did not arrive");
    text.lines().map(str::to_owned).collect()
}

/// Alive and not a zombie.
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            !matches!(state, Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn exit_code_stdout_and_stderr() {
    let out = collect(
        local(500)
            .spawn(spec("echo out; echo err >&2; exit 7"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert_eq!(
        out.exit,
        ExitStatus {
            code: Some(7),
            signal: None
        }
    );
    assert_eq!(out.exit.shell_code(), 7);
}

#[tokio::test]
async fn death_by_signal_is_reported() {
    let out = collect(local(500).spawn(spec("kill -KILL $$")).await.unwrap()).await;
    assert_eq!(out.exit.code, None);
    assert_eq!(out.exit.signal.as_deref(), Some("SIGKILL"));
    assert_eq!(out.exit.shell_code(), 137);
}

#[tokio::test]
async fn stdin_cwd_and_env_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec("pwd; printf '%s\\n' \"$GREETING\"; cat");
    spec.cwd = Some(dir.path().display().to_string());
    spec.env = BTreeMap::from([("GREETING".to_owned(), "hello there".to_owned())]);
    spec.stdin = Stdin::Bytes(b"from stdin".to_vec());
    let out = collect(local(500).spawn(spec).await.unwrap()).await;
    let real = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        out.stdout,
        format!("{}\nhello there\nfrom stdin", real.display())
    );
}

#[tokio::test]
async fn null_stdin_reads_eof() {
    let out = collect(local(500).spawn(spec("cat; echo done")).await.unwrap()).await;
    assert_eq!(out.stdout, "done\n");
}

#[tokio::test]
async fn missing_cwd_is_a_clear_error() {
    let mut spec = spec("true");
    spec.cwd = Some("/no/such/dir".into());
    match local(500).spawn(spec).await {
        Err(Error::MissingCwd { cwd, .. }) => assert_eq!(cwd, "/no/such/dir"),
        other => panic!("expected MissingCwd, got {:?}", other.map(|_| ())),
    }
}

/// Starts `command`, reads the pids it prints, kills it, and checks how it ended and that every
/// printed pid is gone.
async fn kill_and_check(grace_ms: u64, command: &str, pids: usize, signal: &str) {
    let mut process = local(grace_ms).spawn(spec(command)).await.unwrap();
    let pids = read_lines(&mut process, pids).await;
    assert!(pids.iter().all(|p| alive(p)), "{pids:?}");
    process.kill();
    let out = collect(process).await;
    assert_eq!(out.exit.signal.as_deref(), Some(signal));
    for pid in &pids {
        assert!(!alive(pid), "pid {pid} survived the kill");
    }
}

#[tokio::test]
async fn kill_takes_down_the_whole_tree() {
    let command = "sleep 300 & echo $!; (sleep 300; true) & echo $!; echo $$; wait";
    kill_and_check(500, command, 3, "SIGTERM").await;
}

#[tokio::test]
async fn term_ignoring_tree_gets_kill_after_grace() {
    let command = "trap '' TERM; sh -c 'trap \"\" TERM; echo $$; sleep 300' & wait";
    kill_and_check(200, command, 1, "SIGKILL").await;
}

/// The grace is kept by tokio's clock: in paused time, an hour of grace passes in no time, TERM
/// alone is all the tree gets until then, and KILL follows the moment it runs out.
#[tokio::test]
async fn the_kill_grace_runs_on_tokio_time() {
    let grace = Duration::from_secs(3600);
    let command = "trap '' TERM; sh -c 'echo $$; sleep 300' & wait";
    let mut process = local(grace.as_millis() as u64)
        .spawn(spec(command))
        .await
        .unwrap();
    let pids = read_lines(&mut process, 1).await;
    let kill = process.kill_state();
    tokio::time::pause();
    process.kill();
    settle().await;
    assert_eq!(*kill.borrow(), KillState::Sent);
    tokio::time::advance(grace - Duration::from_secs(1)).await;
    settle().await;
    assert!(alive(&pids[0]), "killed before the grace ran out");
    assert_eq!(*kill.borrow(), KillState::Sent);
    tokio::time::advance(Duration::from_secs(2)).await;
    settle().await;
    // Real time again, to wait for the real processes to die.
    tokio::time::resume();
    let out = collect(process).await;
    assert_eq!(out.exit.signal.as_deref(), Some("SIGKILL"));
    assert_eq!(*kill.borrow(), KillState::Confirmed);
    assert!(!alive(&pids[0]));
}

/// Lets other tasks run what the last step woke, without letting paused time move on.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn dropping_the_handle_kills_the_tree() {
    let mut process = local(200).spawn(spec("echo $$; sleep 300")).await.unwrap();
    let pids = read_lines(&mut process, 1).await;
    drop(process);
    tokio::time::timeout(HANG_GUARD, async {
        while alive(&pids[0]) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("process survived its handle");
}

#[tokio::test]
async fn background_child_holding_stdout_does_not_hang_the_exit() {
    let mut process = local(200)
        .spawn(spec("sleep 300 & echo $!; echo bye"))
        .await
        .unwrap();
    let pids = read_lines(&mut process, 2).await;
    let out = collect(process).await;
    assert_eq!(out.exit.code, Some(0));
    // Left running on purpose (like `nohup ... &`); clean it up here.
    let _ = std::process::Command::new("kill").arg(&pids[0]).status();
}

#[tokio::test]
async fn piped_stdin_streams_until_closed() {
    use tokio::io::AsyncWriteExt;
    let mut s = spec("while read line; do echo \"got $line\"; done");
    s.stdin = Stdin::Pipe;
    let mut process = local(200).spawn(s).await.unwrap();
    let mut stdin = process.take_stdin().unwrap();
    stdin.write_all(b"one\n").await.unwrap();
    assert_eq!(read_lines(&mut process, 1).await, ["got one"]);
    stdin.write_all(b"two\n").await.unwrap();
    drop(stdin);
    let out = collect(process).await;
    assert_eq!(out.stdout, "got two\n");
    assert_eq!(out.exit.code, Some(0));
}
