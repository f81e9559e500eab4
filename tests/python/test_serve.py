"""`outpost mcp serve --websocket` and `--http`: the JWT gate, limits, disconnects, shutdown, audit."""
import json
import pathlib
import subprocess
import time

import anyio
import jwt as pyjwt
import pytest
import websockets
from websockets.asyncio.client import connect

from conftest import BIN, HANG_GUARD, data, text
from network import (SECRET, TRACE_ALL, Served, auth_header, challenge_for, generate_token, process_running,
                     wait_until, write_secret, ws_call, ws_session)

pytestmark = pytest.mark.anyio


def open_ws(url, token=None, **kwargs):
    headers = auth_header(token) if token else None
    return connect(url, additional_headers=headers, proxy=None, compression=None,
                   open_timeout=HANG_GUARD, **kwargs)


def write_config(env, config):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))


@pytest.fixture
def jwt_server(env, tmp_path):
    """A WebSocket server checking HS256 tokens with audience `build-box`, auditing to a file."""
    secret = write_secret(tmp_path)
    write_config(env, {"serve": {"jwt": {"audience": "build-box", "leeway_secs": 0}},
                       "audit": {"path": str(tmp_path / "audit.log")}})
    env = dict(env, RUST_LOG=TRACE_ALL)
    with Served(env, tmp_path, "--websocket", "--port", "0", "--jwt-secret-file", str(secret)) as server:
        yield server, env, secret


def bad_tokens(env, secret):
    now = int(time.time())
    claims = {"sub": "mallory", "aud": "build-box", "iat": now, "exp": now + 600}
    return {
        "no token": None,
        "garbage": "not.a.token",
        "wrong key": pyjwt.encode(claims, "k" * 64, algorithm="HS256"),
        "expired": pyjwt.encode(dict(claims, exp=now - 5), SECRET, algorithm="HS256"),
        "alg none": pyjwt.encode(claims, None, algorithm="none"),
        "wrong audience": generate_token(env, secret, "--audience", "elsewhere"),
        "no audience": pyjwt.encode({k: v for k, v in claims.items() if k != "aud"}, SECRET, algorithm="HS256"),
        "no exp": pyjwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, algorithm="HS256"),
        "not yet valid": pyjwt.encode(dict(claims, nbf=now + 600), SECRET, algorithm="HS256"),
        "HS384": pyjwt.encode(claims, SECRET, algorithm="HS384"),
    }


async def test_bad_tokens_get_401_before_any_session_and_are_never_logged(jwt_server):
    server, env, secret = jwt_server
    for name, token in bad_tokens(env, secret).items():
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with open_ws(server.url, token):
                pass
        response = refused.value.response
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"] == challenge_for(token), name
        assert b"send Authorization: Bearer <token>" in response.body, (name, response.body)
        if token:
            assert token not in server.text(), f"{name}: the token reached the log"
    log = server.text()
    assert "WebSocket connection opened" not in log and "Service initialized" not in log
    assert SECRET not in log


async def test_a_generated_token_runs_remote_exec_over_the_socket_and_is_audited(sshd, jwt_server, tmp_path):
    server, env, secret = jwt_server
    sshd.trust()
    token = generate_token(env, secret, "--subject", "ana", "--expires", "10m")
    claims = pyjwt.decode(token, SECRET, algorithms=["HS256"], audience="build-box")
    assert claims["sub"] == "ana" and 590 <= claims["exp"] - claims["iat"] <= 600
    async with open_ws(server.url, token) as ws:
        info = await ws_session(ws)
        assert info["serverInfo"]["name"] == "outpost"
        reply = await ws_call(ws, 1, "remote_exec", {"host": "box", "command": "echo over-the-socket"})
        assert reply["result"]["structuredContent"]["stdout"] == "over-the-socket\n", reply
        failing = await ws_call(ws, 2, "remote_exec", {"host": "box", "command": "export API_KEY=hunter2-xyz; exit 3"})
        assert failing["result"]["structuredContent"]["exit_code"] == 3
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [r["tool"] for r in records] == ["remote_exec", "remote_exec"]
    first, second = records
    assert first["principal"] == "ana" and first["host"] == "box" and first["outcome"] == "exited"
    assert first["input"] == "echo over-the-socket" and first["exit_code"] == 0 and first["duration_ms"] >= 0
    assert second["exit_code"] == 3 and second["input"] == "export API_KEY=[REDACTED] exit 3"
    assert token not in server.text() and SECRET not in server.text()


