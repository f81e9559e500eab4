//! `outpost exec gpu1,gpu2 -- CMD` and `outpost exec @gpus -- CMD`: the command on every host
//! at once, each output line prefixed by its host's name, Ctrl-C or `--timeout` killing all.

use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::exec::{EXIT_INTERRUPTED, EXIT_TIMED_OUT};
use crate::hosts::Hosts;
use crate::hosts::fanout::{GROUP_PREFIX, split_list};
use crate::transport::{CommandSpec, KillPolicy, OutputStream, ProcessEvent, Stdin};

/// Exit code for a host the command could not start on (as `ssh` when it cannot connect).
pub const EXIT_UNREACHABLE: i32 = 255;

/// Whether a command line's host names several hosts: a list, or `@group`.
pub fn is_fanout(host: &str) -> bool {
    host.contains(',') || host.starts_with(GROUP_PREFIX)
}

/// Runs `command` on every host of `list`; returns 0 when it exited 0 everywhere, else the
/// code of the first host (in the list's order) where it did not.
pub async fn run(
    hosts: &Hosts,
    list: &str,
    command: &str,
    cwd: Option<&str>,
    timeout: Option<Duration>,
) -> crate::error::Result<i32> {
    let names = hosts.expand(&split_list(list))?;
    let stop = CancellationToken::new();
    let termination = crate::serve::termination();
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX / 4));
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let concurrency = hosts.config().exec.fanout_concurrency;
    let one = |host: String| {
        let stop = stop.clone();
        async move { run_one(hosts, &host, command, cwd, width, stop).await }
    };
    let all = futures::stream::iter(names)
        .map(one)
        .buffered(concurrency)
        .collect::<Vec<i32>>();
    tokio::pin!(all, termination, deadline);
    let mut forced = None;
    let codes = loop {
        tokio::select! {
            codes = &mut all => break codes,
            _ = &mut termination, if forced.is_none() => {
                forced = Some(EXIT_INTERRUPTED);
                stop.cancel();
            }
            _ = &mut deadline, if forced.is_none() && timeout.is_some() => {
                eprintln!("outpost: timed out; killing the command on every host");
                forced = Some(EXIT_TIMED_OUT);
                stop.cancel();
            }
        }
    };
    let failed = codes.into_iter().find(|code| *code != 0);
    Ok(forced.or(failed).unwrap_or(0))
}

/// Runs the command on `host`, copying its output with the host's name before each line,
/// until it exits; kills it when `stop` fires. Returns its exit code.
async fn run_one(
    hosts: &Hosts,
    host: &str,
    command: &str,
    cwd: Option<&str>,
    width: usize,
    stop: CancellationToken,
) -> i32 {
    let prefix = format!("{host:<width$}: ");
    let spec = |name: &str| CommandSpec {
        command: command.to_owned(),
        cwd: cwd.map(str::to_owned).or_else(|| hosts.workspace(name)),
        env: Default::default(),
        stdin: Stdin::Null,
    };
    let start = hosts.spawn(host, spec);
    tokio::pin!(start);
    let started = tokio::select! {
        started = &mut start => started,
        _ = stop.cancelled() => {
            // A start under way may already have sent the command: let it finish, then kill
            // what it started, so nothing is left running.
            let limit = KillPolicy { grace: hosts.config().exec.kill_grace() }.verdict_within();
            if let Ok(Ok((_, mut process))) = tokio::time::timeout(limit, start).await {
                process.kill();
                let drained = async { while process.next_event().await.is_some() {} };
                let _ = tokio::time::timeout(limit, drained).await;
            }
            return EXIT_INTERRUPTED;
        }
    };
    let mut process = match started {
        Ok((_, process)) => process,
        Err(e) => {
            eprintln!("{prefix}outpost: {e}");
            return EXIT_UNREACHABLE;
        }
    };
    let mut out = Prefixed::new(&prefix);
    let mut err = Prefixed::new(&prefix);
    let mut killed = false;
    loop {
        tokio::select! {
            event = process.next_event() => match event {
                Some(ProcessEvent::Output(OutputStream::Stdout, data)) => out.write(&data, &mut std::io::stdout()),
                Some(ProcessEvent::Output(OutputStream::Stderr, data)) => err.write(&data, &mut std::io::stderr()),
                Some(ProcessEvent::Exited(status)) => {
                    out.finish(&mut std::io::stdout());
                    err.finish(&mut std::io::stderr());
                    return status.shell_code();
                }
                None => return EXIT_UNREACHABLE,
            },
            _ = stop.cancelled(), if !killed => {
                killed = true;
                process.kill();
            }
        }
    }
}

/// One stream of one host: complete lines go out at once, each behind the prefix; a partial
/// line waits for its end (or the exit).
struct Prefixed<'a> {
    prefix: &'a str,
    pending: Vec<u8>,
}

impl<'a> Prefixed<'a> {
    fn new(prefix: &'a str) -> Self {
        Self {
            prefix,
            pending: Vec::new(),
        }
    }

    fn write(&mut self, data: &[u8], to: &mut impl Write) {
        self.pending.extend_from_slice(data);
        let Some(last) = self.pending.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let lines: Vec<u8> = self.pending.drain(..=last).collect();
        let mut text = Vec::with_capacity(lines.len() + 32);
        for line in lines.split_inclusive(|b| *b == b'\n') {
            text.extend_from_slice(self.prefix.as_bytes());
            text.extend_from_slice(line);
        }
        // One write per batch of whole lines: hosts' lines never interleave mid-line.
        let _ = to.write_all(&text).and_then(|_| to.flush());
    }

    fn finish(&mut self, to: &mut impl Write) {
        if !self.pending.is_empty() {
            self.pending.push(b'\n');
            self.write(&[], to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_get_the_prefix_and_a_partial_line_waits_for_its_end() {
        let mut out = Vec::new();
        let mut p = Prefixed::new("gpu1: ");
        p.write(b"one\ntw", &mut out);
        assert_eq!(out, b"gpu1: one\n");
        p.write(b"o\nthree", &mut out);
        p.finish(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "gpu1: one\ngpu1: two\ngpu1: three\n"
        );
    }

    #[test]
    fn a_list_or_a_group_is_a_fanout() {
        assert!(is_fanout("a,b") && is_fanout("@gpus"));
        assert!(!is_fanout("gpu1"));
    }
}
