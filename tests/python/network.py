"""`outpost mcp serve --websocket|--http` as a subprocess, tokens, and raw JSON-RPC over a WebSocket."""
import json
import pathlib
import re
import signal
import socket
import subprocess
import time

from conftest import BIN, HANG_GUARD

# Every level, naming the modules that would log message contents: none may show a secret.
TRACE_ALL = "trace,rmcp::service=trace,tungstenite::handshake=trace,tokio_tungstenite=trace"
SECRET = "f" * 24 + "0123456789abcdef0123456789abcdef"  # 56 bytes, never to be logged
# The exact challenges of a 401: what a client (and its user) is told to do.
NO_TOKEN_CHALLENGE = ('Bearer realm="outpost", error_description="this server needs a bearer token: send '
                      'Authorization: Bearer <token>, made on the server with outpost auth generate-token"')
BAD_TOKEN_CHALLENGE = ('Bearer realm="outpost", error="invalid_token", error_description="the bearer token was '
                       'refused (expired, signed with another key, or for another audience or issuer): send '
                       'Authorization: Bearer <token>, made on the server with outpost auth generate-token"')


def challenge_for(token) -> str:
    return BAD_TOKEN_CHALLENGE if token else NO_TOKEN_CHALLENGE


def host_port(url: str):
    """(host, port) of a served URL such as ws://127.0.0.1:PORT/mcp."""
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    host, port = netloc.rsplit(":", 1)
    return host, int(port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_secret(tmp_path) -> pathlib.Path:
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET + "\n")
    return path


def generate_token(env, secret_file, *args) -> str:
    out = subprocess.run([BIN, "auth", "generate-token", "--jwt-secret-file", str(secret_file), *args],
                         env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Served:
    """A running network server; `url` is known once it printed its address."""

    def __init__(self, env, tmp_path, *args, name="server"):
        self.log = tmp_path / f"{name}.log"
        self.args = args
        self.env = env
        self.proc = None
        self.url = None

    def start(self):
        # The log may hold an earlier server's lines: only what this one writes counts.
        skip = self.log.stat().st_size if self.log.exists() else 0
        self.errfile = open(self.log, "a")
        self.proc = subprocess.Popen([BIN, "mcp", "serve", *self.args], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.errfile)
        deadline = time.monotonic() + HANG_GUARD
        while time.monotonic() < deadline:
            # Only a whole line counts: a line still being written could end mid-port.
            found = re.findall(r"serving MCP on (\S+)\s", self.log.read_text()[skip:])
            if found:
                self.url = found[-1]
                return self
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.02)
        raise AssertionError("the server never said where it listens")

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=HANG_GUARD)
        self.errfile.close()
        return code

    def text(self) -> str:
        return self.log.read_text()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def initialize_message(id=0):
    return {"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "pytest", "version": "1"}}}


async def ws_session(ws):
    """Initializes an MCP session on an open websocket."""
    await ws.send(json.dumps(initialize_message()))
    reply = json.loads(await ws.recv())
    assert "result" in reply, reply
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return reply["result"]


async def ws_request(ws, id, method, params):
    """Sends a request and returns its response, skipping notifications."""
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    while True:
        message = json.loads(await ws.recv())
        if message.get("id") == id:
            return message


async def ws_call(ws, id, name, arguments):
    """Calls a tool and returns its response, skipping notifications."""
    return await ws_request(ws, id, "tools/call", {"name": name, "arguments": arguments})


def auth_header(token):
    return {"Authorization": f"Bearer {token}"}


def process_running(marker: str) -> bool:
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return any(marker in line and "ps -ww" not in line for line in listing.splitlines())


def closed_by_server(sock) -> bool:
    """Reads until the server closes `sock` (whatever it sent first); False if it stays open."""
    sock.settimeout(HANG_GUARD)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def wait_until(predicate, limit=HANG_GUARD):
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


__all__ = ["SECRET", "TRACE_ALL", "NO_TOKEN_CHALLENGE", "BAD_TOKEN_CHALLENGE", "challenge_for", "host_port", "Served", "free_port", "write_secret", "generate_token", "ws_session", "ws_call",
           "auth_header", "closed_by_server", "process_running", "wait_until", "initialize_message"]
