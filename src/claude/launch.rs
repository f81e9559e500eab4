//! How a Claude Code process is started: its flags, where `claude` is looked for, and its environment.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::RemoteConfig;

/// Claude Code's `--permission-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    Default,
    AcceptEdits,
    Auto,
    BypassPermissions,
    DontAsk,
    Plan,
}

impl PermissionMode {
    /// Whether Claude asks before some tool uses in `mode` (`None`: its default mode): it is
    /// then started with `--permission-prompt-tool stdio`, so outpost can ask a person.
    pub fn prompts(mode: Option<Self>) -> bool {
        matches!(
            mode,
            None | Some(Self::Default | Self::AcceptEdits | Self::Plan)
        )
    }

    fn flag_value(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::Auto => "auto",
            PermissionMode::BypassPermissions => "bypassPermissions",
            PermissionMode::DontAsk => "dontAsk",
            PermissionMode::Plan => "plan",
        }
    }
}

/// The flags a process is started with. A warm process serves a turn only when they are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOptions {
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    pub allowed_tools: Vec<String>,
    pub disallowed_tools: Vec<String>,
    pub max_turns: Option<u32>,
    pub append_system_prompt: Option<String>,
}

/// Which session a new process serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new session with this id (`--session-id`).
    New(String),
    /// Continue this session (`--resume`).
    Resume(String),
    /// A new session holding a copy of this one's history (`--resume --fork-session`).
    Fork(String),
}

impl Start {
    /// The session the process starts from (for a fork, the one it copies).
    pub fn session_id(&self) -> &str {
        match self {
            Start::New(id) | Start::Resume(id) | Start::Fork(id) => id,
        }
    }
}

/// Where `claude` is found: a fixed path, or searched for.
#[derive(Debug, Clone, Copy)]
pub enum Locate<'a> {
    At(&'a str),
    Search,
}

/// What the launcher prints on stderr (then exit 127) when it finds no `claude`.
pub const NOT_FOUND_MARKER: &str = "outpost: claude not found; tried: ";

impl<'a> Locate<'a> {
    /// Where a host's `claude` is: its remote's `claude_path` when set, else searched for.
    pub fn configured(remote: Option<&'a RemoteConfig>) -> Self {
        remote
            .and_then(|r| r.claude_path.as_deref())
            .map_or(Locate::Search, Locate::At)
    }
}

/// The `sh -c` line that finds `claude` and execs it in stream-json mode with `options`.
pub fn command_line(locate: Locate<'_>, start: &Start, options: &LaunchOptions) -> String {
    let args = shell_words::join(arguments(start, options));
    find_then(locate, &format!("exec \"$1\" {args}"))
}

/// The `sh -c` line that finds `claude` as a turn would and prints its path and first line of
/// `--version` (`outpost remote test`); not found, the same marker line and exit 127.
pub fn probe_line(locate: Locate<'_>) -> String {
    find_then(
        locate,
        // Only `sh` itself: minimal images may have no `head`.
        "__o_v=$(\"$1\" --version </dev/null 2>&1); printf '%s %s\\n' \"$1\" \"${__o_v%%\n*}\"; exit 0",
    )
}

/// Finds `claude` and runs `found` on it (as `$1`); when it is nowhere, prints
/// [`NOT_FOUND_MARKER`] and the places tried on stderr and exits 127.
fn find_then(locate: Locate<'_>, found: &str) -> String {
    let search = match locate {
        Locate::At(path) => format!(
            "__o_tried={q}\n[ -f {q} ] && [ -x {q} ] && __o_run {q}\n",
            q = shell_path(path)
        ),
        Locate::Search => SEARCH.to_owned(),
    };
    format!("__o_run() {{ {found}; }}\n{search}echo \"{NOT_FOUND_MARKER}$__o_tried\" >&2\nexit 127")
}

/// `path` quoted for `sh`, with a leading `~/` meaning the home directory.
fn shell_path(path: &str) -> String {
    crate::home::shell_word(path)
}

