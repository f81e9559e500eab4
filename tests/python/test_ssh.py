"""The SSH transport against a real OpenSSH sshd on 127.0.0.1, driven through the MCP SDK."""

import getpass
import json
import pathlib
import shutil
import socket
import subprocess

import anyio
import pytest

from conftest import HANG_GUARD, RawServer, data, open_session, text, wait_dead, wait_for_lines
from sshd import Sshd, keygen

pytestmark = pytest.mark.anyio
USER = getpass.getuser()


@pytest.fixture
async def box(env, sshd):
    sshd.trust()
    async with open_session(env) as s:
        yield s


async def run(session, command, **args):
    return await session.call_tool("remote_exec", {"host": "box", "command": command, **args})


async def test_runs_on_an_ssh_alias_with_cwd_env_and_stdin(box, tmp_path):
    r = await run(box, 'pwd; printf "%s\\n" "$TOKEN"; cat; echo oops >&2; exit 5',
                  cwd=str(tmp_path), env={"TOKEN": "it's \"quoted\"\nand multi-line"}, stdin="in")
    d = data(r)
    assert d["host"] == "box" and d["exit_code"] == 5 and d["stderr"] == "oops\n"
    assert d["stdout"] == f"{tmp_path}\nit's \"quoted\"\nand multi-line\nin"


async def test_missing_cwd_is_an_error(box):
    r = await run(box, "true", cwd="/no/such/dir")
    assert r.is_error and "does not exist on host `box`" in text(r)


async def test_list_hosts_shows_connection_state(box):
    def state(listing):
        return {h["name"]: h for h in data(listing)["hosts"]}["box"]["state"]
    assert state(await box.call_tool("list_hosts", {})) == "not connected"
    await run(box, "true")
    assert state(await box.call_tool("list_hosts", {})) == "connected (1 connection)"


async def test_unknown_host_key_is_refused_with_the_trust_command(env, sshd, tmp_path):
    marker = tmp_path / "ran"
    async with open_session(env) as s:
        r = await run(s, f"touch {marker}")
    assert r.is_error and "is not known" in text(r)
    assert sshd.known_hosts_line().strip() in text(r)
    assert not marker.exists()


async def test_changed_host_key_is_refused_loudly(env, sshd, tmp_path):
    other = tmp_path / "other_host_key"
    keygen(other)
    kind, key = pathlib.Path(str(other) + ".pub").read_text().split()[:2]
    (pathlib.Path(env["HOME"]) / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    async with open_session(env) as s:
        r = await run(s, "true")
    assert r.is_error and "HAS CHANGED" in text(r) and "known_hosts:1" in text(r)


async def test_accept_new_records_the_key_and_user_at_host_works(env, sshd):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"remotes": {"fresh": {
        "host": "127.0.0.1", "port": sshd.port, "user": USER, "strict_host_key_checking": "accept-new"}}}))
    async with open_session(env) as s:
        assert data(await s.call_tool("remote_exec", {"host": "fresh", "command": "echo ok"}))["stdout"] == "ok\n"
        # Now known: a plain user@host:port destination works too.
        r = await s.call_tool("remote_exec", {"host": f"{USER}@127.0.0.1:{sshd.port}", "command": "echo again"})
        assert data(r)["stdout"] == "again\n"
    known = (pathlib.Path(env["HOME"]) / ".ssh" / "known_hosts").read_text()
    assert sshd.host_public_key[1] in known


