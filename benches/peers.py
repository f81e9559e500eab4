"""Peers: outpost against the npm MCP servers `ssh-mcp` and `mcp-ssh-manager` (issue 18, item 1).

The three servers go through the same client (the official MCP Python SDK), the same throwaway
sshd (stock settings, so OpenSSH's 10 channels per connection apply, as on a real server) and the
same non-root `/bin/sh` account. Every measure runs the servers interleaved. The peers are
installed pinned from benches/peers/ into target/peers by `scripts/bench`.
"""

import asyncio
import contextlib
import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import time

import anyio

from hosts import BENCH_USER, host_block
from sdk import Server
from sshd import Sshd

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = ROOT / "target" / "peers" / "node_modules"
MB = 1_000_000
# The 20 MB output: numbered lines of 100 bytes, so a line cut, lost or mangled shows.
LINES = 200_000
LINE = re.compile(r"^\d{8} x{90}$", re.M)


def numbered_lines(count):
    return f"awk 'BEGIN {{ for (i = 1; i <= {count}; i++) printf \"%08d {'x' * 90}\\n\", i }}'"


# Remote commands the timeout and cancel checks look for with pgrep (exact command lines).
TIMEOUT_SLEEP = "sleep 10.047"
# A cancelled command: one `sleep` (the command itself), or four in the background of a shell.
CANCELS = {"one": (1, "sleep 30.053", "sleep 30.053"),
           "tree": (4, "sleep 30.061", "for i in 1 2 3 4; do sleep 30.061 & done; wait")}
# Preloaded into a peer for the TCP_NODELAY rows (see the file).
NODELAY = pathlib.Path(__file__).resolve().parent / "peers" / "nodelay.cjs"
TIMEOUT_SECS = 2
# When the cancel checks cancel their call.
CANCEL_AFTER = 1.0
# How long after a call returns a process left on the host counts as having survived.
SURVIVAL_GRACE = 2.0


class Outpost:
    name = "outpost"

    def __init__(self, setup):
        self.setup = setup

    def start(self, target, timeout_secs=None):
        return Server([self.setup.binary, "mcp", "serve"], self.setup.env)

    def call(self, target, command, timeout_secs=None):
        arguments = {"host": target, "command": command}
        if timeout_secs:
            arguments["timeout_secs"] = timeout_secs
        return "remote_exec", arguments

    def succeeded(self, result):
        return not result.is_error and (result.structured_content or {}).get("exit_code") == 0

    def stdout(self, result):
        return (result.structured_content or {}).get("stdout") or ""


class NodePeer:
    """A peer run by Node.js; with `nodelay`, TCP_NODELAY forced on by a preload (not an option
    either peer has)."""

    def __init__(self, setup, nodelay=False):
        self.setup, self.nodelay = setup, nodelay
        self.name = self.package + (" +nodelay" if nodelay else "")

    def node_env(self):
        return dict(self.setup.node_env, **({"NODE_OPTIONS": f"--require {NODELAY}"} if self.nodelay else {}))


class SshMcp(NodePeer):
    """tufantunc/ssh-mcp: one profile per process (quick start flags); its timeout is per server."""

    package = "ssh-mcp"

    def start(self, target, timeout_secs=None):
        port = self.setup.sshds[target].port
        argv = ["node", str(MODULES / "ssh-mcp" / "build" / "index.js"), "--host=127.0.0.1", f"--port={port}",
                f"--user={BENCH_USER}", f"--key={self.setup.key}", "--group=dev", "--disableApproval"]
        if timeout_secs:
            argv.append(f"--timeout={timeout_secs * 1000}")
        return Server(argv, self.node_env(), cwd=self.setup.node_cwd)

    def call(self, target, command, timeout_secs=None):
        return "run-command", {"command": command}

    def succeeded(self, result):
        return not result.is_error

    def stdout(self, result):
        return text_of(result)


