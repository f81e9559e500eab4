//! Reading a starting wrapper's output: its report line on stdout and marker line on stderr
//! separate what a shell or engine printed before the command (chatter) from the command's own.

use bytes::Bytes;

use super::OutputStream;
use super::wrapper::{Invocation, Report};

/// Output a shell may print before the wrapper reports (startup files); beyond it, give up.
pub const MAX_STARTUP_NOISE: usize = 64 << 10;

/// Watches a starting wrapper's output for its report line on stdout and its marker line on
/// stderr. What comes before them is the shell's or engine's chatter (startup files, kubectl's
/// notices); what comes after is the command's own output. Both are awaited: they travel on two
/// pipes, so either may arrive first.
pub struct StartupScan<'a> {
    invocation: &'a Invocation,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    report: Option<Report>,
    /// Where the marker is on stderr, once seen: the end of the chatter and the start of the
    /// command's own stderr.
    marker: Option<(usize, usize)>,
}

/// Where a [`StartupScan`] stands.
pub enum Scanned {
    /// Not started yet.
    Pending,
    /// The report, and the command's own output that came with it.
    Reported(Report, Vec<(OutputStream, Bytes)>),
    /// Over MAX_STARTUP_NOISE bytes and no report.
    TooNoisy,
}

impl<'a> StartupScan<'a> {
    pub fn new(invocation: &'a Invocation) -> Self {
        Self {
            invocation,
            stdout: Vec::new(),
            stderr: Vec::new(),
            report: None,
            marker: None,
        }
    }

    /// Takes stdout; lines before the report (printed by shell startup files) are dropped.
    pub fn stdout(&mut self, data: &[u8]) -> Scanned {
        self.stdout.extend_from_slice(data);
        while self.report.is_none() {
            let Some(end) = self.stdout.iter().position(|b| *b == b'\n') else {
                break;
            };
            let line = String::from_utf8_lossy(&self.stdout[..end]).into_owned();
            if line.trim_end() == self.invocation.nonce {
                // A prefix that merges stderr into stdout (a pty, `2>&1`): the marker came here.
                self.marker = Some((self.stderr.len(), self.stderr.len()));
            }
            self.report = self.invocation.parse_report(&line);
            self.stdout.drain(..=end);
        }
        self.state()
    }

    /// Takes stderr, kept whole for an error message until the marker splits it.
    pub fn stderr(&mut self, data: &[u8]) -> Scanned {
        self.stderr.extend_from_slice(data);
        if self.marker.is_none() {
            let marker = format!("{}\n", self.invocation.nonce);
            self.marker = self
                .stderr
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
                .map(|at| (at, at + marker.len()));
        }
        self.state()
    }

    fn state(&mut self) -> Scanned {
        match (&self.report, self.marker.map(|(_, from)| from)) {
            (Some(Report::NoCwd), _) => Scanned::Reported(Report::NoCwd, Vec::new()),
            (Some(started @ Report::Started { .. }), Some(from)) => {
                let started = started.clone();
                let mut early = Vec::new();
                if !self.stdout.is_empty() {
                    early.push((
                        OutputStream::Stdout,
                        Bytes::from(std::mem::take(&mut self.stdout)),
                    ));
                }
                if self.stderr.len() > from {
                    early.push((
                        OutputStream::Stderr,
                        Bytes::copy_from_slice(&self.stderr[from..]),
                    ));
                }
                Scanned::Reported(started, early)
            }
            _ if self.report.is_none() && self.stdout.len() > MAX_STARTUP_NOISE => {
                Scanned::TooNoisy
            }
            _ if self.marker.is_none() && self.stderr.len() > MAX_STARTUP_NOISE => {
                Scanned::TooNoisy
            }
            _ => Scanned::Pending,
        }
    }

    /// What the shell or engine printed on stderr before the command started.
    pub fn chatter(&self) -> String {
        let end = self.marker.map_or(self.stderr.len(), |(end, _)| end);
        String::from_utf8_lossy(&self.stderr[..end])
            .trim()
            .to_owned()
    }

    /// The stderr so far (its end, when long), for an error message.
    pub fn stderr_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let text = text.trim();
        let start = text.len().saturating_sub(2000);
        let start = (start..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..].to_owned()
    }
}

/// Logs what the shell or engine printed before the command started: not the command's output.
pub fn log_chatter(host: &str, scan: &StartupScan) {
    let chatter = scan.chatter();
    if !chatter.is_empty() {
        tracing::debug!(host, %chatter, "printed before the command started");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_scan_splits_chatter_from_the_commands_output_whatever_pipe_comes_first() {
        let inv = Invocation::new("true", None, &BTreeMap::new()).unwrap();
        let report = format!("motd banner\n{} pid 42 4242\nout", inv.nonce);
        let marker = format!("Defaulted container \"main\"\n{}\nerr", inv.nonce);
        for stderr_first in [false, true] {
            let mut scan = StartupScan::new(&inv);
            let first = if stderr_first {
                scan.stderr(marker.as_bytes())
            } else {
                scan.stdout(report.as_bytes())
            };
            assert!(matches!(first, Scanned::Pending));
            let second = if stderr_first {
                scan.stdout(report.as_bytes())
            } else {
                scan.stderr(marker.as_bytes())
            };
            let Scanned::Reported(Report::Started { group, .. }, early) = second else {
                panic!("not started");
            };
            assert_eq!((group.pgid, group.start), (42, Some(4242)));
            let early: Vec<_> = early.into_iter().map(|(s, b)| (s, b.to_vec())).collect();
            assert_eq!(
                early,
                [
                    (OutputStream::Stdout, b"out".to_vec()),
                    (OutputStream::Stderr, b"err".to_vec())
                ]
            );
            assert_eq!(scan.chatter(), "Defaulted container \"main\"");
        }
    }

    #[test]
    fn a_prefix_that_merges_stderr_into_stdout_still_starts() {
        let inv = Invocation::new("true", None, &BTreeMap::new()).unwrap();
        let mut scan = StartupScan::new(&inv);
        let merged = format!("notice\n{}\n{} pid 7 -\nout", inv.nonce, inv.nonce);
        let Scanned::Reported(Report::Started { group, .. }, early) =
            scan.stdout(merged.as_bytes())
        else {
            panic!("not started");
        };
        assert_eq!((group.pgid, group.start), (7, None));
        assert_eq!(early.len(), 1);
        assert_eq!(&early[0].1[..], b"out");
    }
}
