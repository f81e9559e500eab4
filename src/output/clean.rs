//! What a model reads of raw output: terminal escape sequences removed, redrawn lines in their
//! final state, control characters and bytes that are not UTF-8 shown compactly.
//!
//! Escape sequences (CSI, OSC, DCS, SOS/PM/APC, two-byte ESC sequences) are recognised with
//! `anstyle-parse`'s table of the DEC ANSI parser (the one `vte` implements). The rest:
//! - `\n` and `\t` stay; `\r\n` is `\n`; text after a `\r` replaces the line so far (a progress
//!   bar shows its last state); a backspace lets the next character replace the one before it.
//! - Other control characters become their Unicode control pictures (`␀`, `␇`, `␡`...).
//! - A run of bytes that are not UTF-8 (or are C1 control characters) becomes one `�`.
//! - A run of eight or more of the same control character, or of bytes that are not UTF-8, is
//!   written once with its count: `[␀×512]`, `[�×4096]`.

use std::ops::Range;

use anstyle_parse::state::{Action, State, state_change};

/// Runs at least this long are written once with their count.
const COUNTED_RUN: usize = 8;
/// The most printable ASCII handed to a sink at once: a sink that stops early (a page that is
/// full) has not had the rest of a long line scanned for nothing.
const ASCII_CHUNK: usize = 8 * 1024;

/// Where cleaned text goes, piece by piece, each with the raw bytes it stands for: from the end
/// of the piece before (escape sequences in between included) to the end of its own bytes.
pub trait Sink {
    /// Takes `piece`, which stands for the raw bytes `raw`; false refuses it and ends cleaning.
    fn push(&mut self, piece: &str, raw: Range<usize>) -> bool;
    /// Drops the current line's text, back to the last newline taken.
    fn clear_line(&mut self);
    /// Drops up to `n` characters of the current line.
    fn erase(&mut self, n: usize);
    /// Takes the longest start of `text` (printable ASCII) that it would take byte by byte, each
    /// byte a piece of its own: the first standing for the raw bytes from `from` to its end,
    /// byte `k` for the raw byte `at + k`. Returns how many bytes it took. Sinks override it to
    /// take a run at once, which is what keeps cleaning long output cheap.
    fn push_ascii(&mut self, text: &str, from: usize, at: usize) -> usize {
        let mut start = from;
        for k in 0..text.len() {
            if !self.push(&text[k..k + 1], start..at + k + 1) {
                return k;
            }
            start = at + k + 1;
        }
        text.len()
    }
}

/// How cleaning a buffer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cleaned {
    /// The sink refused a piece: what follows it was not looked at.
    pub stopped: bool,
    /// Where an escape sequence or a character starts that the buffer ends inside of.
    pub unfinished: Option<usize>,
}

/// Cleans `raw` into `sink`.
pub fn clean(raw: &[u8], sink: &mut impl Sink) -> Cleaned {
    let mut cleaner = Cleaner {
        sink,
        state: State::Ground,
        sequence_start: 0,
        piece_start: 0,
        run: None,
        pending_cr: false,
        pending_backspaces: 0,
    };
    let mut i = 0;
    while i < raw.len() {
        let step = cleaner.step(raw, i);
        match step {
            Step::Next(next) => i = next,
            Step::Stopped => return cleaner.end(true, None),
            Step::Unfinished => return cleaner.end(false, Some(i)),
        }
    }
    let unfinished = (cleaner.state != State::Ground).then_some(cleaner.sequence_start);
    cleaner.end(false, unfinished)
}

/// The whole of `raw`, cleaned.
pub fn to_text(raw: &[u8]) -> String {
    let mut text = Text::default();
    clean(raw, &mut text);
    text.0
}

/// Bytes at the end of `raw` that may be the start of an escape sequence or a character still
/// arriving: held back from readers until the rest comes. Looks back at most `window` bytes.
pub fn unfinished_tail(raw: &[u8], window: usize) -> usize {
    let floor = raw.len().saturating_sub(window);
    let from = raw[floor..]
        .iter()
        .rposition(|b| *b == 0x1b)
        .map_or(raw.len().saturating_sub(3), |at| floor + at);
    let from = (from..raw.len())
        .find(|at| raw[*at] & 0b1100_0000 != 0b1000_0000)
        .unwrap_or(raw.len());
    match clean(&raw[from..], &mut Text::default()).unfinished {
        Some(at) => raw.len() - from - at,
        None => 0,
    }
}

/// What one byte (or character) did.
enum Step {
    Next(usize),
    Stopped,
    Unfinished,
}

