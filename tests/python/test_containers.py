"""Container remotes against real engines and a simulation. Each test of the command path runs
three times: in a simulated "container" (a process in its own PID, mount, UTS, IPC and network
namespaces from `unshare`, entered with `nsenter` as `docker exec` enters a container: fast, and it
covers what has no engine), and in real podman and docker containers of a busybox image built here
(engines.py). As with docker, killing the engine's client would not kill what runs inside: outpost
must kill inside. An engine that cannot run here fails these tests; they are never skipped."""

import json
import os
import pathlib
import random
import shlex
import signal
import subprocess
import time
import uuid

import anyio
import pytest

import engines
from conftest import BIN, HANG_GUARD, RawServer, data, open_session, text
from test_claude import FAKE, claude, pid_of_data
from test_sync import same_bytes

pytestmark = pytest.mark.anyio
HOSTNAME = engines.HOSTNAME


class Simulated:
    """`sleep infinity` as PID 1 of fresh namespaces; `prefix` runs a program inside."""

    label, env = "simulation", {}

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
        self.client = self.prefix

    def remote(self, **extra) -> dict:
        return {"kind": "command", "command": self.prefix, **extra}

    def stop(self):
        self.proc.kill()
        subprocess.run(["kill", "-KILL", str(self.init)], check=False)
        self.proc.wait(timeout=HANG_GUARD)


def _cmdline(pid) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _engine(kind):
    engine = kind()
    engines.clean(engine)  # what a run that crashed left
    try:
        engine.start()
    except engines.EngineUnavailable as e:
        engines.clean(engine)
        pytest.fail(f"{engine.name} CANNOT RUN ON THIS MACHINE, and the container tests need it: {e}",
                    pytrace=False)
    yield engine
    engines.clean(engine)


@pytest.fixture(scope="session")
def podman_engine():
    yield from _engine(engines.Podman)


@pytest.fixture(scope="session")
def docker_engine():
    yield from _engine(engines.Docker)


@pytest.fixture
def simulated():
    c = Simulated()
    yield c
    c.stop()


@pytest.fixture(params=["simulation", "podman", "docker"])
def container(request):
    if request.param == "simulation":
        c = Simulated()
    else:
        c = request.getfixturevalue(f"{request.param}_engine").start_container()
    yield c
    c.stop()


@pytest.fixture
def cenv(env, container):
    """outpost's environment, with what the engine's CLI needs (its socket, its storage)."""
    return {**env, **container.env}


def configure(env, remotes, **extra):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"remotes": remotes, **extra}))


@pytest.fixture
async def ctr(cenv, container):
    configure(cenv, {"ctr": container.remote()})
    async with open_session(cenv) as s:
        yield s


async def run(session, command, host="ctr", **args):
    return await session.call_tool("remote_exec", {"host": host, "command": command, **args})


def marker() -> str:
    """A `sleep` argument no other test uses, to find its processes in the host's `ps`."""
    return str(random.randint(10**6, 10**7))


def processes_with(mark: str) -> list[str]:
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if mark in line]


def pids_with(mark: str) -> list[int]:
    return [int(p.name) for p in pathlib.Path("/proc").iterdir()
            if p.name.isdigit() and mark in _cmdline(p.name)]


async def wait_gone(mark: str):
    with anyio.fail_after(HANG_GUARD):
        while processes_with(mark):
            await anyio.sleep(0.05)


async def wait_running(mark: str):
    with anyio.fail_after(HANG_GUARD):
        while not any(line.startswith("sleep") for line in processes_with(mark)):
            await anyio.sleep(0.05)


async def test_runs_inside_with_cwd_env_and_stdin(ctr):
    r = await run(ctr, 'hostname; pwd; echo "pid1=$(cat /proc/1/comm)"; printf "%s\\n" "$TOKEN"; cat; exit 4',
                  cwd="/tmp", env={"TOKEN": "it's \"quoted\"\n$x"}, stdin="from stdin")
    d = data(r)
    assert d["host"] == "ctr" and d["exit_code"] == 4 and d["signal"] is None, text(r)
    assert d["stdout"] == f"{HOSTNAME}\n/tmp\npid1=sleep\nit's \"quoted\"\n$x\nfrom stdin"


