"""`sync_sessions` and the sync around `spawn_claude` turns, against the real test sshd. Both "hosts"
are this machine, so each side gets its own Claude config dir: `remote-claude` for host `gpu`
(through `claude_env`), `local-claude` for outpost itself (`CLAUDE_CONFIG_DIR` in its environment)."""

import importlib.machinery
import json
import os
import pathlib
import re

import anyio
import pytest

from conftest import HANG_GUARD, data, text
from test_claude import FAKE, claude, server

pytestmark = pytest.mark.anyio
FAKE_MODULE = importlib.machinery.SourceFileLoader("fake_claude", FAKE).load_module()


@pytest.fixture
def sync_env(env, sshd, tmp_path):
    sshd.trust()
    remote, local = tmp_path / "remote-claude", tmp_path / "local-claude"
    config_dirs = {"gpu": remote, "gpu2": tmp_path / "gpu2-claude"}
    config = {"remotes": {
        name: {"host": "box", "claude_path": FAKE, "claude_env": {"CLAUDE_CONFIG_DIR": str(path)}}
        for name, path in config_dirs.items()
    }}
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    project = tmp_path / "proj"
    project.mkdir()
    return dict(env, CLAUDE_CONFIG_DIR=str(local)), config, project, remote, local


def session_dir(config_dir: pathlib.Path, cwd: pathlib.Path) -> pathlib.Path:
    return config_dir / "projects" / FAKE_MODULE.project_dir_name(os.path.realpath(cwd))


def seed(config_dir: pathlib.Path, cwd: pathlib.Path, name: str, content: str) -> pathlib.Path:
    """A session file written straight into a side's project folder."""
    path = session_dir(config_dir, cwd) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


async def same_bytes(a: pathlib.Path, b: pathlib.Path):
    """Waits for the background pull after a turn to make `a` a byte copy of `b`."""
    with anyio.fail_after(HANG_GUARD):
        while not (a.exists() and b.exists() and a.read_bytes() == b.read_bytes()):
            await anyio.sleep(0.02)


async def sync(s, direction, **args):
    return await s.call_tool("sync_sessions", {"host": "gpu", "direction": direction, **args})


async def test_pull_after_each_turn_gives_a_byte_identical_file(sync_env):
    env, _, project, remote, local = sync_env
    async with server(env) as s:
        first = await claude(s, "hello", host="gpu", cwd=str(project))
        d = data(first)
        # Answered first; the pull runs in the background, and the next turn reports it.
        assert d["sync"]["pulling"] is True and "previous_pull" not in d["sync"], json.dumps(d["sync"])
        name = f"{d['session_id']}.jsonl"
        remote_file, local_file = session_dir(remote, project) / name, session_dir(local, project) / name
        await same_bytes(local_file, remote_file)
        # Each turn waits for the pull after the previous one, and reports it.
        second = data(await claude(s, "again", session_id=d["session_id"], model="sonnet"))
        assert second["sync"]["previous_pull"]["pulled"]["files_transferred"] == 1, json.dumps(second["sync"])
        size_after_first = local_file.stat().st_size
        await same_bytes(local_file, remote_file)
        assert local_file.stat().st_mtime == int(remote_file.stat().st_mtime)
        third = data(await claude(s, "once more", session_id=d["session_id"], model="opus"))
        pulled = third["sync"]["previous_pull"]["pulled"]
        assert 0 < pulled["bytes_transferred"] < local_file.stat().st_size - size_after_first, "only the new tail moved"
        # The third turn's records reach the host's log ~0.1 s after its result, then come here.
        with anyio.fail_after(HANG_GUARD):
            while b"once more" not in local_file.read_bytes():
                await anyio.sleep(0.02)
        await same_bytes(local_file, remote_file)
        again = data(await sync(s, "pull", cwd=str(project)))
        assert again["files_in_sync"] == again["files_examined"] >= 1 and again["bytes_transferred"] == 0


async def test_a_small_append_to_a_big_session_moves_only_the_append(sync_env, tmp_path):
    env, _, project, remote, local = sync_env
    line = json.dumps({"type": "user", "message": {"content": "x" * 1000}}) + "\n"
    log = seed(remote, project, "big-session.jsonl", line * 3000)  # ~3 MB
    errlog = tmp_path / "server.log"
    with open(errlog, "w") as err:
        async with server(dict(env, RUST_LOG="outpost=debug"), errlog=err) as s:
            first = data(await sync(s, "pull", cwd=str(project)))
            assert first["bytes_transferred"] == log.stat().st_size
            started = remote_commands(errlog)
            extra = json.dumps({"type": "assistant", "message": {"content": "y\n\t" * 330}}) + "\n"
            with open(log, "a") as f:
                f.write(extra)
            second = data(await sync(s, "pull", cwd=str(project)))
            assert second["bytes_transferred"] == len(extra.encode()) and second["files_transferred"] == 1
            # The new tail came with the listing: finding the project and listing it, nothing more.
            assert remote_commands(errlog) - started == 2
            assert (session_dir(local, project) / "big-session.jsonl").read_bytes() == log.read_bytes()
            # A bigger append is streamed by a read of its own.
            with open(log, "a") as f:
                f.write(line * 300)
            started = remote_commands(errlog)
            third = data(await sync(s, "pull", cwd=str(project)))
            assert third["bytes_transferred"] == len(line) * 300
            assert remote_commands(errlog) - started == 3
    assert (session_dir(local, project) / "big-session.jsonl").read_bytes() == log.read_bytes()


