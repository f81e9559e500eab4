"""Kills at the limits, over a real sshd: bursts of `job_kill` and of timeouts with more commands
than one SSH connection has channels, SIGTERM of the server with work running, commands whose
group leader is gone or `exec`s with a clean environment, and a backoff that never refuses a
host that is back. Every process a test starts is looked for on the host afterwards."""

import os
import pathlib
import random
import signal
import time

import anyio
import pytest

from conftest import HANG_GUARD, alive, data, open_session, text, wait_dead
from stall_proxy import StallProxy, alias_through

pytestmark = pytest.mark.anyio
# Twice what one SSH connection carries (8 command channels): the pool must open more, and
# the kills must not run out of channels.
BURST = 16


def marker() -> int:
    """A `sleep` argument no other test uses, to find its processes on the host."""
    return random.randrange(100_000, 999_999)


def pids_of(needle: str) -> list:
    """Live processes whose command line contains `needle`."""
    found = []
    for cmdline in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in args and alive(cmdline.parent.name):
            found.append(int(cmdline.parent.name))
    return found


async def wait_running(needle: str, count: int):
    with anyio.fail_after(HANG_GUARD):
        while len(pids_of(needle)) < count:
            await anyio.sleep(0.05)
    return pids_of(needle)


@pytest.fixture
async def box(env, sshd):
    sshd.trust()
    async with open_session(env) as s:
        yield s


async def run(session, command, host="box", **args):
    return await session.call_tool("remote_exec", {"host": host, "command": command, **args})


async def test_a_burst_of_job_kills_at_twice_the_channel_limit_kills_every_job(box):
    tag = marker()
    jobs = [data(await run(box, f"sleep {tag}", background=True))["job_id"] for _ in range(BURST)]
    pids = await wait_running(f"sleep {tag}", BURST)
    results = {}

    async def kill(job):
        results[job] = await box.call_tool("job_kill", {"job_id": job})

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(kill, job)
    for job, r in results.items():
        d = data(r)
        assert not r.is_error and d["status"] == "killed", text(r)
        assert "kill_unconfirmed" not in d, d
    await wait_dead(pids)


async def test_a_burst_of_timeouts_at_twice_the_channel_limit_ends_every_call(box):
    tag = marker()
    results = []

    async def one():
        results.append(await run(box, f"sleep {tag}", timeout_secs=2))

    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:
            for _ in range(BURST):
                tg.start_soon(one)
    assert len(results) == BURST
    for r in results:
        d = data(r)
        assert d["status"] == "timed_out" and "kill_unconfirmed" not in d, d
    assert pids_of(f"sleep {tag}") == []


def test_sigterm_with_jobs_running_kills_them_all_before_exit(env, sshd, raw):
    sshd.trust()
    tag = marker()
    raw.initialize()
    for _ in range(25):
        reply = raw.request("tools/call", {"name": "remote_exec", "arguments": {
            "host": "box", "command": f"sleep {tag} & sleep {tag}; wait", "background": True}})
        assert not reply["result"].get("isError"), reply
    wait_running_sync(f"sleep {tag}", 50)
    raw.proc.send_signal(signal.SIGTERM)
    assert raw.proc.wait(timeout=HANG_GUARD) == 0
    # Everything the server started was dead before it exited.
    assert pids_of(f"sleep {tag}") == [], raw.stderr_text()[-3000:]


def wait_running_sync(needle: str, count: int):
    deadline = time.monotonic() + HANG_GUARD
    while len(pids_of(needle)) < count:
        assert time.monotonic() < deadline, f"{len(pids_of(needle))} of {count} running"
        time.sleep(0.05)


@pytest.mark.parametrize("host", ["local", "box"])
async def test_a_background_child_holding_stdout_does_not_hold_the_call(box, host):
    tag = marker()
    r = await run(box, f"nohup sleep {tag} & echo started", host=host, timeout_secs=60)
    d = data(r)
    assert not r.is_error and d["status"] == "exited" and d["exit_code"] == 0, d
    assert d["stdout"] == "started\n"
    # It returned while the child runs on, as it would in a terminal.
    left = pids_of(f"sleep {tag}")
    assert len(left) == 1
    os.kill(left[0], signal.SIGKILL)


