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
}
