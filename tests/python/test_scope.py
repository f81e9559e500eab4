"""Who may do what over the network: principals limited to hosts and tools by their token's
claims and by `serve.principals` (both must allow), `tools/list` per principal, Claude sessions
that belong to the principal that started them, and the audit log a network server keeps by default."""
import contextlib
import json
import pathlib
import stat
import time

import anyio
import jwt
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from conftest import HANG_GUARD, data, text
from network import SECRET, Served, auth_header, generate_token, write_secret
from test_claude import claude_env, write_config  # noqa: F401 (claude_env is a fixture)

pytestmark = pytest.mark.anyio

# Hosts that are never reached: a refusal comes before any connection.
UNREACHED = {"host": "203.0.113.1", "connect_timeout_secs": 1}


@contextlib.asynccontextmanager
async def http_session(url, token):
    """An MCP SDK session over Streamable HTTP with `token`."""
    async with create_mcp_http_client(headers=auth_header(token)) as client:
        async with streamable_http_client(url, http_client=client) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                with anyio.fail_after(HANG_GUARD):
                    await session.initialize()
                yield session


def pyjwt_token(sub, **claims):
    """A token made without outpost, as another issuer would."""
    now = int(time.time())
    return jwt.encode({"sub": sub, "iat": now, "exp": now + 600, **claims}, SECRET, algorithm="HS256")


async def unknown_tool_error(session, name):
    with pytest.raises(MCPError) as refused:
        await session.call_tool(name, {})
    return refused.value.error


def served(env, tmp_path, *extra):
    secret = write_secret(tmp_path)
    return Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret), *extra), secret


async def test_a_token_limited_to_hosts_and_tools_sees_and_reaches_only_those(env, tmp_path):
    write_config(env, {"remotes": {"gpu1": UNREACHED, "gpu2": UNREACHED, "other": UNREACHED},
                       "groups": {"gpus": ["gpu1", "gpu2"]}})
    server, secret = served(env, tmp_path)
    limited = generate_token(env, secret, "--subject", "ana", "--hosts", "local,gpus",
                             "--tools", "remote_exec,list_hosts,job_output,list_jobs")
    with server:
        async with http_session(server.url, limited) as ana:
            listed = {t.name for t in (await ana.list_tools()).tools}
            assert listed == {"remote_exec", "list_hosts", "job_output", "list_jobs"}

            hidden = await unknown_tool_error(ana, "spawn_claude")
            unknown = await unknown_tool_error(ana, "no_such_tool")
            assert hidden.message == ("unknown tool `spawn_claude`; the tools are: "
                                      "job_output, list_hosts, list_jobs, remote_exec"), hidden.message
            assert (hidden.code, hidden.message.replace("spawn_claude", "x")) == (
                unknown.code, unknown.message.replace("no_such_tool", "x"))

            refused = await ana.call_tool("remote_exec", {"command": "touch never", "host": "other"})
            assert refused.is_error, text(refused)
            assert text(refused).startswith(
                "`ana` may not use host `other`, so nothing was run; its hosts are: gpu1, gpu2, gpus, local."), text(refused)

            ran = await ana.call_tool("remote_exec", {"command": "echo in scope"})
            assert not ran.is_error and data(ran)["stdout"] == "in scope\n", text(ran)
            hosts = data(await ana.call_tool("list_hosts", {}))["hosts"]
            assert [h["name"] for h in hosts] == ["local", "gpu1", "gpu2", "gpus"]

        unlimited = generate_token(env, secret, "--subject", "bob")
        async with http_session(server.url, unlimited) as bob:
            assert "spawn_claude" in {t.name for t in (await bob.list_tools()).tools}
            hosts = data(await bob.call_tool("list_hosts", {}))["hosts"]
            assert "other" in [h["name"] for h in hosts]


async def test_a_transfer_needs_both_of_its_hosts_in_scope(env, tmp_path):
    write_config(env, {"remotes": {"other": UNREACHED}})
    server, secret = served(env, tmp_path)
    limited = generate_token(env, secret, "--subject", "ana", "--hosts", "local", "--tools", "transfer")
    (tmp_path / "f").write_text("f")
    with server:
        async with http_session(server.url, limited) as ana:
            for source, destination in ((str(tmp_path / "f"), "other:/tmp/x"), ("other:/etc/hosts", str(tmp_path))):
                refused = await ana.call_tool("transfer", {"source": source, "destination": destination})
                assert refused.is_error and text(refused).startswith("`ana` may not use host `other`"), text(refused)
            copied = await ana.call_tool("transfer", {"source": str(tmp_path / "f"), "destination": f"{tmp_path}/g"})
            assert not copied.is_error and (tmp_path / "g").read_text() == "f", text(copied)


