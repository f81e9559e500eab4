"""The `transfer` tool and `outpost cp` over a real sshd (SFTP), this machine's files and a
"container" (the namespace container of test_containers, reached through its command prefix):
contents, modes, mtimes and links kept; skip, resume, overwrite refusal, cancel and timeout leave
no file under its final name; errors say what to do."""

import hashlib
import json
import os
import pathlib
import getpass
import shutil
import signal
import subprocess
import time
import uuid

import anyio
import pytest

from conftest import BIN, HANG_GUARD, RawServer, data, open_session, text
from stall_proxy import StallProxy, alias_through
from test_containers import cenv, container, docker_engine, podman_engine  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio


def sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def partials(folder: pathlib.Path) -> list:
    return sorted(p.name for p in folder.rglob("*.outpost-part"))


@pytest.fixture
def box(env, sshd, tmp_path):
    """The sshd as alias `box`, trusted; the login user is this user, so `box:` paths are this
    machine's files too (the test reads them directly)."""
    sshd.trust()
    return env


@pytest.fixture
async def session(box):
    async with open_session(box) as s:
        yield s


async def copy(session, source, destination, progress=None, **args):
    return await session.call_tool("transfer", {"source": source, "destination": destination, **args},
                                   progress_callback=progress)


def test_fifty_megabytes_round_trip_over_sftp_with_bounded_memory(box, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(50_000_000))
    server = RawServer(box)
    try:
        server.initialize()
        out = tmp_path / "there"
        back = tmp_path / "back"

        def call(source, destination):
            reply = server.request("tools/call", {"name": "transfer", "arguments": {
                "source": source, "destination": destination}})
            assert not reply["result"].get("isError"), reply
            return reply["result"]["structuredContent"]

        up = call(str(src), f"box:{out}/")
        assert up["status"] == "done" and up["files"] == 1 and up["bytes"] == 50_000_000, up
        assert up["destination"] == f"box:{out}/big.bin"
        down = call(f"box:{out}/big.bin", f"local:{back}")
        assert down["files"] == 1 and down["destination"] == f"local:{back}"
        assert sha256(back) == sha256(src)
        assert int(back.stat().st_mtime) == int(src.stat().st_mtime)
        status = pathlib.Path(f"/proc/{server.proc.pid}/status").read_text()
        peak_kb = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
        assert peak_kb < 64 * 1024, f"peak RSS {peak_kb} kB"
    finally:
        server.close()


def make_tree(root: pathlib.Path):
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "run.sh").chmod(0o750)
    (root / "sub" / "deep" / "b.bin").write_bytes(os.urandom(70_000))
    (root / "sub" / "secret").write_text("s")
    (root / "sub" / "secret").chmod(0o600)
    (root / "link").symlink_to("sub/deep/b.bin")
    (root / "escape").symlink_to("/etc/passwd")
    (root / "sub").chmod(0o710)
    for i, p in enumerate([root / "a.txt", root / "run.sh", root / "sub" / "deep" / "b.bin",
                           root / "sub" / "deep", root / "sub", root]):
        os.utime(p, (1_600_000_000 + i, 1_600_000_000 + i))


def assert_same_tree(a: pathlib.Path, b: pathlib.Path):
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*"))
    assert names == sorted(str(p.relative_to(b)) for p in b.rglob("*"))
    for name in [""] + names:
        x, y = a / name, b / name
        sx, sy = x.lstat(), y.lstat()
        assert (sx.st_mode, int(sx.st_mtime)) == (sy.st_mode, int(sy.st_mtime)) or x.is_symlink(), name
        if x.is_symlink():
            assert y.is_symlink() and os.readlink(x) == os.readlink(y), name
        elif x.is_file():
            assert x.read_bytes() == y.read_bytes(), name