async def test_forty_calls_at_once_share_pooled_connections(box, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    # Each call waits until all 40 are running at the same time: 40 live channels, over 10 per connection.
    command = f'touch {gate}/$N; while [ "$(ls {gate} | wc -l)" -lt 40 ]; do sleep 0.1; done; echo $N'
    results = {}

    async def one(i):
        results[i] = data(await run(box, command, env={"N": str(i)}))

    with anyio.fail_after(HANG_GUARD * 2):
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
    assert {i: r["stdout"] for i, r in results.items()} == {i: f"{i}\n" for i in range(40)}
    state = {h["name"]: h for h in data(await box.call_tool("list_hosts", {}))["hosts"]}["box"]["state"]
    assert state == "connected (5 connections)"


async def test_timeout_kills_the_remote_tree(box):
    r = await run(box, "echo $$; sleep 300 & echo $!; wait", timeout_secs=1)
    d = data(r)
    assert r.is_error and d["timed_out"] is True and d["signal"] == "SIGTERM"
    await wait_dead(d["stdout"].split())


async def test_cancel_kills_the_remote_tree(box, tmp_path):
    pidfile = tmp_path / "pids"

    async def call():
        await run(box, f"echo $$ > {pidfile}; sleep 300 & echo $! >> {pidfile}; wait")

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        pids = await wait_for_lines(pidfile, 2)
        tg.cancel_scope.cancel()
    await wait_dead(pids)


async def test_job_kill_and_shutdown_kill_remote_processes(env, sshd, tmp_path):
    sshd.trust()
    pidfile = tmp_path / "pids"
    async with open_session(env) as s:
        job = data(await run(s, f"echo $$ >> {pidfile}; exec sleep 300", background=True))["job_id"]
        first = await wait_for_lines(pidfile, 1)
        assert data(await s.call_tool("job_kill", {"job_id": job}))["status"] == "killed"
        await wait_dead(first)
        await run(s, f"echo $$ >> {pidfile}; exec sleep 300", background=True)
        second = (await wait_for_lines(pidfile, 2))[1:]
    # The session closed (stdin EOF): the server killed what it ran before exiting.
    await wait_dead(second)


async def test_env_values_never_show_in_ps(box):
    secret = "hunter2-do-not-leak-7781"
    job = data(await run(box, "sleep 300", env={"API_KEY": secret}, background=True))["job_id"]
    with anyio.fail_after(HANG_GUARD):
        while b"sleep 300" not in subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True).stdout:
            await anyio.sleep(0.05)
    listing = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    assert secret not in listing
    await box.call_tool("job_kill", {"job_id": job})


async def test_sshd_restart_gives_a_clear_error_then_reconnects(box, sshd):
    assert data(await run(box, "echo one"))["stdout"] == "one\n"
    sshd.stop()
    r = await run(box, "echo two")
    assert r.is_error and "cannot connect to `box`" in text(r) and "Connection refused" in text(r)
    sshd.start()
    assert data(await run(box, "echo three"))["stdout"] == "three\n"


async def test_network_failures_are_remembered_and_idle_connections_close(env, sshd):
    sshd.trust()
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"ssh": {"idle_timeout_secs": 1}}))
    async with open_session(env) as s:
        assert data(await run(s, "echo up"))["stdout"] == "up\n"
        with anyio.fail_after(HANG_GUARD):
            while (await s.call_tool("list_hosts", {})).structured_content["hosts"][1]["state"] != "not connected":
                await anyio.sleep(0.2)
        sshd.stop()
        first = await run(s, "true")
        assert first.is_error and "Connection refused" in text(first)
        second = await run(s, "true")  # at once: a call always makes a real attempt
        assert second.is_error and "Connection refused" in text(second)
        state = data(await s.call_tool("list_hosts", {}))["hosts"][1]["state"]
        assert state.startswith("unreachable:")


async def test_a_dead_host_does_not_block_a_live_one(env, sshd):
    sshd.trust()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts TCP, never says a word
    with (pathlib.Path(env["HOME"]) / ".ssh" / "config").open("a") as f:
        f.write(f"Host dead\n  HostName 127.0.0.1\n  Port {silent.getsockname()[1]}\n  ConnectTimeout 5\n")
    order = []
    try:
        async with open_session(env) as s:
            async def dead():
                r = await s.call_tool("remote_exec", {"host": "dead", "command": "true"})
                order.append(("dead", r.is_error, text(r)))

            async with anyio.create_task_group() as tg:
                tg.start_soon(dead)
                await anyio.sleep(0.2)
                assert data(await run(s, "echo alive"))["stdout"] == "alive\n"
                order.append(("live", False, ""))
    finally:
        silent.close()
    assert [o[0] for o in order] == ["live", "dead"]
    assert order[1][1] and "no answer within 5s" in order[1][2]


