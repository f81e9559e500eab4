"""The config file as the `outpost` command edits and reads it: concurrent `remote add`, `via`
checks, BOM, error lines, token lifetimes, the `--workspace ~` warning, `remote test`'s claude search."""

import json
import os
import pathlib
import subprocess

from conftest import BIN, HANG_GUARD


def outpost(env, *args):
    return subprocess.run([BIN, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=HANG_GUARD)


def test_concurrent_remote_adds_are_all_kept(env):
    adds = [subprocess.Popen([BIN, "remote", "add", f"r{i}", f"me@host{i}.example"], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(20)]
    for add in adds:
        out, err = add.communicate(timeout=HANG_GUARD)
        assert add.returncode == 0, err
        assert out.startswith("added remote")
    remotes = json.loads(pathlib.Path(env["OUTPOST_CONFIG"]).read_text())["remotes"]
    assert sorted(remotes) == sorted(f"r{i}" for i in range(20))
    # Concurrent removes and a set-default keep each other's edits too.
    others = [subprocess.Popen([BIN, "remote", "remove", f"r{i}"], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(10)]
    others.append(subprocess.Popen([BIN, "remote", "set-default", "r15"], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in others:
        p.communicate(timeout=HANG_GUARD)
        assert p.returncode == 0
    config = json.loads(pathlib.Path(env["OUTPOST_CONFIG"]).read_text())
    assert sorted(config["remotes"]) == sorted(f"r{i}" for i in range(10, 20))
    assert config["default_host"] == "r15"


VIA_CASES = {
    "itself": {"d": {"kind": "docker", "container": "c", "via": "d"}},
    "a cycle": {"a": {"kind": "docker", "container": "c", "via": "b"},
                "b": {"kind": "command", "command": ["x"], "via": "a"}},
    "an engine": {"a": {"kind": "kubernetes", "pod": "p", "via": "b"},
                  "b": {"kind": "docker", "container": "c"}},
}


def test_an_engine_via_itself_another_engine_or_a_cycle_is_refused(env):
    path = pathlib.Path(env["OUTPOST_CONFIG"])
    for case, remotes in VIA_CASES.items():
        path.write_text(json.dumps({"remotes": remotes}))
        first = sorted(remotes)[0]
        for args in (["exec", first, "--", "true"], ["mcp", "serve"], ["remote", "list"]):
            p = outpost(env, *args)
            # Refused at load with the file and field, not a crash (a stack overflow aborts: -6).
            assert p.returncode == 255, (case, args, p.returncode, p.stderr)
            assert f"config file {path}: remotes.{first}.via: " in p.stderr, (case, p.stderr)
            assert "an engine's CLI runs on `local` or an SSH host" in p.stderr, p.stderr
    path.unlink()
    p = outpost(env, "remote", "add", "ctr", "--docker", "web", "--via", "ctr")
    assert p.returncode == 255 and "remotes.ctr.via: `ctr` is this remote itself" in p.stderr, p.stderr
    assert not path.exists()


def test_a_config_file_with_a_byte_order_mark_is_read(env):
    path = pathlib.Path(env["OUTPOST_CONFIG"])
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"remotes": {"gpu": {"host": "gpu.example"}}}).encode())
    p = outpost(env, "remote", "list")
    assert p.returncode == 0, p.stderr
    assert "gpu.example" in p.stdout


def test_each_cause_is_said_once(env, tmp_path):
    p = outpost(env, "--config", str(tmp_path), "remote", "list")
    assert p.returncode == 255
    assert p.stderr.count("Is a directory") == 1, p.stderr
    assert p.stderr.startswith(f"outpost: cannot read config file {tmp_path}: Is a directory"), p.stderr


def test_token_lifetime_is_bounded(env, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("0123456789abcdef0123456789abcdef\n")
    for expires in ("1000000y", "11y"):
        p = outpost(env, "auth", "generate-token", "--jwt-secret-file", str(secret), "--expires", expires)
        assert p.returncode == 255 and p.stdout == "", p.stdout
        assert "at most 10y (3652 days)" in p.stderr, p.stderr
    p = outpost(env, "auth", "generate-token", "--jwt-secret-file", str(secret), "--expires", "10y")
    assert p.returncode == 0 and p.stdout.count(".") == 2, p.stderr


def test_a_workspace_under_the_local_home_is_warned_about(env):
    home = env["HOME"]
    p = outpost(env, "remote", "add", "gpu", "me@gpu.example", "--workspace", f"{home}/work")
    assert p.returncode == 0, p.stderr
    assert f"--workspace {home}/work is under this machine's home" in p.stderr, p.stderr
    assert "--workspace '~/work'" in p.stderr, p.stderr
    p = outpost(env, "remote", "add", "lab", "me@lab.example", "--workspace", "~/work")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    remotes = json.loads(pathlib.Path(env["OUTPOST_CONFIG"]).read_text())["remotes"]
    assert remotes["lab"]["workspace"] == "~/work"


def test_remote_test_finds_claude_where_spawn_claude_does(env):
    """`~/.npm-global/bin` is among the places `spawn_claude` looks; `remote test` looks there too."""
    claude = pathlib.Path(env["HOME"]) / ".npm-global" / "bin" / "claude"
    claude.parent.mkdir(parents=True)
    claude.write_text("#!/bin/sh\necho '9.9.9 (Claude Code)'\n")
    claude.chmod(0o755)
    env = {**env, "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    p = outpost(env, "remote", "test", "local")
    assert p.returncode == 0, p.stderr
    line = next(line for line in p.stdout.splitlines() if line.startswith("claude"))
    assert f"installed: {claude} 9.9.9 (Claude Code)" in line, p.stdout
    claude.unlink()
    p = outpost(env, "remote", "test", "local")
    line = next(line for line in p.stdout.splitlines() if line.startswith("claude"))
    assert "not found" in line and ".npm-global/bin/claude" in line, p.stdout


def test_readme_snippets_that_write_config_files_work_on_a_fresh_home(env, tmp_path):
    """Each README shell block that writes into ~/.config/outpost, run up to that line in a new HOME."""
    import re
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.S)
    writers = [(block, line) for block in blocks for line in block.splitlines()
               if re.search(r">\s*~/\.config/outpost/", line)]
    assert writers, "the README no longer writes into ~/.config/outpost: update this test"
    for number, (block, line) in enumerate(writers):
        home = tmp_path / f"fresh-home-{number}"
        home.mkdir()
        lines = block.splitlines()
        steps = [step for step in lines[:lines.index(line) + 1] if not step.startswith("outpost ")]
        p = subprocess.run(["sh", "-ec", "\n".join(steps)], env={**env, "HOME": str(home)},
                           capture_output=True, text=True, timeout=HANG_GUARD)
        assert p.returncode == 0, (steps, p.stderr)
    secret = tmp_path / "fresh-home-0" / ".config" / "outpost" / "jwt-secret"
    p = outpost(env, "auth", "generate-token", "--jwt-secret-file", str(secret))
    assert p.returncode == 0, p.stderr