async def test_a_folder_keeps_modes_mtimes_and_links_both_ways(session, tmp_path):
    src = tmp_path / "proj"
    make_tree(src)
    result = await copy(session, str(src), f"box:{tmp_path}/up/")
    assert not result.is_error, text(result)
    d = data(result)
    assert (d["files"], d["links"], d["dirs"]) == (4, 2, 3), d
    assert_same_tree(src, tmp_path / "up" / "proj")
    back = await copy(session, f"box:{tmp_path}/up/proj", f"{tmp_path}/back")
    assert not back.is_error, text(back)
    assert_same_tree(src, tmp_path / "back")
    # In the background: a job whose result job_output gives once it is done.
    job = data(await copy(session, str(src), f"box:{tmp_path}/bg/", background=True))
    assert job["status"] == "running" and job["job_id"], job
    with anyio.fail_after(HANG_GUARD):
        while True:
            out = data(await session.call_tool("job_output", {"job_id": job["job_id"], "wait_secs": 5}))
            if out["status"] != "running":
                break
    assert out["transfer"]["status"] == "done" and out["transfer"]["files"] == 4, out
    assert_same_tree(src, tmp_path / "bg" / "proj")
    # A source that is itself a symlink is followed: the tree it names is copied, under its name.
    (tmp_path / "alias").symlink_to(src)
    aliased = await copy(session, str(tmp_path / "alias"), f"box:{tmp_path}/via-alias/")
    assert not aliased.is_error, text(aliased)
    assert_same_tree(src, tmp_path / "via-alias" / "alias")
    # The link out of the tree is a link, not /etc/passwd's contents.
    assert os.readlink(tmp_path / "back" / "escape") == "/etc/passwd"
    assert partials(tmp_path) == []


async def test_unchanged_files_are_skipped_and_changed_ones_refused_without_overwrite(session, tmp_path):
    src = tmp_path / "proj"
    make_tree(src)
    dest = f"box:{tmp_path}/out/"
    assert not (await copy(session, str(src), dest)).is_error
    again = data(await copy(session, str(src), dest))
    assert (again["files"], again["skipped"], again["bytes"]) == (0, 6, 0), again
    (src / "a.txt").write_text("changed\n")
    refused = await copy(session, str(src), dest)
    assert refused.is_error and "overwrite: true" in text(refused) and "a.txt" in text(refused)
    assert (tmp_path / "out" / "proj" / "a.txt").read_text() == "alpha\n"
    replaced = data(await copy(session, str(src), dest, overwrite=True))
    assert replaced["files"] == 1 and (tmp_path / "out" / "proj" / "a.txt").read_text() == "changed\n"
    # verify: the same bytes under another mtime count as unchanged, and copies are checked.
    os.utime(tmp_path / "out" / "proj" / "run.sh", (5, 5))
    checked = data(await copy(session, str(src), dest, verify=True))
    assert checked["files"] == 0 and checked["verified"] == 0, checked


async def test_a_partial_file_is_resumed(session, tmp_path):
    src = tmp_path / "ckpt.bin"
    body = os.urandom(3_000_000)
    src.write_bytes(body)
    st = src.stat()
    out = tmp_path / "out"
    out.mkdir()
    # What an interrupted transfer leaves: the first third under the partial name.
    partial = out / f".ckpt.bin.{st.st_size:x}-{int(st.st_mtime):x}.outpost-part"
    partial.write_bytes(body[:1_000_000])
    stale = out / ".ckpt.bin.5-5.outpost-part"
    stale.write_bytes(b"old")
    d = data(await copy(session, str(src), f"box:{out}/"))
    assert (d["resumed_bytes"], d["bytes"]) == (1_000_000, 2_000_000), d
    assert (out / "ckpt.bin").read_bytes() == body
    assert partials(out) == []


@pytest.fixture
def slowbox(box, sshd):
    """Alias `slowbox`: the sshd through a proxy the test can stall, as a network can."""
    proxy = StallProxy(sshd.port)
    alias_through(proxy, sshd, pathlib.Path(box["HOME"]), "slowbox", f"  User {getpass.getuser()}\n")
    yield proxy
    proxy.close()


async def stall_once_writing(proxy, folder: pathlib.Path):
    """Stalls the link as soon as a partial file has bytes in `folder`."""
    with anyio.fail_after(HANG_GUARD):
        while not any(p.stat().st_size > 0 for p in folder.glob("*.outpost-part")):
            await anyio.sleep(0.002)
    proxy.stall()


