"""Shared fixtures: the built outpost binary, an isolated HOME and config, MCP sessions over stdio."""

import contextlib
import json
import os
import pathlib
import subprocess
import tempfile
import time

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("OUTPOST_BIN", str(ROOT / "target" / "debug" / "outpost"))
# Bound on any wait in a test, so a bug fails the test instead of hanging it. Not a speed check.
HANG_GUARD = 30.0


def pytest_terminal_summary(terminalreporter):
    """Which real container engines the tests ran against (the README names them)."""
    import engines
    for line in engines.STARTED:
        terminalreporter.write_line(f"container engine tested: {line}")


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def env(tmp_path):
    """Environment for outpost: its own HOME (no ssh config) and config path."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    return {
        "HOME": str(home),
        "OUTPOST_CONFIG": str(tmp_path / "config.json"),
        "RUST_LOG": "info",
        "PATH": os.environ["PATH"],
    }


@contextlib.asynccontextmanager
async def open_session(env, errlog=None, logs=None):
    """A session with `outpost mcp serve`; log messages it sends are appended to `logs`."""
    params = StdioServerParameters(command=BIN, args=["mcp", "serve"], env=env)

    async def on_log(message):
        if logs is not None:
            logs.append(message)

    with open(os.devnull, "w") if errlog is None else contextlib.nullcontext(errlog) as err:
        async with stdio_client(params, errlog=err) as (read, write):
            async with ClientSession(read, write, logging_callback=on_log) as session:
                await session.initialize()
                yield session


@pytest.fixture
async def session(env):
    async with open_session(env) as s:
        yield s


@pytest.fixture
def sshd(env, tmp_path):
    """A real sshd on 127.0.0.1, reachable as the ~/.ssh/config alias `box` (host key not yet trusted)."""
    import getpass
    from sshd import Sshd
    home = pathlib.Path(env["HOME"])
    server = Sshd(tmp_path / "sshd", home).start()
    (home / ".ssh" / "config").write_text(
        f"Host box\n  HostName 127.0.0.1\n  Port {server.port}\n  User {getpass.getuser()}\n")
    yield server
    server.stop()


def alive(pid) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        stat = pathlib.Path(f"/proc/{int(pid)}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


async def wait_dead(pids, limit=HANG_GUARD):
    with anyio.fail_after(limit):
        while any(alive(p) for p in pids):
            await anyio.sleep(0.05)


def wait_dead_sync(pids, limit=HANG_GUARD):
    deadline = time.monotonic() + limit
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still alive: {[p for p in pids if alive(p)]}"
        time.sleep(0.05)


async def wait_for_lines(path: pathlib.Path, count: int, limit=HANG_GUARD):
    with anyio.fail_after(limit):
        while True:
            if path.exists():
                lines = path.read_text().split()
                if len(lines) >= count:
                    return lines
            await anyio.sleep(0.05)


def data(result):
    """The structured content of a tool result."""
    assert result.structured_content is not None, result
    return result.structured_content


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "text", None) is not None)


class RawServer:
    """outpost mcp serve driven with raw JSON-RPC lines, for what an SDK will not send."""

    def __init__(self, env, args=("mcp", "serve")):
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [BIN, *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, text=True,
        )
        self.next_id = 100

    def send_line(self, line: str):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def send(self, message: dict):
        self.send_line(json.dumps(message))

    def recv(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "server closed stdout"
        return json.loads(line)

    def request(self, method, params=None) -> dict:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.send(message)
        while True:
            reply = self.recv()
            if reply.get("id") == self.next_id:
                return reply

    def initialize(self):
        reply = self.request("initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"},
        })
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    def stderr_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


@pytest.fixture
def raw(env):
    server = RawServer(env)
    yield server
    server.close()


def exec_ctrl_c_kills_the_tree(env, host):
    """`outpost exec HOST`: output streams live, Ctrl-C exits 130 and the command's tree is dead."""
    import signal
    proc = subprocess.Popen([BIN, "exec", host, "--", "echo $$; sleep 300 & echo $!; wait"],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        # These lines arrive while the command still runs: output is streamed.
        pids = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert all(pids)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=HANG_GUARD) == 130
        wait_dead_sync(pids)
    finally:
        proc.kill()


# A user whose login shell is /bin/sh, created by scripts/test (sshd runs commands as `sh -c`).
SH_USER = "outpost-sh"
# Users whose login shells are bash and zsh, created by scripts/test, by login shell.
LOGIN_USERS = {"sh": SH_USER, "bash": "outpost-bash", "zsh": "outpost-zsh"}


def login_box(env, user: str, alias: str):
    """A test sshd as ssh alias `alias`, logging in as `user` (a generator: yields the sshd)."""
    import shutil
    import tempfile
    from sshd import Sshd
    # sshd reads the authorized keys as the user: somewhere it can reach.
    root = pathlib.Path(tempfile.mkdtemp(prefix="outpost-login-"))
    root.chmod(0o755)
    home = pathlib.Path(env["HOME"])
    server = Sshd(root / "sshd", home).start()
    (root / "sshd").chmod(0o755)
    shutil.chown(server.authorized, user)
    server.trust()
    with open(home / ".ssh" / "config", "a") as f:
        f.write(f"Host {alias}\n  HostName 127.0.0.1\n  Port {server.port}\n  User {user}\n")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sh_box(env):
    """The test sshd as ssh alias `shbox`, logging in as SH_USER."""
    import pwd
    assert pwd.getpwnam(SH_USER).pw_shell == "/bin/sh", "scripts/test creates this user"
    yield from login_box(env, SH_USER, "shbox")


@pytest.fixture(params=sorted(LOGIN_USERS))
def shell_box(env, request):
    """The test sshd as ssh alias `shellbox`, logging in as a user whose login shell is sh, bash
    or zsh; yields that shell's name."""
    import pwd
    user = LOGIN_USERS[request.param]
    assert pwd.getpwnam(user).pw_shell == f"/bin/{request.param}", "scripts/test creates this user"
    for _ in login_box(env, user, "shellbox"):
        yield request.param
