"""Job logs as MCP resources (`outpost://jobs/{job_id}`): list, read, subscribe (legacy and 2026-07-28 listen)."""
import contextlib
import json
import pathlib

import anyio
import mcp.types as types
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.subscriptions import ResourceUpdated, listen
from mcp.shared.exceptions import MCPError
from websockets.asyncio.client import connect

from conftest import BIN, HANG_GUARD, data
from network import Served, auth_header, generate_token, write_secret, ws_call, ws_request, ws_session

# The legacy subscribe calls are what 2025-11-25 clients send; the SDK warns that 2026-07-28 replaced them.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")]

RESOURCE_NOT_FOUND = -32002


def gated(tmp_path, name: str) -> str:
    """Shell text that waits until file `name` exists in tmp_path (the test says when to go on)."""
    return f"while [ ! -e {tmp_path / name} ]; do sleep 0.05; done"


async def start(session, command) -> str:
    result = await session.call_tool("remote_exec", {"command": command, "background": True})
    return data(result)["job_id"]


async def read(session, uri) -> str:
    result = await session.read_resource(uri)
    (contents,) = result.contents
    assert contents.uri == uri and contents.mime_type == "text/plain"
    return contents.text


async def read_until(session, uri, needle) -> str:
    with anyio.fail_after(HANG_GUARD):
        while needle not in (text := await read(session, uri)):
            await anyio.sleep(0.05)
    return text


class Updates:
    """`notifications/resources/updated` as they arrive, with a way to wait for the next ones."""

    def __init__(self):
        self.uris: list[str] = []
        self.arrived = anyio.Event()

    async def handler(self, message):
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(message.params.uri)
            self.arrived.set()

    async def wait_for(self, uri, count):
        with anyio.fail_after(HANG_GUARD):
            while self.uris.count(uri) < count:
                self.arrived = anyio.Event()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def session_with(env, message_handler=None, modern=False):
    params = StdioServerParameters(command=BIN, args=["mcp", "serve"], env=env)
    with open(pathlib.Path(env["HOME"]) / "outpost.log", "w") as err:
        async with stdio_client(params, errlog=err) as (r, w):
            async with ClientSession(r, w, message_handler=message_handler) as session:
                if modern:
                    await session.discover()
                else:
                    await session.initialize()
                yield session


