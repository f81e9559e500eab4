"""Host groups against the real test sshd: two live members (two remotes on the same sshd, counted
apart) and a dead one (a closed port)."""

import collections
import json
import pathlib
import random
import subprocess

import anyio
import pytest

from conftest import BIN, data, open_session, text
from sshd import free_port
from test_claude import FAKE, claude, pid_of_data
from test_containers import wait_gone

pytestmark = pytest.mark.anyio


@pytest.fixture
def group_env(env, sshd, tmp_path):
    sshd.trust()
    member = {"host": "box", "claude_path": FAKE,
              "claude_env": {"CLAUDE_CONFIG_DIR": str(tmp_path / "remote-claude")}}
    config = {
        "remotes": {"m1": member, "m2": member, "dead": {"host": "127.0.0.1", "port": free_port()}},
        "groups": {"pool": ["dead", "m1", "m2"]},
        "sync": {"around_turns": False},
    }
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    return env


async def run(session, command, **args):
    return await session.call_tool("remote_exec", {"host": "pool", "command": command, **args})


async def test_concurrent_calls_spread_over_the_least_busy_live_members(group_env):
    mark = str(random.randint(10**6, 10**7))
    results = []

    async def start(session):
        results.append(await run(session, f"sleep {mark}", background=True))

    async with open_session(group_env) as s:
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(start, s)
        assert all(not r.is_error for r in results), [text(r) for r in results if r.is_error]
        placed = collections.Counter(data(r)["host"] for r in results)
        assert placed == {"m1": 3, "m2": 3}, placed
        assert {data(r)["group"] for r in results} == {"pool"}
        pool = next(h for h in data(await s.call_tool("list_hosts", {}))["hosts"] if h["name"] == "pool")
        members = {m["name"]: m for m in pool["members"]}
        assert pool["kind"] == "group" and pool["running"] == 6
        assert members["m1"]["running"] == members["m2"]["running"] == 3
        assert members["dead"]["state"].startswith("unreachable: "), members["dead"]
        # The busier member is passed over: one job ends, the next call goes where it ran.
        await s.call_tool("job_kill", {"job_id": data(results[0])["job_id"]})
        freed = data(results[0])["host"]
        assert data(await run(s, "echo next"))["host"] == freed
        for r in results[1:]:
            await s.call_tool("job_kill", {"job_id": data(r)["job_id"]})
    await wait_gone(mark)


async def test_no_live_member_names_each_members_state(env, tmp_path):
    config = {"remotes": {"d1": {"host": "127.0.0.1", "port": free_port()},
                          "d2": {"host": "127.0.0.1", "port": free_port()}},
              "groups": {"pool": ["d1", "d2"]}}
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    async with open_session(env) as s:
        first = await run(s, "true")
        assert first.is_error and "Connection refused" in text(first), text(first)
        # Each failure lengthens the backoff (1 s, 2 s, 4 s ...): soon a call finds both down.
        for _ in range(5):
            again = await run(s, "true")
            assert again.is_error
            if "no member of group `pool` can take work now" in text(again):
                break
        assert "d1: unreachable: " in text(again) and "d2: unreachable: " in text(again), text(again)


async def test_a_resumed_claude_session_goes_back_to_its_member(group_env, tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    async with open_session(group_env) as s:
        first = data(await claude(s, "hello", host="pool", cwd=str(project)))
        member = first["host"]
        assert member in ("m1", "m2")
        # Its warm Claude process makes `member` the busier one; a new session goes elsewhere...
        other = data(await claude(s, "elsewhere", host="pool", cwd=str(project)))
        assert other["host"] != member
        # ...but resuming the first one, naming the group, goes back to its member and process.
        again = data(await claude(s, "again", host="pool", session_id=first["session_id"]))
        assert again["host"] == member and again["warm"] is True
        assert pid_of_data(again) == pid_of_data(first)


def test_exec_cli_says_which_member_ran_it(group_env):
    out = subprocess.run([BIN, "exec", "pool", "--", "echo", "hi"], env=group_env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "hi\n", out.stderr
    assert "running on `m" in out.stderr and "from group `pool`" in out.stderr