async def test_config_principals_and_token_claims_both_limit(env, tmp_path):
    write_config(env, {
        "default_host": "other",
        "remotes": {"other": UNREACHED, "gpu1": UNREACHED},
        "serve": {"principals": {"ana": {"hosts": ["local", "other"], "tools": ["remote_exec", "list_hosts"]}}},
    })
    server, _ = served(env, tmp_path)
    # Made with PyJWT: the claims are outpost's `hosts` and `tools`.
    token = pyjwt_token("ana", hosts=["local", "gpu1"], tools=["remote_exec", "list_jobs", "list_hosts"])
    with server:
        async with http_session(server.url, token) as ana:
            assert sorted(t.name for t in (await ana.list_tools()).tools) == ["list_hosts", "remote_exec"]
            assert "the tools are: list_hosts, remote_exec" in (await unknown_tool_error(ana, "list_jobs")).message
            # The default host is what an unnamed host means: `other`, which the token does not allow.
            for args in ({}, {"host": "gpu1"}):
                refused = await ana.call_tool("remote_exec", {"command": "echo no", **args})
                assert refused.is_error and "its hosts are: local." in text(refused), text(refused)
            assert "`other`" in text(await ana.call_tool("remote_exec", {"command": "echo no"}))
            ran = await ana.call_tool("remote_exec", {"command": "echo yes", "host": "local"})
            assert data(ran)["stdout"] == "yes\n", text(ran)
            assert [h["name"] for h in data(await ana.call_tool("list_hosts", {}))["hosts"]] == ["local"]
        # A claim that is not a list of names makes the token invalid, not unlimited.
        async with create_mcp_http_client(headers=auth_header(pyjwt_token("ana", hosts="local"))) as client:
            response = await client.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                         headers={"Accept": "application/json, text/event-stream"})
            assert response.status_code == 401


async def test_generate_token_refuses_a_tool_that_does_not_exist(env, tmp_path):
    import subprocess
    from conftest import BIN
    secret = write_secret(tmp_path)
    out = subprocess.run([BIN, "auth", "generate-token", "--jwt-secret-file", str(secret), "--tools", "remote_exec,rm"],
                         env=env, capture_output=True, text=True, timeout=HANG_GUARD)
    assert out.returncode != 0 and "--tools: `rm` is not a tool; the tools are: job_kill, job_output," in out.stderr, out.stderr


async def test_another_principal_can_neither_list_nor_resume_a_claude_session(claude_env, tmp_path):
    env, config, project, _ = claude_env
    server, secret = served(env, tmp_path)
    ana_token = generate_token(env, secret, "--subject", "ana")
    bob_token = generate_token(env, secret, "--subject", "bob")
    with server:
        async with http_session(server.url, ana_token) as ana, http_session(server.url, bob_token) as bob:
            first = await ana.call_tool("spawn_claude", {"prompt": "hello", "host": "gpu", "cwd": str(project)})
            assert not first.is_error, text(first)
            session_id = data(first)["session_id"]
            assert data(await bob.call_tool("list_sessions", {}))["sessions"] == []
            mine = data(await ana.call_tool("list_sessions", {}))["sessions"]
            assert [(s["session_id"], s.get("owner")) for s in mine] == [(session_id, "ana")]
            for args in ({}, {"fork": True}, {"host": "gpu"}):
                refused = await bob.call_tool("spawn_claude", {"prompt": "steal", "session_id": session_id, **args})
                assert refused.is_error and text(refused).startswith(
                    f"session `{session_id}` was started by another principal, so `bob` may not resume"), text(refused)
            synced = await bob.call_tool("sync_sessions", {"direction": "pull", "session_id": session_id})
            assert synced.is_error and "started by another principal" in text(synced), text(synced)

            again = await ana.call_tool("spawn_claude", {"prompt": "more", "session_id": session_id})
            assert not again.is_error and data(again)["session_id"] == session_id, text(again)


