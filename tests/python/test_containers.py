"""Command-prefix remotes (kind `command`, the code path of `docker` and `kubernetes`) against a real
"container": a process in its own PID, mount, UTS, IPC and network namespaces (`unshare`), entered
with `nsenter` as `docker exec` enters a container. As with docker, killing the `nsenter` client
would not kill what runs inside: outpost must kill inside."""

import json
import os
import pathlib
import random
import subprocess
import time
import uuid

import anyio
import pytest

from conftest import BIN, HANG_GUARD, data, open_session, text
from test_claude import FAKE, claude, pid_of_data
from test_sync import same_bytes

pytestmark = pytest.mark.anyio
HOSTNAME = "outpost-ctr"


class Container:
    """`sleep infinity` as PID 1 of fresh namespaces; `prefix` runs a program inside."""

    def __init__(self):
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--uts", "--ipc", "--net",
             "sh", "-c", f"hostname {HOSTNAME} && exec sleep infinity"])
        children = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        deadline = time.monotonic() + HANG_GUARD
        while True:
            pids = children.read_text().split()
            if pids and _cmdline(pids[0]).startswith("sleep"):
                self.init = int(pids[0])
                break
            assert time.monotonic() < deadline, "the container did not start"
            time.sleep(0.02)
        self.prefix = ["nsenter", "--target", str(self.init), "--pid", "--mount", "--uts", "--ipc",
                       "--net", "--"]

    def stop(self):
        self.proc.kill()
        subprocess.run(["kill", "-KILL", str(self.init)], check=False)
        self.proc.wait(timeout=HANG_GUARD)


def _cmdline(pid) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


@pytest.fixture
def container():
    c = Container()
    yield c
    c.stop()


def configure(env, remotes, **extra):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"remotes": remotes, **extra}))


@pytest.fixture
async def ctr(env, container):
    configure(env, {"ctr": {"kind": "command", "command": container.prefix}})
    async with open_session(env) as s:
        yield s


async def run(session, command, host="ctr", **args):
    return await session.call_tool("remote_exec", {"host": host, "command": command, **args})


def marker() -> str:
    """A `sleep` argument no other test uses, to find its processes in the host's `ps`."""
    return str(random.randint(10**6, 10**7))


def processes_with(mark: str) -> list[str]:
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if mark in line]


async def wait_gone(mark: str):
    with anyio.fail_after(HANG_GUARD):
        while processes_with(mark):
            await anyio.sleep(0.05)


async def wait_running(mark: str):
    with anyio.fail_after(HANG_GUARD):
        while not any(line.startswith("sleep") for line in processes_with(mark)):
            await anyio.sleep(0.05)


async def test_runs_inside_with_cwd_env_and_stdin(ctr, tmp_path):
    r = await run(ctr, 'hostname; pwd; echo "pid1=$(cat /proc/1/comm)"; printf "%s\\n" "$TOKEN"; cat; exit 4',
                  cwd=str(tmp_path), env={"TOKEN": "it's \"quoted\"\n$x"}, stdin="from stdin")
    d = data(r)
    assert d["host"] == "ctr" and d["exit_code"] == 4, text(r)
    assert d["stdout"] == f"{HOSTNAME}\n{tmp_path}\npid1=sleep\nit's \"quoted\"\n$x\nfrom stdin"


async def test_env_values_stay_out_of_the_engine_argv(ctr):
    secret, mark = "hunter2-" + uuid.uuid4().hex, marker()
    job = data(await run(ctr, f"sleep {mark}", env={"API_KEY": secret}, background=True))["job_id"]
    await wait_running(mark)
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert "nsenter" in listing and secret not in listing
    await ctr.call_tool("job_kill", {"job_id": job})
    await wait_gone(mark)


async def test_timeout_kills_the_tree_inside(ctr):
    mark = marker()
    r = await run(ctr, f"sleep {mark} & sleep {mark}; wait", timeout_secs=1)
    d = data(r)
    assert r.is_error and d["timed_out"] is True, text(r)
    await wait_gone(mark)


