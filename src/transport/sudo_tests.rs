//! Unit tests of the sudo shell text, run under real `sh` and `dash` with a stand-in `sudo`.

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn plain_words_and_quoted_text_are_simple() {
    let cases: &[(&str, &[&str])] = &[
        (
            "systemctl restart nginx",
            &["systemctl", "restart", "nginx"],
        ),
        (
            "  apt-get  install -y\tpkg ",
            &["apt-get", "install", "-y", "pkg"],
        ),
        (
            "cp --mode=0644 a.txt /etc/x",
            &["cp", "--mode=0644", "a.txt", "/etc/x"],
        ),
        ("echo 'a b; $c' \"d | e\"", &["echo", "a b; $c", "d | e"]),
        (
            "/usr/bin/id -u user@host:1,2+%^",
            &["/usr/bin/id", "-u", "user@host:1,2+%^"],
        ),
        ("echo ''", &["echo", ""]),
    ];
    for (command, words) in cases {
        let expected: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        assert_eq!(simple_words(command), Some(expected), "{command}");
    }
}

#[test]
fn shell_syntax_is_not_simple() {
    for command in [
        "a | b",
        "a; b",
        "a && b",
        "a || b",
        "a &",
        "echo $X",
        "echo ${X}",
        "echo $(id)",
        "echo `id`",
        "echo > f",
        "cat < f",
        "cat 2>&1",
        "ls *.txt",
        "ls ?",
        "ls [ab]",
        "ls ~",
        "cd ~/x",
        "echo \"$HOME\"",
        "echo \"`id`\"",
        "echo \"a\\b\"",
        "echo a\\ b",
        "echo a # c",
        "FOO=1 env",
        "(id)",
        "{ id; }",
        "! true",
        "a\nb",
        "if true; then :; fi",
        "cd /tmp",
        "exit 3",
        "export A=1",
        ". ./env",
        "echo 'open",
        "",
        "   ",
        "for",
    ] {
        assert_eq!(simple_words(command), None, "{command:?}");
    }
}

/// Runs `line` with `shell` (`sh`, `dash`) where PATH has only a stand-in `sudo` (when
/// `with_sudo`) that prints each argument on a line and the preserved variable `A`.
fn run(shell: &str, line: &str, with_sudo: bool) -> (String, String, Option<i32>) {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("outpost-sudo-test-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if with_sudo {
        let fake = dir.join("sudo");
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor a; do printf '[%s]\\n' \"$a\"; done\necho \"A=$A\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = Command::new(format!("/bin/{shell}"))
        .arg("-c")
        .arg(line)
        .env("PATH", &dir)
        .env("A", "secret value")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr), out.status.code())
}

#[test]
fn a_simple_command_reaches_sudo_as_its_own_argv_under_sh_and_dash() {
    let line = sudo_line("systemctl restart 'my unit'", "root", []);
    for shell in ["sh", "dash"] {
        let (out, _, code) = run(shell, &line, true);
        assert_eq!(
            out,
            "[-n]\n[-u]\n[root]\n[--]\n[systemctl]\n[restart]\n[my unit]\nA=secret value\n"
        );
        assert_eq!(code, Some(0));
    }
}

#[test]
fn shell_syntax_runs_under_sh_c_and_env_names_but_no_values_reach_argv() {
    let command = "cat /etc/hosts | wc -l; echo \"it's $A\"";
    let line = sudo_line(command, "#1001", ["A", "B_2"]);
    assert!(!line.contains("secret"));
    for shell in ["sh", "dash"] {
        let (out, _, _) = run(shell, &line, true);
        let expected = format!(
            "[-n]\n[--preserve-env=A,B_2]\n[-u]\n[#1001]\n[--]\n[sh]\n[-c]\n[{command}]\nA=secret value\n"
        );
        assert_eq!(out, expected);
    }
}

#[test]
fn no_sudo_on_the_host_says_so() {
    let line = sudo_line("id", "root", []);
    for shell in ["sh", "dash"] {
        let (out, err, code) = run(shell, &line, false);
        assert_eq!((out.as_str(), code), ("", Some(127)));
        assert_eq!(refusal(code, &err), Some(Refusal::NotInstalled), "{err}");
    }
}

#[test]
fn sudos_refusals_are_told_apart_from_the_commands_own_failures() {
    let password = "sudo: a password is required\n";
    assert_eq!(refusal(Some(1), password), Some(Refusal::NeedsPassword));
    let tty = "sudo: a terminal is required to read the password; either use the -S option";
    assert_eq!(refusal(Some(1), tty), Some(Refusal::NeedsPassword));
    let env = "sudo: sorry, you are not allowed to set the following environment variables: A";
    assert_eq!(refusal(Some(1), env), Some(Refusal::EnvNotAllowed));
    assert_eq!(
        refusal(Some(2), password),
        None,
        "sudo exits 1 when it refuses"
    );
    assert_eq!(refusal(Some(1), "grep: a password is required"), None);
    assert_eq!(refusal(Some(1), ""), None);
    assert_eq!(refusal(None, password), None);
    assert_eq!(refusal(Some(127), "sh: 1: sudo: not found"), None);
}

#[test]
fn the_rule_names_the_program_and_escapes_what_sudoers_reads_specially() {
    let argv = ["/usr/bin/systemctl", "restart", "nginx"].map(str::to_owned);
    assert_eq!(
        rule("deploy", "root", &argv, false),
        "deploy ALL=(root) NOPASSWD: /usr/bin/systemctl restart nginx"
    );
    let argv = ["/bin/sh", "-c", "a=1, b:*"].map(str::to_owned);
    assert_eq!(
        rule("ops", "www-data", &argv, true),
        "ops ALL=(www-data) NOPASSWD:SETENV: /bin/sh -c a\\=1\\, b\\:\\*"
    );
}

#[test]
fn the_probe_prints_the_user_and_the_programs_path() {
    let out = Command::new("/bin/dash")
        .arg("-c")
        .arg(probe_line("sshd"))
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let mut lines = out.lines();
    assert!(!lines.next().unwrap_or_default().is_empty());
    assert!(
        lines.next().unwrap_or_default() == "/usr/sbin/sshd",
        "{out}"
    );
}

#[test]
fn sudo_users_are_names_or_uids() {
    for ok in ["root", "www-data", "svc_1", "#0", "#1001", "user$"] {
        assert!(check_user(ok).is_ok(), "{ok}");
    }
    for bad in ["", "-u", "#", "#1a", "a b", "a;b", "a'b"] {
        assert!(check_user(bad).is_err(), "{bad}");
    }
}