/// A run of the same control character, or of bytes that are not text.
#[derive(Clone, Copy)]
struct Run {
    /// The control character, or None for bytes that are not UTF-8.
    byte: Option<u8>,
    count: usize,
    raw: (usize, usize),
}

struct Cleaner<'s, S: Sink> {
    sink: &'s mut S,
    state: State,
    sequence_start: usize,
    /// Where the next piece's raw bytes start: the end of the last piece taken.
    piece_start: usize,
    run: Option<Run>,
    pending_cr: bool,
    pending_backspaces: usize,
}

impl<S: Sink> Cleaner<'_, S> {
    fn step(&mut self, raw: &[u8], i: usize) -> Step {
        let byte = raw[i];
        // Outside escape sequences only ESC changes state: the table is needed for nothing else.
        if self.state == State::Ground {
            match byte {
                0x80.. => return self.non_ascii(raw, i),
                0x20..=0x7e => return self.print_ascii(raw, i),
                0x1b => {}
                _ => return proceed(self.control(byte, i), i + 1),
            }
        }
        let (next, action) = state_change(self.state, byte);
        if byte == 0x1b || (self.state == State::Ground && next != State::Anywhere) {
            self.sequence_start = i;
        }
        if next != State::Anywhere {
            self.state = next;
        }
        let taken = match action {
            Action::Print => self.print(byte as char, i..i + 1),
            Action::Execute if byte >= 0x80 => self.not_text(i..i + 1),
            Action::Execute => self.control(byte, i),
            _ => true,
        };
        proceed(taken, i + 1)
    }

    /// A character from its UTF-8 bytes, or a run of bytes that are not text.
    fn non_ascii(&mut self, raw: &[u8], i: usize) -> Step {
        let bytes = &raw[i..raw.len().min(i + 4)];
        let (len, c) = match std::str::from_utf8(bytes) {
            Ok(s) => first_char(s),
            Err(e) if e.valid_up_to() > 0 => first_char(&bytes[..e.valid_up_to()]),
            Err(e) => match e.error_len() {
                Some(len) => (len, None),
                None if raw.len() - i < 4 => return Step::Unfinished,
                None => (1, None),
            },
        };
        let taken = match c {
            Some(c) if !('\u{80}'..='\u{9f}').contains(&c) => self.print(c, i..i + len),
            _ => self.not_text(i..i + len),
        };
        proceed(taken, i + len)
    }

    /// The run of printable ASCII starting at `i` (up to [`ASCII_CHUNK`] of it), handed to the
    /// sink at once: what printing it character by character does, without a call per byte.
    fn print_ascii(&mut self, raw: &[u8], i: usize) -> Step {
        let len = printable_run(&raw[i..raw.len().min(i + ASCII_CHUNK)]);
        if !self.flush_run() {
            return Step::Stopped;
        }
        self.apply_pending();
        // Printable ASCII is always UTF-8.
        let text = std::str::from_utf8(&raw[i..i + len]).unwrap_or_default();
        let taken = self.sink.push_ascii(text, self.piece_start, i);
        if taken > 0 {
            self.piece_start = i + taken;
        }
        proceed(taken == len, i + len)
    }

    fn print(&mut self, c: char, raw: Range<usize>) -> bool {
        if !self.flush_run() {
            return false;
        }
        self.apply_pending();
        self.emit(c.encode_utf8(&mut [0; 4]), raw.end)
    }

    fn emit(&mut self, piece: &str, raw_end: usize) -> bool {
        let taken = self.sink.push(piece, self.piece_start..raw_end);
        if taken {
            self.piece_start = raw_end;
        }
        taken
    }

    fn control(&mut self, byte: u8, i: usize) -> bool {
        match byte {
            b'\t' => self.print('\t', i..i + 1),
            b'\n' => {
                let flushed = self.flush_run();
                (self.pending_cr, self.pending_backspaces) = (false, 0);
                flushed && self.emit("\n", i + 1)
            }
            b'\r' => {
                (self.pending_cr, self.pending_backspaces) = (true, 0);
                self.flush_run()
            }
            0x08 => {
                self.pending_backspaces += 1;
                self.flush_run()
            }
            _ => self.extend_run(Some(byte), i..i + 1),
        }
    }

    fn not_text(&mut self, raw: Range<usize>) -> bool {
        self.extend_run(None, raw)
    }

    fn extend_run(&mut self, byte: Option<u8>, raw: Range<usize>) -> bool {
        if let Some(run) = &mut self.run
            && run.byte == byte
            && run.raw.1 == raw.start
        {
            run.count += raw.len();
            run.raw.1 = raw.end;
            return true;
        }
        if !self.flush_run() {
            return false;
        }
        self.apply_pending();
        self.run = Some(Run {
            byte,
            count: raw.len(),
            raw: (raw.start, raw.end),
        });
        true
    }

    fn flush_run(&mut self) -> bool {
        let Some(run) = self.run.take() else {
            return true;
        };
        let symbol = run.byte.map_or('\u{FFFD}', control_picture);
        if run.count >= COUNTED_RUN {
            return self.emit(&format!("[{symbol}×{}]", run.count), run.raw.1);
        }
        let mut buf = [0; 4];
        let symbol = symbol.encode_utf8(&mut buf);
        match run.byte {
            // One picture per control character, each standing for its byte.
            Some(_) => (run.raw.0 + 1..=run.raw.1).all(|end| self.emit(symbol, end)),
            None => self.emit(symbol, run.raw.1),
        }
    }

    fn apply_pending(&mut self) {
        if std::mem::take(&mut self.pending_cr) {
            self.sink.clear_line();
        }
        let backspaces = std::mem::take(&mut self.pending_backspaces);
        if backspaces > 0 {
            self.sink.erase(backspaces);
        }
    }

    fn end(mut self, stopped: bool, unfinished: Option<usize>) -> Cleaned {
        let stopped = stopped || !self.flush_run();
        Cleaned {
            stopped,
            unfinished: unfinished.filter(|_| !stopped),
        }
    }
}