async def test_oversized_and_binary_messages_are_refused(env, tmp_path):
    write_config(env, {"serve": {"max_message_bytes": 65536}})
    with Served(env, tmp_path, "--websocket", "--port", "0", "--auth", "none") as server:
        async with open_ws(server.url) as ws:
            await ws_session(ws)
            big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 100_000}})
            await ws.send(big)
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd.code == 1009
        async with open_ws(server.url) as ws:
            await ws_session(ws)
            await ws.send(b"\x00binary")
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd.code == 1003
        async with open_ws(server.url) as ws:
            await ws_session(ws)
            await ws.send("{not json")
            assert json.loads(await ws.recv())["error"]["code"] == -32700
            reply = await ws_call(ws, 3, "remote_exec", {"host": "local", "command": "echo still-serving"})
            assert reply["result"]["structuredContent"]["stdout"] == "still-serving\n"


async def test_a_client_that_disconnects_mid_call_has_its_process_killed(env, tmp_path):
    with Served(env, tmp_path, "--websocket", "--port", "0", "--auth", "none") as server:
        marker = f"sleep 300 # disconnect-{time.time_ns()}"
        async with open_ws(server.url) as ws:
            await ws_session(ws)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                      "params": {"name": "remote_exec",
                                                 "arguments": {"host": "local", "command": marker}}}))
            wait_until(lambda: process_running(marker))
        wait_until(lambda: not process_running(marker))
        assert "WebSocket connection closed" in server.text()


async def test_sigterm_cancels_running_calls_and_exits(env, tmp_path):
    server = Served(env, tmp_path, "--websocket", "--port", "0", "--auth", "none").start()
    marker = f"sleep 300 # sigterm-{time.time_ns()}"
    async with open_ws(server.url) as ws:
        await ws_session(ws)
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": "remote_exec", "arguments": {"host": "local", "command": marker}}}))
        wait_until(lambda: process_running(marker))
        assert server.stop() == 0
        assert not process_running(marker)
        with pytest.raises(websockets.exceptions.ConnectionClosed):
            while True:
                await ws.recv()
    with pytest.raises(OSError):
        async with open_ws(server.url):
            pass


async def test_rate_limit_and_connection_cap(env, tmp_path):
    write_config(env, {"serve": {"calls_per_minute": 2, "max_connections": 1}})
    with Served(env, tmp_path, "--websocket", "--port", "0", "--auth", "none") as server:
        async with open_ws(server.url) as ws:
            await ws_session(ws)
            for id in (1, 2):
                assert "result" in await ws_call(ws, id, "list_hosts", {})
            limited = await ws_call(ws, 3, "list_hosts", {})
            assert limited["error"]["code"] == -32029 and "retry in" in limited["error"]["message"]
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with open_ws(server.url):
                    pass
            assert refused.value.response.status_code == 503
        # The slot frees when the first connection ends.
        with anyio.fail_after(HANG_GUARD):
            while True:
                try:
                    async with open_ws(server.url) as ws:
                        await ws_session(ws)
                        break
                except websockets.exceptions.InvalidStatus:
                    await anyio.sleep(0.05)