async def test_zombies_under_an_init_that_never_reaps_do_not_hold_up_a_timeout(env, container):
    # PID 1 here is `sleep infinity`: what the kill leaves of the group stays a zombie forever.
    # A kill that waited for zombies would take the whole (long) grace.
    configure(env, {"ctr": {"kind": "command", "command": container.prefix}},
              exec={"kill_grace_ms": 120_000})
    mark = marker()
    async with open_session(env) as s:
        with anyio.fail_after(HANG_GUARD):
            r = await run(s, f"sleep {mark} & sleep {mark}; wait", timeout_secs=1)
    d = data(r)
    assert d["status"] == "timed_out" and "kill_unconfirmed" not in d, d
    await wait_gone(mark)


async def test_a_leader_that_execs_with_a_clean_environment_dies_inside(ctr):
    mark = marker()
    r = await run(ctr, f"exec env -i sleep {mark}", timeout_secs=1)
    d = data(r)
    assert d["status"] == "timed_out" and "kill_unconfirmed" not in d, d
    await wait_gone(mark)


async def test_cancel_and_job_kill_kill_inside(ctr):
    mark = marker()

    async def call():
        await run(ctr, f"sleep {mark} & sleep {mark}; wait")

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await wait_running(mark)
        tg.cancel_scope.cancel()
    await wait_gone(mark)
    mark = marker()
    job = data(await run(ctr, f"exec sleep {mark}", background=True))["job_id"]
    await wait_running(mark)
    assert data(await ctr.call_tool("job_kill", {"job_id": job}))["status"] == "killed"
    await wait_gone(mark)


async def test_shutdown_kills_inside(env, container):
    configure(env, {"ctr": {"kind": "command", "command": container.prefix}})
    mark = marker()
    async with open_session(env) as s:
        await run(s, f"exec sleep {mark}", background=True)
        await wait_running(mark)
    await wait_gone(mark)


async def test_engine_errors_come_back_clearly(env, container):
    configure(env, {
        "gone": {"kind": "command", "command": ["nsenter", "--target", "999999999", "--pid", "--"]},
        "nodocker": {"kind": "docker", "container": "web", "cli": "docker-not-installed"},
        "nokubectl": {"kind": "kubernetes", "pod": "p", "cli": "/opt/none/kubectl"},
        "ctr": {"kind": "command", "command": container.prefix},
        # An engine that finds no `sh` in the image, worded as docker does.
        "nosh": {"kind": "command", "command": [
            "sh", "-c", 'echo "OCI runtime exec failed: exec: \\"sh\\": executable file not found in $PATH" >&2; exit 126',
            "engine"]},
    })
    async with open_session(env) as s:
        r = await run(s, "true", host="nosh")
        assert r.is_error and "outpost needs a POSIX `sh` inside the container" in text(r), text(r)
        r = await run(s, "true", host="gone")
        assert r.is_error and "`nsenter` failed before the command started" in text(r)
        assert "/proc/999999999/ns/pid" in text(r), text(r)
        r = await run(s, "true", host="nodocker")
        assert r.is_error and "is `docker-not-installed` installed on `local`" in text(r), text(r)
        r = await run(s, "true", host="nokubectl")
        assert r.is_error and "/opt/none/kubectl" in text(r), text(r)
        r = await run(s, "true", cwd="/no/such/dir")
        assert r.is_error and "does not exist on host `ctr`" in text(r)
        hosts = {h["name"]: h for h in data(await s.call_tool("list_hosts", {}))["hosts"]}
        assert hosts["nodocker"]["kind"] == "docker"
        assert hosts["nodocker"]["target"] == "docker-not-installed exec -i -- web (on local)"
        assert hosts["nodocker"]["state"].startswith("down: cannot run on `nodocker`")
        assert hosts["ctr"]["kind"] == "command" and hosts["ctr"]["state"] == "ready"