async def test_jobs_are_listed_and_read_as_resources(env):
    async with session_with(env) as session:
        capabilities = session.initialize_result.capabilities
        assert capabilities.resources.subscribe is True
        small = await start(session, "printf 'line-%s\\n' 1 2 3")
        big = await start(session, "seq 1 20000")
        listed = {r.uri: r for r in (await session.list_resources()).resources}
        for job in (small, big):
            resource = listed[f"outpost://jobs/{job}"]
            assert resource.name == job and resource.mime_type == "text/plain"
        assert listed[f"outpost://jobs/{small}"].title.startswith("exec on local: printf")
        templates = (await session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["outpost://jobs/{job_id}"]

        text = await read_until(session, f"outpost://jobs/{small}", "status: exited")
        assert f"job_id: {small}" in text and "exit_code: 0" in text and "host: local" in text
        assert text.endswith(" ---\nline-1\nline-2\nline-3\n"), text

        # The newest output when it is larger than the budget, saying what was left out.
        text = await read_until(session, f"outpost://jobs/{big}", "status: exited")
        head, output = text.split(" ---\n", 1)
        assert "the first" in head and "bytes are left out" in head, head
        assert output.endswith("\n19999\n20000\n") and len(output) <= 30000
        assert not output.startswith("1\n2\n")

        for uri in ("outpost://jobs/job-1-000000000000", "file:///etc/passwd"):
            with pytest.raises(MCPError) as missing:
                await session.read_resource(uri)
            assert missing.value.error.code == RESOURCE_NOT_FOUND, missing.value.error


async def test_a_subscription_hears_new_output_and_the_end_until_unsubscribed(env, tmp_path):
    updates = Updates()
    async with session_with(env, updates.handler) as session:
        job = await start(session, f"{gated(tmp_path, 'a')}; echo one; {gated(tmp_path, 'b')}")
        uri = f"outpost://jobs/{job}"
        await session.subscribe_resource(uri)

        async def told_after(trigger, needle):
            """Touches `trigger`, then waits for updates until a read after one shows `needle`."""
            seen = updates.uris.count(uri)
            (tmp_path / trigger).touch()
            with anyio.fail_after(HANG_GUARD):
                while True:
                    await updates.wait_for(uri, seen + 1)
                    seen = updates.uris.count(uri)
                    if needle in await read(session, uri):
                        return

        await told_after("a", "\none\n")
        # Nothing is printed after `b`: an update after it can only be the job's end.
        await told_after("b", "status: exited")

        # Unsubscribed: this job's end is not told; a subscribed job's end, started later, is.
        quiet = await start(session, f"{gated(tmp_path, 'c')}; echo three")
        loud = await start(session, f"{gated(tmp_path, 'd')}; echo four")
        quiet_uri, loud_uri = f"outpost://jobs/{quiet}", f"outpost://jobs/{loud}"
        await session.subscribe_resource(quiet_uri)
        await session.subscribe_resource(loud_uri)
        await session.unsubscribe_resource(quiet_uri)
        (tmp_path / "c").touch()
        await read_until(session, quiet_uri, "status: exited")
        (tmp_path / "d").touch()
        await updates.wait_for(loud_uri, 1)
        await read_until(session, loud_uri, "status: exited")
        assert quiet_uri not in updates.uris

        with pytest.raises(MCPError) as missing:
            await session.subscribe_resource("outpost://jobs/job-9-000000000000")
        assert missing.value.error.code == RESOURCE_NOT_FOUND


async def test_a_2026_client_listens_for_updates_of_its_job(env, tmp_path):
    async with session_with(env, modern=True) as session:
        assert session.protocol_version == "2026-07-28"
        job = await start(session, f"{gated(tmp_path, 'go')}; echo done")
        uri = f"outpost://jobs/{job}"
        async with listen(session, resource_subscriptions=[uri]) as subscription:
            (tmp_path / "go").touch()
            with anyio.fail_after(HANG_GUARD):
                async for event in subscription:
                    assert event == ResourceUpdated(uri=uri)
                    if "status: exited" in await read(session, uri):
                        break
        assert "done" in await read(session, uri)


async def test_over_the_network_a_principal_sees_and_reads_only_its_own_jobs(env, tmp_path):
    secret = write_secret(tmp_path)
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"serve": {"jwt": {"audience": "build-box"}}}))
    with Served(env, tmp_path, "--websocket", "--port", "0", "--jwt-secret-file", str(secret)) as server:
        ana, bob = (generate_token(env, secret, "--subject", who) for who in ("ana", "bob"))
        async with connect(server.url, additional_headers=auth_header(ana), proxy=None,
                           open_timeout=HANG_GUARD) as ana_ws, \
                connect(server.url, additional_headers=auth_header(bob), proxy=None,
                        open_timeout=HANG_GUARD) as bob_ws:
            await ws_session(ana_ws)
            await ws_session(bob_ws)
            started = await ws_call(ana_ws, 1, "remote_exec", {"command": "echo ana-only", "background": True})
            uri = f"outpost://jobs/{started['result']['structuredContent']['job_id']}"
            own = await ws_request(ana_ws, 2, "resources/list", {})
            assert uri in [r["uri"] for r in own["result"]["resources"]]
            other = await ws_request(bob_ws, 2, "resources/list", {})
            assert other["result"]["resources"] == []
            for id, method in enumerate(("resources/read", "resources/subscribe"), start=3):
                refused = await ws_request(bob_ws, id, method, {"uri": uri})
                assert refused["error"]["code"] == RESOURCE_NOT_FOUND, refused
            with anyio.fail_after(HANG_GUARD):
                while "ana-only" not in (await ws_request(ana_ws, 9, "resources/read", {"uri": uri}))[
                        "result"]["contents"][0]["text"]:
                    await anyio.sleep(0.05)
