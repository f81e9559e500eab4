//! Claude Code's rule for naming a project's directory under `projects/`: the physical cwd with every
//! UTF-16 unit that is not ASCII `[A-Za-z0-9]` replaced by `-`; past 200 characters, the first 200,
//! `-`, and the base-36 absolute value of the cwd's Java-style 32-bit string hash.

/// Longest name kept whole.
const MAX_NAME: usize = 200;

/// The directory name Claude Code uses for the project at `physical_cwd` (symlinks already resolved).
pub fn project_dir_name(physical_cwd: &str) -> String {
    let name: String = physical_cwd
        .encode_utf16()
        .map(|unit| match char::from_u32(u32::from(unit)) {
            Some(c) if c.is_ascii_alphanumeric() => c,
            _ => '-',
        })
        .collect();
    if name.len() <= MAX_NAME {
        return name;
    }
    format!(
        "{}-{}",
        &name[..MAX_NAME],
        base36(java_hash(physical_cwd).unsigned_abs())
    )
}

/// Java's `String.hashCode`: `h = 31 * h + unit` over UTF-16 units, wrapping at 32 bits.
fn java_hash(text: &str) -> i32 {
    text.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_table_observed_from_claude_code() {
        let table = [
            ("/home/dev/work/proj1", "-home-dev-work-proj1"),
            (
                "/home/dev/work/my.proj_v1.2 with spaces",
                "-home-dev-work-my-proj-v1-2-with-spaces",
            ),
            ("/home/dev/work/ünïcödé-dir", "-home-dev-work--n-c-d--dir"),
            (
                "/home/dev/work/.hidden/trailing.dot.",
                "-home-dev-work--hidden-trailing-dot-",
            ),
        ];
        for (cwd, dir) in table {
            assert_eq!(project_dir_name(cwd), dir, "{cwd}");
        }
    }

    #[test]
    fn an_emoji_is_two_utf16_units() {
        assert_eq!(project_dir_name("/a/😀b"), "-a---b");
    }

    #[test]
    fn java_hash_and_base36_agree_with_java() {
        assert_eq!(java_hash("hello"), 99162322);
        assert_eq!(base36(99162322), "1n1e4y");
        // The famous string whose hashCode is Integer.MIN_VALUE: its absolute value does not fit i32.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(base36(i32::MIN.unsigned_abs()), "zik0zk");
    }

    #[test]
    fn long_paths_keep_200_characters_and_add_the_hash() {
        let cwd = format!("/home/dev/{}", "x".repeat(250));
        let name = project_dir_name(&cwd);
        assert_eq!(name.len(), 200 + 1 + "ecicwr".len());
        assert!(name.starts_with("-home-dev-xxx"));
        assert!(name.ends_with("-ecicwr"), "{name}");
        assert_eq!(project_dir_name(&"/y".repeat(100)), "-y".repeat(100));
    }
}
