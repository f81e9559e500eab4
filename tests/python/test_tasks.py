"""SEP-2663 tasks (`io.modelcontextprotocol/tasks`): remote_exec as a task mapped onto a job, raw JSON-RPC over stdio."""
import json
import time

import pytest
from websockets.asyncio.client import connect

from conftest import HANG_GUARD, RawServer, wait_dead_sync
from network import Served, auth_header, generate_token, initialize_message, write_secret, ws_request
from test_claude import claude_env  # noqa: F401 (a fixture)

TASKS = "io.modelcontextprotocol/tasks"


def initialize(server: RawServer, extensions=None):
    capabilities = {"extensions": extensions} if extensions is not None else {}
    reply = server.request("initialize", {
        "protocolVersion": "2025-11-25", "capabilities": capabilities,
        "clientInfo": {"name": "tasks-test", "version": "1"},
    })
    server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    return reply["result"]


@pytest.fixture
def tasks_client(env):
    server = RawServer(env)
    info = initialize(server, {TASKS: {}})
    assert TASKS in info["capabilities"]["extensions"], info
    yield server
    server.close()


def exec_task(server, command) -> dict:
    reply = server.request("tools/call", {"name": "remote_exec", "arguments": {"command": command}})
    result = reply["result"]
    assert result["resultType"] == "task" and result["status"] == "working", reply
    assert result["taskId"].startswith("job-") and result["pollIntervalMs"] == 1000
    return result


def task_until(server, task_id, done) -> dict:
    """Polls tasks/get until `done(result)` holds (bounded)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        result = server.request("tasks/get", {"taskId": task_id})["result"]
        if done(result):
            return result
        assert time.monotonic() < deadline, result
        time.sleep(0.05)


def test_a_task_reports_the_job_working_then_its_tool_result(tasks_client, tmp_path):
    gate = tmp_path / "go"
    task = exec_task(tasks_client, f"echo started; while [ ! -e {gate} ]; do sleep 0.05; done; echo finished")
    working = task_until(tasks_client, task["taskId"], lambda r: "started" in r.get("statusMessage", ""))
    assert working["status"] == "working" and "result" not in working
    gate.touch()
    done = task_until(tasks_client, task["taskId"], lambda r: r["status"] != "working")
    assert done["status"] == "completed", done
    result = done["result"]
    assert result["isError"] is False
    structured = result["structuredContent"]
    assert structured["exit_code"] == 0 and structured["stdout"] == "started\nfinished\n"
    assert structured["job_id"] == task["taskId"]
    assert result["content"][0]["text"].startswith("exit 0 on local")


def test_tasks_cancel_kills_the_process_tree(tasks_client):
    task = exec_task(tasks_client, "echo $$; sleep 300 & echo $!; wait")
    working = task_until(tasks_client, task["taskId"], lambda r: len(r.get("statusMessage", "").split()) == 2)
    pids = working["statusMessage"].split()
    ack = tasks_client.request("tasks/cancel", {"taskId": task["taskId"]})
    assert "error" not in ack and ack["result"].get("resultType") == "complete", ack
    wait_dead_sync(pids)
    cancelled = task_until(tasks_client, task["taskId"], lambda r: r["status"] != "working")
    assert cancelled["status"] == "cancelled", cancelled


def test_a_transfer_is_a_task_too(tasks_client, tmp_path):
    source, dest = tmp_path / "src", tmp_path / "dst"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "a.bin").write_bytes(b"x" * 100_000)
    reply = tasks_client.request("tools/call", {"name": "transfer", "arguments": {
        "source": str(source), "destination": str(dest)}})
    task = reply["result"]
    assert task["resultType"] == "task" and task["taskId"].startswith("job-"), reply
    done = task_until(tasks_client, task["taskId"], lambda r: r["status"] != "working")
    assert done["status"] == "completed" and done["result"]["isError"] is False, done
    structured = done["result"]["structuredContent"]
    assert structured["status"] == "done" and structured["files"] == 1, structured
    assert structured["bytes"] == 100_000, structured
    assert (dest / "sub" / "a.bin").read_bytes() == b"x" * 100_000
    # A copy that cannot start is the tool's error result, not a task.
    refused = tasks_client.request("tools/call", {"name": "transfer", "arguments": {
        "source": "nowhere:/x", "destination": str(dest)}})["result"]
    assert refused.get("resultType", "complete") == "complete" and refused["isError"] is True, refused


def test_unknown_tasks_are_refused(tasks_client):
    for method in ("tasks/get", "tasks/cancel"):
        reply = tasks_client.request(method, {"taskId": "job-1-000000000000"})
        assert reply["error"]["code"] == -32602 and "unknown task" in reply["error"]["message"], reply


def test_a_client_without_the_extension_sees_no_task(raw):
    initialize(raw)
    reply = raw.request("tools/call", {"name": "remote_exec", "arguments": {"command": "echo plain"}})
    assert reply["result"]["structuredContent"]["stdout"] == "plain\n", reply
    assert "resultType" not in reply["result"]
    refused = raw.request("tasks/get", {"taskId": "job-1-000000000000"})
    assert refused["error"]["code"] == -32021, refused


def test_a_claude_turn_runs_as_a_task_and_completes_with_its_session(claude_env):
    env, _, project, _ = claude_env
    server = RawServer(env)
    try:
        initialize(server, {TASKS: {}})
        reply = server.request("tools/call", {"name": "spawn_claude", "arguments": {
            "prompt": "hello task", "host": "gpu", "cwd": str(project)}})
        task = reply["result"]
        assert task["resultType"] == "task" and task["status"] == "working", reply
        done = task_until(server, task["taskId"], lambda r: r["status"] != "working")
        assert done["status"] == "completed", done
        structured = done["result"]["structuredContent"]
        assert structured["status"] == "completed" and structured["session_id"], structured
        assert structured["result"].startswith("hello from fake claude: hello task")
        assert done["result"]["isError"] is False
    finally:
        server.close()


@pytest.mark.anyio
async def test_another_principals_task_is_an_unknown_task(env, tmp_path):
    secret = write_secret(tmp_path)
    tokens = {who: generate_token(env, secret, "--subject", who) for who in ("ana", "bob")}
    hello = initialize_message()
    hello["params"]["protocolVersion"] = "2025-11-25"
    hello["params"]["capabilities"] = {"extensions": {TASKS: {}}}
    with Served(env, tmp_path, "--websocket", "--port", "0", "--jwt-secret-file", str(secret)) as served:
        async with connect(served.url, additional_headers=auth_header(tokens["ana"]), proxy=None) as ana, \
                connect(served.url, additional_headers=auth_header(tokens["bob"]), proxy=None) as bob:
            for ws in (ana, bob):
                await ws.send(json.dumps(hello))
                assert "result" in json.loads(await ws.recv())
                await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            started = await ws_request(ana, 1, "tools/call", {
                "name": "remote_exec", "arguments": {"command": "sleep 300"}})
            task = started["result"]["taskId"]
            never = "job-1-000000000000"
            for method in ("tasks/get", "tasks/cancel"):
                theirs = await ws_request(bob, 2, method, {"taskId": task})
                unknown = await ws_request(bob, 2, method, {"taskId": never})
                assert json.dumps(theirs).replace(task, never) == json.dumps(unknown), (theirs, unknown)
                assert theirs["error"]["code"] == -32602
            mine = await ws_request(ana, 3, "tasks/get", {"taskId": task})
            assert mine["result"]["status"] == "working", "bob's cancel did nothing"
            assert "error" not in await ws_request(ana, 4, "tasks/cancel", {"taskId": task})
