//! Fitting cleaned text into a budget counted the way a client receives it: bytes of the JSON
//! string the text becomes, escapes included.

use std::collections::VecDeque;
use std::ops::Range;

use super::clean::Sink;

/// The bytes `c` takes inside a JSON string: escaped as `serde_json` (and JavaScript's
/// `JSON.stringify`) escape it, non-ASCII characters left as they are.
pub fn char_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The bytes `text` takes inside a JSON string (without the quotes). It bounds the characters
/// as JavaScript counts them (UTF-16 units) too: no character takes more of those than bytes.
pub fn json_len(text: &str) -> usize {
    text.chars().map(char_cost).sum()
}

/// [`json_len`] of printable ASCII, where only `"` and `\` are escaped (in one pass the
/// compiler vectorizes).
fn ascii_cost(text: &str) -> usize {
    text.len() + text.bytes().filter(|b| matches!(b, b'"' | b'\\')).count()
}

/// The longest start of cleaned text that fits `limit`.
#[derive(Debug)]
pub struct Head {
    text: String,
    cost: usize,
    limit: usize,
    /// Take the first piece even when it does not fit: a reader must always move on.
    progress: bool,
    /// Raw offset just past the last piece taken.
    raw_end: usize,
    /// Where the current line starts in `text`, and the cost before it.
    line: (usize, usize),
}

impl Head {
    pub fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            cost: 0,
            limit,
            progress: false,
            raw_end: 0,
            line: (0, 0),
        }
    }

    /// A head that takes its first piece whatever its size.
    pub fn making_progress(limit: usize) -> Self {
        Self {
            progress: true,
            ..Self::new(limit)
        }
    }

    pub fn cost(&self) -> usize {
        self.cost
    }

    pub fn raw_end(&self) -> usize {
        self.raw_end
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

impl Sink for Head {
    fn push(&mut self, piece: &str, raw: Range<usize>) -> bool {
        let cost = json_len(piece);
        let first = self.progress && self.raw_end == 0;
        if self.cost + cost > self.limit && !first {
            return false;
        }
        self.text.push_str(piece);
        self.cost += cost;
        self.raw_end = raw.end;
        if piece == "\n" {
            self.line = (self.text.len(), self.cost);
        }
        true
    }

    fn clear_line(&mut self) {
        self.text.truncate(self.line.0);
        self.cost = self.line.1;
    }

    fn push_ascii(&mut self, text: &str, _from: usize, at: usize) -> usize {
        // As `push` would, byte by byte: the first piece is taken whatever it costs when the
        // head must make progress, each later one only while it fits.
        let first = self.progress && self.raw_end == 0;
        let (mut cost, mut taken) = (self.cost, 0);
        // All of it fits even if every byte took two: one pass that needs no check per byte.
        if text.len() <= self.limit.saturating_sub(cost) / 2 {
            (cost, taken) = (cost + ascii_cost(text), text.len());
        }
        for byte in text.bytes().skip(taken) {
            let byte_cost = char_cost(char::from(byte));
            if cost + byte_cost > self.limit && !(first && taken == 0) {
                break;
            }
            cost += byte_cost;
            taken += 1;
        }
        if taken > 0 {
            self.text.push_str(&text[..taken]);
            self.cost = cost;
            self.raw_end = at + taken;
        }
        taken
    }

    fn erase(&mut self, n: usize) {
        for _ in 0..n {
            if self.text.len() == self.line.0 {
                return;
            }
            if let Some(c) = self.text.pop() {
                self.cost -= char_cost(c);
            }
        }
    }
}

/// One piece of a [`Tail`]: where its raw bytes start, where its text ends, what it costs.
#[derive(Debug, Clone, Copy)]
struct Piece {
    raw_start: usize,
    end: usize,
    cost: usize,
}

/// The longest end of cleaned text that fits `limit`, and where its raw bytes start.
#[derive(Debug)]
pub struct Tail {
    /// The kept text is `text[front..]`.
    text: String,
    front: usize,
    pieces: VecDeque<Piece>,
    cost: usize,
    limit: usize,
}

impl Tail {
    pub fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            front: 0,
            pieces: VecDeque::new(),
            cost: 0,
            limit,
        }
    }

    /// Raw offset of the first byte the kept text stands for; `raw_len` when it is empty.
    pub fn raw_start(&self, raw_len: usize) -> usize {
        self.pieces.front().map_or(raw_len, |p| p.raw_start)
    }

    pub fn into_text(mut self) -> String {
        self.text.split_off(self.front)
    }

    /// Where the last piece's text starts.
    fn last_start(&self) -> usize {
        let n = self.pieces.len();
        if n >= 2 {
            self.pieces[n - 2].end
        } else {
            self.front
        }
    }

    fn drop_front(&mut self) {
        if let Some(p) = self.pieces.pop_front() {
            self.front = p.end;
            self.cost -= p.cost;
        }
        // Reclaim the dropped text now and then, not on every piece.
        if self.front > 4096 && self.front * 2 > self.text.len() {
            self.text.drain(..self.front);
            for p in &mut self.pieces {
                p.end -= self.front;
            }
            self.front = 0;
        }
    }

    fn last_is_newline(&self) -> bool {
        self.pieces
            .back()
            .is_some_and(|p| self.text[..p.end].ends_with('\n'))
    }
}

