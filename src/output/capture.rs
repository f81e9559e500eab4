//! A result's view of stdout and stderr: the first and last bytes of each, cut to a shared budget.

use std::collections::VecDeque;

use super::text::{head_boundary, tail_boundary};
use crate::transport::OutputStream;

/// Head and tail of one stream, each at most `cap` bytes, plus the count of everything seen.
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

    /// The stream as text in at most `budget` bytes (plus a marker line when cut).
    fn render(&self, budget: usize) -> (String, bool) {
        let kept = (self.head.len() + self.tail.len()) as u64;
        if self.total <= budget as u64 && kept == self.total {
            let mut all = self.head.clone();
            all.extend(self.tail.iter());
            return (String::from_utf8_lossy(&all).into_owned(), false);
        }
        let head_end = head_boundary(&self.head, budget / 2);
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail_start = tail_boundary(&tail, budget - budget / 2);
        let omitted = self.total - head_end as u64 - (tail.len() - tail_start) as u64;
        let text = format!(
            "{}\n[... {omitted} bytes omitted ...]\n{}",
            String::from_utf8_lossy(&self.head[..head_end]),
            String::from_utf8_lossy(&tail[tail_start..]),
        );
        (text, true)
    }
}

/// stdout and stderr as a result shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
}

/// Keeps enough of both streams to render them within `budget` bytes, whatever their size.
#[derive(Debug)]
pub struct Capture {
    stdout: HeadTail,
    stderr: HeadTail,
    budget: usize,
}

impl Capture {
    pub fn new(budget: usize) -> Self {
        Self {
            stdout: HeadTail::new(budget),
            stderr: HeadTail::new(budget),
            budget,
        }
    }

    pub fn push(&mut self, stream: OutputStream, data: &[u8]) {
        match stream {
            OutputStream::Stdout => self.stdout.push(data),
            OutputStream::Stderr => self.stderr.push(data),
        }
    }

    /// Both streams within the budget: each gets half, and what one leaves unused goes to the other.
    pub fn render(&self) -> Rendered {
        let (out_budget, err_budget) =
            split_budget(self.stdout.total, self.stderr.total, self.budget);
        let (stdout, out_cut) = self.stdout.render(out_budget);
        let (stderr, err_cut) = self.stderr.render(err_budget);
        Rendered {
            stdout,
            stderr,
            truncated: out_cut || err_cut,
        }
    }
}

fn split_budget(out: u64, err: u64, budget: usize) -> (usize, usize) {
    let half = budget / 2;
    let fits = |n: u64, limit: usize| n <= limit as u64;
    if fits(out + err, budget) {
        (out as usize, err as usize)
    } else if fits(err, half) {
        (budget - err as usize, err as usize)
    } else if fits(out, half) {
        (out as usize, budget - out as usize)
    } else {
        (budget - half, half)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutputStream::{Stderr, Stdout};

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
        assert!(r.stdout.len() <= 1000 + 50, "{}", r.stdout.len());
    }

    #[test]
    fn unused_share_goes_to_the_other_stream() {
        let mut c = Capture::new(1000);
        c.push(Stderr, b"short error");
        c.push(Stdout, &[b'x'; 5000]);
        let r = c.render();
        assert_eq!(r.stderr, "short error");
        let kept = r.stdout.bytes().filter(|b| *b == b'x').count();
        assert_eq!(kept, 1000 - "short error".len());
    }

    #[test]
    fn both_large_split_evenly() {
        let mut c = Capture::new(1000);
        c.push(Stderr, &[b'E'; 5000]);
        c.push(Stdout, &[b'O'; 5000]);
        let r = c.render();
        assert_eq!(r.stdout.bytes().filter(|b| *b == b'O').count(), 500);
        assert_eq!(r.stderr.bytes().filter(|b| *b == b'E').count(), 500);
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
        let mut c = Capture::new(101);
        for _ in 0..1000 {
            c.push(Stdout, "€😀é".as_bytes());
        }
        let r = c.render();
        assert!(!r.stdout.contains('\u{FFFD}'));
    }
}