async def test_timeout_and_cancel_mid_transfer_leave_no_final_file(box, slowbox, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(100_000_000))
    async with open_session(box) as session:
        out = tmp_path / "t"
        out.mkdir()
        messages = []

        async def progress(value, total, message):
            messages.append(message)

        async with anyio.create_task_group() as tg:
            tg.start_soon(stall_once_writing, slowbox, out)
            timed = await copy(session, str(big), f"slowbox:{out}/", progress, timeout_secs=3)
        assert timed.is_error and "timed_out" in text(timed), text(timed)
        # Progress told files and bytes while it was stuck.
        assert any(m and "0/1 files" in m and "MB of 100.0 MB" in m for m in messages), messages
        assert not (out / "big.bin").exists() and partials(out)
        slowbox.resume()

        out = tmp_path / "c"
        out.mkdir()
        with anyio.move_on_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                async def call():
                    await copy(session, str(big), f"slowbox:{out}/")
                tg.start_soon(call)
                await stall_once_writing(slowbox, out)
                tg.cancel_scope.cancel()
        with anyio.fail_after(HANG_GUARD):
            while any(j["status"] == "running" for j in data(await session.call_tool("list_jobs", {}))["jobs"]):
                await anyio.sleep(0.05)
        assert not (out / "big.bin").exists()
        slowbox.resume()
        # The same copy later resumes what was written.
        resumed = data(await copy(session, str(big), f"slowbox:{out}/"))
        assert resumed["resumed_bytes"] > 0 and sha256(out / "big.bin") == sha256(big), resumed


def test_sigterm_mid_transfer_stops_the_copy_and_leaves_no_final_file(box, slowbox, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(100_000_000))
    out = tmp_path / "s"
    out.mkdir()
    server = RawServer(box)
    try:
        server.initialize()
        reply = server.request("tools/call", {"name": "transfer", "arguments": {
            "source": str(big), "destination": f"slowbox:{out}/", "background": True}})
        assert reply["result"]["structuredContent"]["status"] == "running", reply
        deadline = time.monotonic() + HANG_GUARD
        while not any(p.stat().st_size > 0 for p in out.glob("*.outpost-part")):
            assert time.monotonic() < deadline, "the copy never started writing"
            time.sleep(0.002)
        slowbox.stall()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=HANG_GUARD) is not None
    finally:
        server.close()
        slowbox.resume()
    assert not (out / "big.bin").exists() and partials(out)


async def test_errors_say_what_is_wrong(box, sh_box, session, tmp_path):
    missing = await copy(session, f"box:{tmp_path}/nope", str(tmp_path / "x"))
    assert missing.is_error and "does not exist" in text(missing) and "nope" in text(missing)
    (tmp_path / "file").write_text("f")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "f").write_text("f")
    not_folder = await copy(session, str(tmp_path / "dir"), f"box:{tmp_path}/file/")
    assert not_folder.is_error and "is a file, not a folder" in text(not_folder)
    denied = await copy(session, str(tmp_path / "file"), "shbox:/root/outpost-forbidden/")
    assert denied.is_error and "permission denied" in text(denied), text(denied)
    unknown = await copy(session, "nohost:/x", str(tmp_path))
    assert unknown.is_error and "unknown host `nohost`" in text(unknown)


async def test_a_host_without_sftp_is_told_at_once(env, tmp_path):
    from sshd import Sshd
    home = pathlib.Path(env["HOME"])
    server = Sshd(tmp_path / "nosftp", home, sftp=False).start()
    server.trust()
    (home / ".ssh" / "config").write_text(
        f"Host plain\n  HostName 127.0.0.1\n  Port {server.port}\n  User {getpass.getuser()}\n")
    (tmp_path / "f").write_text("f")
    try:
        async with open_session(env) as s:
            with anyio.fail_after(8):  # well before the 10 s a silent server would get
                refused = await copy(s, str(tmp_path / "f"), f"plain:{tmp_path}/out/")
        assert refused.is_error and "no sftp subsystem" in text(refused), text(refused)
        assert "Subsystem sftp" in text(refused)
    finally:
        server.stop()


