"""job_output with follow: a reader that keeps up loses nothing, locally and over SSH, and one that stops is let go."""

import json
import pathlib

import anyio
import pytest

from conftest import HANG_GUARD, data, open_session

pytestmark = pytest.mark.anyio

LOG_BYTES = 64 * 1024
# About 2 MB of numbered lines: 30 times the job's log.
COMMAND = "seq 1 300000"
EXPECTED = "".join(f"{n}\n" for n in range(1, 300001))


def configure(env, follow_grace_ms):
    exec_ = {"job_log_bytes": LOG_BYTES, "follow_grace_ms": follow_grace_ms}
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"exec": exec_}))


@pytest.fixture(params=["local", "box"])
def host(request, env):
    if request.param == "box":
        request.getfixturevalue("sshd").trust()
    return request.param


@pytest.fixture
async def host_session(host, env):
    # A grace far longer than any pause between a reader's calls, even on a loaded machine.
    configure(env, follow_grace_ms=60_000)
    async with open_session(env) as session:
        yield host, session


@pytest.fixture
async def short_grace(host, env):
    configure(env, follow_grace_ms=300)
    async with open_session(env) as session:
        yield host, session


async def drain(session, job, follow, pause):
    """Reads the job to its end in 16 KB pages, sleeping `pause` between pages: slower than seq writes."""
    offset, parts, dropped = 0, [], 0
    with anyio.fail_after(HANG_GUARD * 4):
        while True:
            page = data(await session.call_tool("job_output", {
                "job_id": job, "offset": offset, "max_bytes": 16 * 1024, "wait_secs": 5, "follow": follow}))
            # Whatever was dropped, each page is the output at its offset.
            assert page["output"] == EXPECTED[page["offset"]:page["next_offset"]]
            parts.append(page["output"])
            dropped += page["dropped_bytes"]
            offset = page["next_offset"]
            if page["status"] != "running" and not page["more"]:
                return "".join(parts), dropped, page
            await anyio.sleep(pause)


async def start(session, host, command=COMMAND):
    result = data(await session.call_tool("remote_exec", {"host": host, "command": command, "background": True}))
    return result["job_id"]


async def test_a_following_reader_gets_every_byte(host_session):
    host, session = host_session
    output, dropped, end = await drain(session, await start(session, host), follow=True, pause=0.01)
    assert dropped == 0
    assert output == EXPECTED
    assert end["exit_code"] == 0


async def test_without_follow_a_slow_reader_loses_the_oldest(short_grace):
    host, session = short_grace
    job = await start(session, host)
    await anyio.sleep(1)
    output, dropped, _ = await drain(session, job, follow=False, pause=0.01)
    assert dropped > 0 and len(output) + dropped == len(EXPECTED)


async def test_a_reader_that_stops_following_is_let_go(short_grace):
    host, session = short_grace
    job = await start(session, host)
    first = data(await session.call_tool("job_output", {
        "job_id": job, "max_bytes": 1000, "wait_secs": 5, "follow": True}))
    assert first["output"].startswith("1\n2\n")
    # No more reads: after the grace the job runs on to its end, dropping what nobody reads.
    with anyio.fail_after(HANG_GUARD):
        while (state := data(await session.call_tool("job_output", {"job_id": job, "offset": 10**9})))["status"] == "running":
            await anyio.sleep(0.2)
    assert state["exit_code"] == 0


async def test_other_commands_on_the_host_run_while_a_job_is_followed(host_session):
    host, session = host_session
    job = await start(session, host)
    drained, quick = {}, []

    async def follow_it():
        drained["output"], drained["dropped"], _ = await drain(session, job, follow=True, pause=0.01)

    async def run_others():
        for i in range(5):
            quick.append(data(await session.call_tool("remote_exec", {"host": host, "command": f"echo {i}"}))["stdout"])
            await anyio.sleep(0.05)

    with anyio.fail_after(HANG_GUARD * 4):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follow_it)
            tg.start_soon(run_others)
    assert quick == [f"{i}\n" for i in range(5)]
    assert drained["dropped"] == 0 and drained["output"] == EXPECTED
