"""`outpost mcp connect --url http(s)://…`: the bridge speaks Streamable HTTP to a server started with
`--http`, verifies its certificate as it does for wss://, and survives the server's restarts."""
import json
import subprocess

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from asking import Person
from conftest import BIN, HANG_GUARD, data, text
from network import Served, generate_token, write_secret
from test_bridge import bridge, echo
from test_tls import self_signed, tls_args

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


async def test_the_bridge_reaches_an_https_server_trusting_its_certificate(env, tmp_path):
    secret = write_secret(tmp_path)
    pair = self_signed(tmp_path)
    token = generate_token(env, secret, "--subject", "laptop")
    with Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret), *tls_args(pair)) as server:
        assert server.url.startswith("https://127.0.0.1:"), server.url
        with open(tmp_path / "bridge.log", "w+") as errlog:
            async with bridge(dict(env, OUTPOST_TOKEN=token), errlog, "--url", server.url,
                              "--token-env", "OUTPOST_TOKEN", "--ca", str(pair[0])) as session:
                assert await echo(session, "secure") == "secure"
            # Without --ca, the system's roots: here the store SSL_CERT_FILE names.
            system = dict(env, OUTPOST_TOKEN=token, SSL_CERT_FILE=str(pair[0]))
            async with bridge(system, errlog, "--url", server.url, "--token-env", "OUTPOST_TOKEN") as session:
                assert await echo(session, "system") == "system"


async def test_the_bridge_refuses_an_https_certificate_it_cannot_trust_saying_why(env, tmp_path):
    secret = write_secret(tmp_path)
    served = self_signed(tmp_path, name="served")
    stranger = self_signed(tmp_path, name="stranger")[0]
    token = generate_token(env, secret, "--subject", "laptop")
    with Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret), *tls_args(served),
                ) as server:
        errlog = open(tmp_path / "bridge.log", "w+")
        message = await initialize_fails(dict(env, OUTPOST_TOKEN=token), errlog, "--url", server.url,
                                         "--token-env", "OUTPOST_TOKEN", "--ca", str(stranger))
    assert "is not trusted" in message and "UnknownIssuer: pass --ca FILE with the CA that signed it" in message, \
        message


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


def test_ca_with_a_plain_http_url_is_refused_at_start(env, tmp_path):
    cert = self_signed(tmp_path)[0]
    out = subprocess.run([BIN, "mcp", "connect", "--url", "http://127.0.0.1:1/mcp", "--ca", str(cert)], env=env,
                         capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert out.returncode != 0, out.stderr
    assert "--ca is for wss:// and https:// URLs; http://127.0.0.1:1/mcp is plain http://: use https://" in out.stderr, \
        out.stderr


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
