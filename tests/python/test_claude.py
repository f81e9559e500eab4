"""`spawn_claude` and `list_sessions` against a faithful fake `claude` (tests/fake_claude/claude) run
over the real test sshd, driven through the MCP SDK."""

import contextlib
import functools
import json
import os
import pathlib
import re
import subprocess
import uuid

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from conftest import BIN, HANG_GUARD, ROOT, data, text, wait_dead

pytestmark = pytest.mark.anyio
FAKE = str(ROOT / "tests" / "fake_claude" / "claude")
SECRET = "sk-ant-test-" + uuid.uuid4().hex


@pytest.fixture
def claude_env(env, sshd, tmp_path):
    """Server env and config: remote `gpu` (the test sshd) with the fake claude, an API key to forward."""
    sshd.trust()
    remote_claude = tmp_path / "remote-claude"
    project = tmp_path / "proj"
    project.mkdir()
    config = {
        "remotes": {"gpu": {
            "host": "box", "claude_path": FAKE, "forward_env": ["ANTHROPIC_API_KEY"],
            "claude_env": {"CLAUDE_CONFIG_DIR": str(remote_claude), "FAKE_CLAUDE_LOG": str(tmp_path / "launches")},
        }},
        "claude": {"interrupt_grace_secs": 2},
    }
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    env = dict(env, ANTHROPIC_API_KEY=SECRET)
    return env, config, project, remote_claude


def write_config(env, config):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))


@contextlib.asynccontextmanager
async def server(env, errlog=None, logs=None):
    async def on_log(params):
        if logs is not None:
            logs.append(params)

    params = StdioServerParameters(command=BIN, args=["mcp", "serve"], env=env)
    with open(os.devnull, "w") if errlog is None else contextlib.nullcontext(errlog) as err:
        async with stdio_client(params, errlog=err) as (read, write):
            async with ClientSession(read, write, logging_callback=on_log) as session:
                await session.initialize()
                yield session


async def claude(session, prompt, progress=None, **args):
    async def on_progress(value, total, message):
        if progress is not None:
            progress.append(message)
    return await session.call_tool("spawn_claude", {"prompt": prompt, **args},
                                   progress_callback=on_progress if progress is not None else None)


@contextlib.asynccontextmanager
async def slow_turn_under_way(session, session_id):
    """A long turn on `session_id`, started and seen working; cancelled (interrupted) on exit."""
    progress = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(functools.partial(claude, session, "slow story", progress, session_id=session_id))
        with anyio.fail_after(HANG_GUARD):
            while "assistant: starting slowly" not in "\n".join(progress).splitlines():
                await anyio.sleep(0.05)
        yield
        tg.cancel_scope.cancel()


def pid_of(result) -> int:
    return pid_of_data(data(result))


def launches(tmp_path):
    path = tmp_path / "launches"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


async def test_first_turn_streams_then_the_second_turn_is_warm(claude_env, tmp_path):
    env, _, project, remote_claude = claude_env
    progress = []
    async with server(env) as s:
        first = await claude(s, "tool please", progress, host="gpu", cwd=str(project))
        d = data(first)
        assert not first.is_error, text(first)
        assert d["status"] == "completed" and d["warm"] is False and d["host"] == "gpu"
        assert d["cwd"] == str(project.resolve()) and d["num_turns"] == 2
        assert d["result"].startswith("mock saw tool result") and d["subtype"] == "success"
        # Each event's line, in some progress message (several may share one).
        lines = "\n".join(progress).splitlines()
        assert "tool Bash: echo tool-output-42" in lines
        assert "tool result: tool-output-42" in lines
        assert any(line.startswith("session ") for line in lines)
        # Only the session id: same host, same project, same process.
        second = await claude(s, "again", session_id=d["session_id"])
        d2 = data(second)
        assert d2["warm"] is True and d2["host"] == "gpu" and d2["session_id"] == d["session_id"]
        assert pid_of(second) == pid_of(first) and "turn=2" in d2["result"]
        assert len(launches(tmp_path)) == 1
    session_file = remote_claude / "projects" / re.sub(r"[^A-Za-z0-9]", "-", str(project.resolve())) \
        / f"{d['session_id']}.jsonl"
    records = [json.loads(l) for l in session_file.read_text().splitlines()]
    assert records[-1]["type"] == "last-prompt", "closed gently at shutdown (EOF), not killed"
    await wait_dead([pid_of(first)])


