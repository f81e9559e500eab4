#!/usr/bin/env python3
"""outpost against OpenSSH, rsync and others, side by side on one machine (B1-B6, fan-out, peers).

The fan-out (benches/fanout.py) and peer (benches/peers.py) sections have modules of their own.
Starts a throwaway OpenSSH sshd on 127.0.0.1 (as the tests do), then measures, interleaving the
variants trial by trial, and writes medians, min/max and ratios as Markdown. Run it through
`scripts/bench` (which builds the release binary and installs what is missing); `--smoke` makes a
tiny, fast run that only proves the script works (the test suite runs it).
"""

import argparse
import asyncio
import json
import os
import pathlib
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from sshd import Sshd  # noqa: E402
from hosts import BENCH_BASH_USER, BENCH_USER, host_block  # noqa: E402
import fanout  # noqa: E402
import peers  # noqa: E402
from transfer import b7_rows, b7_transfer  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "fake_claude" / "claude"
MB = 1_000_000
# B4: the pause before a follow-up in its "after think time" variant.
THINK_SECONDS = 0.5


class Mcp:
    """A bare JSON-RPC client on `outpost mcp serve`'s stdio: little client overhead in the timings."""

    def __init__(self, proc):
        self.proc = proc
        self.next_id = 0
        self.pending = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, binary, env):
        proc = await asyncio.create_subprocess_exec(
            binary, "mcp", "serve", env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, limit=1 << 30)
        self = cls(proc)
        await self.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                          "clientInfo": {"name": "bench", "version": "1"}})
        self.notify("notifications/initialized")
        return self

    async def _read(self):
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            future = self.pending.pop(message.get("id"), None)
            if future is not None:
                future.set_result(message)

    def notify(self, method, params=None):
        self._send({"jsonrpc": "2.0", "method": method, **({"params": params} if params else {})})

    def _send(self, message):
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def request(self, method, params=None):
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        message = await future
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message["result"]

    async def call(self, tool, arguments):
        result = await self.request("tools/call", {"name": tool, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{tool}: {result['content'][0]['text']}")
        return result["structuredContent"]

    def rss_kib(self, field="VmRSS"):
        return proc_status(self.proc.pid, field)

    async def close(self):
        self.proc.stdin.close()
        await self.proc.wait()
        self.reader.cancel()


def proc_status(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Bench:
    """The sshd, the client-side HOME, the OpenSSH ControlMaster and the outpost environment."""

    def __init__(self, work: pathlib.Path, binary: str):
        self.work, self.binary = work, binary
        work.chmod(0o755)
        self.home = work / "home"
        (self.home / ".ssh").mkdir(parents=True)
        self.sshd = Sshd(work / "sshd", self.home, extra=["MaxSessions 100", "MaxStartups 100:30:200"])
        shutil.chown(self.sshd.authorized, BENCH_USER)  # sshd reads it as the user
        self.sshd.start().trust()
        ssh = self.home / ".ssh"
        # `boxbash`: another sshd (each reads its authorized keys as its one user), a bash login.
        self.bash_sshd = Sshd(work / "sshd-bash", self.home, extra=["MaxSessions 100", "MaxStartups 100:30:200"])
        shutil.chown(self.bash_sshd.authorized, BENCH_BASH_USER)
        self.bash_sshd.start().trust()
        self.ssh_config = ssh / "config"
        self.ssh_config.write_text(host_block("box", self.sshd.port, ssh)
                                   + host_block("boxbash", self.bash_sshd.port, ssh, user=BENCH_BASH_USER))
        self.control = work / "cm.sock"
        self.env = {"HOME": str(self.home), "PATH": os.environ["PATH"], "RUST_LOG": "warn",
                    "OUTPOST_CONFIG": str(work / "config.json"),
                    "CLAUDE_CONFIG_DIR": str(work / "local-claude")}
        self.project = work / "proj"
        self.project.mkdir()
        self.remote_claude = work / "remote-claude"
        self.remote_claude.mkdir()
        shutil.chown(self.remote_claude, BENCH_USER)
        self.project.chmod(0o777)
        # The fake claude straight on the system's Python (not through a PATH lookup that may hit
        # a pyenv shim), for outpost and plain ssh alike.
        python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
        self.claude = work / "fake-claude"
        self.claude.write_text(f"#!/bin/sh\nexec {python} {FAKE_CLAUDE} \"$@\"\n")
        self.claude.chmod(0o755)
        self.configure()

    def configure(self, sync=True):
        remote = {"host": "box", "claude_path": str(self.claude), "sync_sessions": sync,
                  "claude_env": {"CLAUDE_CONFIG_DIR": str(self.remote_claude)}}
        config = {"remotes": {"gpu": remote}}
        pathlib.Path(self.env["OUTPOST_CONFIG"]).write_text(json.dumps(config))

    def control_of(self, host):
        return self.control if host == "box" else self.work / f"cm-{host}.sock"

    def ssh(self, *args, master=True, host="box"):
        mux = ["-S", str(self.control_of(host))] if master else ["-o", "ControlPath=none"]
        return ["ssh", "-F", str(self.ssh_config), *mux, host, *args]

    def start_master(self):
        for host in ("box", "boxbash"):
            subprocess.run(["ssh", "-F", str(self.ssh_config), "-M", "-S", str(self.control_of(host)), "-fN",
                            host], check=True, env=self.env)

    def stop(self):
        for host in ("box", "boxbash"):
            subprocess.run(["ssh", "-F", str(self.ssh_config), "-S", str(self.control_of(host)), "-O", "exit",
                            host], capture_output=True, env=self.env)
        self.sshd.stop()
        self.bash_sshd.stop()

    def run(self, argv, **kw):
        return subprocess.run(argv, env=self.env, check=True, **kw)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def atimed(coroutine):
    start = time.perf_counter()
    await coroutine
    return time.perf_counter() - start


def summary(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples)}


def interleaved(trials, variants):
    """Yields (trial, name) with the variants in a fresh random order in every trial."""
    for trial in range(trials):
        names = list(variants)
        random.shuffle(names)
        for name in names:
            yield trial, name


async def b1_warm_exec(bench, trials):
    mcp = await Mcp.start(bench.binary, bench.env)
    # The same server with `ssh.warm_shell` off: each call's login shell starts when it comes.
    cold_config = bench.work / "config-no-warm-shell.json"
    config = json.loads(pathlib.Path(bench.env["OUTPOST_CONFIG"]).read_text())
    cold_config.write_text(json.dumps({**config, "ssh": {"warm_shell": False}}))
    no_warm = await Mcp.start(bench.binary, {**bench.env, "OUTPOST_CONFIG": str(cold_config)})
    for server in (mcp, no_warm):
        for host in ("box", "boxbash"):
            await server.call("remote_exec", {"host": host, "command": "true"})
    bench.run(bench.ssh("true"))
    samples = {"outpost": [], "ssh_controlmaster": [], "ssh_fresh": [], "outpost_bash": [],
               "ssh_controlmaster_bash": [], "outpost_no_warm_shell": [], "outpost_no_warm_shell_bash": []}
    for _, name in interleaved(trials, samples):
        host = "boxbash" if name.endswith("_bash") else "box"
        if name.startswith("outpost"):
            server = no_warm if "no_warm_shell" in name else mcp
            took = await atimed(server.call("remote_exec", {"host": host, "command": "true"}))
        else:
            took = timed(lambda: bench.run(bench.ssh("true", master=name != "ssh_fresh", host=host)))
        samples[name].append(took)
    await mcp.close()
    await no_warm.close()
    return {name: summary(s) for name, s in samples.items()}


async def b2_concurrent(bench, rounds, width=64):
    mcp = await Mcp.start(bench.binary, bench.env)

    async def one_outpost(host="box"):
        return await atimed(mcp.call("remote_exec", {"host": host, "command": "true"}))

    async def one_ssh(host="box"):
        start = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*bench.ssh("true", host=host), env=bench.env)
        assert await proc.wait() == 0
        return time.perf_counter() - start

    runs = {"outpost": one_outpost, "ssh_controlmaster": one_ssh,
            "outpost_bash": lambda: one_outpost("boxbash"), "ssh_controlmaster_bash": lambda: one_ssh("boxbash")}
    for run in runs.values():  # warm: the pool grows to its connections
        await asyncio.gather(*(run() for _ in range(width)))
    latencies = {name: [] for name in runs}
    throughput = {name: [] for name in runs}
    for _, name in interleaved(rounds, runs):
        start = time.perf_counter()
        took = await asyncio.gather(*(runs[name]() for _ in range(width)))
        throughput[name].append(width / (time.perf_counter() - start))
        latencies[name].extend(took)
    await mcp.close()
    return {name: {"throughput": summary(throughput[name]), "p50": percentile(latencies[name], 50),
                   "p99": percentile(latencies[name], 99)} for name in runs}


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def b3_bulk_output(bench, trials, size):
    command = f"head -c {size} /dev/zero | tr '\\0' x"
    samples = {"outpost": [], "outpost_exec": [], "ssh_controlmaster": []}
    peak_rss, lost, cpu = [], [], {"server": [], "client": []}
    for _, name in interleaved(trials, samples):
        if name != "outpost":
            argv = bench.ssh(command) if name == "ssh_controlmaster" else [bench.binary, "exec", "box", "--", command]
            with open(os.devnull, "wb") as sink:
                samples[name].append(size / timed(lambda: bench.run(argv, stdout=sink)))
            continue
        mcp = await Mcp.start(bench.binary, bench.env)
        await mcp.call("remote_exec", {"host": "box", "command": "true"})
        server_cpu, client_cpu = cpu_seconds(mcp.proc.pid), own_cpu_seconds()
        start = time.perf_counter()
        job = (await mcp.call("remote_exec", {"host": "box", "command": command, "background": True}))["job_id"]
        offset, received = 0, 0
        while True:  # pages of 1 MiB: the most one call returns
            read = await mcp.call("job_output", {"job_id": job, "offset": offset, "wait_secs": 5,
                                                 "max_bytes": 1 << 20, "follow": True})
            received += len(read["output"])
            offset = read["next_offset"]
            if read["status"] != "running" and not read["more"]:
                break
        samples[name].append(received / (time.perf_counter() - start))
        cpu["server"].append((cpu_seconds(mcp.proc.pid) - server_cpu) / (size / MB))
        cpu["client"].append((own_cpu_seconds() - client_cpu) / (size / MB))
        lost.append(size - received)
        peak_rss.append(mcp.rss_kib("VmHWM") / 1024)
        await mcp.close()
    return {"throughput": {name: summary(s) for name, s in samples.items()},
            "peak_rss_mib": summary(peak_rss), "bytes_not_delivered": max(lost),
            "cpu_seconds_per_mb": {side: summary(s) for side, s in cpu.items()}}


def cpu_seconds(pid):
    """User plus system CPU time of process `pid`, in seconds."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds():
    t = os.times()
    return t.user + t.system


async def b4_claude(bench, trials, sync):
    bench.configure(sync=sync)
    mcp = await Mcp.start(bench.binary, bench.env)
    await mcp.call("remote_exec", {"host": "gpu", "command": "true"})
    samples = {"outpost_cold": [], "outpost_warm": [], "outpost_warm_after_think": [], "ssh_controlmaster": []}
    for _, name in interleaved(trials, samples):
        if name == "ssh_controlmaster":
            samples[name].append(plain_ssh_turn(bench))
            continue
        first = mcp.call("spawn_claude", {"host": "gpu", "cwd": str(bench.project), "prompt": "hi"})
        start = time.perf_counter()
        session = (await first)["session_id"]
        cold = time.perf_counter() - start
        if name == "outpost_cold":
            samples[name].append(cold)
            continue
        if name == "outpost_warm_after_think":
            await asyncio.sleep(THINK_SECONDS)  # a model or a person reading the answer
        samples[name].append(await atimed(mcp.call("spawn_claude", {"session_id": session, "prompt": "again"})))
    await mcp.close()
    bench.configure()
    return {name: summary(s) for name, s in samples.items()}


def plain_ssh_turn(bench):
    """The fake claude over a ControlMaster ssh, with the same flags: time to its result line."""
    line = (f"CLAUDE_CONFIG_DIR={bench.remote_claude} {bench.claude} -p --input-format stream-json "
            f"--output-format stream-json --verbose")
    prompt = json.dumps({"type": "user", "message": {"role": "user", "content": "hi"}}) + "\n"
    start = time.perf_counter()
    proc = subprocess.Popen(bench.ssh(f"cd {bench.project} && {line}"), env=bench.env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(prompt)
    proc.stdin.flush()
    for out in proc.stdout:
        if json.loads(out).get("type") == "result":
            break
    took = time.perf_counter() - start
    proc.stdin.close()
    proc.wait()
    return took


def seed_session(path: pathlib.Path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    record = json.dumps({"type": "assistant", "message": {"content": "x" * 900}}) + "\n"
    with open(path, "w") as f:
        for _ in range(size // len(record)):
            f.write(record)


def project_dir(cwd: pathlib.Path) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", os.path.realpath(cwd))


def wire_bytes(port):
    """Bytes sent plus received on every established TCP connection to `port` (the SSH pool's)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True).stdout
    return sum(int(n) for n in re.findall(r"bytes_(?:sent|received):(\d+)", out))


async def b5_sync(bench, trials, size):
    session = "5e55ea15-0000-4000-8000-000000000005"
    name = f"{session}.jsonl"
    remote_file = bench.remote_claude / "projects" / project_dir(bench.project) / name
    seed_session(remote_file, size)
    for path in (remote_file.parent.parent, remote_file.parent, remote_file):
        shutil.chown(path, BENCH_USER)
    rsync_copy = bench.work / "rsync-copy"
    rsync_copy.mkdir()
    mcp = await Mcp.start(bench.binary, bench.env)
    pull = {"host": "gpu", "cwd": str(bench.project), "direction": "pull", "session_id": session}
    await mcp.call("sync_sessions", pull)
    rsync = ["rsync", "-az", "--stats", "-e", f"ssh -F {bench.ssh_config} -S {bench.control}",
             f"box:{remote_file}", str(rsync_copy / name)]
    bench.run(rsync, capture_output=True)
    seconds = {"outpost": [], "rsync": []}
    moved = {"outpost": [], "rsync": []}
    appended = -1
    for trial, variant in interleaved(trials, seconds):
        if trial != appended:  # 1 KB more for both to pick up
            with open(remote_file, "a") as f:
                f.write(json.dumps({"type": "user", "trial": trial, "pad": "y" * 960}) + "\n")
            appended = trial
        if variant == "outpost":
            before = wire_bytes(bench.sshd.port)
            took = await atimed(mcp.call("sync_sessions", pull))
            moved[variant].append(wire_bytes(bench.sshd.port) - before)
        else:
            start = time.perf_counter()
            out = bench.run(rsync, capture_output=True, text=True).stdout
            took = time.perf_counter() - start
            sent = int(re.search(r"Total bytes sent: ([\d,]+)", out).group(1).replace(",", ""))
            received = int(re.search(r"Total bytes received: ([\d,]+)", out).group(1).replace(",", ""))
            moved[variant].append(sent + received)
        seconds[variant].append(took)
    local = bench.work / "local-claude" / "projects" / project_dir(bench.project) / name
    assert local.read_bytes() == remote_file.read_bytes() == (rsync_copy / name).read_bytes()
    await mcp.close()
    return {"seconds": {v: summary(s) for v, s in seconds.items()},
            "bytes": {v: summary(s) for v, s in moved.items()}}


async def b6_startup(bench, trials):
    starts, rss = [], []
    for _ in range(trials):
        start = time.perf_counter()
        mcp = await Mcp.start(bench.binary, bench.env)
        starts.append(time.perf_counter() - start)
        await mcp.request("tools/list")
        await asyncio.sleep(0.2)
        rss.append(mcp.rss_kib() / 1024)
        await mcp.close()
    return {"initialize_seconds": summary(starts), "idle_rss_mib": summary(rss)}


def ms(x):
    return f"{x * 1000:.1f} ms"


def spread(summary_, fmt):
    return f"{fmt(summary_['median'])} [{fmt(summary_['min'])}–{fmt(summary_['max'])}]"


def verdict(ok):
    return "yes" if ok else "**no**"


def table_rows(r):
    """(row, measure, outpost, baseline, ratio, target, met) for every result present."""
    rows = []
    if "b1" in r:
        o, cm, fresh = r["b1"]["outpost"], r["b1"]["ssh_controlmaster"], r["b1"]["ssh_fresh"]
        rows.append(("B1", "warm `remote_exec` of `true` over MCP stdio, request → result",
                     spread(o, ms), "ControlMaster " + spread(cm, ms),
                     f"{o['median'] / cm['median']:.2f}×", "≤ 0.5×", verdict(o["median"] <= 0.5 * cm["median"])))
        rows.append(("B1", "the same against a fresh `ssh host true`", spread(o, ms), "fresh ssh " + spread(fresh, ms),
                     f"{fresh['median'] / o['median']:.1f}× faster", "≥ 20× faster",
                     verdict(fresh["median"] >= 20 * o["median"])))
        if "outpost_bash" in r["b1"]:
            ob, cmb = r["b1"]["outpost_bash"], r["b1"]["ssh_controlmaster_bash"]
            rows.append(("B1", "the same as B1's first row, logged in as a bash user", spread(ob, ms),
                         "ControlMaster " + spread(cmb, ms), f"{ob['median'] / cmb['median']:.2f}×", "≤ 0.4×",
                         verdict(ob["median"] <= 0.4 * cmb["median"])))
        for suffix, who in (("", "`sh`"), ("_bash", "bash")):
            if f"outpost_no_warm_shell{suffix}" not in r["b1"]:
                continue
            o, cm = r["b1"][f"outpost_no_warm_shell{suffix}"], r["b1"][f"ssh_controlmaster{suffix}"]
            rows.append(("B1", f"the same with `ssh.warm_shell` off ({who} login): the shell starts with the call",
                         spread(o, ms), "ControlMaster " + spread(cm, ms), f"{o['median'] / cm['median']:.2f}×",
                         "—", "—"))
    if "b2" in r:
        o, cm = r["b2"]["outpost"], r["b2"]["ssh_controlmaster"]
        per_s = lambda x: f"{x:.0f}/s"  # noqa: E731
        rows.append(("B2", "64 concurrent `remote_exec`: calls per second", spread(o["throughput"], per_s),
                     "ControlMaster " + spread(cm["throughput"], per_s),
                     f"{o['throughput']['median'] / cm['throughput']['median']:.2f}×", "≥ 1×",
                     verdict(o["throughput"]["median"] >= cm["throughput"]["median"])))
        for p in ("p50", "p99"):
            rows.append(("B2", f"64 concurrent: {p} latency", ms(o[p]), "ControlMaster " + ms(cm[p]),
                         f"{o[p] / cm[p]:.2f}×", "≤ 1×", verdict(o[p] <= cm[p])))
        if "outpost_bash" in r["b2"]:
            ob, cmb = r["b2"]["outpost_bash"], r["b2"]["ssh_controlmaster_bash"]
            rows.append(("B2", "64 concurrent, logged in as a bash user: calls per second",
                         spread(ob["throughput"], per_s), "ControlMaster " + spread(cmb["throughput"], per_s),
                         f"{ob['throughput']['median'] / cmb['throughput']['median']:.2f}×", "≥ 1×",
                         verdict(ob["throughput"]["median"] >= cmb["throughput"]["median"])))
    if "b3" in r:
        o, ssh = r["b3"]["throughput"]["outpost"], r["b3"]["throughput"]["ssh_controlmaster"]
        mbs = lambda x: f"{x / MB:.0f} MB/s"  # noqa: E731
        lost = r["b3"]["bytes_not_delivered"]
        rows.append(("B3", f"200 MB of stdout through a background job, drained with `job_output`"
                     f"{f' ({lost} bytes not delivered)' if lost else ''}", spread(o, mbs),
                     "ssh → /dev/null " + spread(ssh, mbs), f"{o['median'] / ssh['median']:.2f}×", "≥ 0.8×",
                     verdict(o["median"] >= 0.8 * ssh["median"] and not lost)))
        exec_ = r["b3"]["throughput"].get("outpost_exec")
        if exec_:
            rows.append(("B3", "the same 200 MB through `outpost exec` (the transport alone, no JSON-RPC)",
                         spread(exec_, mbs), "ssh → /dev/null " + spread(ssh, mbs),
                         f"{exec_['median'] / ssh['median']:.2f}×", "(for comparison)", "—"))
        rss = r["b3"]["peak_rss_mib"]
        rows.append(("B3", "server peak RSS during it", spread(rss, lambda x: f"{x:.0f} MiB"), "—", "—",
                     "≤ 64 MiB", verdict(rss["max"] <= 64)))
    for key, label in (("b4", "sync on (default)"), ("b4_no_sync", "sync off")):
        if key in r:
            cold, warm, ssh = r[key]["outpost_cold"], r[key]["outpost_warm"], r[key]["ssh_controlmaster"]
            rows.append(("B4", f"`spawn_claude` cold turn vs warm follow-up, {label}", "cold " + spread(cold, ms),
                         "warm " + spread(warm, ms), f"{cold['median'] / warm['median']:.1f}×", "warm ≥ 10× faster",
                         verdict(cold["median"] >= 10 * warm["median"])))
            think = r[key].get("outpost_warm_after_think")
            if think:
                rows.append(("B4", f"the same, the follow-up sent {THINK_SECONDS:g} s after the answer, {label}",
                             "cold " + ms(cold["median"]), "warm " + spread(think, ms),
                             f"{cold['median'] / think['median']:.1f}×", "warm ≥ 10× faster",
                             verdict(cold["median"] >= 10 * think["median"])))
            over = cold["median"] - ssh["median"]
            rows.append(("B4", f"cold turn vs the same fake over ssh (ControlMaster), {label}", "cold " + ms(cold["median"]),
                         "ssh " + spread(ssh, ms), f"{over * 1000:+.1f} ms", "≤ +10 ms", verdict(over <= 0.010)))
    if "b5" in r:
        secs, moved = r["b5"]["seconds"], r["b5"]["bytes"]
        rows.append(("B5", "1 KB appended to a 50 MB session, `sync_sessions` pull: bytes on the wire",
                     f"{moved['outpost']['median']:.0f} B", f"rsync -az {moved['rsync']['median']:.0f} B",
                     f"{moved['rsync']['median'] / moved['outpost']['median']:.1f}× fewer", "≥ 10× fewer",
                     verdict(moved["rsync"]["median"] >= 10 * moved["outpost"]["median"])))
        rows.append(("B5", "the same: time", spread(secs["outpost"], ms), "rsync -az " + spread(secs["rsync"], ms),
                     f"{secs['outpost']['median'] / secs['rsync']['median']:.2f}×", "faster (< 1×)",
                     verdict(secs["outpost"]["median"] < secs["rsync"]["median"])))
    if "b6" in r:
        init, rss = r["b6"]["initialize_seconds"], r["b6"]["idle_rss_mib"]
        rows.append(("B6", "process start → `initialize` answered", spread(init, ms), "—", "—", "≤ 20 ms",
                     verdict(init["median"] <= 0.020)))
        rows.append(("B6", "idle RSS after `tools/list`", spread(rss, lambda x: f"{x:.1f} MiB"), "—", "—",
                     "≤ 15 MiB", verdict(rss["median"] <= 15)))
    if "b7" in r:
        rows += b7_rows(r["b7"], spread, ms, verdict)
    return rows


def markdown(r, analysis: str) -> str:
    v = r["versions"]
    lines = ["# Benchmarks", "",
             "Generated by `scripts/bench` (`benches/compare.py`): one machine, throwaway OpenSSH sshd",
             "processes on 127.0.0.1, the variants of each row interleaved trial by trial in random order.",
             "Each cell is the median [min–max] over the trials. Re-run with `scripts/bench`; the numbers",
             "below are from the run described here.", "",
             f"- Date: {v['date']}", f"- Machine: {v['machine']}", f"- outpost: {v['outpost']} (release build)",
             f"- OpenSSH: {v['openssh']}", f"- rsync: {v['rsync']}", f"- {v['rustc']}",
             *([f"- Load average (1 min) when the run began and ended: {v['load_before']:.1f}, {v['load_after']:.1f} "
                "(the cores are shared with other work; a higher load makes every row slower and wider)"]
               if "load_after" in v else []), "",
             "| # | measure | outpost | baseline | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(r)]
    sections = [module.markdown(r[key]) for key, module in (("fanout", fanout), ("peers", peers)) if key in r]
    return "\n".join(lines) + "\n\n" + "".join(s + "\n" for s in sections) + analysis.strip() + "\n"


def versions(binary):
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "not found"
    cpu = next((l.split(":", 1)[1].strip() for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "outpost": first_line([binary, "--version"]), "openssh": first_line(["ssh", "-V"]),
            "rsync": first_line(["rsync", "--version"]), "rustc": first_line(["rustc", "--version"]),
            "load_before": os.getloadavg()[0]}


async def measure(args):
    """Every row asked for, on a throwaway sshd: the results as a dict."""
    trials = 1 if args.smoke else 30
    rows = set(args.only or ["b1", "b2", "b3", "b4", "b5", "b6", "b7", "fanout", "peers"])
    results = {"versions": versions(args.binary), "smoke": args.smoke}
    with tempfile.TemporaryDirectory(prefix="outpost-bench-") as tmp:
        bench = Bench(pathlib.Path(tmp), args.binary)
        bench.start_master()
        try:
            if "b1" in rows:
                results["b1"] = await b1_warm_exec(bench, trials)
            if "b2" in rows:
                results["b2"] = await b2_concurrent(bench, 1 if args.smoke else 10)
            if "b3" in rows:
                results["b3"] = await b3_bulk_output(bench, 1 if args.smoke else 3,
                                                      2 * MB if args.smoke else 200 * MB)
            if "b4" in rows:
                results["b4"] = await b4_claude(bench, 1 if args.smoke else 15, sync=True)
                results["b4_no_sync"] = await b4_claude(bench, 1 if args.smoke else 15, sync=False)
            if "b5" in rows:
                results["b5"] = await b5_sync(bench, 1 if args.smoke else 10, 1 * MB if args.smoke else 50 * MB)
            if "b6" in rows:
                results["b6"] = await b6_startup(bench, 2 if args.smoke else 20)
            if "b7" in rows:
                results["b7"] = await b7_transfer(bench, Mcp, 1 if args.smoke else 5,
                                                  2 * MB if args.smoke else 200 * MB,
                                                  50 if args.smoke else 2000)
            if "fanout" in rows:
                results["fanout"] = await fanout.run(bench, 1 if args.smoke else 10, 2 if args.smoke else 20,
                                                     args.smoke, interleaved, summary)
            if "peers" in rows:
                results["peers"] = await peers.run(bench, args.smoke)
        finally:
            bench.stop()
    results["versions"]["load_after"] = os.getloadavg()[0]
    return results


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and one trial: proves it runs")
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "outpost"))
    parser.add_argument("--json", type=pathlib.Path, help="write the raw results here")
    parser.add_argument("--markdown", type=pathlib.Path, help="write the report here (BENCHMARKS.md)")
    parser.add_argument("--only", nargs="*", help="run these rows only (b1 ... b7, fanout, peers)")
    parser.add_argument("--render", type=pathlib.Path,
                        help="measure nothing: write the report from these raw results (an earlier --json)")
    args = parser.parse_args()
    results = json.loads(args.render.read_text()) if args.render else await measure(args)
    if args.json and not args.render:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    analysis = ROOT / "benches" / "analysis.md"
    report = markdown(results, analysis.read_text() if analysis.exists() else "")
    if args.markdown:
        args.markdown.write_text(report)
    print(report)


if __name__ == "__main__":
    asyncio.run(main())
