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


async def diverge(s, project, remote, local):
    """`s1.jsonl` pulled, then appended to differently on each side: (the host's, this side's)."""
    src = seed(remote, project, "s1.jsonl", '{"n":1}\n')
    await sync(s, "pull", cwd=str(project))
    mine = session_dir(local, project) / "s1.jsonl"
    with open(mine, "a") as f:
        f.write('{"n":"local only"}\n')
    with open(src, "a") as f:
        f.write('{"n":"remote only"}\n')
    return src, mine


async def test_a_diverged_destination_is_kept_and_the_conflict_reported(sync_env):
    env, _, project, remote, local = sync_env
    async with server(env) as s:
        src, mine = await diverge(s, project, remote, local)
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


async def test_a_sync_or_listing_right_after_a_turn_waits_for_its_pull(sync_env):
    env, config, project, _, local = sync_env
    # A busy host: the turn's records reach its session log 2 s after the result (the pull after
    # the turn waits up to 3 s for them).
    config["remotes"]["gpu"]["claude_env"]["FAKE_CLAUDE_RECORD_DELAY"] = "2"
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    async with server(env) as s:
        first = data(await claude(s, "first words", host="gpu", cwd=str(project)))
        log = session_dir(local, project) / f"{first['session_id']}.jsonl"
        # At once, while the pull after the turn is still under way: it is waited for, so the
        # session is there and reported (not "0 files examined" and the file showing up later),
        # and this sync finds it copied already rather than copying it a second time alongside.
        pulled = data(await sync(s, "pull", cwd=str(project)))
        assert (pulled["files_examined"], pulled["files_in_sync"]) == (1, 1), pulled
        assert b"first words" in log.read_bytes()
        await claude(s, "second words", session_id=first["session_id"])
        listed = data(await s.call_tool("list_sessions", {}))["sessions"]
        assert [r["session_id"] for r in listed] == [first["session_id"]]
        assert b"second words" in log.read_bytes()