async def test_resume_after_a_server_restart_and_list_sessions(claude_env, tmp_path):
    env, _, project, _ = claude_env
    async with server(env) as s:
        first = data(await claude(s, "remember me", host="gpu", cwd=str(project)))
    async with server(env) as s:
        listing = data(await s.call_tool("list_sessions", {"host": "gpu"}))["sessions"]
        assert [r["session_id"] for r in listing] == [first["session_id"]]
        assert listing[0]["status"] == "closed" and listing[0]["cwd"] == str(project.resolve())
        assert listing[0]["turns"] == 1 and "remember me" in listing[0]["last_result"]
        again = await claude(s, "back again", session_id=first["session_id"])
        d = data(again)
        assert not again.is_error, text(again)
        assert d["warm"] is False and d["host"] == "gpu" and "history=1" in d["result"]
        assert launches(tmp_path)[-1]["argv"][launches(tmp_path)[-1]["argv"].index("--resume") + 1] \
            == first["session_id"]
        listing = data(await s.call_tool("list_sessions", {}))["sessions"]
        assert listing[0]["status"] == "warm" and listing[0]["turns"] == 2
        assert data(await s.call_tool("list_sessions", {"host": "elsewhere"}))["sessions"] == []


async def test_fork_makes_a_new_session_and_leaves_the_original(claude_env):
    env, _, project, _ = claude_env
    async with server(env) as s:
        base = data(await claude(s, "base", host="gpu", cwd=str(project)))
        fork = await claude(s, "forked", session_id=base["session_id"], fork=True)
        f = data(fork)
        assert not fork.is_error, text(fork)
        assert f["session_id"] != base["session_id"] and f["forked_from"] == base["session_id"]
        assert "history=1" in f["result"]
        again = data(await claude(s, "original", session_id=base["session_id"]))
        assert again["warm"] is True and again["session_id"] == base["session_id"]
        follow = data(await claude(s, "fork again", session_id=f["session_id"]))
        assert follow["warm"] is True and follow["session_id"] == f["session_id"]


async def test_cancel_interrupts_the_turn_and_the_process_stays_usable(claude_env):
    env, _, project, _ = claude_env
    async with server(env) as s:
        base = data(await claude(s, "hello", host="gpu", cwd=str(project)))
        async with slow_turn_under_way(s, base["session_id"]):
            pass
        after = await claude(s, "after the interrupt", session_id=base["session_id"])
        d = data(after)
        assert not after.is_error and d["warm"] is True, text(after)
        assert "turn=3" in d["result"], "the same process took the interrupted turn and this one"


async def test_timeout_interrupts_and_a_stubborn_process_is_killed(claude_env):
    env, _, project, _ = claude_env
    async with server(env) as s:
        slow = await claude(s, "slow story", host="gpu", cwd=str(project), timeout_secs=1)
        d = data(slow)
        assert slow.is_error and d["status"] == "timed_out"
        assert d["terminal_reason"] == "aborted_streaming" and "resumable" in text(slow)
        warm = data(await claude(s, "still here", session_id=d["session_id"]))
        assert warm["warm"] is True
        pid = pid_of(await claude(s, "once more", session_id=d["session_id"]))
        stubborn = await claude(s, "stubborn story", session_id=d["session_id"], timeout_secs=1)
        d = data(stubborn)
        assert stubborn.is_error and d["status"] == "timed_out" and d["terminal_reason"] == "killed"
        await wait_dead([pid])
        resumed = data(await claude(s, "resumed", session_id=d["session_id"]))
        assert resumed["warm"] is False and pid_of_data(resumed) != pid


def pid_of_data(d) -> int:
    return int(re.search(r"pid=(\d+)", d["result"]).group(1))