async def test_a_network_server_keeps_a_private_audit_log_by_default(env, tmp_path):
    write_config(env, {"remotes": {"other": UNREACHED}})
    state = pathlib.Path(env["HOME"]) / ".local/state/outpost"
    log = state / "audit/audit.log"
    server, secret = served(env, tmp_path, "--no-audit-log")
    token = generate_token(env, secret, "--subject", "ana", "--hosts", "local")
    with server:
        async with http_session(server.url, token) as ana:
            await ana.call_tool("remote_exec", {"command": "echo off"})
    assert not log.exists(), "--no-audit-log keeps none"

    server, _ = served(env, tmp_path)
    with server:
        async with http_session(server.url, token) as ana:
            await ana.call_tool("remote_exec", {"command": "echo audited"})
            await ana.call_tool("remote_exec", {"command": "echo refused", "host": "other"})
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["principal"], r["tool"], r.get("host"), r["input"], r["outcome"]) for r in records] == [
        ("ana", "remote_exec", None, "echo audited", "exited"),
        ("ana", "remote_exec", "other", "echo refused", "error"),
    ], records
    assert "may not use host `other`" in records[1]["error"]


async def test_a_principals_own_policy_adds_to_the_hosts_and_decisions_are_audited(env, tmp_path):
    # ana may not run `rm` anywhere and must confirm `reboot`-like commands; bob is not limited.
    write_config(env, {"serve": {"principals": {"ana": {"policy": {"deny": [r"^rm\b"], "confirm": ["^shutdown"]}}}}})
    log = pathlib.Path(env["HOME"]) / ".local/state/outpost/audit/audit.log"
    server, secret = served(env, tmp_path)
    ana_token = generate_token(env, secret, "--subject", "ana")
    bob_token = generate_token(env, secret, "--subject", "bob")
    marker = tmp_path / "kept"
    marker.touch()
    with server:
        async with http_session(server.url, ana_token) as ana, http_session(server.url, bob_token) as bob:
            refused = await ana.call_tool("remote_exec", {"command": f"rm {marker}"})
            assert refused.is_error and "serve.principals.ana.policy.deny" in text(refused), text(refused)
            assert marker.exists()
            # No elicitation in this client: what needs confirming does not run.
            unconfirmed = await ana.call_tool("remote_exec", {"command": "shutdown --help >/dev/null; echo ran"})
            assert unconfirmed.is_error and "serve.principals.ana.policy.confirm" in text(unconfirmed)
            assert data(await bob.call_tool("remote_exec", {"command": "echo bob runs"}))["stdout"] == "bob runs\n"
            allowed = await bob.call_tool("remote_exec", {"command": f"rm {marker}"})
            assert not allowed.is_error and not marker.exists()
    decisions = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("event") == "decision"]
    assert [(d["principal"], d["decision"], d["decided_by"]) for d in decisions] == [
        ("ana", "denied", "policy"), ("ana", "unanswered", "no one")], decisions
    assert decisions[0]["what"] == f"the command `rm {marker}`"


async def test_a_narrower_token_of_the_same_subject_reaches_only_jobs_on_its_hosts(env, tmp_path):
    write_config(env, {"remotes": {"other": UNREACHED}})
    server, secret = served(env, tmp_path)
    wide = generate_token(env, secret, "--subject", "ana")
    narrow = generate_token(env, secret, "--subject", "ana", "--hosts", "other")
    with server:
        async with http_session(server.url, wide) as full, http_session(server.url, narrow) as limited:
            job = data(await full.call_tool("remote_exec", {"command": "sleep 60", "host": "local",
                                                            "background": True}))["job_id"]
            assert data(await limited.call_tool("list_jobs", {}))["jobs"] == []
            for tool in ("job_output", "job_kill"):
                r = await limited.call_tool(tool, {"job_id": job})
                assert r.is_error and text(r).startswith(f"no job `{job}`"), text(r)
            assert data(await full.call_tool("job_output", {"job_id": job}))["status"] == "running"
            await full.call_tool("job_kill", {"job_id": job})


async def test_over_the_network_a_whole_projects_sessions_are_not_synced(env, tmp_path):
    server, secret = served(env, tmp_path)
    token = generate_token(env, secret, "--subject", "ana")
    with server:
        async with http_session(server.url, token) as ana:
            r = await ana.call_tool("sync_sessions", {"direction": "pull", "host": "local", "cwd": str(tmp_path)})
    assert r.is_error and "invalid argument `session_id`: is required over the network" in text(r), text(r)