def remote_commands(errlog: pathlib.Path) -> int:
    return errlog.read_text().count("remote command started")


async def test_a_diverged_destination_is_kept_and_the_conflict_reported(sync_env):
    env, _, project, remote, local = sync_env
    src = seed(remote, project, "s1.jsonl", '{"n":1}\n')
    async with server(env) as s:
        await sync(s, "pull", cwd=str(project))
        mine = session_dir(local, project) / "s1.jsonl"
        with open(mine, "a") as f:
            f.write('{"n":"local only"}\n')
        with open(src, "a") as f:
            f.write('{"n":"remote only"}\n')
        before = mine.read_bytes()
        r = await sync(s, "pull", cwd=str(project), session_id="s1")
        d = data(r)
        assert mine.read_bytes() == before, "the diverged local copy is never overwritten"
        [conflict] = d["conflicts"]
        assert conflict["path"].endswith("/s1.jsonl") and "CONFLICT" in text(r)
        copy = pathlib.Path(conflict["incoming_copy"])
        assert re.fullmatch(r"s1\.conflict-\d{8}T\d{6}Z\.jsonl", copy.name)
        assert copy.read_bytes() == src.read_bytes()
        # The local copy being ahead of the remote is not a conflict the other way round.
        src.write_bytes(before[: len('{"n":1}\n')])
        again = data(await sync(s, "pull", cwd=str(project), session_id="s1"))
        assert again["destination_ahead"] == ["s1.jsonl"] and again["conflicts"] == []


async def test_a_transfer_killed_midway_leaves_the_destination_intact(sync_env):
    env, config, project, remote, local = sync_env
    config["sync"] = {"max_bytes_per_sec": 1_000_000}
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    src = seed(remote, project, "s2.jsonl", '{"first":true}\n')
    async with server(env) as s:
        await sync(s, "pull", cwd=str(project))
        dest = session_dir(local, project) / "s2.jsonl"
        before = dest.read_bytes()
        with open(src, "a") as f:
            f.write(("z" * 999 + "\n") * 4000)  # 4 MB at 1 MB/s: four seconds
        async with anyio.create_task_group() as tg:
            async def pull():
                await sync(s, "pull", cwd=str(project))
            tg.start_soon(pull)
            with anyio.fail_after(HANG_GUARD):
                while not list(dest.parent.glob(".outpost-tmp-*")):
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        with anyio.fail_after(HANG_GUARD):
            while list(dest.parent.glob(".outpost-tmp-*")):
                await anyio.sleep(0.05)
        assert dest.read_bytes() == before
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"remotes": config["remotes"]}))
    async with server(env) as s:
        done = data(await sync(s, "pull", cwd=str(project)))
        assert done["files_transferred"] == 1 and dest.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("leaf", [
    "my.proj_v1.2 with spaces",
    "ünïcödé-dir",
    ".hidden/trailing.dot.",
    "long-" + "d" * 230,
])
async def test_project_folders_follow_claudes_naming_rule(sync_env, leaf):
    env, _, _, remote, local = sync_env
    project = pathlib.Path(env["HOME"]).parent / leaf
    project.mkdir(parents=True)
    async with server(env) as s:
        d = data(await claude(s, "hello", host="gpu", cwd=str(project)))
        assert not d["sync"].get("warnings"), d["sync"]
        expected = FAKE_MODULE.project_dir_name(os.path.realpath(project))
        name = f"{d['session_id']}.jsonl"
        await same_bytes(local / "projects" / expected / name, session_dir(remote, project) / name)
        if len(str(project)) > 200:
            assert len(expected) > 201 and expected[200] == "-"


async def test_push_then_resume_on_another_host(sync_env, tmp_path):
    env, _, project, _, local = sync_env
    async with server(env) as s:
        first = data(await claude(s, "hello", host="gpu", cwd=str(project)))
        sid = first["session_id"]
        name = f"{sid}.jsonl"
        await same_bytes(session_dir(local, project) / name, session_dir(tmp_path / "remote-claude", project) / name)
        # Explicit push to gpu2, then a resume there sees the whole history.
        pushed = data(await s.call_tool("sync_sessions", {
            "host": "gpu2", "cwd": str(project), "direction": "push", "session_id": sid}))
        assert pushed["files_transferred"] == 1
        gpu2_file = session_dir(tmp_path / "gpu2-claude", project) / f"{sid}.jsonl"
        assert gpu2_file.read_bytes() == (session_dir(local, project) / f"{sid}.jsonl").read_bytes()
        resumed = data(await claude(s, "on gpu2", session_id=sid, host="gpu2", cwd=str(project)))
        assert resumed["host"] == "gpu2" and "history=1" in resumed["result"]
        # gpu's copy is behind now: resuming there pushes the new turns first, automatically.
        back = await claude(s, "back on gpu", session_id=sid, host="gpu", cwd=str(project))
        b = data(back)
        assert not back.is_error, text(back)
        assert b["sync"]["pushed"]["files_transferred"] == 1 and "history=2" in b["result"]


async def test_a_session_id_cannot_reach_outside_the_project_folder(sync_env):
    env, _, project, _, _ = sync_env
    async with server(env) as s:
        r = await sync(s, "pull", cwd=str(project), session_id="../../../.ssh/authorized_keys")
        assert r.is_error and "session_id" in text(r), text(r)
