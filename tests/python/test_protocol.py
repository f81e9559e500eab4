"""The stdio server at the JSON-RPC level: bad input answered, logs kept off stdout, clean shutdown."""

import json
import signal
import subprocess

import pytest

from conftest import BIN, HANG_GUARD, RawServer, wait_dead_sync


def wait_lines_sync(path, count):
    import time
    deadline = time.monotonic() + HANG_GUARD
    while not (path.exists() and len(path.read_text().split()) >= count):
        assert time.monotonic() < deadline, "pid file never filled"
        time.sleep(0.05)
    return path.read_text().split()


def test_initialize_names_the_server(raw):
    reply = raw.initialize()
    info = reply["result"]["serverInfo"]
    assert info["name"] == "outpost" and info["version"]
    assert "tools" in reply["result"]["capabilities"]
    assert raw.request("ping") == {"jsonrpc": "2.0", "id": raw.next_id, "result": {}}


def test_bad_input_gets_json_rpc_errors_and_the_server_lives(raw):
    raw.initialize()
    raw.send_line("this is not json")
    assert raw.recv()["error"]["code"] == -32700
    raw.send_line('{"jsonrpc": "2.0", "id": 5, "no_method": true}')
    reply = raw.recv()
    assert reply["id"] == 5 and reply["error"]["code"] == -32600
    assert raw.request("no/such/method")["error"]["code"] == -32601
    unknown_tool = raw.request("tools/call", {"name": "no_such_tool", "arguments": {}})
    assert unknown_tool["error"]["code"] == -32602 and "no_such_tool" in unknown_tool["error"]["message"]
    no_name = raw.request("tools/call", {"arguments": {}})
    assert "error" in no_name
    # A wrong argument type is a tool error the model can read (MCP: input validation is a tool result).
    bad_args = raw.request("tools/call", {"name": "remote_exec", "arguments": {"command": 5}})
    assert bad_args["result"]["isError"] is True
    assert "invalid type" in bad_args["result"]["content"][0]["text"]
    ok = raw.request("tools/call", {"name": "remote_exec", "arguments": {"command": "echo still here"}})
    assert ok["result"]["structuredContent"]["stdout"] == "still here\n"


def test_logs_go_to_stderr_only(env):
    env = {**env, "RUST_LOG": "debug"}
    server = RawServer(env)
    try:
        server.initialize()
        server.request("tools/call", {"name": "remote_exec", "arguments": {"command": "echo hi"}})
        server.proc.stdin.close()
        assert server.proc.wait(timeout=HANG_GUARD) == 0
        for line in server.proc.stdout.read().splitlines():
            json.loads(line)  # every stdout line is JSON-RPC
        assert "remote_exec started" in server.stderr_text()
    finally:
        server.close()


@pytest.mark.parametrize("how", ["stdin_eof", "sigterm"])
def test_shutdown_kills_running_processes_and_exits_0(raw, tmp_path, how):
    raw.initialize()
    pidfile = tmp_path / "pids"
    for background in (False, True):
        raw.send({"jsonrpc": "2.0", "id": int(background), "method": "tools/call", "params": {
            "name": "remote_exec", "arguments": {
                "command": f"echo $$ >> {pidfile}; sleep 300 & echo $! >> {pidfile}; wait",
                "background": background}}})
    pids = wait_lines_sync(pidfile, 4)
    if how == "stdin_eof":
        raw.proc.stdin.close()
    else:
        raw.proc.send_signal(signal.SIGTERM)
    assert raw.proc.wait(timeout=HANG_GUARD) == 0
    wait_dead_sync(pids)


def test_bad_config_is_refused_with_file_line_and_field(env, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{\n  "exec": {\n    "default_timeout_secs": "soon"\n  }\n}\n')
    proc = subprocess.run([BIN, "mcp", "serve"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=HANG_GUARD)
    assert proc.returncode != 0
    assert f"{config}:3:" in proc.stderr and "exec.default_timeout_secs" in proc.stderr
    assert proc.stdout == ""


def test_claude_desktop_example_entry_starts_the_server(env):
    """The shipped claude_desktop_config.example.json entry, with the built binary as its command."""
    from conftest import ROOT
    entry = json.loads((ROOT / "claude_desktop_config.example.json").read_text())["mcpServers"]["outpost"]
    assert entry["command"] == "outpost"
    server = RawServer({**env, **entry.get("env", {})}, args=tuple(entry["args"]))
    try:
        assert server.initialize()["result"]["serverInfo"]["name"] == "outpost"
    finally:
        server.close()


def test_unreadable_messages_are_answered_with_id_null(raw):
    """JSON-RPC 2.0: when the id cannot be read (bad JSON, an id of the wrong type) the reply's id is null."""
    raw.initialize()
    raw.send_line("{not json")
    reply = raw.recv()
    assert reply["error"]["code"] == -32700 and "id" in reply and reply["id"] is None, reply
    for bad_id in (1.5, True, {}, [], None):
        raw.send({"jsonrpc": "2.0", "id": bad_id, "method": "ping"})
        reply = raw.recv()
        assert reply["error"]["code"] == -32600 and "id" in reply and reply["id"] is None, (bad_id, reply)
    assert raw.request("ping")["result"] == {}


@pytest.mark.parametrize("params", [None, {"arguments": {}}, {"name": 5}, {"name": "list_hosts", "arguments": 7}])
def test_tools_call_with_missing_or_malformed_params_is_invalid_params(raw, params):
    raw.initialize()
    reply = raw.request("tools/call", params)
    assert reply["error"]["code"] == -32602, reply
    assert "tools/call" in reply["error"]["message"], reply


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_the_versions_clients_ask_for_are_kept(env, version):
    server = RawServer(env)
    try:
        reply = server.request("initialize", {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"}})
        assert reply["result"]["protocolVersion"] == version
        server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = server.request("tools/call", {
            "name": "remote_exec", "arguments": {"host": "local", "command": "echo $((6*7))"}})
        assert call["result"]["structuredContent"]["stdout"] == "42\n", call
    finally:
        server.close()


def test_a_2026_07_28_client_is_served_without_initialize(env):
    server = RawServer(env)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"}}
    try:
        found = server.request("server/discover", {"_meta": meta})
        assert "2026-07-28" in found["result"]["supportedVersions"], found
        assert "2025-06-18" in found["result"]["supportedVersions"]
        tools = server.request("tools/list", {"_meta": meta})
        assert "remote_exec" in [t["name"] for t in tools["result"]["tools"]], tools
        call = server.request("tools/call", {
            "name": "remote_exec", "arguments": {"host": "local", "command": "echo $((6*7))"},
            "_meta": meta})
        assert call["result"]["structuredContent"]["stdout"] == "42\n", call
    finally:
        server.close()
