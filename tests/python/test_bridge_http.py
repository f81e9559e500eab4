"""`outpost mcp connect --url http(s)://…`: the bridge speaks Streamable HTTP to a server started with
`--http` (its certificate checks are in test_tls.py, for wss:// and https:// alike)."""
import json

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from asking import Person
from conftest import BIN, HANG_GUARD, data, text
from network import Served, generate_token, write_secret
from test_bridge import bridge, echo

pytestmark = pytest.mark.anyio


async def initialize_fails(env, errlog, *args) -> str:
    """The error a client's `initialize` gets through a bridge started with `args`."""
    params = StdioServerParameters(command=BIN, args=["mcp", "connect", *args], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            with anyio.fail_after(HANG_GUARD * 2), pytest.raises(Exception) as failed:
                await session.initialize()
    return str(failed.value)


async def test_progress_of_a_long_call_comes_through_an_http_bridge(env, tmp_path):
    secret = write_secret(tmp_path)
    token = generate_token(env, secret, "--subject", "laptop")
    errlog = open(tmp_path / "bridge.log", "w+")
    with Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret)) as server:
        assert server.url.startswith("http://127.0.0.1:"), server.url
        async with bridge(dict(env, OUTPOST_TOKEN=token), errlog, "--url", server.url,
                          "--token-env", "OUTPOST_TOKEN") as session:
            progress = []

            async def on_progress(value, total, message):
                progress.append(message)

            with anyio.fail_after(HANG_GUARD):
                result = await session.call_tool(
                    "remote_exec", {"host": "local", "command": "echo one; sleep 1; echo two"},
                    progress_callback=on_progress)
            assert not result.is_error, text(result)
            assert data(result)["stdout"] == "one\ntwo\n"
            assert any("one" in (m or "") for m in progress), progress


async def test_a_bad_token_over_http_fails_calls_saying_how_to_fix_it(env, tmp_path):
    secret = write_secret(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("not-a-valid-token")
    errlog = open(tmp_path / "bridge.log", "w+")
    with Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret)) as server:
        message = await initialize_fails(env, errlog, "--url", server.url, "--token-file", str(token_file))
        assert "refused the token (401): check --token-env / --token-file" in message, message
        # A right token in the same file is read on the next attempt.
        token_file.write_text(generate_token(env, secret))
        async with bridge(env, errlog, "--url", server.url, "--token-file", str(token_file)) as session:
            assert await echo(session, "fixed") == "fixed"


async def test_a_confirmation_the_server_asks_reaches_the_person_through_an_http_bridge(env, tmp_path):
    """The server's own request (an elicitation) comes on the call's SSE stream; the answer goes back in a POST."""
    secret = write_secret(tmp_path)
    token = generate_token(env, secret, "--subject", "laptop")
    (tmp_path / "config.json").write_text(json.dumps({"policy": {"confirm": "always"}}))
    server_env = dict(env, OUTPOST_CONFIG=str(tmp_path / "config.json"))
    marker = tmp_path / "ran"
    person = Person("run")
    with Served(server_env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret)) as server:
        params = StdioServerParameters(command=BIN, args=["mcp", "connect", "--url", server.url, "--token-env",
                                                          "OUTPOST_TOKEN"], env=dict(env, OUTPOST_TOKEN=token))
        with open(tmp_path / "bridge.log", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, elicitation_callback=person) as session:
                    with anyio.fail_after(HANG_GUARD):
                        await session.initialize()
                        result = await session.call_tool("remote_exec", {"host": "local",
                                                                         "command": f"touch {marker}"})
    assert not result.is_error, text(result)
    assert marker.exists() and len(person.questions) == 1, person.questions
