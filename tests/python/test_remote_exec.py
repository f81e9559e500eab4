"""remote_exec, job_output, job_kill and list_hosts through the official MCP Python SDK over stdio."""

import anyio
import pytest
from mcp import MCPError

from conftest import HANG_GUARD, data, text, wait_dead, wait_for_lines

pytestmark = pytest.mark.anyio


async def test_lists_the_tools_with_schemas(session):
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"remote_exec", "job_output", "job_kill", "list_jobs", "list_hosts", "spawn_claude", "list_sessions",
                          "sync_sessions", "transfer"}
    transfer = tools["transfer"]
    assert transfer.input_schema["required"] == ["source", "destination"]
    for field in ("status", "files", "skipped", "bytes", "resumed_bytes", "destination", "error", "job_id"):
        assert field in transfer.output_schema["properties"], field
    claude = tools["spawn_claude"]
    assert claude.input_schema["required"] == ["prompt"]
    for field in ("session_id", "result", "is_error", "subtype", "num_turns", "total_cost_usd", "duration_ms",
                  "permission_denials"):
        assert field in claude.output_schema["properties"], field
    exec_tool = tools["remote_exec"]
    assert exec_tool.input_schema["required"] == ["command"]
    assert {"host", "command", "cwd", "env", "stdin", "timeout_secs", "background"} <= set(
        exec_tool.input_schema["properties"])
    out = exec_tool.output_schema["properties"]
    for field in ("exit_code", "signal", "stdout", "stderr", "truncated", "timed_out", "duration_ms", "job_id"):
        assert field in out, field


async def test_exit_code_stdout_and_stderr(session):
    result = await session.call_tool("remote_exec", {"command": "echo out; echo err >&2; exit 3"})
    assert not result.is_error
    d = data(result)
    assert (d["exit_code"], d["signal"], d["stdout"], d["stderr"]) == (3, None, "out\n", "err\n")
    assert d["truncated"] is False and d["timed_out"] is False and d["status"] == "exited"
    assert "job_id" not in d
    assert "exit 3" in text(result) and "out" in text(result) and "err" in text(result)


async def test_cwd_env_and_stdin(session, tmp_path):
    result = await session.call_tool("remote_exec", {
        "command": 'pwd; printf "%s\\n" "$SECRET_TOKEN"; tr a-z A-Z',
        "cwd": str(tmp_path), "env": {"SECRET_TOKEN": "s3cr3t value"}, "stdin": "shout this",
    })
    assert data(result)["stdout"] == f"{tmp_path.resolve()}\ns3cr3t value\nSHOUT THIS"


async def test_failures_to_run_are_errors_that_say_why(session):
    missing = await session.call_tool("remote_exec", {"command": "true", "cwd": "/no/such/dir"})
    assert missing.is_error and "/no/such/dir" in text(missing) and "does not exist" in text(missing)
    unknown = await session.call_tool("remote_exec", {"command": "true", "host": "nowhere"})
    assert unknown.is_error and "unknown host `nowhere`" in text(unknown) and "local" in text(unknown)
    too_long = await session.call_tool("remote_exec", {"command": "true", "timeout_secs": 10**9})
    assert too_long.is_error and "timeout_secs" in text(too_long)
    bad_type = await session.call_tool("remote_exec", {"command": ["not", "a", "string"]})
    assert bad_type.is_error and "invalid type" in text(bad_type)
    # ...and the server carries on.
    assert data(await session.call_tool("remote_exec", {"command": "echo alive"}))["stdout"] == "alive\n"