impl Sink for Tail {
    fn push(&mut self, piece: &str, raw: Range<usize>) -> bool {
        let cost = json_len(piece);
        self.text.push_str(piece);
        self.pieces.push_back(Piece {
            raw_start: raw.start,
            end: self.text.len(),
            cost,
        });
        self.cost += cost;
        while self.cost > self.limit {
            self.drop_front();
        }
        true
    }

    fn clear_line(&mut self) {
        while !self.pieces.is_empty() && !self.last_is_newline() {
            let start = self.last_start();
            if let Some(p) = self.pieces.pop_back() {
                self.cost -= p.cost;
            }
            self.text.truncate(start);
        }
    }

    fn erase(&mut self, n: usize) {
        for _ in 0..n {
            if self.pieces.is_empty() || self.last_is_newline() {
                return;
            }
            let start = self.last_start();
            let Some(c) = self.text.pop() else { return };
            let cost = char_cost(c);
            self.cost -= cost;
            if self.text.len() <= start {
                self.pieces.pop_back();
            } else if let Some(p) = self.pieces.back_mut() {
                p.end = self.text.len();
                p.cost -= cost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::clean::{Cleaned, clean, to_text};
    use super::*;

    #[test]
    fn json_len_is_the_length_serde_json_writes() {
        let samples = [
            "plain",
            "quote \" and \\ backslash",
            "tab\tnew\nline\r",
            "\u{0}\u{1b}\u{7f}",
            "€😀é",
            "\u{8}\u{c}\u{1f}",
            "[␀×512] �",
        ];
        for s in samples {
            let written = serde_json::to_string(s).unwrap().len() - 2;
            assert_eq!(json_len(s), written, "{s:?}");
        }
    }

    #[test]
    fn printable_ascii_costs_what_json_len_says() {
        for byte in 0x20..=0x7e_u8 {
            let text = char::from(byte).to_string();
            assert_eq!(ascii_cost(&text), json_len(&text), "{text:?}");
        }
    }

    #[test]
    fn head_stops_at_its_limit_and_knows_where_it_stopped_in_the_raw_bytes() {
        let raw = b"ab\x1b[31m\"cd\"\x1b[0m";
        let mut head = Head::new(4);
        assert!(clean(raw, &mut head).stopped);
        assert_eq!((head.cost(), head.raw_end()), (4, 8));
        assert_eq!(head.into_text(), "ab\"");
        let mut head = Head::new(0);
        clean("😀".as_bytes(), &mut head);
        assert_eq!(head.into_text(), "");
        let mut head = Head::making_progress(1);
        clean("😀x".as_bytes(), &mut head);
        assert_eq!((head.raw_end(), head.into_text().as_str()), (4, "😀"));
    }

    #[test]
    fn tail_keeps_the_end_and_where_it_starts_in_the_raw_bytes() {
        let raw = b"one\ntwo\n\x1b[1mthree\n";
        let mut tail = Tail::new(12);
        clean(raw, &mut tail);
        assert_eq!(tail.raw_start(raw.len()), 4);
        assert_eq!(tail.into_text(), "two\nthree\n");
        let long: Vec<u8> = (0..100_000).map(|i| b'a' + (i % 26) as u8).collect();
        let mut tail = Tail::new(7);
        clean(&long, &mut tail);
        assert_eq!(tail.raw_start(long.len()), long.len() - 7);
        assert_eq!(tail.into_text().as_bytes(), &long[long.len() - 7..]);
    }

    /// A sink fed one piece per printable ASCII byte, as every sink was before runs were
    /// handed over at once: the reference the faster path must match.
    struct PerByte(Head);

    impl Sink for PerByte {
        fn push(&mut self, piece: &str, raw: Range<usize>) -> bool {
            self.0.push(piece, raw)
        }
        fn clear_line(&mut self) {
            self.0.clear_line();
        }
        fn erase(&mut self, n: usize) {
            self.0.erase(n);
        }
    }

    /// Text, cost, raw end and how cleaning ended: everything a read makes of a head.
    type Outcome = (String, usize, usize, Cleaned);

    fn by_runs(raw: &[u8], mut head: Head) -> Outcome {
        let cleaned = clean(raw, &mut head);
        (head.text, head.cost, head.raw_end, cleaned)
    }

    fn per_byte(raw: &[u8], head: Head) -> Outcome {
        let mut sink = PerByte(head);
        let cleaned = clean(raw, &mut sink);
        (sink.0.text, sink.0.cost, sink.0.raw_end, cleaned)
    }

    #[test]
    fn runs_of_text_are_taken_as_byte_by_byte_whatever_the_cut() {
        let samples: [&[u8]; 6] = [
            b"ab\"c\\d\x1b[1;31me\"\"f\x1b[0mgh\\",
            "x\u{e9}y\u{20ac}z\u{1f600}w\x1b]0;t\x07\"v".as_bytes(),
            b"one\ntwo 10%\r 50%\r100%\nab\x08\x08cd\x08e\n",
            b"a\x00\x00\x00\x00\x00\x00\x00\x00\x00b\x07c\x7fd\te\x0cf",
            b"p\xff\xfeq\xe2\x82r\xe2\x82\xacs\xc2\x9bt\x1bPdcs\x1b\\u",
            b"\x1b]8;;http://e.x/\"q\"\x1b\\link\x1b]8;;\x1b\\ \"end\"\x1b[38;5",
        ];
        // Every slice (a page may start and end anywhere: inside an escape sequence, inside a
        // character) within every budget.
        for raw in samples {
            for start in 0..raw.len() {
                for end in start..=raw.len() {
                    let slice = &raw[start..end];
                    for limit in 0..=2 * json_len(&to_text(slice)) + 2 {
                        assert_eq!(
                            by_runs(slice, Head::making_progress(limit)),
                            per_byte(slice, Head::making_progress(limit)),
                            "{slice:?} within {limit}, progressing"
                        );
                        assert_eq!(
                            by_runs(slice, Head::new(limit)),
                            per_byte(slice, Head::new(limit)),
                            "{slice:?} within {limit}"
                        );
                    }
                    let whole = per_byte(slice, Head::new(usize::MAX)).0;
                    assert_eq!(to_text(slice), whole, "{slice:?} whole");
                }
            }
        }
        // A line longer than the runs handed over at once, cut at and around their edges.
        let mut line = b"\x1b[1m".to_vec();
        line.extend([b'x'; 8187]);
        line.extend(b"\"\\\"");
        line.extend("\u{e9}".as_bytes());
        line.extend([b'y'; 9000]);
        for start in [0, 1, 4, 5, 8191, 8192] {
            for end in [line.len(), 8196, 8197, 8198, 8199, 16_384] {
                let slice = &line[start..end];
                let cost = json_len(&to_text(slice));
                for limit in (0..8).chain(8180..8210).chain([cost - 1, cost, usize::MAX]) {
                    assert_eq!(
                        by_runs(slice, Head::making_progress(limit)),
                        per_byte(slice, Head::making_progress(limit)),
                        "{start}..{end} within {limit}"
                    );
                }
            }
        }
    }

    #[test]
    fn redraws_and_backspaces_are_applied_in_head_and_tail_alike() {
        let raw = b"keep\n 10%\r 55%\r100%\nab\x08c\n";
        let mut head = Head::new(1000);
        let mut tail = Tail::new(1000);
        clean(raw, &mut head);
        clean(raw, &mut tail);
        assert_eq!(head.cost(), json_len("keep\n100%\nac\n"));
        assert_eq!(head.into_text(), "keep\n100%\nac\n");
        assert_eq!(tail.into_text(), "keep\n100%\nac\n");
    }
}