class SshManager(NodePeer):
    """bvisible/mcp-ssh-manager: servers from SSH_SERVER_<NAME>_* variables; a timeout per call."""

    package = "mcp-ssh-manager"

    def start(self, target, timeout_secs=None):
        env = self.node_env()
        for name, sshd in self.setup.sshds.items():
            prefix = f"SSH_SERVER_{name.upper()}_"
            env.update({prefix + "HOST": "127.0.0.1", prefix + "PORT": str(sshd.port), prefix + "USER": BENCH_USER,
                        prefix + "KEYPATH": str(self.setup.key)})
        return Server(["node", str(MODULES / "mcp-ssh-manager" / "src" / "index.js")], env, cwd=self.setup.node_cwd)

    def call(self, target, command, timeout_secs=None):
        arguments = {"server": target, "command": command}
        if timeout_secs:
            arguments["timeout"] = timeout_secs * 1000
        return "ssh_execute", arguments

    def succeeded(self, result):
        return not result.is_error and self._reply(result).get("code") == 0

    def stdout(self, result):
        return self._reply(result).get("stdout") or ""

    def _reply(self, result):
        """Its answer is JSON text: `{server, command, stdout, stderr, code, success}`."""
        with contextlib.suppress(ValueError):
            reply = json.loads(text_of(result))
            if isinstance(reply, dict):
                return reply
        return {}


def text_of(result):
    return "\n".join(c.text for c in result.content if getattr(c, "text", None) is not None)


class Setup:
    """Two stock sshd: `pbox` (its key known) and `stranger` (its key known to nobody)."""

    def __init__(self, bench):
        self.binary, self.work = bench.binary, bench.work / "peers"
        self.work.mkdir()
        ssh_dir = bench.home / ".ssh"
        self.key = ssh_dir / "id_ed25519"
        self.sshds = {name: Sshd(self.work / name, bench.home) for name in ("pbox", "stranger")}
        with open(bench.ssh_config, "a") as config:
            config.write(host_block("pbox", self.sshds["pbox"].port, ssh_dir))
            # outpost's own defaults for a host it does not know (no StrictHostKeyChecking line).
            config.write(f"Host stranger\n  HostName 127.0.0.1\n  Port {self.sshds['stranger'].port}\n"
                         f"  User {BENCH_USER}\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n")
        (self.work / "outpost.json").write_text("{}")
        self.env = dict(bench.env, OUTPOST_CONFIG=str(self.work / "outpost.json"))
        # The peers keep their state (logs, config dirs) under a home of their own.
        node_home = self.work / "node-home"
        (node_home / ".ssh").mkdir(parents=True)
        self.node_env = {"HOME": str(node_home), "PATH": os.environ["PATH"]}
        self.node_cwd = self.work
        self.markers = self.work / "markers"
        self.markers.mkdir()
        shutil.chown(self.markers, BENCH_USER)

    def start(self):
        for sshd in self.sshds.values():
            shutil.chown(sshd.authorized, BENCH_USER)  # sshd reads it as the user
            sshd.start()
        self.sshds["pbox"].trust()

    def stop(self):
        for pattern in [TIMEOUT_SLEEP] + [pattern for _, pattern, _ in CANCELS.values()]:
            kill_remote(pattern)
        for sshd in self.sshds.values():
            sshd.stop()


