//! A result's view of stdout and stderr: the cleaned text of the first and last bytes of each,
//! cut to a shared budget counted as the client receives it (bytes of JSON, escapes included).

use std::borrow::Cow;
use std::collections::VecDeque;

use super::clean::clean;
use super::fit::{Head, Tail, json_len};
use super::text::tail_boundary;
use crate::transport::OutputStream;

/// Raw bytes kept at each end of a stream per byte of budget. Cleaning never makes a byte take
/// more than three, so text always fills its budget unless escape sequences took more than this.
const RAW_PER_BUDGET_BYTE: usize = 4;

/// Head and tail of one stream, each at most `cap` raw bytes, plus the count of everything seen.
#[derive(Debug)]
struct HeadTail {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    cap: usize,
}

impl HeadTail {
    fn new(cap: usize) -> Self {
        Self {
            head: Vec::new(),
            tail: VecDeque::new(),
            total: 0,
            cap,
        }
    }

    fn push(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap - self.head.len();
        if room > 0 {
            let n = room.min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        if data.len() >= self.cap {
            self.tail.clear();
            data = &data[data.len() - self.cap..];
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.cap);
        self.tail.drain(..overflow);
        self.tail.extend(data);
    }

    /// What this stream's text is made from, and what showing it whole would take (up to
    /// more than `budget`).
    fn source(&self, budget: usize) -> Source<'_> {
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        if (self.head.len() + tail.len()) as u64 == self.total {
            let mut raw = self.head.clone();
            raw.extend_from_slice(&tail);
            let mut fit = Head::new(budget);
            let whole = (!clean(&raw, &mut fit).stopped).then(|| fit.into_text());
            return Source {
                demand: whole.as_deref().map_or(budget + 1, json_len),
                whole,
                head: Cow::Owned(raw),
                tail: None,
            };
        }
        let skip = tail_boundary(&tail, tail.len());
        let tail = tail[skip..].to_vec();
        let demand = cost_up_to(&self.head, budget)
            .saturating_add(cost_up_to(&tail, budget))
            .saturating_add(marker_cost());
        Source {
            demand,
            whole: None,
            head: Cow::Borrowed(&self.head),
            tail: Some((self.total - tail.len() as u64, tail)),
        }
    }
}

/// The budget `raw` takes once cleaned, or `limit + 1` when that is more than `limit`.
fn cost_up_to(raw: &[u8], limit: usize) -> usize {
    let mut fit = Head::new(limit);
    match clean(raw, &mut fit).stopped {
        true => limit + 1,
        false => fit.cost(),
    }
}

/// What a stream's text is made from.
struct Source<'a> {
    /// The budget showing all of it takes (more than the whole budget when it does not fit).
    demand: usize,
    /// The stream's cleaned text, when every byte was kept and it fits the whole budget.
    whole: Option<String>,
    /// The first bytes kept (every byte, when `tail` is None).
    head: Cow<'a, [u8]>,
    /// Where the last bytes kept start in the stream, and those bytes.
    tail: Option<(u64, Vec<u8>)>,
}

impl Source<'_> {
    /// The text within `budget`, and whether it was cut.
    fn render(self, budget: usize) -> (String, bool) {
        if let Some(text) = self.whole.filter(|_| self.demand <= budget) {
            return (text, false);
        }
        let (tail, tail_at) = match &self.tail {
            Some((at, tail)) => (tail.as_slice(), *at),
            None => (&*self.head, 0),
        };
        (head_and_tail(&self.head, tail, tail_at, budget), true)
    }
}

/// The cleaned start of `head` and end of `tail` (which starts at `tail_at` in the stream),
/// with a marker between saying how many raw bytes neither shows, all within `budget`.
fn head_and_tail(head: &[u8], tail: &[u8], tail_at: u64, budget: usize) -> String {
    let room = budget.saturating_sub(marker_cost());
    let mut start = Head::new(room / 2);
    clean(head, &mut start);
    let mut end = Tail::new(room - start.cost());
    clean(tail, &mut end);
    let end_at = tail_at + end.raw_start(tail.len()) as u64;
    let omitted = end_at.saturating_sub(start.raw_end() as u64);
    format!(
        "{}{}{}",
        start.into_text(),
        marker(omitted),
        end.into_text()
    )
}

fn marker(omitted: u64) -> String {
    format!("\n[... {omitted} bytes omitted ...]\n")
}

/// The most budget a marker takes.
fn marker_cost() -> usize {
    json_len(&marker(u64::MAX))
}

/// stdout and stderr as a result shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

/// Keeps enough of both streams to render them within `budget`, whatever their size.
#[derive(Debug)]
pub struct Capture {
    stdout: HeadTail,
    stderr: HeadTail,
    budget: usize,
}

impl Capture {
    pub fn new(budget: usize) -> Self {
        let cap = budget.saturating_mul(RAW_PER_BUDGET_BYTE);
        Self {
            stdout: HeadTail::new(cap),
            stderr: HeadTail::new(cap),
            budget,
        }
    }

    pub fn push(&mut self, stream: OutputStream, data: &[u8]) {
        match stream {
            OutputStream::Stdout => self.stdout.push(data),
            OutputStream::Stderr => self.stderr.push(data),
        }
    }

    /// Both streams, cleaned, within the budget: each gets half, and what one leaves unused goes
    /// to the other. The budget counts the bytes of the JSON strings they become.
    pub fn render(&self) -> Rendered {
        let (out, err) = (
            self.stdout.source(self.budget),
            self.stderr.source(self.budget),
        );
        let (out_budget, err_budget) = split_budget(out.demand, err.demand, self.budget);
        let (stdout, out_cut) = out.render(out_budget);
        let (stderr, err_cut) = err.render(err_budget);
        Rendered {
            stdout,
            stderr,
            truncated: out_cut || err_cut,
        }
    }
}