@pytest.mark.parametrize("args, message", [
    (("--host", "0.0.0.0", "--auth", "none"), "without authentication"),
    (("--host", "0.0.0.0"), "no JWT secret"),
    (("--auth", "jwt"), "no JWT secret"),
])
def test_unsafe_or_incomplete_setups_are_refused(env, args, message):
    out = subprocess.run([BIN, "mcp", "serve", "--websocket", "--port", "0", *args], env=env,
                         capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert out.returncode != 0 and message in out.stderr, out.stderr
    assert "serving MCP" not in out.stderr


def test_a_short_secret_is_refused(env, tmp_path):
    short = tmp_path / "short"
    short.write_text("hunter2")
    out = subprocess.run([BIN, "auth", "generate-token", "--jwt-secret-file", str(short)], env=env,
                         capture_output=True, text=True, timeout=HANG_GUARD)
    assert out.returncode != 0 and "at least 32" in out.stderr and "hunter2" not in out.stderr


async def test_streamable_http_with_the_sdk_and_its_gate(env, tmp_path):
    import httpx2 as httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client
    secret = write_secret(tmp_path)
    env = dict(env, RUST_LOG=TRACE_ALL)
    audit = tmp_path / "audit.log"
    with Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret),
                "--audit-log", str(audit)) as server:
        async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
            initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
            for token in (None, "garbage", pyjwt.encode({"sub": "x", "exp": int(time.time()) + 60}, "k" * 64)):
                headers = {"Accept": "application/json, text/event-stream", **(auth_header(token) if token else {})}
                response = await client.post(server.url, json=initialize, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"] == challenge_for(token)
                assert "outpost auth generate-token" in response.text
            response = await client.post(server.url.replace("/mcp", "/other"), json=initialize)
            assert response.status_code == 404
        token = generate_token(env, secret, "--subject", "http-user")
        progress = []

        async def on_progress(value, total, message):
            progress.append(message)

        with anyio.fail_after(HANG_GUARD):
            client = create_mcp_http_client(headers=auth_header(token))
            async with streamable_http_client(server.url, http_client=client) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    result = await session.call_tool(
                        "remote_exec", {"host": "local", "command": "echo one; sleep 1; echo two"},
                        progress_callback=on_progress)
                    assert not result.is_error, text(result)
                    assert data(result)["stdout"] == "one\ntwo\n"
        assert progress, "progress notifications reach an HTTP client"
        record = json.loads(audit.read_text().splitlines()[-1])
        assert record["principal"] == "http-user" and record["tool"] == "remote_exec"
        assert token not in server.text() and SECRET not in server.text()


async def test_stdio_calls_are_audited_as_stdio(env, tmp_path):
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    audit = tmp_path / "logs" / "audit.log"
    env = dict(env, MY_TOKEN="tok-" + "z" * 20)
    write_config(env, {"claude": {"forward_env": ["MY_TOKEN"]}})
    params = StdioServerParameters(command=BIN, args=["mcp", "serve", "--audit-log", str(audit)], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            await session.call_tool("remote_exec", {"host": "local", "command": "echo tok-" + "z" * 20})
            await session.call_tool("remote_exec", {"host": "nowhere", "command": "true"})
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["principal"] for r in records] == ["stdio", "stdio"]
    assert records[0]["input"] == "echo [REDACTED]" and records[0]["outcome"] == "exited"
    assert records[1]["outcome"] == "error" and "unknown host" in records[1]["error"]
    assert oct(audit.stat().st_mode & 0o777) == "0o600"


def test_listen_flags_need_a_network_transport(env):
    out = subprocess.run([BIN, "mcp", "serve", "--port", "9"], env=env, capture_output=True, text=True,
                         timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert out.returncode != 0 and "need --websocket or --http" in out.stderr


def hs256_by_hand(claims, key: bytes) -> str:
    """An HS256 token signed with any bytes (PyJWT refuses PEM keys as HMAC secrets)."""
    import base64
    import hashlib
    import hmac

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    return signing + "." + b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())


async def test_eddsa_public_key_tokens_and_no_algorithm_confusion(env, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "jwt.pub").write_bytes(public_pem)
    write_config(env, {"serve": {"jwt": {"public_key_file": str(tmp_path / "jwt.pub")}}})
    now = int(time.time())
    claims = {"sub": "ci-bot", "iat": now, "exp": now + 300}
    with Served(env, tmp_path, "--websocket", "--port", "0") as server:
        good = pyjwt.encode(claims, private, algorithm="EdDSA")
        async with open_ws(server.url, good) as ws:
            await ws_session(ws)
            assert "result" in await ws_call(ws, 1, "list_hosts", {})
        other = pyjwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA")
        for token in (other, hs256_by_hand(claims, public_pem)):
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with open_ws(server.url, token):
                    pass
            assert refused.value.response.status_code == 401
    assert "principal=ci-bot" in server.text()


async def test_an_idle_connection_is_closed_but_not_while_a_call_runs(env, tmp_path):
    write_config(env, {"serve": {"idle_timeout_secs": 1}})
    with Served(env, tmp_path, "--websocket", "--port", "0", "--auth", "none") as server:
        async with open_ws(server.url) as ws:
            await ws_session(ws)
            reply = await ws_call(ws, 1, "remote_exec", {"host": "local", "command": "sleep 2.5; echo done"})
            assert reply["result"]["structuredContent"]["stdout"] == "done\n"
            with anyio.fail_after(HANG_GUARD):
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        await ws.recv()
            assert closed.value.rcvd.code == 1000 and closed.value.rcvd.reason == "idle timeout"