async def test_clear_errors(claude_env, tmp_path):
    env, config, project, _ = claude_env
    config["remotes"]["nowhere"] = dict(config["remotes"]["gpu"], claude_path="/opt/none/claude")
    write_config(env, config)
    async with server(env) as s:
        missing = str(uuid.uuid4())
        r = await claude(s, "hi", host="gpu", cwd=str(project), session_id=missing)
        assert r.is_error and f"no session `{missing}`" in text(r) and "same project directory" in text(r)
        r = await claude(s, "hi", host="gpu", cwd=str(tmp_path / "nope"))
        assert r.is_error and "does not exist" in text(r)
        r = await claude(s, "hi", host="nowhere", cwd=str(project))
        assert r.is_error and "`claude` was not found" in text(r) and "/opt/none/claude" in text(r)
        r = await claude(s, "api-401 please", host="gpu", cwd=str(project))
        d = data(r)
        assert r.is_error and d["is_error"] and d["subtype"] == "success" and d["api_error_status"] == 401
        assert "ANTHROPIC_API_KEY" in text(r)
        # Claude Code shows a model only the text of an error: it carries the structured fields too.
        for line in ("api_error_status: 401", f"session_id: {d['session_id']}", "status: completed",
                     "is_error: true", "host: gpu", f"cwd: {d['cwd']}"):
            assert line in text(r).splitlines(), (line, text(r))
        ok = data(await claude(s, "hello", host="gpu", cwd=str(project)))
        r = await claude(s, "die now", session_id=ok["session_id"])
        assert r.is_error and "ended mid-turn (exit code 3)" in text(r) and "simulated crash" in text(r)
        r = await claude(s, "back after the crash", session_id=ok["session_id"])
        assert not r.is_error and data(r)["warm"] is False and "history=1" in data(r)["result"], text(r)
        r = await claude(s, "hi", session_id="x", fork=False, host="gpu", cwd=str(project))
        assert r.is_error and "no session `x`" in text(r)
        r = await claude(s, "hi", fork=True)
        assert r.is_error and "fork" in text(r)
        r = await claude(s, "tool", host="gpu", cwd=str(project), max_turns=1)
        assert r.is_error and data(r)["subtype"] == "error_max_turns" and "max_turns" in text(r)


async def test_claude_is_searched_for_where_installers_put_it(env, tmp_path):
    home = pathlib.Path(env["HOME"])
    project = tmp_path / "p"
    project.mkdir()
    env = dict(env, PATH="/usr/bin:/bin", SHELL="/bin/sh", CLAUDE_CONFIG_DIR=str(tmp_path / "cc"))
    async with server(env) as s:
        r = await claude(s, "hi", host="local", cwd=str(project))
        assert r.is_error and "`claude` was not found on host `local`" in text(r)
        for place in (".local/bin/claude", ".claude/local/claude", "npm's global bin", "-lc 'command -v claude'"):
            assert place in text(r)
        (home / ".local" / "bin").mkdir(parents=True)
        (home / ".local" / "bin" / "claude").symlink_to(FAKE)
        r = await claude(s, "hi", host="local", cwd=str(project))
        assert not r.is_error and "hello from fake claude" in data(r)["result"], text(r)


async def test_two_sessions_run_at_once_on_one_host(claude_env, tmp_path):
    env, _, project, _ = claude_env
    gate = tmp_path / "gate"
    gate.mkdir()
    results = []
    async with server(env) as s:
        async def one():
            results.append(await claude(s, f"barrier {gate} 2", host="gpu", cwd=str(project)))
        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                tg.start_soon(one)
    assert all(not r.is_error for r in results), [text(r) for r in results]
    assert len({data(r)["session_id"] for r in results}) == 2


async def test_a_prompt_for_a_busy_session_waits_its_turn(claude_env, tmp_path):
    env, _, project, _ = claude_env
    async with server(env) as s:
        base = data(await claude(s, "hello", host="gpu", cwd=str(project)))
        results = []
        async def one(prompt):
            results.append(data(await claude(s, prompt, session_id=base["session_id"])))
        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, "first of two")
                tg.start_soon(one, "second of two")
        assert sorted(re.search(r"turn=(\d)", r["result"]).group(1) for r in results) == ["2", "3"]
        assert all(r["warm"] for r in results)


async def test_the_secret_reaches_claude_but_never_argv_ps_or_logs(claude_env, tmp_path):
    env, _, project, _ = claude_env
    errlog = open(tmp_path / "server.log", "w+")
    env = dict(env, RUST_LOG="debug")
    async with server(env, errlog=errlog) as s:
        base = data(await claude(s, "env check", host="gpu", cwd=str(project)))
        import hashlib
        assert hashlib.sha256(SECRET.encode()).hexdigest()[:12] in base["result"]
        async with slow_turn_under_way(s, base["session_id"]):
            listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
        assert "fake_claude/claude" in listing and SECRET not in listing
    errlog.seek(0)
    log = errlog.read()
    assert "claude started" in log and SECRET not in log
    assert SECRET not in (tmp_path / "launches").read_text()