fn split_budget(out: usize, err: usize, budget: usize) -> (usize, usize) {
    let half = budget / 2;
    if out.saturating_add(err) <= budget {
        (out, err)
    } else if err <= half {
        (budget - err, err)
    } else if out <= half {
        (out, budget - out)
    } else {
        (budget - half, half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutputStream::{Stderr, Stdout};

    /// Bytes of the JSON strings both streams become, and the same in UTF-16 units (what
    /// JavaScript's `JSON.stringify(...).length` counts).
    fn sent(r: &Rendered) -> (usize, usize) {
        let json = |s: &str| serde_json::to_string(s).unwrap();
        let (out, err) = (json(&r.stdout), json(&r.stderr));
        let units = |s: &str| s.encode_utf16().count();
        (out.len() + err.len() - 4, units(&out) + units(&err) - 4)
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn small_output_is_returned_whole() {
        let mut c = Capture::new(100);
        c.push(Stdout, b"hello ");
        c.push(Stderr, b"warn");
        c.push(Stdout, b"world");
        let r = c.render();
        assert_eq!(r.stdout, "hello world");
        assert_eq!(r.stderr, "warn");
        assert!(!r.truncated);
    }

    #[test]
    fn large_output_keeps_head_and_tail_within_budget() {
        let mut c = Capture::new(1000);
        for i in 0..10_000 {
            c.push(Stdout, format!("line {i}\n").as_bytes());
        }
        let r = c.render();
        assert!(r.truncated);
        assert!(r.stdout.starts_with("line 0\nline 1\n"));
        assert!(r.stdout.ends_with("line 9999\n"));
        assert!(r.stdout.contains("bytes omitted"));
        assert!(sent(&r).0 <= 1000, "{}", sent(&r).0);
    }

    #[test]
    fn the_marker_counts_the_raw_bytes_shown_by_neither_end() {
        let mut c = Capture::new(1024);
        let line = b"\x1b[32mok\x1b[0m\n";
        for _ in 0..10_000 {
            c.push(Stdout, line);
        }
        let r = c.render();
        let shown = r.stdout.matches("ok\n").count();
        let omitted: u64 = r
            .stdout
            .split("[... ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            omitted,
            (10_000 - shown as u64) * line.len() as u64,
            "{}",
            r.stdout
        );
    }

    #[test]
    fn unused_share_goes_to_the_other_stream() {
        let mut c = Capture::new(1000);
        c.push(Stderr, b"short error");
        c.push(Stdout, &[b'x'; 5000]);
        let r = c.render();
        assert_eq!(r.stderr, "short error");
        let kept = r.stdout.bytes().filter(|b| *b == b'x').count();
        assert_eq!(kept, 1000 - "short error".len() - marker_cost());
    }

    #[test]
    fn both_large_split_evenly() {
        let mut c = Capture::new(1000);
        c.push(Stderr, &[b'E'; 5000]);
        c.push(Stdout, &[b'O'; 5000]);
        let r = c.render();
        let o = r.stdout.bytes().filter(|b| *b == b'O').count();
        assert_eq!(o, 500 - marker_cost());
        assert_eq!(r.stderr.bytes().filter(|b| *b == b'E').count(), o);
    }

    #[test]
    fn many_small_pushes_equal_one_big_push() {
        let data: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut one = Capture::new(777);
        one.push(Stdout, &data);
        let mut many = Capture::new(777);
        for chunk in data.chunks(13) {
            many.push(Stdout, chunk);
        }
        assert_eq!(one.render(), many.render());
    }

    #[test]
    fn multibyte_text_is_never_split() {
        let mut c = Capture::new(1024);
        for _ in 0..1000 {
            c.push(Stdout, "€😀é".as_bytes());
        }
        let r = c.render();
        assert!(!r.stdout.contains('\u{FFFD}'));
    }

    #[test]
    fn what_is_sent_stays_within_the_budget_whatever_the_bytes() {
        let budget = 30_000;
        let emoji = "😀".repeat(50_000).into_bytes();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("escape bytes", vec![0x1b; 30_000]),
            ("random bytes", random_bytes(200_000)),
            ("quotes", vec![b'"'; 100_000]),
            ("backslashes", vec![b'\\'; 100_000]),
            ("newlines", vec![b'\n'; 100_000]),
            ("NUL and BEL", b"\x00\x07".repeat(50_000)),
            ("4-byte emoji", emoji),
            ("lone continuation bytes", b"a\x80".repeat(50_000)),
        ];
        for (name, data) in &cases {
            for both in [false, true] {
                let mut c = Capture::new(budget);
                for chunk in data.chunks(4093) {
                    c.push(Stdout, chunk);
                    if both {
                        c.push(Stderr, chunk);
                    }
                }
                let r = c.render();
                let (bytes, units) = sent(&r);
                assert!(
                    bytes <= budget && units <= budget,
                    "{name}: {bytes} bytes, {units} units"
                );
            }
        }
    }

    #[test]
    fn colours_are_removed_and_text_fills_the_budget() {
        let mut c = Capture::new(1024);
        for i in 0..2000 {
            c.push(
                Stdout,
                format!("\x1b[1;3{}mline {i}\x1b[0m\r\n", i % 8).as_bytes(),
            );
        }
        let r = c.render();
        assert!(
            !r.stdout.contains('\u{1b}') && !r.stdout.contains("[0m"),
            "{}",
            r.stdout
        );
        assert!(r.stdout.starts_with("line 0\nline 1\n") && r.stdout.ends_with("line 1999\n"));
        assert!(sent(&r).0 > 1024 - 20, "{}", sent(&r).0);
    }
}
