"""Port tunnels (`outpost tunnel`, and `outpost mcp connect --remote`) through the real test sshd to
an echo server on loopback."""

import json
import os
import pathlib
import signal
import socket
import socketserver
import subprocess
import threading
import time

import pytest

from conftest import BIN, HANG_GUARD
from sshd import free_port


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def tunnel_env(env, sshd, echo):
    sshd.trust()
    local = free_port()
    config = {"remotes": {"gpu": {"host": "box", "tunnels": [
        {"local": local, "remote": echo, "description": "echo"}]}}}
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))
    return env, local, echo


def start(env, *args):
    proc = subprocess.Popen([BIN, *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc


def round_trip(port, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
    return bytes(got)


def wait_round_trip(port, payload=b"ping"):
    """Retries until the tunnel carries data again (it may be reconnecting)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        try:
            if round_trip(port, payload) == payload:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the tunnel did not carry data"
        time.sleep(0.1)


def carried_by_sshd(echo_port) -> bool:
    """Whether a connection to the echo server comes from an sshd process (so through SSH)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{echo_port} )"],
                         capture_output=True, text=True).stdout
    return "sshd" in out


def stop(proc):
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=HANG_GUARD)
    finally:
        proc.kill()


def test_data_flows_and_a_port_in_use_is_refused(tunnel_env):
    env, local, echo = tunnel_env
    proc = start(env, "tunnel", "gpu")
    try:
        assert proc.stdout.readline() == f"tunnel 127.0.0.1:{local} -> gpu -> 127.0.0.1:{echo} (echo)\n"
        payload = os.urandom(1 << 20)
        with socket.create_connection(("127.0.0.1", local), timeout=HANG_GUARD) as s:
            s.sendall(payload[:1000])
            got = s.recv(1000, socket.MSG_WAITALL)
            assert got == payload[:1000]
            assert carried_by_sshd(echo)
        assert round_trip(local, payload) == payload
        again = subprocess.run([BIN, "tunnel", "gpu"], env=env, capture_output=True, text=True,
                               timeout=HANG_GUARD)
        assert again.returncode != 0
        assert f"local port {local} on 127.0.0.1 is already in use" in again.stderr, again.stderr
    finally:
        assert stop(proc) == 0, proc.stderr.read()
    # Ctrl-C closed the listener.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", local), timeout=5).close()


def test_the_tunnel_recovers_after_sshd_restarts(tunnel_env, sshd):
    env, local, _ = tunnel_env
    proc = start(env, "tunnel", "gpu")
    try:
        proc.stdout.readline()
        wait_round_trip(local)
        held = socket.create_connection(("127.0.0.1", local), timeout=HANG_GUARD)
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        sshd.stop()
        # The connection carried over the dead SSH connection ends; the tunnel itself stays.
        held.settimeout(HANG_GUARD)
        assert held.recv(1) == b""
        held.close()
        sshd.start()
        wait_round_trip(local, b"after the restart")
        assert proc.poll() is None
    finally:
        assert stop(proc) == 0, proc.stderr.read()


def test_ad_hoc_forward_to_an_ssh_alias(env, sshd, echo):
    sshd.trust()
    local = free_port()
    proc = start(env, "tunnel", "box", "-L", f"{local}:127.0.0.1:{echo}")
    try:
        assert proc.stdout.readline() == f"tunnel 127.0.0.1:{local} -> box -> 127.0.0.1:{echo}\n"
        assert round_trip(local, b"hello") == b"hello"
    finally:
        stop(proc)
    unknown = subprocess.run([BIN, "tunnel", "local", "-L", f"{local}:127.0.0.1:{echo}"], env=env,
                             capture_output=True, text=True, timeout=HANG_GUARD)
    assert unknown.returncode != 0 and "tunnels go over SSH" in unknown.stderr


def test_mcp_connect_remote_opens_the_remotes_tunnels(tunnel_env):
    env, local, _ = tunnel_env
    bridge = start(env, "mcp", "connect", "--remote", "gpu")
    try:
        wait_round_trip(local, b"through the bridge's tunnel")
    finally:
        bridge.stdin.close()
        bridge.wait(timeout=HANG_GUARD)


def test_health_checks_report_down_then_up(tunnel_env, sshd):
    """Started while sshd is down: the check says so, and says when it works again."""
    env, local, _ = tunnel_env
    sshd.stop()
    proc = start(env, "tunnel", "gpu")
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()

    def wait_for(text):
        deadline = time.monotonic() + HANG_GUARD
        while not any(text in line for line in lines):
            assert time.monotonic() < deadline, f"no {text!r} in {lines}"
            time.sleep(0.05)

    try:
        wait_for("tunnel down; retrying")
        sshd.start()
        wait_for("tunnel up")
        assert round_trip(local, b"up again") == b"up again"
    finally:
        assert stop(proc) == 0, lines
