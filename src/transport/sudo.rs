//! Running a command through `sudo -n`: the shell text that does it, the shape of the sudoers
//! rule that allows it, and reading sudo's refusals. Pure functions; the tool layer runs them.

use crate::error::{Error, Result};

/// Printed (on stderr, exit 127) when the host has no `sudo`.
pub const NO_SUDO: &str = "outpost: sudo is not installed on this host";

/// Directories sudo's usual `secure_path` adds to a user's PATH, where a program may be found
/// that the user's own PATH lacks (Debian's users have no `/usr/sbin`).
const SBIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Shell words that make a first word not a program sudo can run (reserved words, and builtins
/// that only mean something inside a shell).
const SHELL_ONLY: &[&str] = &[
    "!", "{", "}", "if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while",
    "until", "for", "in", "function", "select", "time", ".", ":", "source", "alias", "unalias",
    "break", "continue", "cd", "eval", "exec", "exit", "export", "readonly", "return", "set",
    "shift", "times", "trap", "unset", "umask", "ulimit", "wait", "read", "getopts", "hash",
    "jobs", "fg", "bg", "command", "type", "local",
];

/// The words of `command` when it is *simple*: words only, each made of plain characters,
/// single-quoted text, or double-quoted text without `$`, `` ` `` or `\`; the first word is no
/// assignment, reserved word or shell builtin. Anything else (operators, redirections,
/// expansions, globs, `~`, comments, backslashes, newlines) needs a shell: None.
pub fn simple_words(command: &str) -> Option<Vec<String>> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,+@%^=".contains(c);
    let mut quote = None;
    for c in command.chars() {
        quote = match (quote, c) {
            (None, '\'' | '"') => Some(c),
            (None, ' ' | '\t') => None,
            (None, c) if plain(c) => None,
            (None, _) => return None,
            (Some('\''), '\'') | (Some('"'), '"') => None,
            (Some('"'), '$' | '`' | '\\') => return None,
            (open, _) => open,
        };
    }
    let words = shell_words::split(command).ok()?;
    let first = words.first()?;
    let assignment = command.trim_start().split([' ', '\t', '\'', '"']).next()?;
    (!first.is_empty() && !assignment.contains('=') && !SHELL_ONLY.contains(&first.as_str()))
        .then_some(words)
}

/// Checks a `sudo_user`: a user name or `#UID`.
pub fn check_user(user: &str) -> Result<()> {
    let valid = match user.strip_prefix('#') {
        Some(uid) => !uid.is_empty() && uid.chars().all(|c| c.is_ascii_digit()),
        None => {
            !user.is_empty()
                && !user.starts_with('-')
                && user
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-$".contains(c))
        }
    };
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            field: "sudo_user",
            reason: format!("`{user}` is not a user name or #UID"),
        })
    }
}

/// The shell text that runs `command` as `user` through `sudo -n` (never a prompt), keeping the
/// variables named in `env` (already exported by the wrapper; their values never reach argv). A
/// simple command becomes `sudo … -- PROGRAM ARGS…`, anything else `sudo … -- sh -c COMMAND`.
pub fn sudo_line<'a>(command: &str, user: &str, env: impl IntoIterator<Item = &'a str>) -> String {
    let mut argv = vec!["sudo".to_owned(), "-n".to_owned()];
    let names: Vec<&str> = env.into_iter().collect();
    if !names.is_empty() {
        argv.push(format!("--preserve-env={}", names.join(",")));
    }
    argv.extend(["-u".to_owned(), user.to_owned(), "--".to_owned()]);
    argv.extend(sudo_argv(command));
    format!(
        "command -v sudo >/dev/null 2>&1 || {{ echo {} >&2; exit 127; }}; exec {}",
        shell_words::quote(NO_SUDO),
        shell_words::join(argv)
    )
}

/// The program and arguments sudo is asked to run for `command` (what a sudoers rule names).
pub fn sudo_argv(command: &str) -> Vec<String> {
    simple_words(command)
        .unwrap_or_else(|| vec!["sh".to_owned(), "-c".to_owned(), command.to_owned()])
}

/// Why sudo refused to run the command, read from its stderr (the command never ran).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The host has no `sudo`.
    NotInstalled,
    /// sudo wanted a password (or a terminal to read one): no NOPASSWD rule matched.
    NeedsPassword,
    /// The rule matched but does not let the `env` variables through.
    EnvNotAllowed,
}

/// Reads a refusal from a sudo'd command's exit code and the start of its stderr.
pub fn refusal(exit_code: Option<i32>, stderr: &str) -> Option<Refusal> {
    let first = stderr.lines().next().unwrap_or_default();
    match exit_code? {
        127 if first == NO_SUDO => Some(Refusal::NotInstalled),
        1 if !first.starts_with("sudo: ") => None,
        1 if first.contains("not allowed to set the following environment") => {
            Some(Refusal::EnvNotAllowed)
        }
        1 if [
            "password is required",
            "terminal is required",
            "must have a tty",
        ]
        .iter()
        .any(|said| first.contains(said)) =>
        {
            Some(Refusal::NeedsPassword)
        }
        _ => None,
    }
}

/// Shell text that prints the login user's name, then `program`'s full path as `command -v`
/// finds it there (also in the sbin directories sudo's `secure_path` usually adds).
pub fn probe_line(program: &str) -> String {
    let program = shell_words::quote(program);
    format!(
        "id -un; command -v {program} 2>/dev/null || PATH={SBIN_PATH} command -v {program} 2>/dev/null || echo {program}"
    )
}

/// The sudoers line that lets `login` run `argv` (program as found, then its arguments) as
/// `user` without a password; with `SETENV:` when variables must come through.
pub fn rule(login: &str, user: &str, argv: &[String], setenv: bool) -> String {
    let tags = if setenv {
        "NOPASSWD:SETENV:"
    } else {
        "NOPASSWD:"
    };
    let words: Vec<String> = argv.iter().map(|word| sudoers_escape(word)).collect();
    format!("{login} ALL=({user}) {tags} {}", words.join(" "))
}

/// A word as a sudoers command argument matches it literally: its special characters escaped.
fn sudoers_escape(word: &str) -> String {
    word.chars().fold(String::new(), |mut out, c| {
        if "\\,:=*?[]!#\"".contains(c) {
            out.push('\\');
        }
        out.push(c);
        out
    })
}

#[cfg(test)]
#[path = "sudo_tests.rs"]
mod tests;