/// How many bytes at the start of `bytes` are printable ASCII: a block at a time without a
/// branch per byte (which the compiler vectorizes), then byte by byte in the block it ends in.
fn printable_run(bytes: &[u8]) -> usize {
    let printable = |b: &u8| matches!(b, 0x20..=0x7e);
    let mut len = 0;
    for block in bytes.chunks(32) {
        if !block.iter().fold(true, |all, b| all & printable(b)) {
            return len + block.iter().take_while(|b| printable(b)).count();
        }
        len += block.len();
    }
    len
}

/// On to `next` when the piece was taken, else stop.
fn proceed(taken: bool, next: usize) -> Step {
    if taken {
        Step::Next(next)
    } else {
        Step::Stopped
    }
}

/// The length and the first character of a non-empty valid UTF-8 prefix.
fn first_char(bytes: impl AsRef<[u8]>) -> (usize, Option<char>) {
    let s = std::str::from_utf8(bytes.as_ref()).unwrap_or_default();
    s.chars()
        .next()
        .map_or((1, None), |c| (c.len_utf8(), Some(c)))
}

/// The Unicode control picture of a C0 control character or DEL.
fn control_picture(byte: u8) -> char {
    match byte {
        0x7f => '\u{2421}',
        b => char::from_u32(0x2400 + u32::from(b)).unwrap_or('\u{FFFD}'),
    }
}

/// A sink that keeps everything.
#[derive(Default)]
struct Text(String);

impl Sink for Text {
    fn push(&mut self, piece: &str, _raw: Range<usize>) -> bool {
        self.0.push_str(piece);
        true
    }

    fn clear_line(&mut self) {
        let start = self.0.rfind('\n').map_or(0, |at| at + 1);
        self.0.truncate(start);
    }

    fn erase(&mut self, n: usize) {
        for _ in 0..n {
            if self.0.is_empty() || self.0.ends_with('\n') {
                return;
            }
            self.0.pop();
        }
    }