async def test_a_group_is_refused_naming_its_members(env, tmp_path):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"groups": {"pair": ["local", "local"]}}))
    (tmp_path / "f").write_text("f")
    async with open_session(env) as s:
        refused = await copy(s, str(tmp_path / "f"), f"pair:{tmp_path}/x")
    assert refused.is_error and "`pair` is a group" in text(refused) and "name one of its members" in text(refused), text(refused)
    assert not (tmp_path / "x").exists()


async def test_a_full_disk_is_named(session, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        (tmp_path / "big.bin").write_bytes(os.urandom(3_000_000))
        full = await copy(session, str(tmp_path / "big.bin"), f"box:{small}/")
        assert full.is_error and "no space left" in text(full), text(full)
        assert not (small / "big.bin").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


async def test_a_container_to_an_ssh_host_and_back(box, cenv, container, tmp_path):
    """Into a container (the simulation, and real podman and docker with a busybox image) and out
    of it to an SSH host, through this machine; unchanged files skipped the second time."""
    pathlib.Path(cenv["OUTPOST_CONFIG"]).write_text(json.dumps({"remotes": {"ctr": container.remote()}}))
    src = tmp_path / "tree"
    make_tree(src)
    inside = f"/tmp/outpost-transfer-{uuid.uuid4().hex}"
    async with open_session(cenv) as s:
        try:
            into = await copy(s, str(src), f"ctr:{inside}/")
            assert not into.is_error, text(into)
            out = await copy(s, f"ctr:{inside}/tree", f"box:{tmp_path}/from-ctr/")
            assert not out.is_error, text(out)
            assert_same_tree(src, tmp_path / "from-ctr" / "tree")
            again = data(await copy(s, str(src), f"ctr:{inside}/"))
            assert (again["files"], again["skipped"]) == (0, 6), again
        finally:
            await s.call_tool("remote_exec", {"host": "ctr", "command": f"rm -rf {inside}"})


async def test_a_host_with_only_busybox(env, tmp_path):
    """The sh side needs only what busybox has: a remote whose PATH holds busybox's applets alone
    (as a busybox image does) copies a tree in and out, and skips it the second time."""
    applets = tmp_path / "bb"
    applets.mkdir()
    listed = subprocess.run(["busybox", "--list"], capture_output=True, text=True, check=True)
    for name in listed.stdout.split():
        (applets / name).symlink_to(shutil.which("busybox"))
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(
        {"remotes": {"bb": {"kind": "command", "command": ["env", f"PATH={applets}"]}}}))
    src = tmp_path / "tree"
    make_tree(src)
    async with open_session(env) as s:
        into = await copy(s, str(src), f"bb:{tmp_path}/in/")
        assert not into.is_error, text(into)
        assert_same_tree(src, tmp_path / "in" / "tree")
        out = await copy(s, f"bb:{tmp_path}/in/tree", f"{tmp_path}/out")
        assert not out.is_error, text(out)
        assert_same_tree(src, tmp_path / "out")
        again = data(await copy(s, str(src), f"bb:{tmp_path}/in/"))
        assert (again["files"], again["skipped"]) == (0, 6), again


def test_outpost_cp_copies_and_reports(box, tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("hello\n")
    run = subprocess.run([BIN, "cp", str(src), f"box:{tmp_path}/cp/"], env=box, capture_output=True,
                         text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cp" / "f.txt").read_text() == "hello\n"
    assert "copied 1 file" in run.stderr
    again = subprocess.run([BIN, "cp", str(tmp_path / "nope"), f"box:{tmp_path}/cp/"], env=box,
                           capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert again.returncode != 0 and "does not exist" in again.stderr
    # A bare path is relative to the current directory, `~other/x` too (only `~` and `~/` are home).
    (tmp_path / "~odd").mkdir()
    (tmp_path / "~odd" / "g.txt").write_text("tilde\n")
    odd = subprocess.run([BIN, "cp", "~odd/g.txt", f"box:{tmp_path}/cp/"], env=box, cwd=tmp_path,
                         capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert odd.returncode == 0, odd.stderr
    assert (tmp_path / "cp" / "g.txt").read_text() == "tilde\n"