async def test_death_by_a_signal_reports_the_signal(ctr):
    # The engines turn a death by signal n into exit code 128+n; the wrapper inside says which it was.
    for sig in ["TERM", "KILL"]:
        d = data(await run(ctr, f"echo before; kill -{sig} $$"))
        assert (d["exit_code"], d["signal"], d["stdout"], d["stderr"]) == (None, f"SIG{sig}", "before\n", ""), d
    d = data(await run(ctr, "exit 3"))
    assert (d["exit_code"], d["signal"]) == (3, None), d


async def test_without_cwd_commands_run_in_home(ctr, cenv, container):
    home = cenv["HOME"] if container.label == "simulation" else "/root"
    d = data(await run(ctr, 'pwd; echo "$HOME"'))
    assert d["stdout"] == f"{home}\n{home}\n", d


@pytest.mark.parametrize("engine", ["podman", "docker"])
async def test_the_default_cwd_is_the_users_home_and_without_one_the_workdir(env, request, engine):
    engine = request.getfixturevalue(f"{engine}_engine")
    container = engine.start_container()
    try:
        # A user whose home does not exist stays where the engine starts it: the image's WORKDIR.
        engine.cmd("exec", container.name, "sh", "-c", "echo nohome:x:1001:1001::/nonexistent:/bin/sh >> /etc/passwd")
        cenv = {**env, **container.env}
        configure(cenv, {"app": container.remote(user="app"), "nohome": container.remote(user="nohome")})
        async with open_session(cenv) as s:
            for host, expected in [("app", "/home/app"), ("nohome", "/work")]:
                d = data(await run(s, "pwd", host=host))
                assert d["stdout"] == f"{expected}\n", d
    finally:
        container.stop()