async def test_background_turn_is_followed_with_job_output(claude_env):
    env, _, project, _ = claude_env
    async with server(env) as s:
        started = data(await claude(s, "tool in background", host="gpu", cwd=str(project), background=True))
        assert started["status"] == "running" and started["job_id"]
        with anyio.fail_after(HANG_GUARD):
            while True:
                out = data(await s.call_tool("job_output", {"job_id": started["job_id"], "wait_secs": 5}))
                if out["status"] != "running":
                    break
        assert out["status"] == "exited" and "tool Bash: echo tool-output-42" in out["output"]
        assert out["claude"]["status"] == "completed" and out["claude"]["num_turns"] == 2
        slow = data(await claude(s, "slow story", session_id=out["claude"]["session_id"], background=True))
        assert slow["host"] == "gpu" and slow["cwd"] == str(project.resolve()), "the session's recorded place"
        with anyio.fail_after(HANG_GUARD):  # under way (after the first turn's background pull)
            while "starting slowly" not in data(await s.call_tool(
                    "job_output", {"job_id": slow["job_id"], "wait_secs": 1}))["output"]:
                pass
        killed = data(await s.call_tool("job_kill", {"job_id": slow["job_id"]}))
        assert killed["status"] == "killed"
        out = data(await s.call_tool("job_output", {"job_id": slow["job_id"]}))
        assert out["claude"]["status"] == "interrupted"


async def test_changed_options_restart_with_resume_and_the_cap_closes_the_lru(claude_env, tmp_path):
    env, config, project, _ = claude_env
    config["claude"].update(max_processes_per_host=1)
    write_config(env, config)
    async with server(env) as s:
        a = await claude(s, "env a", host="gpu", cwd=str(project))
        b = await claude(s, "env b", session_id=data(a)["session_id"], model="sonnet",
                         permission_mode="acceptEdits", allowed_tools=["Bash(git log:*)", "Edit"])
        d = data(b)
        assert d["warm"] is False and "model sonnet; mode acceptEdits; allowed Bash(git log:*),Edit" in d["result"]
        await wait_dead([pid_of(a)])
        other = await claude(s, "another session", host="gpu", cwd=str(project))
        await wait_dead([pid_of(b)])
        sessions = {r["session_id"]: r for r in data(await s.call_tool("list_sessions", {}))["sessions"]}
        assert sessions[d["session_id"]]["status"] == "closed"
        assert sessions[data(other)["session_id"]]["status"] == "warm"


async def test_idle_processes_close_and_debug_logs_carry_raw_events(claude_env):
    env, config, project, _ = claude_env
    config["claude"].update(idle_timeout_secs=1)
    write_config(env, config)
    logs = []
    async with server(env, logs=logs) as s:
        await s.set_logging_level("debug")
        r = await claude(s, "hello", host="gpu", cwd=str(project))
        await wait_dead([pid_of(r)])
        listing = data(await s.call_tool("list_sessions", {}))["sessions"]
        assert listing[0]["status"] == "closed"
    kinds = [(l.data.get("type"), l.data.get("subtype")) for l in logs if l.logger == "claude"]
    assert ("system", "init") in kinds and ("result", "success") in kinds
    assert all(l.level == "debug" for l in logs if l.logger == "claude")


async def test_a_detached_turn_finishes_as_a_job_with_its_session(claude_env, tmp_path):
    env, _, project, _ = claude_env
    gate = tmp_path / "gate"
    gate.mkdir()
    async with server(env) as s:
        # The turn waits at a barrier the test opens only after the call has detached.
        r = await claude(s, f"barrier {gate} 2", host="gpu", cwd=str(project), detach_after_secs=1)
        d = data(r)
        assert not r.is_error and d["status"] == "running", d
        assert d["job_id"] in d["next"] and d["session_id"], d
        assert "session " in d["events"], d
        (gate / "opened").touch()
        with anyio.fail_after(HANG_GUARD):
            while True:
                out = data(await s.call_tool("job_output", {"job_id": d["job_id"], "wait_secs": 5}))
                if out["status"] != "running":
                    break
        assert out["status"] == "exited" and out["claude"]["status"] == "completed", out
        assert out["claude"]["session_id"] == d["session_id"]
        assert out["claude"]["result"].startswith("hello from fake claude")
