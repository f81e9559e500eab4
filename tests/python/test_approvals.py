"""Remote Claude asks the person: its permission prompts (`--permission-prompt-tool stdio`, the fake
claude faithful to the captured `can_use_tool` sample) become elicitations to the MCP client that
started the turn or follows its job; without one that can answer, they are denied, saying why."""

import contextlib
import inspect
import json
import os
import pathlib

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types

from conftest import BIN, HANG_GUARD, data, text
from test_claude import claude_env, launches  # noqa: F401 (claude_env is a fixture)

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def session(env, answer=None):
    """A session whose user answers every question with `answer(params)` (an ElicitResult, or
    an awaitable of one);
    without `answer`, the client cannot be asked at all. Questions asked go to `.asked`."""
    asked = []

    async def on_question(context, params):
        asked.append(params)
        result = answer(params)
        return await result if inspect.isawaitable(result) else result

    params = StdioServerParameters(command=BIN, args=["mcp", "serve"], env=env)
    with open(os.devnull, "w") as err:
        async with stdio_client(params, errlog=err) as (read, write):
            callback = on_question if answer is not None else None
            async with ClientSession(read, write, elicitation_callback=callback) as s:
                await s.initialize()
                s.asked = asked
                yield s


def choose(decision, note=None):
    content = {"decision": decision} | ({"note": note} if note else {})
    return lambda params: types.ElicitResult(action="accept", content=content)


async def turn(s, prompt, project, **args):
    return await s.call_tool("spawn_claude", {"prompt": prompt, "host": "gpu", "cwd": str(project), **args})


async def test_an_allowed_tool_use_runs_and_the_person_saw_what_it_does(claude_env, tmp_path):
    env, _, project, _ = claude_env
    marker = tmp_path / "allowed"
    async with session(env, choose("allow")) as s:
        r = await turn(s, f"write {marker}", project)
        d = data(r)
        assert not r.is_error and d["permission_denials"] == [], text(r)
        assert marker.exists()
        [question] = s.asked
        assert f"touch {marker}" in question.message and "gpu" in question.message
        assert "Bash" in question.message and str(project.resolve()) in question.message
        choices = question.requested_schema["properties"]["decision"]["oneOf"]
        assert [c["const"] for c in choices] == ["allow", "allow_tool", "deny"]
    # Claude was started so that it asks (and never with permissions skipped).
    argv = launches(tmp_path)[-1]["argv"]
    assert argv[argv.index("--permission-prompt-tool") + 1] == "stdio"
    assert "--dangerously-skip-permissions" not in argv


async def test_a_denial_reaches_claude_with_its_reason(claude_env, tmp_path):
    env, _, project, _ = claude_env
    marker = tmp_path / "denied"
    async with session(env, choose("deny", "not on this box")) as s:
        d = data(await turn(s, f"write {marker}", project))
    assert not marker.exists()
    assert [x["tool_name"] for x in d["permission_denials"]] == ["Bash"]
    assert "denied: not on this box" in d["result"]


async def test_declining_the_question_denies(claude_env, tmp_path):
    env, _, project, _ = claude_env
    marker = tmp_path / "declined"
    decline = lambda params: types.ElicitResult(action="decline")  # noqa: E731
    async with session(env, decline) as s:
        d = data(await turn(s, f"write {marker}", project))
    assert not marker.exists() and len(d["permission_denials"]) == 1
    assert "the user declined" in d["result"]


async def test_a_client_that_cannot_ask_gets_a_denial_saying_why(claude_env, tmp_path):
    env, _, project, _ = claude_env
    marker = tmp_path / "unasked"
    async with session(env) as s:
        d = data(await turn(s, f"write {marker}", project))
    assert not marker.exists() and len(d["permission_denials"]) == 1
    assert "cannot ask its user" in d["result"] and "allowed_tools" in d["result"]


async def test_allowing_the_tool_for_the_session_asks_once(claude_env, tmp_path):
    env, _, project, _ = claude_env
    first, second, third = (tmp_path / n for n in ("one", "two", "three"))
    async with session(env, choose("allow_tool")) as s:
        d = data(await turn(s, f"write {first} {second}", project))
        assert first.exists() and second.exists() and d["permission_denials"] == []
        # The next turn of the same session, on the same (warm) process: still allowed.
        d = data(await s.call_tool("spawn_claude", {"prompt": f"write {third}", "session_id": d["session_id"]}))
        assert third.exists() and d["warm"] is True
        assert len(s.asked) == 1