async def test_env_values_stay_out_of_argv_on_the_host_and_inside(ctr, container):
    secret, mark = "hunter2-" + uuid.uuid4().hex, marker()
    job = data(await run(ctr, f"sleep {mark}", env={"API_KEY": secret}, background=True))["job_id"]
    await wait_running(mark)
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert container.client[0] in listing and secret not in listing
    inside = data(await run(ctr, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; ps -o args"))["stdout"]
    assert mark in inside and secret not in inside, inside
    await ctr.call_tool("job_kill", {"job_id": job})
    await wait_gone(mark)


async def test_timeout_kills_the_tree_inside(ctr):
    mark = marker()
    r = await run(ctr, f"sleep {mark} & sleep {mark}; wait", timeout_secs=1)
    d = data(r)
    assert r.is_error and d["timed_out"] is True and d["signal"] == "SIGTERM", text(r)
    await wait_gone(mark)


async def test_a_tree_that_ignores_term_is_killed_inside(cenv, container):
    configure(cenv, {"ctr": container.remote()}, exec={"kill_grace_ms": 300})
    mark = marker()
    async with open_session(cenv) as s:
        r = await run(s, f"trap '' TERM; sleep {mark} & sleep {mark}; wait", timeout_secs=1)
    d = data(r)
    assert d["status"] == "timed_out" and d["signal"] == "SIGKILL" and "kill_unconfirmed" not in d, d
    await wait_gone(mark)


async def test_zombies_under_an_init_that_never_reaps_do_not_hold_up_a_timeout(cenv, container):
    # PID 1 here is `sleep infinity`: what the kill leaves of the group stays a zombie forever.
    # A kill that waited for zombies would take the whole (long) grace.
    configure(cenv, {"ctr": container.remote()}, exec={"kill_grace_ms": 120_000})
    mark = marker()
    async with open_session(cenv) as s:
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
    killed = data(await ctr.call_tool("job_kill", {"job_id": job}))
    assert killed["status"] == "killed" and killed["signal"] == "SIGTERM", killed
    await wait_gone(mark)


async def test_shutdown_kills_inside(cenv, container):
    configure(cenv, {"ctr": container.remote()})
    mark = marker()
    async with open_session(cenv) as s:
        await run(s, f"exec sleep {mark}", background=True)
        await wait_running(mark)
    await wait_gone(mark)
    # SIGTERM of the server, with a tree running.
    server = RawServer(cenv)
    try:
        server.initialize()
        reply = server.request("tools/call", {"name": "remote_exec", "arguments": {
            "host": "ctr", "command": f"sleep {mark} & exec sleep {mark}", "background": True}})
        assert not reply["result"].get("isError"), reply
        await wait_running(mark)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=HANG_GUARD) == 0
        # Everything it started inside was dead before it exited.
        assert processes_with(mark) == [], server.stderr_text()[-3000:]
    finally:
        server.close()


def ns_pid(host_pid: int) -> int:
    """A process's pid in its own (the container's) PID namespace."""
    status = pathlib.Path(f"/proc/{host_pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[-1])


async def test_a_kill_never_hits_a_process_that_reused_the_leaders_pid(cenv, container):
    """The job's leader dies without outpost noticing (its engine client is stopped), and its pid
    inside is taken by another group leader: `job_kill` must leave that one alone."""
    configure(cenv, {"ctr": container.remote()}, exec={"kill_grace_ms": 300})
    mark, other = marker(), marker()
    async with open_session(cenv) as s:
        job = data(await run(s, f"exec sleep {mark}", background=True))["job_id"]
        await wait_running(mark)
        [leader] = pids_with(mark)
        inside = ns_pid(leader)
        [client] = pids_with(" ".join([*container.client, "sh", "-c"]))
        os.kill(client, signal.SIGSTOP)
        try:
            os.kill(leader, signal.SIGKILL)
            with anyio.fail_after(HANG_GUARD):
                while pathlib.Path(f"/proc/{leader}").exists():  # reaped by the wrapper inside
                    await anyio.sleep(0.05)
            # The container's next process gets `inside`: a group leader of its own.
            subprocess.run(["nsenter", "--target", str(container.init), "--pid", "--", "sh", "-c",
                            f"echo {inside - 1} > /proc/sys/kernel/ns_last_pid; setsid sleep {other} &"],
                           check=True, timeout=HANG_GUARD)
            [victim] = pids_with(other)
            assert ns_pid(victim) == inside, "the pid was not reused: something else started in the container"
            killed = data(await s.call_tool("job_kill", {"job_id": job}))
            assert killed["status"] == "killed" and "kill_unconfirmed" not in killed, killed
            assert "sleep" in _cmdline(victim), "the kill hit another process"
        finally:
            for pid, sig in [(client, signal.SIGCONT), *((p, signal.SIGKILL) for p in pids_with(other))]:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass  # outpost killed its client
    await wait_gone(other)


@pytest.mark.parametrize("engine", ["podman", "docker"])
async def test_real_engine_errors_come_back_clearly(env, request, engine):
    engine = request.getfixturevalue(f"{engine}_engine")
    stopped = f"outpost-test-stopped-{uuid.uuid4().hex[:8]}"
    engine.cmd("create", "--name", stopped, "--network", "none", engines.IMAGE, "sleep", "infinity")
    cli = engine.cli
    remotes = {"gone": {"kind": "docker", "container": "outpost-no-such-container", "cli": cli},
               "stopped": {"kind": "docker", "container": stopped, "cli": cli}}
    said = {"podman": {"gone": 'no container with name or ID "outpost-no-such-container" found',
                       "stopped": "can only create exec sessions on running containers"},
            "docker": {"gone": "No such container: outpost-no-such-container",
                       "stopped": "is not running"}}[engine.name]
    try:
        cenv = {**env, **engine.extra}
        configure(cenv, remotes)
        async with open_session(cenv) as s:
            for host, words in said.items():
                r = await run(s, "true", host=host)
                assert r.is_error and f"cannot run on `{host}`: `{cli}` failed before the command started" in text(r), text(r)
                assert words in text(r), text(r)
            hosts = {h["name"]: h for h in data(await s.call_tool("list_hosts", {}))["hosts"]}
            assert hosts["gone"]["state"].startswith("down: cannot run on `gone`"), hosts["gone"]
        if engine.name == "docker":
            down = engines.BASE / "docker" / "no-daemon.sock"
            cenv = {**env, "DOCKER_HOST": f"unix://{down}"}
            configure(cenv, {"web": {"kind": "docker", "container": "web", "cli": cli}})
            async with open_session(cenv) as s:
                r = await run(s, "true", host="web")
                assert r.is_error and f"Cannot connect to the Docker daemon at unix://{down}" in text(r), text(r)
    finally:
        engine.cmd(*engine.remove, stopped, check=False)


async def test_engine_errors_come_back_clearly(env, simulated):
    configure(env, {
        "gone": {"kind": "command", "command": ["nsenter", "--target", "999999999", "--pid", "--"]},
        "nodocker": {"kind": "docker", "container": "web", "cli": "docker-not-installed"},
        "nokubectl": {"kind": "kubernetes", "pod": "p", "cli": "/opt/none/kubectl"},
        "ctr": {"kind": "command", "command": simulated.prefix},
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


async def test_via_an_ssh_host_runs_the_engine_there(env, sshd, container, tmp_path):
    # On the SSH host (the test sshd), a real engine's CLI finds this test's engine through a
    # script that sets what it needs: the SSH session does not have this process's environment.
    remote = container.remote(via="box")
    if container.label != "simulation":
        cli = tmp_path / f"{container.label}-cli"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in container.env.items())
        cli.write_text(f'#!/bin/sh\n{exports}exec {container.engine.cli} "$@"\n')
        cli.chmod(0o755)
        remote["cli"] = str(cli)
    sshd.trust()
    configure(env, {"ctr": remote})
    mark = marker()
    async with open_session(env) as s:
        r = await run(s, "hostname; cat", stdin="through ssh")
        assert data(r)["stdout"] == f"{HOSTNAME}\nthrough ssh", text(r)
        r = await run(s, f"sleep {mark} & sleep {mark}; wait", timeout_secs=1)
        assert data(r)["timed_out"] is True
        await wait_gone(mark)


async def test_spawn_claude_and_sync_sessions_inside(env, simulated, tmp_path):
    inside, local = tmp_path / "inside-claude", tmp_path / "local-claude"
    project = tmp_path / "proj"
    project.mkdir()
    configure(env, {"ctr": {"kind": "command", "command": simulated.prefix, "claude_path": FAKE,
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


@pytest.mark.parametrize("engine", ["podman", "docker"])
async def test_spawn_claude_and_sync_sessions_in_a_real_engine(env, request, engine, tmp_path):
    # The image with python3 and the fake claude (engines.py); Claude's files stay in the container.
    engine = request.getfixturevalue(f"{engine}_engine")
    ctr = engine.start_container(python=True)
    local = tmp_path / "local-claude"
    try:
        cenv = {**env, **engine.extra, "CLAUDE_CONFIG_DIR": str(local)}
        configure(cenv, {"ctr": ctr.remote(claude_path=engines.CLAUDE_IN_IMAGE,
                                           claude_env={"CLAUDE_CONFIG_DIR": "/root/.claude"})})
        async with open_session(cenv) as s:
            first = await claude(s, "hello", host="ctr", cwd="/work")
            d = data(first)
            assert not first.is_error and d["host"] == "ctr", text(first)
            second = data(await claude(s, "again", session_id=d["session_id"]))
            assert second["warm"] is True and pid_of_data(second) == pid_of_data(d)
            assert second["sync"]["previous_pull"]["pulled"]["files_transferred"] == 1, json.dumps(second["sync"])
            # Claude runs inside: its pid is in the container's PID namespace.
            assert pid_of_data(d) < 100
            name = f"{d['session_id']}.jsonl"
            inside = engine.cmd("exec", ctr.name, "sh", "-c", f"cat /root/.claude/projects/*/{name}").stdout
            with anyio.fail_after(HANG_GUARD):
                while not list(local.glob(f"projects/*/{name}")) or \
                        next(local.glob(f"projects/*/{name}")).read_text() != inside:
                    await anyio.sleep(0.05)
            again = data(await s.call_tool("sync_sessions", {"host": "ctr", "direction": "pull", "cwd": "/work"}))
            assert again["bytes_transferred"] == 0 and again["files_in_sync"] >= 1
    finally:
        ctr.stop()


async def test_any_wrapper_prefix_and_its_chatter_stays_out_of_the_output(env):
    # A prefix that talks on stderr before running its argv, as `kubectl exec` does
    # ("Defaulted container ..."): that is not the command's output.
    chatty = ["sh", "-c", 'echo "Defaulted container \\"main\\" out of: main" >&2; exec "$@"', "wrapper"]
    configure(env, {"chatty": {"kind": "command", "command": chatty}})
    async with open_session(env) as s:
        d = data(await run(s, "echo out; echo err >&2; exit 2", host="chatty"))
        assert (d["stdout"], d["stderr"], d["exit_code"]) == ("out\n", "err\n", 2)


def test_remote_add_and_exec_through_a_container(env, simulated):
    def outpost(*args, **kw):
        return subprocess.run([BIN, *args], env=env, capture_output=True, text=True,
                              timeout=HANG_GUARD, **kw)

    prefix = " ".join(simulated.prefix)
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
