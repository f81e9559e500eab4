"""`remote_exec` with `sudo: true` over a real sshd, logged in as a non-root user (SH_USER) whose
sudo rights a sudoers drop-in written here grants and takes back."""

import contextlib
import os
import pathlib
import secrets
import signal
import subprocess

import anyio
import pytest

from conftest import HANG_GUARD, SH_USER, data, open_session, text, wait_dead

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def sudoers(*rules):
    """A drop-in in /etc/sudoers.d with `rules` for SH_USER, checked by visudo, removed after."""
    path = pathlib.Path("/etc/sudoers.d") / f"outpost-test-{secrets.token_hex(4)}"
    staged = path.with_name(path.name + ".new")  # sudo skips names with a dot: not live yet
    staged.write_text("".join(f"{SH_USER} {rule}\n" for rule in rules))
    staged.chmod(0o440)
    try:
        subprocess.run(["visudo", "-cqf", str(staged)], check=True)
        staged.rename(path)
        yield
    finally:
        staged.unlink(missing_ok=True)
        path.unlink(missing_ok=True)


@pytest.fixture
async def shbox(env, sh_box):
    with anyio.fail_after(HANG_GUARD * 2):
        async with open_session(env) as s:
            yield s


async def run(session, command, **args):
    with anyio.fail_after(HANG_GUARD):
        return await session.call_tool("remote_exec", {"host": "shbox", "command": command, **args})


def pids_of(args):
    """Processes (not zombies) whose command line is exactly `args`."""
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if stat.read_bytes().split(b"\0")[:-1] == [a.encode() for a in args]:
                state = (stat.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return found


async def test_a_nopasswd_rule_for_one_program_runs_it_as_root_with_env_by_name(shbox):
    with sudoers("ALL=(root) NOPASSWD: /usr/bin/id", "ALL=(root) NOPASSWD:SETENV: /usr/bin/printenv"):
        d = data(await run(shbox, "id -u", sudo=True))
        assert (d["exit_code"], d["stdout"]) == (0, "0\n"), d
        # Without sudo the same command runs as the login user.
        assert data(await run(shbox, "id -u"))["stdout"] != "0\n"
        d = data(await run(shbox, "printenv TOKEN", sudo=True, env={"TOKEN": "t0k en"}))
        assert d["stdout"] == "t0k en\n", d
        # The command's own failure is its result, not a sudo error.
        d = data(await run(shbox, "id -u no-such-user-here", sudo=True))
        assert d["exit_code"] == 1 and "no such user" in d["stderr"], d


async def test_without_a_rule_the_error_names_the_rule_to_add_and_nothing_waits(shbox):
    r = await run(shbox, "id -u", sudo=True)
    assert r.is_error, text(r)
    assert "wants a password" in text(r), text(r)
    assert f"{SH_USER} ALL=(root) NOPASSWD: /usr/bin/id -u" in text(r), text(r)
    # Shell syntax runs under `sh -c`: that is what the rule must name.
    r = await run(shbox, "id -u | cat", sudo=True, sudo_user="daemon")
    assert r.is_error and f"{SH_USER} ALL=(daemon) NOPASSWD: /usr/bin/sh -c id -u | cat" in text(r), text(r)


async def test_env_needs_setenv_and_the_error_says_so(shbox):
    with sudoers("ALL=(root) NOPASSWD: /usr/bin/id"):
        r = await run(shbox, "id -u", sudo=True, env={"A": "x"})
    assert r.is_error, text(r)
    assert "does not let `env` (A)" in text(r), text(r)
    assert f"{SH_USER} ALL=(root) NOPASSWD:SETENV: /usr/bin/id -u" in text(r), text(r)


async def test_bad_sudo_arguments_are_refused(shbox):
    r = await run(shbox, "id", sudo=True, sudo_user="-s")
    assert r.is_error and "invalid argument `sudo_user`" in text(r), text(r)
    r = await run(shbox, "id", sudo_user="root")
    assert r.is_error and "needs `sudo: true`" in text(r), text(r)
    r = await run(shbox, "id", sudo=True, password="x")
    assert r.is_error and "password" in text(r), text(r)


async def test_a_timeout_kills_a_sudoed_sleep_through_sudos_relay(shbox):
    with sudoers("ALL=(root) NOPASSWD: /usr/bin/sleep"):
        r = await run(shbox, "sleep 4731", sudo=True, timeout_secs=1)
    d = data(r)
    assert d["timed_out"] is True and "kill_unconfirmed" not in d, d
    await wait_dead(pids_of(["sleep", "4731"]))


async def test_a_sudoed_process_that_outlives_the_kill_is_reported_not_confirmed(shbox):
    # The root process ignores TERM; sudo is killed, but the login user may not kill root's
    # process: the kill must not claim it is gone.
    command = "trap '' TERM; exec </dev/null >/dev/null 2>&1; sleep 4732"
    try:
        with sudoers("ALL=(root) NOPASSWD: /usr/bin/sh"):
            r = await run(shbox, command, sudo=True, timeout_secs=1)
        assert r.is_error and "the kill is not confirmed" in text(r), text(r)
        assert "runs as another user" in text(r), text(r)
        assert pids_of(["sleep", "4732"]), "the test expects the root process to survive"
    finally:
        for pid in pids_of(["sleep", "4732"]):
            os.kill(pid, signal.SIGKILL)


async def test_policy_rules_on_sudo_hold_for_sudo_true(env, tmp_path):
    import json
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"policy": {"deny": [r"^sudo\b"]}}))
    marker = tmp_path / "ran"
    async with open_session(env) as s:
        r = await s.call_tool("remote_exec", {"command": f"touch {marker}", "sudo": True})
    assert r.is_error and "policy.deny" in text(r), text(r)
    assert not marker.exists()


async def test_a_fan_out_with_sudo_names_the_rule_for_each_host_that_wants_a_password(shbox):
    # `local` runs as root here (sudo asks root for nothing); `shbox` logs in as SH_USER.
    with anyio.fail_after(HANG_GUARD):
        r = await shbox.call_tool("remote_exec", {"hosts": ["local", "shbox"], "command": "id -u", "sudo": True})
    d = data(r)
    by_host = {entry["host"]: entry for entry in d["hosts"]}
    assert by_host["local"]["stdout"] == "0\n", by_host
    assert by_host["shbox"]["reason"] == "refused", by_host
    assert f"{SH_USER} ALL=(root) NOPASSWD: /usr/bin/id -u" in by_host["shbox"]["error"], by_host
    assert d["summary"]["succeeded"] == 1 and d["summary"]["refused"] == 1, d["summary"]
