"""`outpost mcp serve --http|--websocket` under pressure: idle and slow connections cannot lock clients
out, and a Streamable HTTP session answers only the principal that opened it."""
import contextlib
import json
import socket

import anyio
import httpx2 as httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from websockets.asyncio.client import connect

from conftest import HANG_GUARD, data
from network import (Served, auth_header, closed_by_server, generate_token, host_port, initialize_message,
                     write_secret, ws_call, ws_session)

pytestmark = pytest.mark.anyio

# Slots enough for two MCP clients at once (the HTTP SDK holds a few connections), and more idle
# connections than the slots and than may wait for authentication.
SLOTS = 8
IDLE = 3 * SLOTS


def write_config(env, config):
    with open(env["OUTPOST_CONFIG"], "w") as f:
        json.dump(config, f)


@contextlib.asynccontextmanager
async def http_client(url, token):
    """An MCP session over Streamable HTTP; yields a function calling `list_hosts`."""
    headers = auth_header(token) if token else None
    async with create_mcp_http_client(headers=headers) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                with anyio.fail_after(HANG_GUARD):
                    await session.initialize()

                async def list_hosts():
                    with anyio.fail_after(HANG_GUARD):
                        return data(await session.call_tool("list_hosts", {}))
                yield list_hosts


@contextlib.asynccontextmanager
async def websocket_client(url, token):
    """An MCP session over a WebSocket; yields a function calling `list_hosts`."""
    headers = auth_header(token) if token else None
    async with connect(url, additional_headers=headers, proxy=None, open_timeout=HANG_GUARD) as ws:
        await ws_session(ws)
        ids = iter(range(1, 1000))

        async def list_hosts():
            with anyio.fail_after(HANG_GUARD):
                return (await ws_call(ws, next(ids), "list_hosts", {}))["result"]["structuredContent"]
        yield list_hosts


CLIENTS = {"--http": http_client, "--websocket": websocket_client}


@pytest.fixture
def secret(tmp_path):
    return write_secret(tmp_path)


@pytest.mark.parametrize("transport", ["--http", "--websocket"])
async def test_idle_connections_cannot_lock_out_an_authenticated_client(env, tmp_path, secret, transport):
    write_config(env, {"serve": {"max_connections": SLOTS}})
    token = generate_token(env, secret, "--subject", "ana")
    with Served(env, tmp_path, transport, "--port", "0", "--jwt-secret-file", str(secret)) as server:
        address = host_port(server.url)
        client = CLIENTS[transport]
        async with client(server.url, token) as first:
            assert "hosts" in await first()
            idle = [socket.create_connection(address, timeout=HANG_GUARD) for _ in range(IDLE)]
            try:
                # Strangers without a token took no slot: the client in is still served, and a
                # new one gets in.
                assert "hosts" in await first()
                async with client(server.url, token) as second:
                    assert "hosts" in await second()
                # The longest-waiting strangers were closed to make room.
                assert closed_by_server(idle[0])
            finally:
                for sock in idle:
                    sock.close()


@pytest.mark.parametrize("transport", ["--http", "--websocket"])
async def test_connections_that_send_no_complete_request_head_are_closed(env, tmp_path, transport):
    write_config(env, {"serve": {"header_timeout_secs": 1}})
    with Served(env, tmp_path, transport, "--port", "0", "--auth", "none") as server:
        address = host_port(server.url)
        silent = socket.create_connection(address)
        slow = socket.create_connection(address)
        slow.sendall(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
        try:
            assert closed_by_server(silent), "a connection that never sent a byte stayed open"
            assert closed_by_server(slow), "a connection that never finished its headers stayed open"
            async with CLIENTS[transport](server.url, None) as client:
                assert "hosts" in await client()
        finally:
            silent.close()
            slow.close()


HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def test_an_http_session_answers_only_the_principal_that_opened_it(env, tmp_path, secret):
    ana, bob = (generate_token(env, secret, "--subject", who) for who in ("ana", "bob"))
    with Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret)) as server:
        async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
            async def post(token, message, session=None):
                headers = dict(HEADERS, **auth_header(token))
                if session:
                    headers.update({"Mcp-Session-Id": session, "Mcp-Protocol-Version": "2025-06-18"})
                return await client.post(server.url, json=message, headers=headers)

            opened = await post(ana, initialize_message())
            assert opened.status_code == 200, opened.text
            session = opened.headers["mcp-session-id"]
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await post(ana, initialized, session)).status_code == 202
            call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": {"name": "remote_exec", "arguments": {"command": "echo as-bob"}}}
            # Another principal's token on ana's session: as if the session did not exist (MCP: 404).
            refused = await post(bob, call, session)
            assert refused.status_code == 404, refused.text
            assert (await post(bob, initialized, session)).status_code == 404
            for method in ("GET", "DELETE"):
                headers = dict(auth_header(bob), Accept="text/event-stream", **{"Mcp-Session-Id": session})
                assert (await client.request(method, server.url, headers=headers)).status_code == 404, method
            # Ana's session is untouched.
            ping = await post(ana, {"jsonrpc": "2.0", "id": 2, "method": "ping"}, session)
            assert ping.status_code == 200 and '"id":2' in ping.text, ping.text
    assert "remote_exec started" not in server.text(), "bob's call ran in ana's session"


async def test_bad_json_rpc_over_http_gets_400_with_the_json_rpc_error(env, tmp_path):
    write_config(env, {"serve": {"max_message_bytes": 65536}})
    with Served(env, tmp_path, "--http", "--port", "0", "--auth", "none") as server:
        async with httpx.AsyncClient(timeout=HANG_GUARD) as client:
            for body, code in [("{not json", -32700), ('{"jsonrpc":"2.0","id":1.5,"method":"ping"}', -32600),
                               ('{"jsonrpc":"2.0","id":true,"method":"initialize"}', -32600)]:
                response = await client.post(server.url, content=body, headers=HEADERS)
                assert response.status_code == 400, (body, response.text)
                reply = response.json()
                assert reply["error"]["code"] == code and "id" in reply and reply["id"] is None, (body, reply)
            big = {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x" * 100_000}}
            response = await client.post(server.url, json=big, headers=HEADERS)
            assert response.status_code == 413 and response.json()["error"]["code"] == -32600, response.text
            # Good messages still reach the MCP service.
            opened = await client.post(server.url, json=initialize_message(), headers=HEADERS)
            assert opened.status_code == 200 and "mcp-session-id" in opened.headers, opened.text