async def test_via_an_ssh_host_runs_the_engine_there(env, sshd, container):
    sshd.trust()
    configure(env, {"ctr": {"kind": "command", "command": container.prefix, "via": "box"}})
    mark = marker()
    async with open_session(env) as s:
        r = await run(s, "hostname; cat", stdin="through ssh")
        assert data(r)["stdout"] == f"{HOSTNAME}\nthrough ssh", text(r)
        r = await run(s, f"sleep {mark} & sleep {mark}; wait", timeout_secs=1)
        assert data(r)["timed_out"] is True
        await wait_gone(mark)


async def test_spawn_claude_and_sync_sessions_inside(env, container, tmp_path):
    inside, local = tmp_path / "inside-claude", tmp_path / "local-claude"
    project = tmp_path / "proj"
    project.mkdir()
    configure(env, {"ctr": {"kind": "command", "command": container.prefix, "claude_path": FAKE,
                            "claude_env": {"CLAUDE_CONFIG_DIR": str(inside)}}})
    env = dict(env, CLAUDE_CONFIG_DIR=str(local))
    async with open_session(env) as s:
        first = await claude(s, "hello", host="ctr", cwd=str(project))
        d = data(first)
        assert not first.is_error and d["host"] == "ctr", text(first)
        assert d["sync"]["pulling"] is True, json.dumps(d["sync"])
        second = data(await claude(s, "again", session_id=d["session_id"]))
        assert second["warm"] is True and pid_of_data(second) == pid_of_data(d)
        assert second["sync"]["previous_pull"]["pulled"]["files_transferred"] == 1, json.dumps(second["sync"])
        name = f"{d['session_id']}.jsonl"
        inside_file = next(inside.glob(f"projects/*/{name}"))
        await same_bytes(next(local.glob("projects/*")) / name, inside_file)
        again = data(await s.call_tool("sync_sessions", {"host": "ctr", "direction": "pull",
                                                         "cwd": str(project)}))
        assert again["bytes_transferred"] == 0 and again["files_in_sync"] >= 1
        # Claude runs inside: its pid is in the container's PID namespace, not the host's.
        assert pid_of_data(d) < 100 and os.getpid() != pid_of_data(d)


async def test_any_wrapper_prefix_and_its_chatter_stays_out_of_the_output(env):
    # A prefix that talks on stderr before running its argv, as `kubectl exec` does
    # ("Defaulted container ..."): that is not the command's output.
    chatty = ["sh", "-c", 'echo "Defaulted container \\"main\\" out of: main" >&2; exec "$@"', "wrapper"]
    configure(env, {"chatty": {"kind": "command", "command": chatty}})
    async with open_session(env) as s:
        d = data(await run(s, "echo out; echo err >&2; exit 2", host="chatty"))
        assert (d["stdout"], d["stderr"], d["exit_code"]) == ("out\n", "err\n", 2)


def test_remote_add_and_exec_through_a_container(env, container):
    def outpost(*args, **kw):
        return subprocess.run([BIN, *args], env=env, capture_output=True, text=True,
                              timeout=HANG_GUARD, **kw)

    prefix = " ".join(container.prefix)
    assert outpost("remote", "add", "ctr", "--command", prefix).returncode == 0
    refused = outpost("remote", "add", "web", "--docker", "web", "--port", "22")
    assert refused.returncode != 0 and "`port` does not apply to a remote of kind `docker`" in refused.stderr
    assert outpost("remote", "add", "app", "--docker", "web", "--user", "app").returncode == 0
    saved = json.loads(pathlib.Path(env["OUTPOST_CONFIG"]).read_text())["remotes"]
    assert saved["app"] == {"kind": "docker", "user": "app", "container": "web"}
    ran = outpost("exec", "ctr", "--", "sh", "-c", "hostname; cat", input="piped in")
    assert (ran.returncode, ran.stdout) == (0, f"{HOSTNAME}\npiped in"), ran.stderr
    test = outpost("remote", "test", "ctr")
    assert test.returncode == 0 and "ran `uname -sm`" in test.stdout, test.stdout + test.stderr
    listing = outpost("remote", "list").stdout
    assert f"ctr                  command    config      {prefix} (on local)" in listing
