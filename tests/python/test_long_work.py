"""Long work outlives the client's patience: heartbeats keep a client that times out without
progress waiting, a foreground call detaches into a job before the client gives up, and the
client hears when a job it no longer waits for ends."""

import json
import pathlib
import subprocess

import anyio
import pytest

from conftest import BIN, HANG_GUARD, data, open_session, text

pytestmark = pytest.mark.anyio
TS = pathlib.Path(__file__).resolve().parents[1] / "ts"


def configure(env, **exec_settings):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"exec": exec_settings}))


def ts_call(env, tool, arguments, timeout_ms, reset_on_progress, before=()):
    """One call through the official TypeScript SDK, with its request timeout (after `before`)."""
    p = subprocess.run(
        ["node", str(TS / "call_tool.mjs"), BIN, tool, json.dumps(arguments), str(timeout_ms),
         "1" if reset_on_progress else "0", json.dumps(list(before))],
        env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_a_silent_command_outlives_the_clients_timeout_on_heartbeats(env):
    configure(env, detach_after_secs=0)
    # 9 s of silence against a client that gives up after 6 s without progress.
    call = {"host": "local", "command": "sleep 9; echo done"}
    out = ts_call(env, "remote_exec", call, 6000, reset_on_progress=True)
    assert "error" not in out, out
    assert out["result"]["structuredContent"]["stdout"] == "done\n"
    assert out["progress"] >= 2
    # The same client without the reset gives up: the timeout is real.
    out = ts_call(env, "remote_exec", call, 6000, reset_on_progress=False)
    assert "timed out" in out["error"].lower(), out


def test_a_long_poll_of_a_silent_job_outlives_the_clients_timeout_on_heartbeats(env):
    start = [["remote_exec", {"host": "local", "command": "sleep 60", "background": True}]]
    poll = {"job_id": "{job_id}", "wait_secs": 9}
    out = ts_call(env, "job_output", poll, 6000, reset_on_progress=True, before=start)
    assert "error" not in out, out
    assert out["result"]["structuredContent"]["status"] == "running"
    assert out["progress"] >= 2


@pytest.fixture
async def box(env, sshd):
    sshd.trust()
    async with open_session(env) as s:
        yield s


@pytest.mark.parametrize("host", ["local", "box"])
async def test_a_foreground_call_detaches_and_the_job_finishes(box, host):
    r = await box.call_tool("remote_exec", {
        "host": host, "command": "echo started; sleep 3; echo done", "detach_after_secs": 1})
    d = data(r)
    assert not r.is_error and d["status"] == "running", d
    # What it printed so far is there (how much, on a busy machine, is not the point).
    assert d["exit_code"] is None and "started\n".startswith(d["stdout"]), d
    job = d["job_id"]
    assert job in d["next"] and "job_output" in d["next"], d
    with anyio.fail_after(HANG_GUARD):
        while True:
            out = data(await box.call_tool("job_output", {"job_id": job, "wait_secs": 5}))
            if out["status"] != "running":
                break
    assert out["status"] == "exited" and out["exit_code"] == 0, out
    assert out["output"] == "started\ndone\n"


async def test_a_detached_call_gets_the_background_timeout_unless_it_named_one(env):
    configure(env, default_timeout_secs=2)
    async with open_session(env) as s:
        # No timeout named: past the 2 s foreground default, it is not killed.
        r = data(await s.call_tool("remote_exec", {
            "host": "local", "command": "sleep 4; echo done", "detach_after_secs": 1}))
        # A named timeout is kept.
        named = data(await s.call_tool("remote_exec", {
            "host": "local", "command": "sleep 30", "detach_after_secs": 1, "timeout_secs": 2}))
        assert r["status"] == named["status"] == "running"
        with anyio.fail_after(HANG_GUARD):
            out = data(await s.call_tool("job_output", {"job_id": named["job_id"], "wait_secs": 10}))
            while out["status"] == "running":
                out = data(await s.call_tool("job_output", {"job_id": named["job_id"], "wait_secs": 5}))
            assert out["status"] == "timed_out", out
            out = data(await s.call_tool("job_output", {"job_id": r["job_id"], "wait_secs": 10}))
            while out["status"] == "running":
                out = data(await s.call_tool("job_output", {"job_id": r["job_id"], "wait_secs": 5}))
        assert out["status"] == "exited" and out["output"] == "done\n", out


async def test_the_client_hears_when_a_background_or_detached_job_ends(env):
    logs = []
    async with open_session(env, logs=logs) as s:
        bg = data(await s.call_tool("remote_exec", {
            "host": "local", "command": "exit 3", "background": True}))["job_id"]
        detached = data(await s.call_tool("remote_exec", {
            "host": "local", "command": "sleep 2", "detach_after_secs": 1}))["job_id"]
        # A foreground call that finished in time is not announced again.
        await s.call_tool("remote_exec", {"host": "local", "command": "true"})
        with anyio.fail_after(HANG_GUARD):
            while len([m for m in logs if m.logger == "outpost.jobs"]) < 2:
                await anyio.sleep(0.05)
    ended = {m.data["job_id"]: m.data for m in logs if m.logger == "outpost.jobs"}
    assert set(ended) == {bg, detached}
    assert ended[bg]["status"] == "exited" and ended[bg]["exit_code"] == 3
    assert ended[detached]["status"] == "exited" and ended[detached]["host"] == "local"
    assert all(m.level == "info" for m in logs if m.logger == "outpost.jobs")


async def test_detach_after_secs_is_checked(session):
    r = await session.call_tool("remote_exec", {
        "host": "local", "command": "true", "detach_after_secs": -1})
    assert r.is_error and "detach_after_secs" in text(r)