async def test_a_local_orphan_is_adopted_and_reaped_by_the_server(box):
    tag = marker()
    r = await run(box, f"echo $PPID; sleep {tag} >/dev/null 2>&1 & echo $!", host="local")
    server, orphan = (int(line) for line in data(r)["stdout"].split())
    # Its shell has exited: the orphan is the server's now (a child subreaper), not PID 1's.
    stat = pathlib.Path(f"/proc/{orphan}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[1]) == server
    os.kill(orphan, signal.SIGTERM)
    # Reaped, not left a zombie: the process is gone from /proc altogether.
    with anyio.fail_after(HANG_GUARD):
        while pathlib.Path(f"/proc/{orphan}").exists():
            await anyio.sleep(0.05)


@pytest.mark.parametrize("host", ["local", "box"])
async def test_a_timeout_kills_the_group_after_its_leader_has_exited(box, host, tmp_path):
    tag = marker()
    # The leader exits at once; its background child keeps printing (so the call goes on) and
    # keeps the group alive.
    command = f"(while :; do echo tick {tag}; sleep 0.1; done) & echo $! > {tmp_path}/pid; exit 0"
    r = await run(box, command, host=host, timeout_secs=2)
    d = data(r)
    assert d["status"] == "timed_out" and "kill_unconfirmed" not in d, d
    assert "tick" in d["stdout"]
    await wait_dead([int((tmp_path / "pid").read_text())])


@pytest.mark.parametrize("host", ["local", "box"])
async def test_a_leader_that_execs_with_a_clean_environment_is_still_killed(box, host):
    tag = marker()
    r = await run(box, f"exec env -i sleep {tag}", host=host, timeout_secs=1)
    d = data(r)
    assert d["status"] == "timed_out" and "kill_unconfirmed" not in d, d
    assert pids_of(f"sleep {tag}") == []
    job = data(await run(box, f"exec env -i sleep {tag}", host=host, background=True))["job_id"]
    await wait_running(f"sleep {tag}", 1)
    killed = await box.call_tool("job_kill", {"job_id": job})
    assert data(killed)["status"] == "killed" and not killed.is_error, text(killed)
    assert pids_of(f"sleep {tag}") == []


async def test_a_host_that_comes_back_is_tried_at_once(box, sshd):
    assert data(await run(box, "echo one"))["stdout"] == "one\n"
    sshd.stop()
    down = await run(box, "echo two")
    assert down.is_error and "Connection refused" in text(down)
    again = await run(box, "echo two")  # a real attempt again, not a refusal from memory
    assert again.is_error and "Connection refused" in text(again) and "next try" not in text(again)
    sshd.start()
    # At once: the backoff spaces automatic retries, it never refuses a call to a host that is up.
    assert data(await run(box, "echo three"))["stdout"] == "three\n"


async def test_a_stalled_network_ends_the_call_at_its_timeout_and_the_kill_lands_later(env, sshd, tmp_path):
    proxy = StallProxy(sshd.port)
    alias_through(proxy, sshd, pathlib.Path(env["HOME"]), "far",
                  "  ConnectTimeout 2\n  ServerAliveInterval 60\n")
    tag = marker()
    pidfile = tmp_path / "pid"
    try:
        async with open_session(env) as s:
            # Stalled once outpost has seen the command's output (so the wrapper's report, which
            # comes before it, has arrived): the stall hits a running command, not its start.
            running = anyio.Event()

            async def on_progress(progress, total, message):
                if message and "running" in message.split():
                    running.set()

            async def stall_once_running():
                with anyio.fail_after(HANG_GUARD):
                    await running.wait()
                proxy.stall()

            async with anyio.create_task_group() as tg:
                tg.start_soon(stall_once_running)
                started = time.monotonic()
                with anyio.fail_after(HANG_GUARD):
                    command = f"echo $$ > {pidfile}; echo running; exec sleep {tag}"
                    r = await s.call_tool("remote_exec", {"host": "far", "command": command, "timeout_secs": 3},
                                          progress_callback=on_progress)
                took = time.monotonic() - started
            d = data(r)
            # It ended near its timeout, not when keepalive gave up, and said what it knows.
            assert took < 15, took
            assert d["status"] == "timed_out" and "unresponsive" in d["kill_unconfirmed"], d
            assert "unresponsive" in text(r)
            pid = int(pidfile.read_text())
            assert alive(pid), "the result said the kill was not delivered"
            # Once the network flows again, the kill is delivered and job_output says so.
            proxy.resume()
            await wait_dead([pid])
            with anyio.fail_after(HANG_GUARD):
                while "kill_unconfirmed" in data(await s.call_tool("job_output", {"job_id": d["job_id"]})):
                    await anyio.sleep(0.2)
    finally:
        proxy.close()
