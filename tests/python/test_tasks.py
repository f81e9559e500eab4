"""SEP-2663 tasks (`io.modelcontextprotocol/tasks`): remote_exec as a task mapped onto a job, raw JSON-RPC over stdio."""
import time

import pytest

from conftest import HANG_GUARD, RawServer, wait_dead_sync

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