async def test_agent_auth_and_keys_only_errors(env, sshd, tmp_path):
    sshd.trust()
    ssh_dir = pathlib.Path(env["HOME"]) / ".ssh"
    hidden = tmp_path / "agent_only_key"
    for suffix in ("", ".pub"):
        shutil.move(str(ssh_dir / f"id_ed25519{suffix}"), str(hidden) + suffix)
    async with open_session(env) as s:
        r = await run(s, "true")
        assert r.is_error and "keys only" in text(r)
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        with anyio.fail_after(HANG_GUARD):
            while not sock.exists():
                await anyio.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(hidden)], env={**env, "SSH_AUTH_SOCK": str(sock)}, check=True)
        async with open_session({**env, "SSH_AUTH_SOCK": str(sock)}) as s:
            assert data(await run(s, "echo via agent"))["stdout"] == "via agent\n"
    finally:
        agent.kill()
        agent.wait()


async def test_passphrase_key_outside_the_agent_says_ssh_add(env, sshd):
    sshd.trust()
    key = pathlib.Path(env["HOME"]) / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "secret-pass", "-f", str(key)], check=True)
    async with open_session(env) as s:
        r = await run(s, "true")
    assert r.is_error and f"ssh-add {key}" in text(r)


def test_fifty_megabytes_stream_with_bounded_memory(env, sshd):
    sshd.trust()
    server = RawServer(env)
    try:
        server.initialize()
        reply = server.request("tools/call", {"name": "remote_exec", "arguments": {
            "host": "box", "command": "head -c 50000000 /dev/zero | tr '\\0' y; echo; echo end"}})
        d = reply["result"]["structuredContent"]
        assert d["exit_code"] == 0 and d["truncated"] is True and d["stdout"].endswith("end\n")
        status = pathlib.Path(f"/proc/{server.proc.pid}/status").read_text()
        peak_kb = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1])
        assert peak_kb < 100 * 1024, f"peak RSS {peak_kb} kB"
    finally:
        server.close()


def outpost(env, *args):
    from conftest import BIN
    return subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=HANG_GUARD,
                          stdin=subprocess.DEVNULL)


def test_remote_commands(env, sshd):
    sshd.trust()
    config = pathlib.Path(env["OUTPOST_CONFIG"])
    added = outpost(env, "remote", "add", "gpu", f"{USER}@127.0.0.1:{sshd.port}", "--workspace", "/tmp",
                    "--set-default")
    assert added.returncode == 0, added.stderr
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    saved = json.loads(config.read_text())
    assert saved["default_host"] == "gpu"
    assert saved["remotes"]["gpu"] == {"host": "127.0.0.1", "user": USER, "port": sshd.port, "workspace": "/tmp"}
    listing = outpost(env, "remote", "list").stdout
    assert "gpu" in listing and "(default)" in listing and "box" in listing
    # The default host and its workspace apply when a call names neither.
    assert outpost(env, "exec", "gpu", "--", "pwd").stdout == "/tmp\n"
    test = outpost(env, "remote", "test", "gpu")
    assert test.returncode == 0, test.stdout + test.stderr
    for step in ("tcp", "host key", "auth", "command", "claude", "total"):
        assert any(line.startswith(step) and " ms " in line for line in test.stdout.splitlines()), step
    assert outpost(env, "remote", "add", "gpu", "x@y").returncode != 0  # exists already
    assert outpost(env, "remote", "set-default", "local").returncode == 0
    assert outpost(env, "remote", "remove", "gpu").returncode == 0
    assert "gpu" not in json.loads(config.read_text()).get("remotes", {})
    missing = outpost(env, "remote", "remove", "gpu")
    assert missing.returncode != 0 and "no remote `gpu`" in missing.stderr


