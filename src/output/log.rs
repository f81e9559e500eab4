//! A job's full output, interleaved as it arrived, in a ring of bounded size addressed by absolute byte offsets.

use std::collections::VecDeque;

use super::text::{head_boundary, incomplete_suffix, tail_boundary};

/// The most recent `cap` bytes of output. Offsets count every byte ever written, so a reader
/// can resume where it stopped and learn how much the ring dropped in between.
#[derive(Debug)]
pub struct OutputLog {
    buf: VecDeque<u8>,
    start: u64,
    cap: usize,
}

/// How far back `last_lines` looks.
const LAST_LINES_WINDOW: usize = 16 * 1024;

/// A slice of the log as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Offset of the first byte returned (past the requested offset when the ring dropped bytes).
    pub offset: u64,
    /// Offset to pass next time.
    pub next_offset: u64,
    /// Bytes between the requested offset and `offset` that the ring no longer holds.
    pub dropped: u64,
    pub text: String,
}

impl OutputLog {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            start: 0,
            cap,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.cap {
            self.start += (data.len() - self.cap) as u64;
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.start += overflow as u64;
        self.buf.extend(data);
    }

    /// The most bytes the ring holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Bytes the ring holds now.
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Offset just past the newest byte: the total ever written.
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Where `read` stops: while `more_coming`, before a last character whose bytes have not all
    /// arrived (so waiting for output past it waits for the rest of that character).
    pub fn readable_end(&self, more_coming: bool) -> u64 {
        if !more_coming {
            return self.end();
        }
        let held = self.buf.len();
        let last = self.copy(held.saturating_sub(3), 3);
        self.end() - incomplete_suffix(&last) as u64
    }

    /// Up to `max` bytes from `offset`. While `more_coming`, a character whose bytes have not
    /// all arrived is held back for the next read.
    pub fn read(&self, offset: u64, max: usize, more_coming: bool) -> LogRead {
        let from = offset.clamp(self.start, self.end());
        let skip = (from - self.start) as usize;
        let mut available = self.copy(skip, max.saturating_add(3));
        let mut take = if available.len() > max {
            head_boundary(&available, max)
        } else {
            available.len()
        };
        if more_coming && take == available.len() {
            take -= incomplete_suffix(&available[..take]);
        }
        available.truncate(take);
        let text = String::from_utf8(available)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        LogRead {
            offset: from,
            next_offset: from + take as u64,
            dropped: from.saturating_sub(offset.min(self.end())),
            text,
        }
    }

    /// Up to `len` held bytes from position `skip` in the ring, copied slice by slice.
    fn copy(&self, skip: usize, len: usize) -> Vec<u8> {
        let (a, b) = self.buf.as_slices();
        let end = skip.saturating_add(len).min(self.buf.len());
        let skip = skip.min(end);
        let mut out = Vec::with_capacity(end - skip);
        if skip < a.len() {
            out.extend_from_slice(&a[skip..end.min(a.len())]);
        }
        if end > a.len() {
            out.extend_from_slice(&b[skip.saturating_sub(a.len())..end - a.len()]);
        }
        out
    }

    /// The last `lines` non-empty lines, each cut to `width` bytes: a glimpse for progress messages.
    /// A line redrawn with carriage returns (a progress bar) shows its latest state.
    pub fn last_lines(&self, lines: usize, width: usize) -> String {
        let window = self.buf.len().min(LAST_LINES_WINDOW);
        let bytes = self.copy(self.buf.len() - window, window);
        let bytes = &bytes[tail_boundary(&bytes, window)..];
        let text = String::from_utf8_lossy(bytes);
        let mut picked: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end().rsplit('\r').next().unwrap_or(""))
            .filter(|l| !l.is_empty())
            .rev()
            .take(lines)
            .collect();
        picked.reverse();
        picked
            .iter()
            .map(|l| {
                let end = head_boundary(l.as_bytes(), width);
                if end < l.len() {
                    format!("{}…", &l[..end])
                } else {
                    (*l).to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_still_arriving_is_not_readable_yet() {
        let mut log = OutputLog::new(1024);
        log.push(b"a\xE2\x82");
        assert_eq!(log.readable_end(true), 1);
        assert_eq!(log.read(0, 100, true).next_offset, log.readable_end(true));
        assert_eq!(log.readable_end(false), 3);
        log.push(b"\xAC");
        assert_eq!(log.readable_end(true), 4);
    }

    #[test]
    fn reads_resume_at_next_offset() {
        let mut log = OutputLog::new(1024);
        log.push(b"hello ");
        let r = log.read(0, 100, true);
        assert_eq!(
            (r.text.as_str(), r.next_offset, r.dropped),
            ("hello ", 6, 0)
        );
        log.push(b"world");
        let r = log.read(r.next_offset, 100, true);
        assert_eq!(r.text, "world");
        assert_eq!(log.end(), 11);
    }

    #[test]
    fn ring_drops_oldest_and_reports_it() {
        let mut log = OutputLog::new(10);
        log.push(b"0123456789");
        log.push(b"abcde");
        assert_eq!(log.end(), 15);
        let r = log.read(0, 100, false);
        assert_eq!(r.text, "56789abcde");
        assert_eq!((r.offset, r.dropped, r.next_offset), (5, 5, 15));
        log.push(&[b'z'; 25]);
        assert_eq!(log.read(0, 100, false).text, "z".repeat(10));
        assert_eq!(log.end(), 40);
    }

    #[test]
    fn reads_across_the_ring_wrap_match_what_was_written() {
        let mut log = OutputLog::new(16);
        let mut written = Vec::new();
        for round in 0..40u8 {
            let chunk: Vec<u8> = (0..(round % 7 + 1))
                .map(|i| b'a' + (round + i) % 26)
                .collect();
            log.push(&chunk);
            written.extend_from_slice(&chunk);
            let start = written.len().saturating_sub(16);
            for offset in start..=written.len() {
                for max in [1, 3, 16] {
                    let r = log.read(offset as u64, max, false);
                    let end = (offset + max).min(written.len());
                    assert_eq!(
                        r.text.as_bytes(),
                        &written[offset..end],
                        "round {round} at {offset}+{max}"
                    );
                }
            }
        }
    }

    #[test]
    fn max_bytes_pages_through() {
        let mut log = OutputLog::new(100);
        log.push(b"abcdefghij");
        let r = log.read(2, 3, true);
        assert_eq!((r.text.as_str(), r.next_offset), ("cde", 5));
        let r = log.read(50, 3, true);
        assert_eq!((r.text.as_str(), r.offset, r.next_offset), ("", 10, 10));
    }

    #[test]
    fn partial_character_waits_while_running() {
        let mut log = OutputLog::new(100);
        let euro = "€".as_bytes();
        log.push(b"a");
        log.push(&euro[..1]);
        let r = log.read(0, 100, true);
        assert_eq!((r.text.as_str(), r.next_offset), ("a", 1));
        log.push(&euro[1..]);
        assert_eq!(log.read(1, 100, true).text, "€");
    }

    #[test]
    fn last_lines_are_the_newest() {
        let mut log = OutputLog::new(1000);
        log.push(b"one\ntwo\n\nthree\nfour\n");
        assert_eq!(log.last_lines(2, 80), "three\nfour");
        log.push("a very long line that goes on".as_bytes());
        assert_eq!(log.last_lines(1, 6), "a very…");
        log.push(b"\n 10%\r 50%\r 90%\n");
        assert_eq!(log.last_lines(1, 80), " 90%");
    }
}