    fn push_ascii(&mut self, text: &str, _from: usize, _at: usize) -> usize {
        self.0.push_str(text);
        text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(raw: &[u8]) -> String {
        to_text(raw)
    }

    #[test]
    fn colours_cursor_moves_and_titles_are_removed() {
        assert_eq!(text(b"\x1b[1;31mred\x1b[0m plain\n"), "red plain\n");
        assert_eq!(
            text(b"\x1b[2K\x1b[1G\x1b[?25lhidden cursor\x1b[?25h"),
            "hidden cursor"
        );
        assert_eq!(text(b"\x1b]0;window title\x07after"), "after");
        assert_eq!(
            text(b"\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\ text"),
            "link text"
        );
        assert_eq!(text(b"\x1bP1$r0m\x1b\\dcs gone"), "dcs gone");
        assert_eq!(
            text(b"\x1b(Bcharset\x1b=keypad\x1b7saved"),
            "charsetkeypadsaved"
        );
        assert_eq!(text(b"\x1b_apc payload\x1b\\x"), "x");
        assert_eq!(text("é\x1b[32m€\x1b[0m😀".as_bytes()), "é€😀");
    }

    #[test]
    fn a_printable_run_ends_at_the_first_other_byte_wherever_it_is() {
        for len in 0..100 {
            let mut bytes = vec![b'x'; len];
            assert_eq!(printable_run(&bytes), len);
            for at in 0..len {
                for other in [0x00, 0x1b, 0x1f, 0x7f, 0x80, 0xe2, 0xff] {
                    bytes[at] = other;
                    assert_eq!(printable_run(&bytes), at, "{other:#x} at {at} of {len}");
                    bytes[at] = b'~';
                }
            }
        }
    }

    #[test]
    fn redrawn_lines_show_their_last_state() {
        assert_eq!(
            text(b"start\n 10%\r 50%\r100%\ndone\n"),
            "start\n100%\ndone\n"
        );
        assert_eq!(text(b"a\r\nb\r\n"), "a\nb\n");
        assert_eq!(text(b"waiting\r"), "waiting");
        assert_eq!(text(b"\x1b[2K\rstep 1\x1b[2K\rstep 2"), "step 2");
        assert_eq!(text(b"_\x08Ab\x08B|\x08/\x08-"), "AB-");
        assert_eq!(text(b"ab\x08\x08\n"), "ab\n");
    }

    #[test]
    fn control_characters_are_pictures_and_long_runs_are_counted() {
        assert_eq!(text(b"ding\x07 tab\there"), "ding\u{2407} tab\there");
        assert_eq!(
            text(b"a\x00b\x00\x00\x00c"),
            "a\u{2400}b\u{2400}\u{2400}\u{2400}c"
        );
        assert_eq!(text(&[0u8; 1000]), "[\u{2400}×1000]");
        assert_eq!(text(&[7u8; 7]), "\u{2407}".repeat(7));
        assert_eq!(text(b"\x7f\x0c\x0b"), "\u{2421}\u{240c}\u{240b}");
        assert_eq!(text(&[0x1b; 30_000]), "");
    }

    #[test]
    fn bytes_that_are_not_text_are_one_replacement_per_run() {
        assert_eq!(text(b"a\xffb\xfe\xfd\xfcc"), "a\u{FFFD}b\u{FFFD}c");
        assert_eq!(text(&[0xff; 5000]), "[\u{FFFD}×5000]");
        assert_eq!(text(&[0xff; 7]), "\u{FFFD}");
        assert_eq!(text(b"x\xe2\x82y"), "x\u{FFFD}y");
        assert_eq!(text("c1:\u{9b}31m".as_bytes()), "c1:\u{FFFD}31m");
    }

    #[test]
    fn an_unfinished_sequence_or_character_is_reported_where_it_starts() {
        let report = |raw: &[u8]| clean(raw, &mut Text::default()).unfinished;
        assert_eq!(report(b"ok\x1b[3"), Some(2));
        assert_eq!(report(b"ok\x1b]0;title"), Some(2));
        assert_eq!(report(b"ok\x1b"), Some(2));
        assert_eq!(report(b"ok\xe2\x82"), Some(2));
        assert_eq!(report(b"ok\x1b[31m"), None);
        assert_eq!(report(b"ok\xe2\x82\xac"), None);
        assert_eq!(unfinished_tail(b"text\x1b[38;5", 256), 6);
        assert_eq!(unfinished_tail(b"text\x1b[38;5mmore\xe2", 256), 1);
        assert_eq!(unfinished_tail(b"text\x1b[0m", 256), 0);
        assert_eq!(unfinished_tail(b"\x1b]0;a title\x07", 256), 0);
    }

    /// Takes pieces up to a count, recording the raw ranges it took.
    struct Limited(Vec<Range<usize>>, usize);

    impl Sink for Limited {
        fn push(&mut self, _piece: &str, raw: Range<usize>) -> bool {
            self.0.push(raw);
            self.0.len() <= self.1
        }
        fn clear_line(&mut self) {}
        fn erase(&mut self, _n: usize) {}
    }

    #[test]
    fn pieces_carry_their_raw_bytes_and_a_refusal_stops_cleaning() {
        let raw = "a\x1b[1mé\x00\x00\x00\x00\x00\x00\x00\x00\x07\x07z".as_bytes();
        let mut sink = Limited(Vec::new(), usize::MAX);
        assert_eq!(
            clean(raw, &mut sink),
            Cleaned {
                stopped: false,
                unfinished: None
            }
        );
        assert_eq!(sink.0, vec![0..1, 1..7, 7..15, 15..16, 16..17, 17..18]);
        let mut sink = Limited(Vec::new(), 1);
        assert!(clean(raw, &mut sink).stopped);
        assert_eq!(sink.0, vec![0..1, 1..7]);
    }
}
