//! Cutting byte buffers into valid UTF-8 text without splitting a character.

/// The longest prefix of `bytes` (at most `max` long) that does not end inside a UTF-8 sequence.
pub fn head_boundary(bytes: &[u8], max: usize) -> usize {
    let mut end = max.min(bytes.len());
    if end == bytes.len() {
        return end;
    }
    // Step back over continuation bytes so the cut falls before a character's first byte.
    let floor = end.saturating_sub(3);
    while end > floor && is_continuation(bytes[end]) {
        end -= 1;
    }
    end
}

/// The start of the shortest suffix of `bytes` (at most `max` long) that begins on a character.
pub fn tail_boundary(bytes: &[u8], max: usize) -> usize {
    let mut start = bytes.len().saturating_sub(max);
    let ceiling = (start + 3).min(bytes.len());
    while start < ceiling && is_continuation(bytes[start]) {
        start += 1;
    }
    start
}

/// Bytes at the end of `bytes` that begin a UTF-8 character whose remaining bytes have not come yet.
pub fn incomplete_suffix(bytes: &[u8]) -> usize {
    // Find the first byte of the last character among the last three bytes.
    for k in 1..=bytes.len().min(3) {
        let tail = &bytes[bytes.len() - k..];
        if is_continuation(tail[0]) {
            continue;
        }
        return match std::str::from_utf8(tail) {
            Err(e) if e.error_len().is_none() && e.valid_up_to() == 0 => k,
            _ => 0,
        };
    }
    0
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_never_split_a_character() {
        let s = "aé€😀z".as_bytes(); // 1 + 2 + 3 + 4 + 1 bytes
        for max in 0..=s.len() {
            let h = head_boundary(s, max);
            assert!(std::str::from_utf8(&s[..h]).is_ok(), "head {max}");
            assert!(h <= max);
            let t = tail_boundary(s, max);
            assert!(std::str::from_utf8(&s[t..]).is_ok(), "tail {max}");
            assert!(s.len() - t <= max);
        }
    }

    #[test]
    fn incomplete_suffix_counts_a_started_character() {
        let euro = "€".as_bytes();
        assert_eq!(incomplete_suffix(b"abc"), 0);
        assert_eq!(incomplete_suffix(&[b'a', euro[0]]), 1);
        assert_eq!(incomplete_suffix(&[b'a', euro[0], euro[1]]), 2);
        assert_eq!(incomplete_suffix(&[0xff, b'a', euro[0]]), 1);
    }
}
