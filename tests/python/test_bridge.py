"""`outpost mcp connect`: a stdio MCP server forwarding to a remote outpost, surviving its restarts."""
import contextlib
import json
import pathlib
import re
import time

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from conftest import BIN, HANG_GUARD, data, text
from network import (SECRET, TRACE_ALL, Served, free_port, generate_token, process_running, wait_until,
                     write_secret)

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def bridge(env, errlog, *args):
    params = StdioServerParameters(command=BIN, args=["mcp", "connect", *args], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            with anyio.fail_after(HANG_GUARD):
                await session.initialize()
            yield session


async def echo(session, word):
    with anyio.fail_after(HANG_GUARD * 2):
        result = await session.call_tool("remote_exec", {"host": "local", "command": f"echo {word}"})
    assert not result.is_error, text(result)
    return data(result)["stdout"].strip()


@pytest.mark.parametrize("transport,scheme", [("--websocket", "ws"), ("--http", "http")])
async def test_the_bridge_survives_a_server_restart(env, tmp_path, transport, scheme):
    """Over HTTP, the restarted server knows nothing of the old session: the bridge opens a new one."""
    secret = write_secret(tmp_path)
    port = str(free_port())
    server_env = dict(env, RUST_LOG=TRACE_ALL)
    serve_args = (transport, "--port", port, "--jwt-secret-file", str(secret))
    token = generate_token(env, secret, "--subject", "laptop")
    bridge_env = dict(env, OUTPOST_TOKEN=token, RUST_LOG=TRACE_ALL)
    errlog = open(tmp_path / "bridge.log", "w+")
    first = Served(server_env, tmp_path, *serve_args).start()
    try:
        async with bridge(bridge_env, errlog, "--url", f"{scheme}://127.0.0.1:{port}/mcp",
                          "--token-env", "OUTPOST_TOKEN") as session:
            tools = {t.name for t in (await session.list_tools()).tools}
            assert {"remote_exec", "spawn_claude"} <= tools
            assert await echo(session, "before") == "before"

            marker = f"sleep 300 # bridged-{scheme}-{time.time_ns()}"
            outcome = {}

            async def long_call():
                try:
                    await session.call_tool("remote_exec", {"host": "local", "command": marker})
                except Exception as e:  # the SDK raises JSON-RPC errors
                    outcome["error"] = str(e)

            with anyio.fail_after(HANG_GUARD):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(long_call)
                    await anyio.to_thread.run_sync(wait_until, lambda: process_running(marker))
                    assert first.stop() == 0
            assert not process_running(marker), "the stopped server left the call's process running"
            assert "connection to the remote outpost was lost" in outcome["error"]

            second = Served(server_env, tmp_path, *serve_args).start()
            try:
                assert await echo(session, "after") == "after"
            finally:
                second.stop()
    finally:
        first.stop()
    errlog.seek(0)
    bridge_log = errlog.read()
    assert len(re.findall(r"INFO .*: connected", bridge_log)) >= 2 and "link lost" in bridge_log
    for log in (bridge_log, first.text()):
        assert token not in log and SECRET not in log


async def test_calls_wait_for_a_server_that_is_not_up_yet(env, tmp_path):
    port = str(free_port())
    errlog = open(tmp_path / "bridge.log", "w+")
    with Served(env, tmp_path, "--websocket", "--port", port, "--auth", "none") as server:
        server.stop()
    params = StdioServerParameters(command=BIN, args=["mcp", "connect", "--url", f"ws://127.0.0.1:{port}/mcp"], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            async def start_later():
                # Only once the bridge has tried and failed: the call must wait for the server.
                while "cannot connect" not in (tmp_path / "bridge.log").read_text():
                    await anyio.sleep(0.05)
                return Served(env, tmp_path, "--websocket", "--port", port, "--auth", "none", name="late").start()

            late = None
            with anyio.fail_after(HANG_GUARD):
                async with anyio.create_task_group() as tg:
                    async def start():
                        nonlocal late
                        late = await start_later()
                    tg.start_soon(start)
                    await session.initialize()
            try:
                assert await echo(session, "late") == "late"
            finally:
                late.stop()


async def test_a_bad_token_fails_calls_with_a_clear_error(env, tmp_path):
    secret = write_secret(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("not-a-valid-token")
    errlog = open(tmp_path / "bridge.log", "w+")
    with Served(env, tmp_path, "--websocket", "--port", "0", "--jwt-secret-file", str(secret)) as server:
        params = StdioServerParameters(
            command=BIN, args=["mcp", "connect", "--url", server.url, "--token-file", str(token_file)], env=env)
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(HANG_GUARD * 2):
                    with pytest.raises(Exception) as failed:
                        await session.initialize()
                assert "refused the token (401)" in str(failed.value)
                # The same bridge reads the token file again on its next attempt.
                token_file.write_text(generate_token(env, secret))
                with anyio.fail_after(HANG_GUARD):
                    while not re.search(r"INFO .*: connected", (tmp_path / "bridge.log").read_text()):
                        await anyio.sleep(0.05)
                    await session.initialize()
                assert await echo(session, "fixed") == "fixed"


async def test_remote_reaches_the_serve_port_through_an_ssh_tunnel(env, sshd, tmp_path):
    sshd.trust()
    port = free_port()
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"remotes": {"buildbox": {"host": "box", "serve_port": port}}}))
    with Served(env, tmp_path, "--websocket", "--port", str(port), "--auth", "none") as server:
        errlog = open(tmp_path / "bridge.log", "w+")
        async with bridge(env, errlog, "--remote", "buildbox") as session:
            assert await echo(session, "tunnelled") == "tunnelled"
        assert "WebSocket connection opened" in server.text()
