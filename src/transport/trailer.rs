//! The wrapper's last word through an engine. An engine reports a process killed by signal N as
//! exit code 128+N, which a command may also exit with; the wrapper inside, which waited for the
//! command, says which it was in a line `NONCE signal N` on stderr. [`LastWord`] cuts that line out
//! of the output wherever it falls (reads split it anywhere) and turns the engine's exit code
//! back into the signal.

use bytes::Bytes;
use memchr::memmem;

use super::{ExitStatus, OutputStream};

/// The most digits a signal number has.
const MAX_DIGITS: usize = 3;

/// Finds and removes the trailer in one stream.
struct Trailer {
    /// `NONCE signal `.
    needle: Vec<u8>,
    /// The end of the last read that may be the start of the trailer: held back until it is
    /// known not to be (or the stream ends).
    held: Vec<u8>,
    signal: Option<i32>,
}

impl Trailer {
    fn new(nonce: &str) -> Self {
        Self {
            needle: format!("{nonce} signal ").into_bytes(),
            held: Vec::new(),
            signal: None,
        }
    }

    /// `data` without the trailer line; a tail that may be the trailer's start is held back.
    /// Data with nothing held before it, no trailer and no start of one at its end (nearly all
    /// of it) is passed on as it is, not copied.
    fn pass(&mut self, data: Bytes) -> Bytes {
        let clean = self.held.is_empty()
            && memmem::find(&data, &self.needle).is_none()
            && self.start_at_end(&data) == 0;
        if clean {
            return data;
        }
        Bytes::from(self.filter(&data))
    }

    /// How many bytes at the end of `data` may begin the trailer.
    fn start_at_end(&self, data: &[u8]) -> usize {
        (1..self.needle.len().min(data.len() + 1))
            .rev()
            .find(|k| data.ends_with(&self.needle[..*k]))
            .unwrap_or(0)
    }

    fn filter(&mut self, data: &[u8]) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(data);
        let mut out = Vec::with_capacity(buf.len());
        let mut rest = &buf[..];
        while let Some(at) = memmem::find(rest, &self.needle) {
            out.extend_from_slice(&rest[..at]);
            let after = &rest[at + self.needle.len()..];
            let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
            match after.get(digits) {
                Some(b'\n') if (1..=MAX_DIGITS).contains(&digits) => {
                    self.signal = std::str::from_utf8(&after[..digits])
                        .ok()
                        .and_then(|n| n.parse().ok());
                    rest = &after[digits + 1..];
                }
                None if digits <= MAX_DIGITS => {
                    self.held = rest[at..].to_vec();
                    return out;
                }
                // Not the wrapper's line: output that happens to hold the nonce.
                _ => {
                    out.extend_from_slice(&rest[at..at + self.needle.len()]);
                    rest = after;
                }
            }
        }
        let keep = self.start_at_end(rest);
        out.extend_from_slice(&rest[..rest.len() - keep]);
        self.held = rest[rest.len() - keep..].to_vec();
        out
    }
}

/// The trailer on both streams (a prefix may merge stderr into stdout).
pub struct LastWord {
    stdout: Trailer,
    stderr: Trailer,
}

impl LastWord {
    pub fn new(nonce: &str) -> Self {
        Self {
            stdout: Trailer::new(nonce),
            stderr: Trailer::new(nonce),
        }
    }

    /// The command's own part of `data`, if any.
    pub fn output(&mut self, stream: OutputStream, data: Bytes) -> Option<Bytes> {
        let trailer = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        let out = trailer.pass(data);
        (!out.is_empty()).then_some(out)
    }

    /// What was held back, once the streams have ended.
    pub fn rest(&mut self) -> Vec<(OutputStream, Bytes)> {
        [
            (OutputStream::Stdout, &mut self.stdout),
            (OutputStream::Stderr, &mut self.stderr),
        ]
        .into_iter()
        .filter(|(_, t)| !t.held.is_empty())
        .map(|(stream, t)| (stream, Bytes::from(std::mem::take(&mut t.held))))
        .collect()
    }

    /// How the command ended: the signal the wrapper reported, else what the engine said.
    pub fn status(&self, engine: ExitStatus) -> ExitStatus {
        match self.stderr.signal.or(self.stdout.signal) {
            Some(n) => ExitStatus::signalled(n),
            None => engine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "__outpost_0123456789abcdef";

    /// Feeds `input` cut into pieces of `size` bytes; returns the stderr passed on and the status.
    fn feed(input: &str, size: usize) -> (String, ExitStatus) {
        let mut word = LastWord::new(NONCE);
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(size) {
            let piece = Bytes::copy_from_slice(piece);
            out.extend(word.output(OutputStream::Stderr, piece).unwrap_or_default());
        }
        for (_, rest) in word.rest() {
            out.extend(rest);
        }
        let engine = ExitStatus {
            code: Some(143),
            signal: None,
        };
        (String::from_utf8(out).unwrap(), word.status(engine))
    }

    #[test]
    fn the_trailer_is_cut_out_wherever_the_reads_split_it() {
        let input = format!("err 1\npartial{NONCE} signal 15\nlate line\n");
        for size in 1..input.len() + 1 {
            let (out, status) = feed(&input, size);
            assert_eq!(out, "err 1\npartiallate line\n", "pieces of {size}");
            assert_eq!(
                status.signal.as_deref(),
                Some("SIGTERM"),
                "pieces of {size}"
            );
            assert_eq!(status.code, None);
        }
    }

    #[test]
    fn clean_output_is_passed_on_without_a_copy() {
        let mut word = LastWord::new(NONCE);
        let data = Bytes::from(vec![b'x'; 64 << 10]);
        let out = word.output(OutputStream::Stdout, data.clone()).unwrap();
        assert_eq!(out.as_ptr(), data.as_ptr());
        // A read that ends with a start of the trailer is held back, then passed on whole.
        let tail = Bytes::from(format!("line\n{}", &NONCE[..5]));
        let out = word.output(OutputStream::Stdout, tail).unwrap();
        assert_eq!(&out[..], b"line\n");
        let out = word
            .output(OutputStream::Stdout, Bytes::from_static(b"!\n"))
            .unwrap();
        assert_eq!(&out[..], format!("{}!\n", &NONCE[..5]).as_bytes());
    }

    #[test]
    fn without_a_trailer_output_and_status_pass_unchanged() {
        let lookalikes = [
            "plain\n".to_owned(),
            format!("{NONCE} signal x\n"),
            format!("{NONCE} signal 1234\n"),
            format!("ends with a start of it {}", &NONCE[..9]),
            format!("{NONCE} signal 9"),
        ];
        for input in lookalikes {
            for size in [1, 3, input.len()] {
                let (out, status) = feed(&input, size);
                assert_eq!(out, input, "pieces of {size}");
                assert_eq!((status.code, status.signal), (Some(143), None), "{input:?}");
            }
        }
    }
}