def tree(root: pathlib.Path) -> dict:
    """Every file under `root` (links not followed) by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


async def test_names_like_options_sync_and_unsayable_names_are_skipped(sync_env):
    env, _, project, remote, local = sync_env
    names = ["--help", "-t..", "--", "-x.jsonl", "memory/-n.md", "-d/-e.jsonl"]
    for name in names:
        seed(remote, project, name, f"content of {name}\n")
    src, dst = session_dir(remote, project), session_dir(local, project)
    unsayable = [b"line\nbreak.jsonl", b"tab\there.md", b"bell\x07.md", b"dir\nx/inner.jsonl"]
    for name in unsayable:
        path = os.path.join(os.fsencode(src), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"unsayable\n")
    with open(os.path.join(os.fsencode(src), b"latin1-\xe9t\xe9.jsonl"), "wb") as f:
        f.write(b"not utf-8\n")
    async with server(env) as s:
        r = await sync(s, "pull", cwd=str(project))
        assert not r.is_error, text(r)
        d = data(r)
        assert tree(dst) == {n: f"content of {n}\n".encode() for n in names}
        assert d["files_transferred"] == len(names), d
        assert len(d["warnings"]) == len(unsayable) + 1, d["warnings"]
        assert all("skipped" in w for w in d["warnings"]) and "line\\nbreak.jsonl" in text(r), text(r)
        again = data(await sync(s, "pull", cwd=str(project)))
        assert again["files_in_sync"] == again["files_examined"] == len(names), again
        # And the other way: appends and new files pushed to the host, names and all.
        with open(dst / "-x.jsonl", "a") as f:
            f.write("more\n")
        (dst / "--version").write_text("local only\n")
        pushed = data(await sync(s, "push", cwd=str(project)))
        assert pushed["files_transferred"] == 2 and pushed["warnings"] == [], pushed
        assert (src / "-x.jsonl").read_bytes() == (dst / "-x.jsonl").read_bytes()
        assert (src / "--version").read_text() == "local only\n"
    leftovers = [p for root in (src, dst) for p in root.rglob(".outpost-tmp-*")]
    assert leftovers == []


async def test_links_are_never_followed_out_of_the_project_folder(sync_env, tmp_path):
    env, _, project, remote, local = sync_env
    src, dst = session_dir(remote, project), session_dir(local, project)
    outside_here, outside_there = tmp_path / "outside-here", tmp_path / "outside-there"
    for folder in (outside_here, outside_there):
        folder.mkdir()
        (folder / "MEMORY.md").write_text(f"private to {folder.name}\n")
    seed(remote, project, "real.jsonl", "real\n")
    seed(remote, project, "memory/MEMORY.md", "the host's notes\n")
    seed(remote, project, "logs/a.jsonl", "a\n")
    dst.mkdir(parents=True)
    # Here, `memory` leads out of the folder; so does the host's `logs`, and a log that is a link.
    (dst / "memory").symlink_to(outside_here)
    (src / "linked.jsonl").symlink_to(outside_there / "MEMORY.md")
    (src / "elsewhere").symlink_to(outside_there)
    async with server(env) as s:
        pulled = data(await sync(s, "pull", cwd=str(project)))
        assert (outside_here / "MEMORY.md").read_text() == "private to outside-here\n"
        assert sorted(os.listdir(outside_here)) == ["MEMORY.md"], "nothing written through the link"
        assert tree(dst) == {"real.jsonl": b"real\n", "logs/a.jsonl": b"a\n"}
        assert (dst / "memory").is_symlink()
        warned = " ".join(pulled["warnings"])
        assert all(n in warned for n in ("memory/MEMORY.md", "linked.jsonl", "elsewhere")), pulled["warnings"]
        # Push: this side's link is not read, and the host's link is not written through.
        (src / "memory" / "MEMORY.md").unlink()
        (src / "memory").rmdir()
        (src / "memory").symlink_to(outside_there)
        (dst / "memory").unlink()
        (dst / "memory").symlink_to(outside_here)
        (dst / "logs").rename(dst / "logs-real")
        (dst / "logs").symlink_to(dst / "logs-real")
        (dst / "notes").mkdir()
        (dst / "notes" / "n.md").write_text("local notes\n")
        (dst / "elsewhere").mkdir()
        (dst / "elsewhere" / "MEMORY.md").write_text("local, for the host's `elsewhere` link\n")
        pushed = data(await sync(s, "push", cwd=str(project)))
        assert sorted(os.listdir(outside_there)) == ["MEMORY.md"]
        assert (outside_there / "MEMORY.md").read_text() == "private to outside-there\n"
        assert (src / "notes" / "n.md").read_text() == "local notes\n"
        assert (src / "logs" / "a.jsonl").read_text() == "a\n"
        warned = " ".join(pushed["warnings"])
        assert all(n in warned for n in ("`memory`", "`logs`", "elsewhere/MEMORY.md")), pushed["warnings"]


async def test_a_divergence_pulled_again_keeps_one_conflict_copy(sync_env):
    env, _, project, remote, local = sync_env
    async with server(env) as s:
        src, mine = await diverge(s, project, remote, local)
        states = []
        for _ in range(3):
            d = data(await sync(s, "pull", cwd=str(project), session_id="s1"))
            [conflict] = d["conflicts"]
            assert [p.name for p in mine.parent.glob("s1.conflict-*")] == [pathlib.Path(conflict["incoming_copy"]).name]
            states.append((conflict.get("copy"), d["bytes_transferred"]))
        assert states == [("new", src.stat().st_size), ("unchanged", 0), ("unchanged", 0)]
        # A newer version on the host (another turn there) brings the same copy up to date: only
        # the new lines move.
        more = '{"n":"remote again"}\n'
        with open(src, "a") as f:
            f.write(more)
        d = data(await sync(s, "pull", cwd=str(project), session_id="s1"))
        [conflict] = d["conflicts"]
        assert (conflict["copy"], d["bytes_transferred"]) == ("updated", len(more))
        [copy] = mine.parent.glob("s1.conflict-*")
        assert copy.read_bytes() == src.read_bytes() and mine.read_text().endswith('"local only"}\n')