def test_remote_test_fails_on_an_unknown_key(env, sshd):
    (pathlib.Path(env["HOME"]) / ".ssh" / "known_hosts").write_text("")
    result = outpost(env, "remote", "test", "box")
    assert result.returncode != 0 and "is not known" in result.stdout


async def test_default_remote_is_used_when_host_is_omitted(env, sshd):
    sshd.trust()
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps({"default_host": "box"}))
    async with open_session(env) as s:
        r = data(await s.call_tool("remote_exec", {"command": "echo $SSH_CONNECTION | cut -d' ' -f3"}))
    assert r["host"] == "box" and r["stdout"] == "127.0.0.1\n"


async def test_proxy_jump_through_a_second_sshd(env, sshd, tmp_path):
    home = pathlib.Path(env["HOME"])
    jump = Sshd(tmp_path / "jump", home).start()
    try:
        sshd.trust()
        jump.trust()
        with (home / ".ssh" / "config").open("a") as f:
            f.write(f"Host bastion\n  HostName 127.0.0.1\n  Port {jump.port}\n  User {USER}\n"
                    f"Host inner\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {USER}\n  ProxyJump bastion\n")
        async with open_session(env) as s:
            r = data(await s.call_tool("remote_exec", {"host": "inner", "command": "echo through"}))
            assert r["stdout"] == "through\n"
            hosts = {h["name"]: h for h in data(await s.call_tool("list_hosts", {}))["hosts"]}
            assert hosts["inner"]["state"] == "connected (1 connection)"
        jump.stop()
        # With the jump host gone, the target cannot be reached: the tunnel really went through it.
        async with open_session(env) as s:
            r = await s.call_tool("remote_exec", {"host": "inner", "command": "true"})
        assert r.is_error and "ProxyJump `bastion`" in text(r)
    finally:
        jump.stop()


async def test_hashed_known_hosts_and_host_key_alias(env, sshd):
    home = pathlib.Path(env["HOME"])
    known = home / ".ssh" / "known_hosts"
    kind, key = sshd.host_public_key
    # The key recorded under an alias name (OpenSSH looks an alias up without the port), then the
    # file hashed as `HashKnownHosts yes` does.
    known.write_text(f"keyalias {kind} {key}\n")
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "keyalias" not in known.read_text()
    with (home / ".ssh" / "config").open("a") as f:
        f.write(f"Host aliased\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {USER}\n  HostKeyAlias keyalias\n")
    async with open_session(env) as s:
        assert data(await s.call_tool("remote_exec", {"host": "aliased", "command": "echo ok"}))["stdout"] == "ok\n"
        # Without the alias the same host's key is unknown under its address.
        assert (await run(s, "true")).is_error


def test_exec_ctrl_c_kills_the_remote_tree(env, sshd):
    from conftest import exec_ctrl_c_kills_the_tree
    sshd.trust()
    exec_ctrl_c_kills_the_tree(env, "box")


async def test_connection_lost_mid_command_is_said(box, sshd):
    job = data(await run(box, "echo started; sleep 300", background=True))["job_id"]
    with anyio.fail_after(HANG_GUARD):
        while "started" not in data(await box.call_tool("job_output", {"job_id": job, "wait_secs": 2}))["output"]:
            pass
    sshd.stop()  # kills the connection's sshd processes too
    # Output is already there past offset 0, so a long-poll from 0 returns at once: follow it
    # until the loss is noticed, then read the whole of it.
    with anyio.fail_after(HANG_GUARD):
        r = data(await box.call_tool("job_output", {"job_id": job, "wait_secs": 20}))
        while r["status"] == "running":
            r = data(await box.call_tool("job_output", {"job_id": job, "offset": r["next_offset"], "wait_secs": 20}))
    r = data(await box.call_tool("job_output", {"job_id": job}))
    assert r["status"] == "exited" and r["exit_code"] is None
    assert "connection to `box` was lost" in r["output"]


