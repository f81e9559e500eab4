"""`list_jobs`, jobs owned by the principal that started them, the `wait_secs` cap and every tool's
annotations: through the built binary, with the MCP SDK on stdio and HTTP, raw JSON-RPC on a WebSocket."""
import contextlib
import datetime
import json
import re

import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from websockets.asyncio.client import connect

from conftest import HANG_GUARD, data, text
from network import Served, auth_header, generate_token, write_secret, ws_call, ws_session
from test_claude import claude, claude_env, server  # noqa: F401 (claude_env is a fixture)

pytestmark = pytest.mark.anyio

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
LISTED = 20  # jobs one list_jobs call shows at most


def stringify(value) -> str:
    """JavaScript's JSON.stringify, as Claude Code hands structured content to the model."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def checked(session):
    """`call(name, args)` → the structured content of a successful tool call."""
    async def call(name, args):
        result = await session.call_tool(name, args)
        assert not result.is_error, text(result)
        return data(result)
    return call


async def finished(call, job_id):
    with anyio.fail_after(HANG_GUARD):
        while (out := await call("job_output", {"job_id": job_id, "wait_secs": 5}))["status"] == "running":
            pass
    return out


async def test_list_jobs_shows_running_and_finished_jobs_newest_first(session):
    call = checked(session)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    done = (await call("remote_exec", {"command": "echo done; exit 3", "background": True}))["job_id"]
    await finished(call, done)
    long_command = "sleep 300 # " + "a very long\n  command line " * 40
    running = (await call("remote_exec", {"command": long_command, "background": True}))["job_id"]

    listing = await call("list_jobs", {})
    assert [j["job_id"] for j in listing["jobs"]] == [running, done] and listing["omitted"] == 0
    now, ended = listing["jobs"]
    assert (now["kind"], now["host"], now["status"], now["exit_code"]) == ("exec", "local", "running", None)
    assert now["command"].startswith("sleep 300 # a very long command line a very")
    assert "\n" not in now["command"] and len(now["command"]) <= 121 and now["command"].endswith("…")
    assert (ended["kind"], ended["status"], ended["exit_code"], ended["command"]) == (
        "exec", "exited", 3, "echo done; exit 3")
    for job in listing["jobs"]:
        assert RFC3339_UTC.match(job["started_at"]), job
        started = datetime.datetime.fromisoformat(job["started_at"].replace("Z", "+00:00"))
        assert before <= started <= datetime.datetime.now(datetime.timezone.utc)
        assert job["duration_ms"] >= 0 and "session_id" not in job
    assert "2 job(s)" in (await session.call_tool("list_jobs", {})).content[0].text

    assert [j["job_id"] for j in (await call("list_jobs", {"status": "running"}))["jobs"]] == [running]
    assert [j["job_id"] for j in (await call("list_jobs", {"status": "finished"}))["jobs"]] == [done]
    assert [j["job_id"] for j in (await call("list_jobs", {"status": "exited"}))["jobs"]] == [done]
    assert (await call("list_jobs", {"status": "killed"}))["jobs"] == []
    assert len((await call("list_jobs", {"host": "local"}))["jobs"]) == 2
    assert (await call("list_jobs", {"host": "elsewhere"}))["jobs"] == []
    bad = await session.call_tool("list_jobs", {"status": "sleeping"})
    assert bad.is_error and "sleeping" in text(bad)

    await call("job_kill", {"job_id": running})
    killed = (await call("list_jobs", {"status": "killed"}))["jobs"]
    assert [j["job_id"] for j in killed] == [running] and killed[0]["signal"]


async def test_a_claude_job_is_listed_with_its_session(claude_env):
    env, _, project, _ = claude_env
    async with server(env) as s:
        started = data(await claude(s, "tool in background", host="gpu", cwd=str(project), background=True))
        call = checked(s)
        out = await finished(call, started["job_id"])
        [job] = (await call("list_jobs", {"host": "gpu"}))["jobs"]
        assert (job["job_id"], job["kind"], job["status"]) == (started["job_id"], "claude", "exited")
        assert job["command"] == "claude: tool in background"
        assert job["session_id"] == out["claude"]["session_id"] and job["session_id"]


async def test_list_jobs_caps_its_result_and_says_how_many_are_left_out(session):
    jobs = []
    for n in range(LISTED + 3):
        command = f"echo job {n} " + "x" * 300
        result = data(await session.call_tool("remote_exec", {"command": command, "background": True}))
        jobs.append(result["job_id"])
    listing = data(await session.call_tool("list_jobs", {}))
    assert [j["job_id"] for j in listing["jobs"]] == jobs[::-1][:LISTED]
    assert listing["omitted"] == 3
    # What the model gets stays small, however long the commands.
    assert len(stringify(listing)) < 8000, len(stringify(listing))


async def test_a_long_poll_past_the_cap_is_cut_to_it_not_refused(session):
    job = data(await session.call_tool("remote_exec", {"command": "echo hi", "background": True}))["job_id"]
    with anyio.fail_after(HANG_GUARD):
        out = await session.call_tool("job_output", {"job_id": job, "wait_secs": 1000})
    assert not out.is_error, text(out)
    assert data(out)["output"] == "hi\n" and data(out)["status"] == "exited"


READ_ONLY = {"list_hosts", "list_sessions", "list_jobs", "job_output"}
HINTS = ("readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")


async def test_every_tool_has_a_title_and_all_hints(session):
    listed = await session.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == READ_ONLY | {"remote_exec", "spawn_claude", "job_kill", "sync_sessions", "transfer"}
    for name, tool in tools.items():
        hints = tool.annotations.model_dump(by_alias=True)
        assert tool.title and hints["title"] == tool.title, name
        assert all(isinstance(hints[h], bool) for h in HINTS), (name, hints)
        assert hints["readOnlyHint"] == (name in READ_ONLY), name
        if name in READ_ONLY:
            assert not hints["destructiveHint"] and hints["idempotentHint"], name
    exec_hints = tools["remote_exec"].annotations
    assert exec_hints.destructive_hint and exec_hints.open_world_hint and not exec_hints.idempotent_hint
    described = tools["job_output"].description
    assert "next_offset" in described and "running" in described and "50" in described
    # What the model reads of tools/list (name, description, input schema) stays small.
    seen = [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in listed.tools]
    assert len(stringify(seen)) < 9000, len(stringify(seen))


@contextlib.asynccontextmanager
async def websocket_caller(url, token):
    """`call(name, args)` → the raw `result` of a tool call over a WebSocket."""
    async with connect(url, additional_headers=auth_header(token), proxy=None, open_timeout=HANG_GUARD) as ws:
        await ws_session(ws)
        ids = iter(range(1, 1000))

        async def call(name, args):
            with anyio.fail_after(HANG_GUARD):
                return (await ws_call(ws, next(ids), name, args))["result"]
        yield call


@contextlib.asynccontextmanager
async def http_caller(url, token):
    """`call(name, args)` → the `result` of a tool call over Streamable HTTP, with the SDK."""
    async with create_mcp_http_client(headers=auth_header(token)) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()

                async def call(name, args):
                    with anyio.fail_after(HANG_GUARD):
                        result = await session.call_tool(name, args)
                    return result.model_dump(by_alias=True, exclude_none=True)
                yield call


CALLERS = {"--websocket": websocket_caller, "--http": http_caller}


@pytest.mark.parametrize("transport", list(CALLERS))
async def test_another_principal_neither_sees_nor_reads_nor_kills_a_job(env, tmp_path, transport):
    secret = write_secret(tmp_path)
    ana = generate_token(env, secret, "--subject", "ana")
    bob = generate_token(env, secret, "--subject", "bob")
    caller = CALLERS[transport]
    with Served(env, tmp_path, transport, "--port", "0", "--jwt-secret-file", str(secret)) as server:
        async with caller(server.url, ana) as as_ana, caller(server.url, bob) as as_bob:
            started = await as_ana("remote_exec", {"command": "echo started; sleep 300", "background": True})
            job = started["structuredContent"]["job_id"]
            assert [j["job_id"] for j in (await as_ana("list_jobs", {}))["structuredContent"]["jobs"]] == [job]

            assert (await as_bob("list_jobs", {}))["structuredContent"] == {"jobs": [], "omitted": 0}
            never = "job-1-000000000000"
            for tool, args in (("job_output", {"wait_secs": 1}), ("job_kill", {})):
                theirs = await as_bob(tool, {"job_id": job, **args})
                unknown = await as_bob(tool, {"job_id": never, **args})
                assert theirs["isError"] and "structuredContent" not in theirs, theirs
                # Word for word what an id that never existed gets: ids cannot be probed.
                assert json.dumps(theirs).replace(job, never) == json.dumps(unknown), (theirs, unknown)

            out = (await as_ana("job_output", {"job_id": job, "wait_secs": 5}))["structuredContent"]
            assert out["status"] == "running" and out["output"] == "started\n", "bob's kill did nothing"
            killed = await as_ana("job_kill", {"job_id": job})
            assert killed["structuredContent"]["status"] == "killed", killed
            assert (await as_bob("list_jobs", {"status": "killed"}))["structuredContent"]["jobs"] == []