async def test_progress_carries_the_newest_output(session):
    seen = []

    async def on_progress(progress, total, message):
        seen.append((progress, message))

    result = await session.call_tool(
        "remote_exec",
        {"command": "for i in 1 2 3 4 5 6; do echo step $i; sleep 0.3; done"},
        progress_callback=on_progress,
    )
    assert data(result)["exit_code"] == 0
    assert len(seen) >= 2, seen
    values = [p for p, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert all("step" in m for _, m in seen)


async def test_timeout_kills_the_tree_and_keeps_output(session):
    result = await session.call_tool("remote_exec", {
        "command": "echo $$; sleep 300 & echo $!; echo partial; wait", "timeout_secs": 1,
    })
    assert result.is_error
    d = data(result)
    assert d["timed_out"] is True and d["status"] == "timed_out" and d["exit_code"] is None
    pids = d["stdout"].split()[:2]
    assert "partial" in d["stdout"]
    assert "timed out" in text(result)
    await wait_dead(pids)


async def test_cancel_kills_the_tree(session, tmp_path):
    pidfile = tmp_path / "pids"

    async def call():
        await session.call_tool("remote_exec", {
            "command": f"echo $$ > {pidfile}; sleep 300 & echo $! >> {pidfile}; wait"})

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        pids = await wait_for_lines(pidfile, 2)
        tg.cancel_scope.cancel()
    await wait_dead(pids)
    # The session is still usable.
    assert data(await session.call_tool("remote_exec", {"command": "echo next"}))["stdout"] == "next\n"


async def test_request_timeout_on_the_client_cancels_too(session, tmp_path):
    pidfile = tmp_path / "pids"
    with pytest.raises(MCPError):
        await session.call_tool("remote_exec", {
            "command": f"echo $$ > {pidfile}; exec sleep 300"}, read_timeout_seconds=2)
    await wait_dead(await wait_for_lines(pidfile, 1))


async def test_background_job_lifecycle(session):
    started = await session.call_tool("remote_exec", {
        "command": "for i in 1 2 3 4; do echo tick $i; sleep 0.3; done; echo done >&2; exit 4",
        "background": True,
    })
    d = data(started)
    assert d["status"] == "running" and d["exit_code"] is None
    job = d["job_id"]
    output, offset = "", 0
    with anyio.fail_after(HANG_GUARD):
        while True:
            r = data(await session.call_tool("job_output", {"job_id": job, "offset": offset, "wait_secs": 5}))
            assert r["offset"] == offset and r["dropped_bytes"] == 0
            output += r["output"]
            offset = r["next_offset"]
            if r["status"] != "running" and not r["more"]:
                break
    assert output == "tick 1\ntick 2\ntick 3\ntick 4\ndone\n"
    assert (r["status"], r["exit_code"], r["job_id"]) == ("exited", 4, job)
    # Reading again from 0 gives it all again.
    again = data(await session.call_tool("job_output", {"job_id": job}))
    assert again["output"] == output


async def test_job_kill_kills_the_tree(session):
    started = data(await session.call_tool("remote_exec", {
        "command": "echo $$; sleep 300 & echo $!; wait", "background": True}))
    job = started["job_id"]
    with anyio.fail_after(HANG_GUARD):
        while len((out := data(await session.call_tool(
                "job_output", {"job_id": job, "wait_secs": 2}))["output"]).split()) < 2:
            pass
    killed = data(await session.call_tool("job_kill", {"job_id": job}))
    assert killed["status"] == "killed" and killed["signal"] == "SIGTERM"
    await wait_dead(out.split())
    status = data(await session.call_tool("job_output", {"job_id": job}))
    assert status["status"] == "killed"


async def test_background_job_times_out(session):
    started = data(await session.call_tool("remote_exec", {
        "command": "sleep 300", "background": True, "timeout_secs": 1}))
    r = data(await session.call_tool("job_output", {"job_id": started["job_id"], "wait_secs": 20}))
    assert r["status"] == "timed_out" and r["timed_out"] is True


async def test_unknown_job_is_an_error(session):
    for tool in ("job_output", "job_kill"):
        r = await session.call_tool(tool, {"job_id": "job-999-0000"})
        assert r.is_error and "no job `job-999-0000`" in text(r)


async def test_twenty_megabytes_are_capped_and_kept_for_job_output(session):
    size = 20_000_000
    result = await session.call_tool("remote_exec", {
        "command": f"head -c {size} /dev/zero | tr '\\0' x; echo; echo the end"})
    d = data(result)
    assert d["exit_code"] == 0 and d["truncated"] is True
    assert len(d["stdout"]) <= 30_100
    assert d["stdout"].startswith("xxxx") and d["stdout"].endswith("the end\n")
    assert "bytes omitted" in d["stdout"]
    assert len(text(result)) <= 31_000
    job = d["job_id"]
    first = data(await session.call_tool("job_output", {"job_id": job, "max_bytes": 1000}))
    total = size + len("\nthe end\n")
    assert first["dropped_bytes"] > 0 and first["offset"] == total - 8 * 1024 * 1024
    assert len(first["output"]) == 1000 and first["more"] is True
    tail = data(await session.call_tool("job_output", {"job_id": job, "offset": total - 8}))
    assert tail["output"] == "the end\n" and tail["next_offset"] == total and tail["more"] is False


async def test_list_hosts_shows_local_remotes_and_ssh_aliases(env, tmp_path):
    import json
    import pathlib
    from conftest import open_session
    home = pathlib.Path(env["HOME"])
    (home / ".ssh" / "config").write_text("Host devbox\n  HostName 127.0.0.1\nHost *.corp\n  User x\n")
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({
        "default_host": "gpu", "remotes": {"gpu": {"host": "gpu.example", "user": "me", "port": 2222}}}))
    async with open_session(env) as s:
        d = data(await s.call_tool("list_hosts", {}))
    hosts = {h["name"]: h for h in d["hosts"]}
    assert d["default_host"] == "gpu"
    assert set(hosts) == {"local", "gpu", "devbox"}
    assert hosts["local"]["kind"] == "local" and hosts["local"]["state"] == "ready"
    assert hosts["gpu"]["target"] == "me@gpu.example:2222" and hosts["gpu"]["default"] is True
    assert hosts["devbox"]["source"] == "ssh_config"