async def test_a_background_turn_asks_on_the_next_job_output_of_a_client_that_can(claude_env, tmp_path):
    env, _, project, _ = claude_env
    marker = tmp_path / "later"
    async with session(env, choose("allow")) as s:
        job = data(await turn(s, f"write {marker}", project, background=True))["job_id"]
        with anyio.fail_after(HANG_GUARD):
            while True:
                listed = data(await s.call_tool("list_jobs", {}))["jobs"]
                if listed[0].get("awaiting_approval"):
                    break
                await anyio.sleep(0.05)
        assert listed[0]["awaiting_approval"] == f"Bash: touch {marker}"
        assert s.asked == [] and not marker.exists()
        with anyio.fail_after(HANG_GUARD):
            out = data(await s.call_tool("job_output", {"job_id": job, "wait_secs": 5}))
            while out["status"] == "running":
                out = data(await s.call_tool("job_output", {"job_id": job, "wait_secs": 5}))
        assert len(s.asked) == 1 and marker.exists()
        assert f"waiting for approval: Bash: touch {marker}" in out["output"] or out["offset"] > 0
        assert out["claude"]["permission_denials"] == []


async def test_a_prompt_nobody_answers_is_denied_after_the_timeout(claude_env, tmp_path):
    env, config, project, _ = claude_env
    config["claude"]["approval_timeout_secs"] = 1
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    marker = tmp_path / "timeout"
    async with session(env) as s:
        job = data(await turn(s, f"write {marker}", project, background=True))["job_id"]
        with anyio.fail_after(HANG_GUARD):
            out = data(await s.call_tool("job_output", {"job_id": job, "wait_secs": 5}))
            while out["status"] == "running" or out["more"]:
                out = data(await s.call_tool("job_output", {
                    "job_id": job, "offset": out["next_offset"], "wait_secs": 5}))
    assert not marker.exists()
    denial = out["claude"]["result"]
    assert "nobody approved it within 1 s" in denial, out
    assert len(out["claude"]["permission_denials"]) == 1


async def test_decisions_are_written_to_the_audit_log_with_who_decided(claude_env, tmp_path):
    env, config, project, _ = claude_env
    log = tmp_path / "audit.log"
    config["audit"] = {"enabled": True, "path": str(log)}
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    allowed, denied = tmp_path / "a", tmp_path / "d"
    answers = iter([choose("allow"), choose("deny", "no")])
    async with session(env, lambda params: next(answers)(params)) as s:
        await turn(s, f"write {allowed} {denied}", project)
    decisions = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("event") == "decision"]
    assert [(d["what"], d["decision"], d["decided_by"], d.get("reason")) for d in decisions] == [
        (f"claude tool Bash: touch {allowed}", "allowed", "stdio", None),
        (f"claude tool Bash: touch {denied}", "denied", "stdio", "no"),
    ], decisions
    assert all(d["principal"] == "stdio" and d["host"] == "gpu" for d in decisions)


async def test_an_answer_after_the_call_detached_still_counts(claude_env, tmp_path):
    env, _, project, _ = claude_env
    marker = tmp_path / "slow-yes"

    async def slowly(params):
        await anyio.sleep(2.5)  # the person takes longer than the call waits (detach at 1 s)
        return types.ElicitResult(action="accept", content={"decision": "allow"})

    async with session(env, slowly) as s:
        d = data(await turn(s, f"write {marker}", project, detach_after_secs=1))
        assert d["status"] == "running", d
        with anyio.fail_after(HANG_GUARD):
            out = data(await s.call_tool("job_output", {"job_id": d["job_id"], "wait_secs": 5}))
            while out["status"] == "running":
                out = data(await s.call_tool("job_output", {"job_id": d["job_id"], "wait_secs": 5}))
    assert marker.exists() and out["claude"]["permission_denials"] == [], out


async def test_a_prompt_of_a_killed_turn_is_withdrawn(claude_env, tmp_path):
    env, _, project, _ = claude_env
    marker = tmp_path / "never"
    async with session(env) as s:
        job = data(await turn(s, f"write {marker}", project, background=True))["job_id"]
        with anyio.fail_after(HANG_GUARD):
            while not data(await s.call_tool("list_jobs", {}))["jobs"][0].get("awaiting_approval"):
                await anyio.sleep(0.05)
        killed = data(await s.call_tool("job_kill", {"job_id": job}))
        assert killed["status"] == "killed" and "awaiting_approval" not in killed, killed
        with anyio.fail_after(HANG_GUARD):
            while data(await s.call_tool("list_jobs", {}))["jobs"][0].get("awaiting_approval"):
                await anyio.sleep(0.05)
    assert not marker.exists()