/// Looks where installers put `claude`, cheapest first; the login shell last (it may be slow).
const SEARCH: &str = r#"__o_tried='$PATH'
__o_c=$(command -v claude 2>/dev/null) && case $__o_c in /*) __o_run "$__o_c";; esac
for __o_p in "$HOME/.local/bin/claude" "$HOME/.claude/local/claude" "$HOME/.npm-global/bin/claude" /usr/local/bin/claude /opt/homebrew/bin/claude; do
  __o_tried="$__o_tried, $__o_p"
  [ -f "$__o_p" ] && [ -x "$__o_p" ] && __o_run "$__o_p"
done
__o_tried="$__o_tried, npm's global bin"
__o_n=$(npm prefix -g 2>/dev/null </dev/null) && [ -x "$__o_n/bin/claude" ] && __o_run "$__o_n/bin/claude"
__o_nl='
'
for __o_f in -lc -ic; do
  __o_tried="$__o_tried, ${SHELL:-/bin/sh} $__o_f 'command -v claude'"
  __o_c=$("${SHELL:-/bin/sh}" $__o_f 'command -v claude' </dev/null 2>/dev/null)
  __o_c=${__o_c##*"$__o_nl"}
  case $__o_c in /*) [ -x "$__o_c" ] && __o_run "$__o_c";; esac
done
"#;

/// Claude's arguments after the program name. The prompt is not among them: it goes on stdin.
pub fn arguments(start: &Start, options: &LaunchOptions) -> Vec<String> {
    let mut args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    .map(String::from)
    .to_vec();
    let mut flag = |name: &str, value: &str| {
        args.push(name.to_owned());
        args.push(value.to_owned());
    };
    match start {
        Start::New(id) => flag("--session-id", id),
        Start::Resume(id) | Start::Fork(id) => flag("--resume", id),
    }
    if let Some(model) = &options.model {
        flag("--model", model);
    }
    if let Some(mode) = options.permission_mode {
        flag("--permission-mode", mode.flag_value());
    }
    if PermissionMode::prompts(options.permission_mode) {
        flag("--permission-prompt-tool", "stdio");
    }
    if let Some(turns) = options.max_turns {
        flag("--max-turns", &turns.to_string());
    }
    if let Some(prompt) = &options.append_system_prompt {
        flag("--append-system-prompt", prompt);
    }
    // Variadic flags: one argument per rule, since rules such as `Bash(git log:*)` hold spaces.
    for (name, rules) in [
        ("--allowedTools", &options.allowed_tools),
        ("--disallowedTools", &options.disallowed_tools),
    ] {
        if !rules.is_empty() {
            args.push(name.to_owned());
            args.extend(rules.iter().cloned());
        }
    }
    if matches!(start, Start::Fork(_)) {
        args.push("--fork-session".to_owned());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run(line: &str, home: &std::path::Path, path: &str) -> std::process::Output {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .env_clear()
            .env("HOME", home)
            .env("PATH", path)
            .env("SHELL", "/bin/sh")
            .output()
            .unwrap()
    }

    fn fake(path: &std::path::Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\"\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn finds_claude_in_local_bin_and_passes_arguments_quoted() {
        let home = tempfile::tempdir().unwrap();
        let claude = home.path().join(".local/bin/claude");
        fake(&claude);
        let options = LaunchOptions {
            model: Some("opus".into()),
            append_system_prompt: Some("be 'brief' $HOME".into()),
            allowed_tools: vec!["Bash(git log:*)".into(), "Edit".into()],
            ..LaunchOptions::default()
        };
        let line = command_line(Locate::Search, &Start::Fork("abc".into()), &options);
        let out = run(&line, home.path(), "/usr/bin:/bin");
        let printed = String::from_utf8(out.stdout).unwrap();
        let mut expected = vec![claude.display().to_string()];
        expected.extend(arguments(&Start::Fork("abc".into()), &options));
        assert_eq!(printed.lines().collect::<Vec<_>>(), expected);
        assert!(printed.contains("be 'brief' $HOME"));
        assert!(printed.contains("--allowedTools\nBash(git log:*)\nEdit\n"));
    }

    #[test]
    fn missing_claude_lists_the_places_tried() {
        let home = tempfile::tempdir().unwrap();
        let line = command_line(
            Locate::Search,
            &Start::New("x".into()),
            &LaunchOptions::default(),
        );
        let out = run(&line, home.path(), "/nonexistent");
        assert_eq!(out.status.code(), Some(127));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.starts_with(NOT_FOUND_MARKER),
            "only the marker line: {err}"
        );
        assert!(err.contains(".local/bin/claude"), "{err}");
        assert!(err.contains("-lc 'command -v claude'"), "{err}");
    }

    #[test]
    fn the_login_shell_is_asked_last_and_its_noise_ignored() {
        let home = tempfile::tempdir().unwrap();
        let claude = home.path().join("nvm/bin/claude");
        fake(&claude);
        let shell = home.path().join("login-shell");
        std::fs::write(
            &shell,
            format!(
                "#!/bin/sh\n[ \"$1\" = -lc ] && echo 'Welcome!' && echo {}\n",
                claude.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
        let line = command_line(
            Locate::Search,
            &Start::New("n".into()),
            &LaunchOptions::default(),
        );
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/nonexistent")
            .env("SHELL", &shell)
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            printed.lines().next(),
            Some(claude.to_str().unwrap()),
            "{out:?}"
        );
    }

    #[test]
    fn the_probe_finds_claude_where_a_turn_does() {
        let home = tempfile::tempdir().unwrap();
        let out = run(&probe_line(Locate::Search), home.path(), "/nonexistent");
        assert_eq!(out.status.code(), Some(127));
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with(NOT_FOUND_MARKER), "{err}");
        assert!(err.contains(".npm-global/bin/claude"), "{err}");
        // A place the turn's search knows beyond the login shell and ~/.local/bin.
        let claude = home.path().join(".npm-global/bin/claude");
        std::fs::create_dir_all(claude.parent().unwrap()).unwrap();
        std::fs::write(
            &claude,
            "#!/bin/sh\necho \"2.1.0 (Claude Code) $*\"\necho more\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&claude, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run(&probe_line(Locate::Search), home.path(), "/nonexistent");
        assert_eq!(out.status.code(), Some(0));
        let expected = format!("{} 2.1.0 (Claude Code) --version\n", claude.display());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
        let at = run(
            &probe_line(Locate::At("~/.npm-global/bin/claude")),
            home.path(),
            "/x",
        );
        assert_eq!(String::from_utf8(at.stdout).unwrap(), expected);
    }

    #[test]
    fn a_fixed_path_may_start_at_home() {
        let home = tempfile::tempdir().unwrap();
        fake(&home.path().join("my tools/claude"));
        let line = command_line(
            Locate::At("~/my tools/claude"),
            &Start::New("n".into()),
            &LaunchOptions::default(),
        );
        let out = run(&line, home.path(), "/usr/bin:/bin");
        assert!(
            String::from_utf8(out.stdout)
                .unwrap()
                .contains("--session-id\nn\n")
        );
    }

    #[test]
    fn a_fixed_path_is_used_or_reported() {
        let home = tempfile::tempdir().unwrap();
        let claude = home.path().join("opt/claude");
        let start = Start::Resume("s1".into());
        let line = command_line(
            Locate::At(claude.to_str().unwrap()),
            &start,
            &LaunchOptions::default(),
        );
        let out = run(&line, home.path(), "/usr/bin:/bin");
        assert_eq!(out.status.code(), Some(127));
        fake(&claude);
        let out = run(&line, home.path(), "/usr/bin:/bin");
        let printed = String::from_utf8(out.stdout).unwrap();
        assert!(printed.contains("--resume\ns1\n"), "{printed}");
    }
}
