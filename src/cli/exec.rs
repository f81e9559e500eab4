//! `outpost exec HOST -- CMD`: the transport path from a terminal, with live output, Ctrl-C and the command's exit code.

use std::io::IsTerminal;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::Result;
use crate::hosts::Hosts;
use crate::transport::{CommandSpec, OutputStream, Process, ProcessEvent, Stdin};

/// Exit code when the command ran past `--timeout` (as coreutils `timeout`).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit code after Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub host: Option<String>,
    pub cwd: Option<String>,
    pub timeout: Option<Duration>,
    /// One word is a shell command line as is; several are quoted and joined.
    pub argv: Vec<String>,
}

/// Runs the request with output streamed to this terminal; returns the exit code to exit with.
pub async fn run(hosts: &Hosts, request: ExecRequest) -> Result<i32> {
    let name = hosts.effective_name(request.host.as_deref());
    let command = command_line(&request.argv);
    let forward_stdin = !std::io::stdin().is_terminal();
    let spec = |host: &str| CommandSpec {
        command: command.clone(),
        cwd: request.cwd.clone().or_else(|| hosts.workspace(host)),
        env: Default::default(),
        stdin: if forward_stdin {
            Stdin::Pipe
        } else {
            Stdin::Null
        },
    };
    // Listening before the command starts: a Ctrl-C at any moment from here kills its tree.
    let termination = crate::serve::termination();
    let (picked, mut process) = hosts.spawn(&name, spec).await?;
    if let Some(group) = &picked.group {
        eprintln!(
            "outpost: running on `{}` (from group `{group}`)",
            picked.host
        );
    }
    let stdin_task = process.take_stdin().map(|mut pipe| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut pipe).await;
            let _ = pipe.shutdown().await;
        })
    });
    let code = pump(&mut process, request.timeout, termination).await;
    if let Some(task) = stdin_task {
        task.abort();
    }
    Ok(code)
}

/// The shell command line of `argv`: one word as is; several quoted and joined.
pub fn command_line(argv: &[String]) -> String {
    match argv {
        [one] => one.clone(),
        many => shell_words::join(many),
    }
}

/// Copies output to stdout/stderr until the exit; kills the tree on Ctrl-C, SIGTERM or timeout.
async fn pump(
    process: &mut Process,
    timeout: Option<Duration>,
    termination: impl std::future::Future<Output = ()>,
) -> i32 {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    tokio::pin!(termination);
    let mut forced: Option<i32> = None;
    loop {
        tokio::select! {
            event = process.next_event() => match event {
                Some(ProcessEvent::Output(stream, data)) => {
                    let out: &mut (dyn AsyncWrite + Unpin) = match stream {
                        OutputStream::Stdout => &mut stdout,
                        OutputStream::Stderr => &mut stderr,
                    };
                    let _ = out.write_all(&data).await;
                    let _ = out.flush().await;
                }
                Some(ProcessEvent::Exited(status)) => return forced.unwrap_or(status.shell_code()),
                None => return forced.unwrap_or(255),
            },
            _ = &mut deadline, if forced.is_none() && timeout.is_some() => {
                eprintln!("outpost: timed out; killing the command");
                forced = Some(EXIT_TIMED_OUT);
                process.kill();
            }
            _ = &mut termination, if forced.is_none() => {
                forced = Some(EXIT_INTERRUPTED);
                process.kill();
            }
        }
    }
}
