//! The one meaning of `~`: a path that is `~` or starts with `~/` is in the home directory. Here
//! as a local path, and as `sh` text that lets the host's shell say where its home is.

use std::path::{Path, PathBuf};

/// The part of `path` after the home directory, if `path` is `~` (then `""`) or starts with
/// `~/`; `None` for any other path (`~other/x` included).
pub fn in_home(path: &str) -> Option<&str> {
    if path == "~" {
        return Some("");
    }
    path.strip_prefix("~/")
}

/// `path` with a leading `~` or `~/` replaced by `home`; any other path as it is.
pub fn expand(path: &str, home: &Path) -> PathBuf {
    match in_home(path) {
        Some("") if path == "~" => home.to_owned(),
        Some(rest) => home.join(rest),
        None => PathBuf::from(path),
    }
}

/// `path` as one `sh` word: quoted, with a leading `~` or `~/` meaning that host's `$HOME`.
pub fn shell_word(path: &str) -> String {
    match in_home(path) {
        Some("") if path == "~" => "\"$HOME\"".to_owned(),
        Some(rest) => format!("\"$HOME\"/{}", shell_words::quote(rest)),
        None => shell_words::quote(path).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_tilde_is_home_and_nothing_else_is() {
        let home = Path::new("/home/me");
        assert_eq!(expand("~", home), home);
        assert_eq!(expand("~/a b", home), home.join("a b"));
        for as_is in ["/abs", "rel", "~other/x", "a/~/b"] {
            assert_eq!(expand(as_is, home), PathBuf::from(as_is));
            assert_eq!(in_home(as_is), None);
        }
        assert_eq!(
            (in_home("~"), in_home("~/"), in_home("~/a")),
            (Some(""), Some(""), Some("a"))
        );
    }

    #[test]
    fn the_shell_word_means_the_same_under_a_real_sh() {
        for (path, expected) in [
            ("~", "/home/me"),
            ("~/it's $x", "/home/me/it's $x"),
            ("~other/x", "~other/x"),
            ("/a b", "/a b"),
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_word(path)))
                .env("HOME", "/home/me")
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "{path}");
            assert_eq!(
                expand(path, Path::new("/home/me")),
                PathBuf::from(expected),
                "{path}: local and remote agree"
            );
        }
    }
}
