"""`outpost exec HOST -- CMD` from a terminal: output, exit code, quoting, timeout and Ctrl-C."""

import subprocess

from conftest import BIN, HANG_GUARD, exec_ctrl_c_kills_the_tree, wait_dead_sync


def run(env, *args, stdin=subprocess.DEVNULL):
    return subprocess.run([BIN, "exec", *args], env=env, stdin=stdin, capture_output=True,
                          text=True, timeout=HANG_GUARD)


def test_output_and_exit_code(env):
    p = run(env, "local", "--", "echo out; echo err >&2; exit 9")
    assert (p.returncode, p.stdout, p.stderr) == (9, "out\n", "err\n")


def test_several_words_are_quoted_one_is_a_shell_line(env):
    assert run(env, "local", "--", "printf", "[%s]\\n", "a b", "$HOME").stdout == "[a b]\n[$HOME]\n"
    assert run(env, "local", "--", "echo $((40 + 2)) | cat").stdout == "42\n"


def test_cwd_and_piped_stdin(env, tmp_path):
    p = subprocess.run([BIN, "exec", "local", "--cwd", str(tmp_path), "--", "pwd; cat"], env=env,
                       input="piped in", capture_output=True, text=True, timeout=HANG_GUARD)
    assert p.stdout == f"{tmp_path.resolve()}\npiped in"


def test_timeout_kills_and_exits_124(env):
    p = run(env, "local", "--timeout", "1", "--", "echo $$; sleep 300 & echo $!; wait")
    assert p.returncode == 124
    wait_dead_sync(p.stdout.split())


def test_output_streams_live_and_ctrl_c_kills_the_tree(env):
    exec_ctrl_c_kills_the_tree(env, "local")


def test_unknown_host_fails_clearly(env):
    p = run(env, "nowhere", "--", "true")
    assert p.returncode == 255 and "unknown host `nowhere`" in p.stderr