async def test_a_shell_that_never_starts_the_command_does_not_hang_the_call(env, tmp_path):
    home = pathlib.Path(env["HOME"])
    stuck = Sshd(tmp_path / "stuck", home, extra=["ForceCommand sleep 300"]).start()
    try:
        stuck.trust()
        with (home / ".ssh" / "config").open("a") as f:
            f.write(f"Host stuck\n  HostName 127.0.0.1\n  Port {stuck.port}\n  User {USER}\n  ConnectTimeout 2\n")
        with anyio.fail_after(HANG_GUARD):
            async with open_session(env) as s:
                r = await s.call_tool("remote_exec", {"host": "stuck", "command": "echo never"})
        assert r.is_error and "did not start the command within 2s" in text(r)
    finally:
        stuck.stop()


async def test_a_login_shell_that_prints_before_the_command_still_runs_it(env, tmp_path):
    """Startup files that print (.bashrc banners, motd scripts) come before the wrapper's report."""
    home = pathlib.Path(env["HOME"])
    noisy = Sshd(tmp_path / "noisy", home, extra=[
        'ForceCommand printf "welcome to the box\\n\\nno newline here:"; eval "$SSH_ORIGINAL_COMMAND"']).start()
    try:
        noisy.trust()
        with (home / ".ssh" / "config").open("a") as f:
            f.write(f"Host noisy\n  HostName 127.0.0.1\n  Port {noisy.port}\n  User {USER}\n")
        with anyio.fail_after(HANG_GUARD):
            async with open_session(env) as s:
                r = await s.call_tool("remote_exec", {"host": "noisy", "command": "echo ran; exit 3"})
        d = data(r)
        assert d["exit_code"] == 3 and d["stdout"] == "ran\n", text(r)
    finally:
        noisy.stop()


async def test_a_login_shell_that_runs_sh_text_runs_the_wrapper_in_place(env, shell_box):
    # What runs the command: the login shell's own command line.
    command = "tr '\\000\\n' '  ' < /proc/$$/cmdline; echo; echo \"$SECRET\"; pwd; cat"
    call = {"host": "shellbox", "command": command, "env": {"SECRET": "s3 cr3t"}, "cwd": "/tmp", "stdin": "in"}
    async with open_session(env) as s:
        first = data(await s.call_tool("remote_exec", call))
        second = data(await s.call_tool("remote_exec", call))
        # The first command learns the login shell; from then on no second shell starts.
        first_line = first["stdout"].split("\n", 1)[0]
        assert first_line.startswith("sh -c if ") and " outpost __outpost_" in first_line, first_line
        shell_line, rest = second["stdout"].split("\n", 1)
        prelude = "emulate sh; " if shell_box == "zsh" else ""
        assert shell_line.startswith(f"{shell_box} -c {prelude}set -- __outpost_"), shell_line
        assert "exec sh" not in shell_line
        assert rest == "s3 cr3t\n/tmp\nin" and second["exit_code"] == 0
        assert "s3 cr3t" not in shell_line, "secrets stay out of argv"
        # Exit codes, signals and kills work the same in place.
        assert data(await s.call_tool("remote_exec", {"host": "shellbox", "command": "exit 7"}))["exit_code"] == 7
        r = await s.call_tool("remote_exec", {"host": "shellbox", "command": "echo $$; sleep 300 & echo $!; wait",
                                              "timeout_secs": 1})
        d = data(r)
        assert d["timed_out"] is True and d["signal"] == "SIGTERM"
        await wait_dead(d["stdout"].split())


@pytest.mark.parametrize("host", ["local", "box"])
async def test_env_names_a_shell_cannot_set_are_refused_alike_everywhere(box, host):
    for name in ["A;B", "A B", "", "A=C", "1A"]:
        r = await box.call_tool("remote_exec", {"host": host, "command": "env", "env": {name: "x"}})
        assert r.is_error, (name, text(r))
        assert "invalid argument `env`" in text(r) and "not a valid variable name" in text(r), text(r)
    ok = await box.call_tool("remote_exec", {"host": host, "command": 'echo "$_Ok1"', "env": {"_Ok1": "y"}})
    assert data(ok)["stdout"] == "y\n"
