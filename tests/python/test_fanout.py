"""remote_exec with `hosts` (fan-out) and `outpost exec a,b` / `@group`, over a real sshd: three
hosts (local, the alias `box`, a second alias `box2` for the same sshd) and a dead one (an alias
for a closed port). Every process a test starts is looked for on the host afterwards."""

import getpass
import json
import pathlib
import subprocess

import anyio
import pytest

from conftest import BIN, HANG_GUARD, data, open_session, text, wait_dead
from sshd import free_port
from test_kill_limits import marker, pids_of, wait_running

pytestmark = pytest.mark.anyio


@pytest.fixture
def fleet(env, sshd):
    """`box` and `box2` reach the sshd, `dead` nothing; group `boxes` is box and box2."""
    sshd.trust()
    config = pathlib.Path(env["HOME"]) / ".ssh" / "config"
    user = getpass.getuser()
    config.write_text(config.read_text()
                      + f"Host box2\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {user}\n"
                      + f"Host dead\n  HostName 127.0.0.1\n  Port {free_port()}\n  User {user}\n")
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"groups": {"boxes": ["box", "box2"]}}))
    return env


@pytest.fixture
async def session(fleet):
    async with open_session(fleet) as s:
        yield s


def by_host(result) -> dict:
    return {entry["host"]: entry for entry in data(result)["hosts"]}


async def test_three_hosts_and_a_dead_one(session):
    result = await session.call_tool("remote_exec", {
        "hosts": ["local", "box", "dead", "box2"], "command": "echo hi; echo oops >&2; exit 3"})
    assert not result.is_error, text(result)
    d = data(result)
    assert [e["host"] for e in d["hosts"]] == ["local", "box", "dead", "box2"]
    hosts = by_host(result)
    for name in ("local", "box", "box2"):
        entry = hosts[name]
        assert (entry["exit_code"], entry["stdout"], entry["stderr"]) == (3, "hi\n", "oops\n"), entry
        assert entry["status"] == "exited" and entry["timed_out"] is False and "job_id" not in entry
    assert "dead" in hosts["dead"]["error"] and hosts["dead"]["reason"] == "unreachable"
    assert d["summary"] == {"succeeded": 0, "failed": 3, "unreachable": 1, "refused": 0, "running": 0}
    assert "box2: hi" in text(result)


async def test_a_group_expands_to_every_member_each_once(session):
    result = await session.call_tool("remote_exec", {"hosts": ["@boxes", "box", "local"], "command": "true"})
    assert [e["host"] for e in data(result)["hosts"]] == ["box", "box2", "local"]
    assert data(result)["summary"]["succeeded"] == 3
    unknown = await session.call_tool("remote_exec", {"hosts": ["@gpus"], "command": "true"})
    assert unknown.is_error and "`@gpus` names no group" in text(unknown) and "@boxes" in text(unknown)
    both = await session.call_tool("remote_exec", {"host": "box", "hosts": ["local"], "command": "true"})
    assert both.is_error and "`hosts`" in text(both) and "`host`" in text(both)


async def test_each_host_gets_its_share_of_the_output_budget(session):
    # 30,000 bytes split over three hosts: each shows at most 10,000 of its 40,000.
    result = await session.call_tool("remote_exec", {
        "hosts": ["local", "box", "box2"], "command": "head -c 40000 /dev/zero | tr '\\0' '\"'"})
    for entry in data(result)["hosts"]:
        shown = len(json.dumps(entry["stdout"])) - 2 + len(json.dumps(entry["stderr"])) - 2
        assert entry["truncated"] and shown <= 10_000, (entry["host"], shown)
        assert entry["job_id"]


async def test_a_cancel_kills_every_hosts_process(session):
    tag = marker()

    async def call():
        await session.call_tool("remote_exec", {"hosts": ["local", "box", "box2"], "command": f"sleep {tag}"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        pids = await wait_running(f"sleep {tag}", 3)
        tg.cancel_scope.cancel()
    await wait_dead(pids)
    # Wrappers seen after the first three (each host's `sh -c`) go too.
    await wait_dead(pids_of(f"sleep {tag}"))
    assert data(await session.call_tool("remote_exec", {"command": "echo next"}))["stdout"] == "next\n"


async def test_a_timeout_kills_every_hosts_process(session):
    tag = marker()
    with anyio.fail_after(HANG_GUARD):
        result = await session.call_tool("remote_exec", {
            "hosts": ["local", "box", "box2"], "command": f"echo started; sleep {tag}", "timeout_secs": 2})
    for entry in data(result)["hosts"]:
        assert entry["timed_out"] and entry["stdout"] == "started\n", entry
        assert "kill_unconfirmed" not in entry
    assert data(result)["summary"]["failed"] == 3
    assert pids_of(f"sleep {tag}") == []


async def test_background_returns_every_job_id_at_once(session):
    tag = marker()
    result = await session.call_tool("remote_exec", {
        "hosts": ["box", "box2", "dead"], "command": f"sleep {tag}", "background": True})
    d = data(result)
    jobs = [e["job_id"] for e in d["hosts"] if "job_id" in e]
    assert len(jobs) == 2 and d["summary"]["running"] == 2 and d["summary"]["unreachable"] == 1
    await wait_running(f"sleep {tag}", 2)
    for job in jobs:
        await session.call_tool("job_kill", {"job_id": job})
    assert pids_of(f"sleep {tag}") == []


async def test_detach_returns_the_hosts_still_running(session):
    tag = marker()
    result = await session.call_tool("remote_exec", {
        "hosts": ["local", "box"], "command": f'[ -n "$SSH_CONNECTION" ] && sleep {tag}; echo done',
        "detach_after_secs": 2})
    hosts = by_host(result)
    assert hosts["local"]["status"] == "exited" and hosts["local"]["stdout"] == "done\n"
    assert hosts["box"]["status"] == "running" and hosts["box"]["job_id"]
    await session.call_tool("job_kill", {"job_id": hosts["box"]["job_id"]})


def test_cli_prefixes_each_line_and_exits_with_the_first_failure(fleet):
    run = subprocess.run([BIN, "exec", "local,box,dead", "--", "echo out; echo err >&2; [ -n \"$SSH_CONNECTION\" ] && exit 4; true"],
                         env=fleet, capture_output=True, text=True, timeout=HANG_GUARD)
    assert run.returncode == 4, run.stderr
    assert sorted(run.stdout.splitlines()) == ["box  : out", "local: out"]
    assert "box  : err" in run.stderr and "local: err" in run.stderr and "dead : outpost: " in run.stderr
    ok = subprocess.run([BIN, "exec", "@boxes", "--", "echo", "a b"], env=fleet, capture_output=True, text=True,
                        timeout=HANG_GUARD)
    assert ok.returncode == 0 and sorted(ok.stdout.splitlines()) == ["box : a b", "box2: a b"]
    down = subprocess.run([BIN, "exec", "local,dead", "--", "true"], env=fleet, capture_output=True, text=True,
                          timeout=HANG_GUARD)
    assert down.returncode == 255
