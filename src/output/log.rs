//! A job's full output, interleaved as it arrived, in a ring of bounded size addressed by absolute
//! byte offsets. The ring keeps raw bytes; what a reader gets is cleaned text.

use std::borrow::Cow;
use std::collections::VecDeque;

use super::clean::{clean, to_text, unfinished_tail};
use super::fit::Head;
use super::text::{head_boundary, tail_boundary};

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
/// Raw bytes a read looks at per byte of text it may return: room for escape sequences.
const RAW_PER_TEXT_BYTE: usize = 4;
/// The longest escape sequence still arriving that a read holds back rather than splits.
const HELD_SEQUENCE: usize = 256;

/// A slice of the log as cleaned text; offsets count raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    /// Offset of the first byte read (past the requested offset when the ring dropped bytes).
    pub offset: u64,
    /// Offset to pass next time.
    pub next_offset: u64,
    /// Bytes between the requested offset and `offset` that the ring no longer holds.
    pub dropped: u64,
    /// The bytes from `offset` to `next_offset`, cleaned (see `clean`).
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

    /// Where `read` stops: while `more_coming`, before a last character or escape sequence
    /// whose bytes have not all arrived (so waiting for output past it waits for the rest).
    pub fn readable_end(&self, more_coming: bool) -> u64 {
        if !more_coming {
            return self.end();
        }
        let held = self.buf.len();
        let last = self.copy(held.saturating_sub(HELD_SEQUENCE), HELD_SEQUENCE);
        self.end() - unfinished_tail(&last, HELD_SEQUENCE) as u64
    }

    /// Cleaned text from `offset` on, at most `max` bytes of it as a JSON string (but at least
    /// one character when there is any, so a reader moves on). While `more_coming`, a character
    /// or escape sequence whose bytes have not all arrived is held back for the next read.
    pub fn read(&self, offset: u64, max: usize, more_coming: bool) -> LogRead {
        let from = offset.clamp(self.start, self.end());
        let readable = self.readable_end(more_coming).max(from);
        let mut window = max.saturating_mul(RAW_PER_TEXT_BYTE).max(HELD_SEQUENCE);
        let (raw, head, cleaned) = loop {
            let len = (readable - from).min(window as u64) as usize;
            let raw = self.copy((from - self.start) as usize, len);
            let mut head = Head::making_progress(max);
            let cleaned = clean(&raw, &mut head);
            // Nothing to show yet (escape sequences only, or one longer than the window): look further.
            if head.raw_end() > 0 || from + len as u64 == readable {
                break (raw, head, cleaned);
            }
            window = window.saturating_mul(2);
        };
        let take = match cleaned.unfinished {
            _ if cleaned.stopped => head.raw_end(),
            // Cut short by the window: the rest of a sequence is read with it next time.
            Some(at) if at > 0 && from + (raw.len() as u64) < self.end() => at,
            _ => raw.len(),
        };
        LogRead {
            offset: from,
            next_offset: from + take as u64,
            dropped: from.saturating_sub(offset.min(self.end())),
            text: head.into_text(),
        }
    }

    /// Up to `len` held bytes from position `skip` in the ring: borrowed when they lie in one
    /// piece of it, else copied slice by slice.
    fn copy(&self, skip: usize, len: usize) -> Cow<'_, [u8]> {
        let (a, b) = self.buf.as_slices();
        let end = skip.saturating_add(len).min(self.buf.len());
        let skip = skip.min(end);
        if end <= a.len() {
            return Cow::Borrowed(&a[skip..end]);
        }
        if skip >= a.len() {
            return Cow::Borrowed(&b[skip - a.len()..end - a.len()]);
        }
        let mut out = Vec::with_capacity(end - skip);
        out.extend_from_slice(&a[skip..]);
        out.extend_from_slice(&b[..end - a.len()]);
        Cow::Owned(out)
    }

    /// The last `lines` non-empty lines, each cut to `width` bytes: a glimpse for progress messages.
    /// A line redrawn with carriage returns (a progress bar) shows its latest state.
    pub fn last_lines(&self, lines: usize, width: usize) -> String {
        let window = self.buf.len().min(LAST_LINES_WINDOW);
        let bytes = self.copy(self.buf.len() - window, window);
        let text = to_text(&bytes[tail_boundary(&bytes, window)..]);
        let mut picked: Vec<&str> = text
            .lines()
            .map(str::trim_end)
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
        log.push(b"\x1b[1;32mgreen\x1b[0m\n");
        assert_eq!(log.last_lines(1, 80), "green");
    }

    #[test]
    fn reads_are_cleaned_and_offsets_count_raw_bytes() {
        let mut log = OutputLog::new(1024);
        log.push(b"\x1b[31mred\x1b[0m\n");
        let r = log.read(0, 100, false);
        assert_eq!((r.text.as_str(), r.next_offset), ("red\n", 13));
        log.push(b"10%\r100%\n\x07");
        assert_eq!(log.read(13, 100, false).text, "100%\n\u{2407}");
    }

    #[test]
    fn an_escape_sequence_still_arriving_is_not_readable_yet() {
        let mut log = OutputLog::new(1024);
        log.push(b"ok\x1b[3");
        assert_eq!(log.readable_end(true), 2);
        let r = log.read(0, 100, true);
        assert_eq!((r.text.as_str(), r.next_offset), ("ok", 2));
        log.push(b"1mgo");
        let r = log.read(2, 100, true);
        assert_eq!((r.text.as_str(), r.next_offset), ("go", 9));
        log.push(b"\x1b[");
        assert_eq!(log.read(9, 100, false).next_offset, log.end());
    }

    #[test]
    fn max_counts_bytes_of_json_and_a_read_always_moves_on() {
        let mut log = OutputLog::new(1024);
        log.push(b"\"\"\"\"");
        let r = log.read(0, 4, false);
        assert_eq!((r.text.as_str(), r.next_offset), ("\"\"", 2));
        let mut log = OutputLog::new(1024);
        log.push("😀😀".as_bytes());
        let r = log.read(0, 1, false);
        assert_eq!((r.text.as_str(), r.next_offset), ("😀", 4));
    }

    #[test]
    fn small_pages_never_split_an_escape_sequence() {
        let mut log = OutputLog::new(1 << 20);
        let mut raw = Vec::new();
        for i in 0..300 {
            raw.extend_from_slice(format!("\x1b[38;5;{i}mline {i} ✓\x1b[0m\n").as_bytes());
        }
        raw.extend_from_slice(b"\x1b]8;;https://example.com/a/long/link\x1b\\end\x1b]8;;\x1b\\");
        log.push(&raw);
        for max in [1, 2, 5, 17] {
            let (mut text, mut offset) = (String::new(), 0);
            while offset < log.end() {
                let r = log.read(offset, max, false);
                assert!(r.next_offset > offset && r.offset == offset);
                text.push_str(&r.text);
                offset = r.next_offset;
            }
            assert_eq!(text, to_text(&raw), "pages of {max}");
        }
    }
}