def remote_pids(command):
    done = subprocess.run(["pgrep", "-u", BENCH_USER, "-fx", command], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def kill_remote(command):
    """Kills what a timeout or cancel left behind (by pid), so the next check starts clean."""
    for pid in remote_pids(command):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def survivors(command, started):
    """How many `command` processes still run SURVIVAL_GRACE after `started` (sooner if none)."""
    while remote_pids(command) and time.perf_counter() < started + SURVIVAL_GRACE:
        await asyncio.sleep(0.05)
    left = len(remote_pids(command))
    kill_remote(command)
    return left


def servers(setup):
    return [Outpost(setup), SshMcp(setup), SshManager(setup)]


def nodelay_servers(setup):
    return [SshMcp(setup, nodelay=True), SshManager(setup, nodelay=True)]


def shuffled(items):
    items = list(items)
    random.shuffle(items)
    return items


async def tool_list(server):
    listed = await server.session.list_tools()
    whole = listed.model_dump(by_alias=True, exclude_none=True, mode="json")
    facing = [{"name": t["name"], "description": t.get("description", ""), "inputSchema": t["inputSchema"]}
              for t in whole["tools"]]
    size = lambda value: len(json.dumps(value, separators=(",", ":")))  # noqa: E731
    return {"tools": len(facing), "whole_bytes": size(whole), "model_bytes": size(facing)}


async def warm_and_concurrent(peers, nodelay, trials, rounds, width=32):
    """Tool lists, warm `true` (`nodelay` peers too) and `width` concurrent `true`s, on one
    long-lived server each."""
    out = {p.name: {"warm": [], "concurrent": [], "concurrent_ok": []} for p in peers + nodelay}
    async with contextlib.AsyncExitStack() as stack:
        live = {p.name: await stack.enter_async_context(p.start("pbox")) for p in peers + nodelay}
        for p in peers + nodelay:
            out[p.name]["tool_list"] = await tool_list(live[p.name])
            tool, arguments = p.call("pbox", "true")
            out[p.name]["first_call_ok"] = p.succeeded(await live[p.name].call(tool, arguments))
        for _ in range(trials):
            for p in shuffled(peers + nodelay):
                tool, arguments = p.call("pbox", "true")
                start = time.perf_counter()
                await live[p.name].call(tool, arguments)
                out[p.name]["warm"].append(time.perf_counter() - start)
        for _ in range(rounds):
            for p in shuffled(peers):
                tool, arguments = p.call("pbox", "true")

                async def one():
                    try:
                        result = await live[p.name].call(tool, arguments, read_timeout_seconds=60)
                    except Exception as e:  # a JSON-RPC error or a lost call: a failed call, counted
                        return False, str(e)
                    return p.succeeded(result), text_of(result)
                start = time.perf_counter()
                results = await asyncio.gather(*(one() for _ in range(width)))
                out[p.name]["concurrent"].append(time.perf_counter() - start)
                out[p.name]["concurrent_ok"].append(sum(ok for ok, _ in results))
                # What the failed calls said, each message once (raw results only, not the table).
                failures = out[p.name].setdefault("concurrent_failures", [])
                failures += {text[:300] for ok, text in results if not ok} - set(failures)
    return out


async def big_output(p, lines):
    """A fresh server's peak RSS (its process tree) while returning 20 MB, and what came back."""
    async with p.start("pbox") as server:
        tool, arguments = p.call("pbox", "true")
        await server.call(tool, arguments)
        tool, arguments = p.call("pbox", numbered_lines(lines))
        start = time.perf_counter()
        try:
            result = await server.call(tool, arguments, read_timeout_seconds=120)
        except Exception as e:  # noqa: BLE001 - reported in the table
            return {"error": str(e)[:200], "seconds": time.perf_counter() - start,
                    "peak_rss_mib": server.rss_kib("VmHWM") / 1024}
        took = time.perf_counter() - start
        return {"seconds": took, "peak_rss_mib": server.rss_kib("VmHWM") / 1024,
                "result_bytes": len(result.model_dump_json(by_alias=True, exclude_none=True)),
                "intact_lines": len(LINE.findall(p.stdout(result)))}


async def timeout_check(p, secs):
    """When a `secs` timeout on `sleep 10` returns, and whether the `sleep` outlives it."""
    async with p.start("pbox", timeout_secs=secs) as server:
        tool, arguments = p.call("pbox", "true", secs)
        await server.call(tool, arguments)
        tool, arguments = p.call("pbox", TIMEOUT_SLEEP, secs)
        start = time.perf_counter()
        with contextlib.suppress(Exception):
            await server.call(tool, arguments, read_timeout_seconds=30)
        returned = time.perf_counter()
        return {"returned_after": returned - start, "survivors": await survivors(TIMEOUT_SLEEP, returned)}


async def cancel_check(p, kind, after):
    """A call cancelled (the SDK sends notifications/cancelled) `after` seconds in: how many of
    its `sleep`s outlive it."""
    started, pattern, command = CANCELS[kind]
    async with p.start("pbox") as server:
        tool, arguments = p.call("pbox", "true")
        await server.call(tool, arguments)
        tool, arguments = p.call("pbox", command)
        with anyio.move_on_after(after):
            await server.call(tool, arguments)
        return {"started": started, "survivors": await survivors(pattern, time.perf_counter())}


async def host_key_check(p, setup):
    """A host whose key nobody knows: does the command run?"""
    marker = setup.markers / f"{p.name}-{time.monotonic_ns()}"
    async with p.start("stranger") as server:
        tool, arguments = p.call("stranger", f"touch {marker}")
        with contextlib.suppress(Exception):
            with anyio.move_on_after(30):
                await server.call(tool, arguments, read_timeout_seconds=30)
    return {"ran": marker.exists()}


async def start_and_idle(p):
    """Process start → `initialize` answered, and resident memory once idle after `tools/list`."""
    async with p.start("pbox") as server:
        await server.session.list_tools()
        await asyncio.sleep(0.5)
        return {"initialize_seconds": server.initialize_seconds, "idle_rss_mib": server.rss_kib() / 1024}


async def each(peers, trials, check, *args):
    """`check` on every server, `trials` times, interleaved: {server: [results]}."""
    out = {p.name: [] for p in peers}
    for _ in range(trials):
        for p in shuffled(peers):
            out[p.name].append(await check(p, *args))
    return out


def versions():
    def package(name):
        with contextlib.suppress(OSError, ValueError):
            return json.loads((MODULES / name / "package.json").read_text())["version"]
        return "not installed"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {"ssh-mcp": package("ssh-mcp"), "mcp-ssh-manager": package("mcp-ssh-manager"), "node": node}


def check_installed():
    """A full run needs the peers (scripts/bench installs them)."""
    if not all((MODULES / name / "package.json").exists() for name in ("ssh-mcp", "mcp-ssh-manager")):
        raise SystemExit("peers: not installed in target/peers; run scripts/bench, which installs them")


async def run(bench, smoke):
    """Every measure; a smoke run measures outpost alone (each peer takes a second to start),
    with a shorter timeout and an earlier cancel."""
    setup = Setup(bench)
    if not smoke:
        check_installed()
    peers = [Outpost(setup)] if smoke else servers(setup)
    nodelay = [] if smoke else nodelay_servers(setup)
    few = 1 if smoke else 3
    try:
        setup.start()
        warm = await warm_and_concurrent(peers, nodelay, 1 if smoke else 30, 1 if smoke else 5)
        results = {p.name: warm[p.name] for p in peers}
        for p in nodelay:
            results[p.package]["warm_nodelay"] = warm[p.name]["warm"]
        for key, trials, check, args in (("big", 1 if smoke else 2, big_output, (2000 if smoke else LINES,)),
                                         ("timeout", few, timeout_check, (1 if smoke else TIMEOUT_SECS,)),
                                         ("cancel_one", few, cancel_check, ("one", 0.3 if smoke else CANCEL_AFTER)),
                                         ("cancel_tree", few, cancel_check, ("tree", 0.3 if smoke else CANCEL_AFTER)),
                                         ("host_key", 1, host_key_check, (setup,)),
                                         ("start", 2 if smoke else 10, start_and_idle, ())):
            for name, got in (await each(peers, trials, check, *args)).items():
                results[name][key] = got
    finally:
        setup.stop()
    return {"versions": versions(), "lines": 2000 if smoke else LINES, "timeout_secs": 1 if smoke else TIMEOUT_SECS,
            "cancel_after": 0.3 if smoke else CANCEL_AFTER, "servers": results}


def _median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else sum(ordered[len(ordered) // 2 - 1:][:2]) / 2


def _spread(values, fmt):
    return f"{fmt(_median(values))} [{fmt(min(values))}–{fmt(max(values))}]" if values else "—"


def _ms(x):
    return f"{x * 1000:.1f} ms"


def _s(x):
    return f"{x:.2f} s"


def _mib(x):
    return f"{x:.1f} MiB"


def rows(r):
    """(measure, {server: cell}) for the peer table."""
    s = r["servers"]
    out = []

    def row(label, cell):
        out.append((label, {name: cell(v) for name, v in s.items()}))

    row("tools", lambda v: str(v["tool_list"]["tools"]))
    row("`tools/list` result, whole JSON", lambda v: f"{v['tool_list']['whole_bytes']:,} B")
    row("model-facing (name + description + inputSchema)", lambda v: f"{v['tool_list']['model_bytes']:,} B")
    row("model-facing per tool", lambda v: f"{v['tool_list']['model_bytes'] / v['tool_list']['tools']:,.0f} B")
    row("warm `true`, call → result", lambda v: _spread(v["warm"], _ms))
    row("… with TCP_NODELAY forced on in the peer (a preload; no option of theirs)",
        lambda v: _spread(v["warm_nodelay"], _ms) if "warm_nodelay" in v else "(always on)")
    row("32 concurrent `true`: wall time", lambda v: _spread(v["concurrent"], _ms))
    row("32 concurrent `true`: calls that succeeded, per round",
        lambda v: f"{min(v['concurrent_ok'])}–{max(v['concurrent_ok'])} of 32")
    lines = r["lines"]
    size = f"{lines * 100 / MB:g} MB"

    def big(field, fmt):
        return lambda v: "; ".join(fmt(b[field]) if field in b else f"error: {b.get('error', '')[:60]}"
                                   for b in v["big"])
    row(f"{size} of output: time to the result", big("seconds", _s))
    row(f"{size} of output: size of the result", big("result_bytes", lambda x: f"{x / MB:.2f} MB"))
    row(f"{size} of output: intact lines in it (of {lines:,})", big("intact_lines", lambda x: f"{x:,}"))
    row(f"{size} of output: server peak RSS (process tree)", big("peak_rss_mib", lambda x: f"{x:.0f} MiB"))
    row(f"{r['timeout_secs']:g} s timeout on `sleep 10`: returned after",
        lambda v: _spread([t["returned_after"] for t in v["timeout"]], _s))
    row("… the `sleep` still running on the host after it",
        lambda v: f"{sum(t['survivors'] > 0 for t in v['timeout'])} of {len(v['timeout'])} runs")
    for kind, label in (("one", "a `sleep`"), ("tree", "a shell's 4 background `sleep`s")):
        row(f"cancel {r['cancel_after']:g} s into {label}: processes left on the host, per run",
            lambda v, kind=kind: ", ".join(f"{c['survivors']} of {c['started']}" for c in v[f"cancel_{kind}"]))
    row("unknown host key: the command ran", lambda v: "**yes**" if any(h["ran"] for h in v["host_key"]) else "no")
    row("process start → `initialize` answered", lambda v: _spread([x["initialize_seconds"] for x in v["start"]], _ms))
    row("idle RSS after `tools/list` (process tree)", lambda v: _spread([x["idle_rss_mib"] for x in v["start"]], _mib))
    return out


def markdown(r):
    """The peers section of BENCHMARKS.md."""
    v = r["versions"]
    names = list(r["servers"])
    header = {"outpost": "outpost", "ssh-mcp": f"ssh-mcp {v['ssh-mcp']}",
              "mcp-ssh-manager": f"mcp-ssh-manager {v['mcp-ssh-manager']}"}
    lines = ["## Peers: other MCP servers for SSH (issue 18)", "",
             f"`ssh-mcp` {v['ssh-mcp']} and `mcp-ssh-manager` {v['mcp-ssh-manager']} from npm (pinned in",
             f"`benches/peers/`, installed with `npm ci --ignore-scripts`), run by Node.js {v['node']}; outpost is the",
             "release build. One client for all three (the official MCP Python SDK over stdio), one stock",
             "sshd on 127.0.0.1 (OpenSSH's default `MaxSessions 10`), the same non-root `/bin/sh` account;",
             "the servers take turns in random order. Cells list the median [min–max], or each run.", "",
             "| measure | " + " | ".join(header[n] for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for label, cells in rows(r):
        lines.append(f"| {label} | " + " | ".join(cells[n] for n in names) + " |")
    return "\n".join(lines) + "\n"
