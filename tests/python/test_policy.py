"""Command policy: `deny` refuses before anything starts; `confirm` asks the person (elicitation)
and runs only on their yes; with nobody to ask, nothing runs and the error names the policy."""

import json
import pathlib

import pytest

from asking import Person, asking_session
from conftest import data, open_session, text
from test_claude import claude_env  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio


def configure(env, config):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))


async def test_deny_refuses_before_anything_starts(env, tmp_path):
    configure(env, {"policy": {"deny": [r"\brm\s+-rf\b"]}})
    marker = tmp_path / "ran"
    person = Person("run")
    async with asking_session(env, person) as s:
        r = await s.call_tool("remote_exec", {"command": f"touch {marker}; rm -rf {tmp_path}/nothing"})
        assert r.is_error
        message = text(r)
        assert "policy.deny" in message and r"\brm\s+-rf\b" in message
        assert env["OUTPOST_CONFIG"] in message
        ok = await s.call_tool("remote_exec", {"command": "echo fine"})
        assert data(ok)["stdout"] == "fine\n"
    assert not marker.exists()
    assert person.questions == [], "a denied command is not asked about"


@pytest.mark.parametrize("decision", ["run", "refuse"])
async def test_a_matching_confirm_pattern_asks(env, tmp_path, decision):
    workdir = tmp_path / "work"
    workdir.mkdir()
    configure(env, {"remotes": {"box": {"kind": "command", "command": ["env"], "workspace": str(workdir),
                                        "policy": {"confirm": ["^touch "]}}}})
    marker = tmp_path / "ran"
    person = Person(decision)
    async with asking_session(env, person) as s:
        plain = await s.call_tool("remote_exec", {"host": "box", "command": "echo quiet"})
        assert data(plain)["stdout"] == "quiet\n"
        assert person.questions == []
        r = await s.call_tool("remote_exec", {"host": "box", "command": f"touch {marker}"})
    assert len(person.questions) == 1
    question = person.questions[0]
    assert f"touch {marker}" in question and str(workdir) in question
    assert "`box`" in question and "remotes.box.policy.confirm" in question and "^touch " in question
    if decision == "run":
        assert not r.is_error, text(r)
        assert marker.exists()
    else:
        assert r.is_error and "declined" in text(r) and "remotes.box.policy.confirm" in text(r)
        assert not marker.exists()


async def test_always_on_a_group_asks_for_every_command(env, tmp_path):
    configure(env, {
        "remotes": {"a": {"kind": "command", "command": ["env"]}, "b": {"kind": "command", "command": ["env"]}},
        "groups": {"prod": {"members": ["a", "b"], "policy": {"confirm": "always"}}},
    })
    marker = tmp_path / "ran"
    person = Person("refuse")
    async with asking_session(env, person) as s:
        # Named through the group or directly, a member is under the group's policy.
        for host in ["prod", "a"]:
            r = await s.call_tool("remote_exec", {"host": host, "command": f"touch {marker}"})
            assert r.is_error and "groups.prod.policy.confirm" in text(r)
    assert len(person.questions) == 2 and "group `prod`" in person.questions[0]
    assert not marker.exists()


async def test_without_elicitation_nothing_runs_and_the_error_names_the_policy(env, tmp_path):
    configure(env, {"policy": {"confirm": "always"}})
    marker = tmp_path / "ran"
    async with open_session(env) as s:
        r = await s.call_tool("remote_exec", {"command": f"touch {marker}"})
    message = text(r)
    assert r.is_error
    assert "policy.confirm" in message and env["OUTPOST_CONFIG"] in message
    assert "elicitation" in message, "says why nobody could be asked"
    assert not marker.exists()


async def test_a_background_command_is_confirmed_before_it_starts(env, tmp_path):
    configure(env, {"policy": {"confirm": ["touch"]}})
    marker = tmp_path / "ran"
    async with asking_session(env, Person("refuse")) as s:
        r = await s.call_tool("remote_exec", {"command": f"touch {marker}", "background": True})
    assert r.is_error and "declined" in text(r)
    assert not marker.exists()


@pytest.mark.parametrize("decision", ["run", "refuse"])
async def test_a_claude_prompt_under_always_is_shown_first(claude_env, tmp_path, decision):
    env, config, project, _ = claude_env
    config["remotes"]["gpu"]["policy"] = {"confirm": "always"}
    configure(env, config)
    launches = tmp_path / "launches"
    person = Person(decision)
    async with asking_session(env, person) as s:
        r = await s.call_tool("spawn_claude", {"host": "gpu", "cwd": str(project), "prompt": "tidy up the repo"})
    assert len(person.questions) == 1
    assert "tidy up the repo" in person.questions[0] and str(project) in person.questions[0]
    if decision == "run":
        assert not r.is_error, text(r)
        assert data(r)["session_id"]
        assert launches.exists()
    else:
        assert r.is_error and "Claude prompt" in text(r) and "remotes.gpu.policy.confirm" in text(r)
        assert not launches.exists(), "Claude never started"


async def test_a_session_push_under_always_is_confirmed(env, tmp_path):
    configure(env, {"remotes": {"box": {"kind": "command", "command": ["env"],
                                        "policy": {"confirm": "always"}}}})
    person = Person("refuse")
    async with asking_session(env, person) as s:
        r = await s.call_tool("sync_sessions", {"host": "box", "cwd": str(tmp_path), "direction": "push"})
        assert r.is_error and "session push" in text(r)
        # A pull is not subject to the policy.
        r = await s.call_tool("sync_sessions", {"host": "box", "cwd": str(tmp_path), "direction": "pull"})
        assert not r.is_error, text(r)
    assert len(person.questions) == 1 and str(tmp_path) in person.questions[0]


async def test_a_script_on_stdin_is_as_much_the_command(env, tmp_path):
    configure(env, {"policy": {"deny": [r"\breboot\b"], "confirm": ["^touch "]}})
    marker = tmp_path / "ran"
    person = Person("refuse")
    async with asking_session(env, person) as s:
        denied = await s.call_tool("remote_exec", {"command": "sh", "stdin": "echo hi\nreboot\n"})
        assert denied.is_error and "policy.deny" in text(denied), text(denied)
        refused = await s.call_tool("remote_exec", {
            "command": "sh", "stdin": f"touch {marker}\n", "env": {"TOKEN": "secret-value"}})
        assert refused.is_error
    assert not marker.exists()
    [question] = person.questions
    # The person sees what sh will read, and the variables' names, never their values.
    assert f"touch {marker}" in question and "TOKEN" in question and "secret-value" not in question
