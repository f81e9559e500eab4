"""The warm shell (`ssh.warm_shell`), against a real sshd: after a command, the next login shell is
started ahead on the connection and waits; the next call runs in it, once, with its cwd, env and
stdin; a spare that dies or hangs is replaced without the command running twice; spares end
with their connection, with the server, and are not started when turned off."""

import json
import os
import pathlib
import signal
import subprocess
import time

import anyio
import pytest

from conftest import BIN, HANG_GUARD, RawServer, data, open_session, text, wait_dead, wait_dead_sync

pytestmark = pytest.mark.anyio


def spares(sshd) -> list:
    """Pids of the wrapper shells below this sshd: with no command running, the parked spares."""
    children = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        state = text[text.rindex(")") + 2:].split()[0]
        children.setdefault(ppid, []).append((int(stat.parent.name), state, cmdline))
    found, todo = [], [sshd.proc.pid]
    while todo:
        for pid, state, cmdline in children.get(todo.pop(), []):
            todo.append(pid)
            if b"__outpost_" in cmdline and state not in ("Z", "X"):
                found.append(pid)
    return found


async def one_spare(sshd, other_than=()) -> int:
    with anyio.fail_after(HANG_GUARD):
        while True:
            found = [p for p in spares(sshd) if p not in other_than]
            if len(found) == 1:
                return found[0]
            await anyio.sleep(0.02)


async def run(session, command, **args):
    return data(await session.call_tool("remote_exec", {"host": "box", "command": command, **args}))


async def test_a_warm_call_runs_once_in_the_shell_started_ahead(env, sshd, tmp_path):
    sshd.trust()
    async with open_session(env) as s:
        first = await run(s, "echo $$")
        spare = await one_spare(sshd)
        assert str(spare) != first["stdout"].strip()
        r = await run(s, 'echo $$; printf "%s\\n" "$TOKEN"; pwd; cat', cwd=str(tmp_path),
                      env={"TOKEN": "it's\nsecret"}, stdin="input")
        assert r["exit_code"] == 0
        assert r["stdout"] == f"{spare}\nit's\nsecret\n{tmp_path}\ninput"
        # The next one is started ahead in its turn.
        assert await one_spare(sshd, other_than=[spare]) != spare


async def test_a_spare_that_died_or_hangs_is_replaced_and_the_command_runs_once(env, sshd, tmp_path):
    sshd.trust()
    log = tmp_path / "ran"
    server_log = tmp_path / "server.log"
    env["RUST_LOG"] = "outpost=debug"

    async def sent_to_spare(count):
        with anyio.fail_after(HANG_GUARD):
            while server_log.read_text().count("sending the command to a spare shell") < count:
                await anyio.sleep(0.02)

    with open(server_log, "w") as errlog:
        async with open_session(env, errlog=errlog) as s:
            await run(s, "true")
            # Killed while parked: the next call opens a channel of its own.
            os.kill(await one_spare(sshd), signal.SIGKILL)
            await wait_dead(spares(sshd))
            assert (await run(s, f"echo one >> {log}"))["exit_code"] == 0
            # Stopped while parked, then killed once the call has sent it the command: the call is
            # started again on a fresh channel, and runs once.
            stopped = await one_spare(sshd)
            os.kill(stopped, signal.SIGSTOP)
            sent = server_log.read_text().count("sending the command to a spare shell")
            async with anyio.create_task_group() as tg:
                results = []

                async def call():
                    results.append(await run(s, f"echo two >> {log}; echo $$"))
                tg.start_soon(call)
                await sent_to_spare(sent + 1)
                os.kill(stopped, signal.SIGKILL)
            assert results[0]["exit_code"] == 0 and results[0]["stdout"].strip() != str(stopped)
            assert "a spare shell was gone; opening a channel" in server_log.read_text()
    assert log.read_text() == "one\ntwo\n"


async def test_spares_end_with_their_connection_and_with_the_server(env, sshd):
    sshd.trust()
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"ssh": {"idle_timeout_secs": 1}}))
    async with open_session(env) as s:
        await run(s, "true")
        spare = await one_spare(sshd)
        # A connection with nothing but its spare is idle: closed after the idle timeout.
        await wait_dead([spare])
        state = data(await s.call_tool("list_hosts", {}))["hosts"][1]["state"]
        assert state == "not connected"
        await run(s, "true")
        spare = await one_spare(sshd)
    # The server is gone (its client closed stdin): so is the spare.
    await wait_dead([spare])


def test_sigterm_ends_the_spare_too(env, sshd):
    sshd.trust()
    raw = RawServer(env)
    try:
        raw.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                   "clientInfo": {"name": "t", "version": "1"}})
        reply = raw.request("tools/call", {"name": "remote_exec", "arguments": {"host": "box", "command": "true"}})
        assert not reply["result"].get("isError"), reply
        deadline = time.monotonic() + HANG_GUARD
        while len(spares(sshd)) != 1:
            assert time.monotonic() < deadline, "no spare started"
            time.sleep(0.02)
        spare = spares(sshd)[0]
        raw.proc.send_signal(signal.SIGTERM)
        assert raw.proc.wait(timeout=HANG_GUARD) == 0
        wait_dead_sync([spare])
    finally:
        raw.close()


def test_one_shot_commands_start_no_spare(env, sshd):
    sshd.trust()
    out = subprocess.run([BIN, "exec", "box", "--", "echo", "once"], env=dict(env, RUST_LOG="outpost=debug"),
                         capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and out.stdout == "once\n", out.stderr
    assert "remote command started" in out.stderr, out.stderr[-2000:]
    assert "starting a spare shell" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("warm", [False, True])
async def test_with_warm_shell_off_no_shell_waits(env, sshd, tmp_path, warm):
    sshd.trust()
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"ssh": {"warm_shell": warm}}))
    env["RUST_LOG"] = "outpost=debug"
    server_log = tmp_path / "server.log"
    with open(server_log, "w") as errlog:
        async with open_session(env, errlog=errlog) as s:
            for _ in range(3):
                await run(s, "true")
            # A spare is started (and logged) before the call that started it answers.
            assert ("starting a spare shell" in server_log.read_text()) is warm
            if not warm:
                assert spares(sshd) == []


async def test_bursts_at_the_channel_limit_never_get_a_channel_refused(env, sshd):
    # OpenSSH's default MaxSessions (10): 8 command and 2 kill channels per connection, with a
    # spare among them, started and given back while calls come, end and are killed at timeouts.
    sshd.trust()
    async with open_session(env) as s:
        for round_ in range(4):
            results = []

            async def one(i):
                command = "sleep 30" if i % 4 == 0 else f"echo {i}"
                results.append((i, await s.call_tool("remote_exec", {
                    "host": "box", "command": command, "timeout_secs": 1})))
            with anyio.fail_after(HANG_GUARD * 2):
                async with anyio.create_task_group() as tg:
                    for i in range(20):
                        tg.start_soon(one, i)
            for i, r in results:
                if i % 4 == 0:
                    assert data(r)["status"] == "timed_out", text(r)
                else:
                    assert not r.is_error and data(r)["stdout"] == f"{i}\n", (round_, text(r))
