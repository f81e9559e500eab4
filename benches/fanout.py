"""Fan-out: `uptime` on 20 SSH hosts at once, outpost against parallel-ssh and ansible (issue 17).

Each host is an ~/.ssh/config alias for an sshd of its own on 127.0.0.1 (a separate host key, its
own port). Every tool goes through the same aliases, the same sshd processes and the same account;
the variants run interleaved, in a fresh random order every trial. Each trial counts the hosts
whose `uptime` line came back: a missing one is a failure the table shows.
"""

import contextlib
import json
import pathlib
import re
import shlex
import shutil
import subprocess
import time

from hosts import BENCH_USER, host_block
from sdk import Server
from sshd import Sshd

COMMAND = "uptime"
GROUP = "fleet"
# What every host's `uptime` prints, whatever its locale and load.
UPTIME = re.compile(r"load average")
ROOT = pathlib.Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "target" / "bench-venv" / "bin" / "ansible"
# How long a ControlMaster the benchmark starts outlives its last use, at most (it is also closed
# explicitly at the end, and dies with its sshd).
PERSIST = "120"


class Fleet:
    """`count` sshd processes, an alias and a group for them, and each tool's configuration."""

    def __init__(self, bench, count):
        self.bench = bench
        self.root = bench.work / "fleet"
        self.names = [f"h{i:02d}" for i in range(1, count + 1)]
        self.sshds = [Sshd(self.root / name, bench.home) for name in self.names]
        ssh_dir = bench.home / ".ssh"
        with open(bench.ssh_config, "a") as config:
            config.writelines(host_block(name, sshd.port, ssh_dir) for name, sshd in zip(self.names, self.sshds))
        config = self.root / "outpost.json"
        config.write_text(json.dumps({"groups": {GROUP: self.names}}))
        self.env = dict(bench.env, OUTPOST_CONFIG=str(config))
        self.hosts_file = self.root / "hosts"
        self.hosts_file.write_text("".join(n + "\n" for n in self.names))
        self.control_dir = self.root / "cm"
        self.control_dir.mkdir()
        self.ansible_env = self._ansible_env()

    def _ansible_env(self):
        """Ansible's defaults (its ControlPersist 60 s included), pointed at our ssh config and dirs."""
        inventory = self.root / "inventory.ini"
        inventory.write_text(f"[{GROUP}]\n" + "".join(n + "\n" for n in self.names) +
                             f"[{GROUP}:vars]\nansible_python_interpreter=/usr/bin/python3\n")
        (self.root / "ansible.cfg").write_text("")
        home = self.root / "ansible-home"
        return dict(self.bench.env, ANSIBLE_CONFIG=str(self.root / "ansible.cfg"), ANSIBLE_INVENTORY=str(inventory),
                    ANSIBLE_HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
                    ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.root / "ansible-cp"),
                    ANSIBLE_SSH_ARGS=f"-F {self.bench.ssh_config} -C -o ControlMaster=auto -o ControlPersist=60s",
                    ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_DEPRECATION_WARNINGS="0")

    def start(self):
        for sshd in self.sshds:
            shutil.chown(sshd.authorized, BENCH_USER)  # sshd reads it as the user
            sshd.start().trust()

    def present(self, outputs):
        """How many hosts' output (a {host: text} map) holds their `uptime` line."""
        return sum(1 for name in self.names if UPTIME.search(outputs.get(name, "")))

    def close_masters(self, *dirs):
        """Closes the ControlMasters whose sockets are in `dirs` (ansible's, parallel-ssh's)."""
        for folder in dirs or (self.control_dir, self.root / "ansible-cp"):
            for sock in pathlib.Path(folder).glob("*") if pathlib.Path(folder).is_dir() else ():
                subprocess.run(["ssh", "-S", str(sock), "-O", "exit", "x"], capture_output=True, env=self.bench.env)

    def stop(self):
        self.close_masters()
        for sshd in self.sshds:
            sshd.stop()


def pssh_argv(fleet, out, control=False):
    options = ["-o", "ControlMaster=auto", "-o", f"ControlPath={fleet.control_dir}/%n",
               "-o", f"ControlPersist={PERSIST}"] if control else []
    ssh_args = shlex.join(["-F", str(fleet.bench.ssh_config), *options])
    return ["parallel-ssh", "-h", str(fleet.hosts_file), "-p", "32", "-t", "60", "-x", ssh_args,
            "-o", str(out), COMMAND]


def run_pssh(fleet, control, trial):
    out = fleet.root / f"pssh-{int(control)}-{trial}"
    start = time.perf_counter()
    subprocess.run(pssh_argv(fleet, out, control), env=fleet.bench.env, capture_output=True)
    took = time.perf_counter() - start
    outputs = {p.name: p.read_text(errors="replace") for p in out.glob("*")} if out.is_dir() else {}
    return took, fleet.present(outputs)


def run_ansible(fleet, cold):
    if cold:
        fleet.close_masters(fleet.root / "ansible-cp")
    argv = [str(ANSIBLE), GROUP, "-m", "shell", "-a", COMMAND, "-f", str(len(fleet.names)), "--one-line"]
    start = time.perf_counter()
    done = subprocess.run(argv, env=fleet.ansible_env, capture_output=True, text=True)
    took = time.perf_counter() - start
    # `h01 | CHANGED | rc=0 | (stdout)  17:02:11 up …, load average: …`
    outputs = {m.group(1): m.group(2) for m in re.finditer(r"^(\S+) \| CHANGED \| rc=0 \| \(stdout\) (.*)$",
                                                            done.stdout, re.M)}
    return took, fleet.present(outputs)


async def outpost_call(fleet, server):
    result = await server.call("remote_exec", {"hosts": [f"@{GROUP}"], "command": COMMAND})
    hosts = (result.structured_content or {}).get("hosts", [])
    return fleet.present({h.get("host"): h.get("stdout") or "" for h in hosts})


async def outpost_cold(fleet):
    """A new server (no connection open): process start, `initialize`, the call."""
    start = time.perf_counter()
    async with Server([fleet.bench.binary, "mcp", "serve"], fleet.env) as server:
        present = await outpost_call(fleet, server)
        took = time.perf_counter() - start
    return took, present


def available(smoke):
    """The variants to run. A full run needs every tool (scripts/bench installs them); a smoke run
    uses parallel-ssh if it is installed, and never ansible (several seconds a run)."""
    variants = ["outpost_warm", "outpost_cold"]
    tools = {"pssh": shutil.which("parallel-ssh") is not None, "ansible": ANSIBLE.exists() and not smoke}
    missing = [tool for tool, found in tools.items() if not found]
    if missing and not smoke:
        raise SystemExit(f"fan-out: {', '.join(missing)} not installed; run scripts/bench, which installs them")
    if tools["pssh"]:
        variants += ["pssh", "pssh_controlmaster"]
    if tools["ansible"]:
        variants += ["ansible_warm", "ansible_cold"]
    return variants


async def run(bench, trials, count, smoke, interleaved, summary):
    """Measures every available variant `trials` times over `count` hosts."""
    fleet = Fleet(bench, count)
    samples, present = {}, {}
    try:
        fleet.start()
        async with Server([bench.binary, "mcp", "serve"], fleet.env) as warm:
            variants = available(smoke)
            samples = {v: [] for v in variants}
            present = {v: [] for v in variants}
            # Warm-up, not measured: outpost's pool, the ControlMasters, the page cache.
            await outpost_call(fleet, warm)
            if "pssh" in variants:
                run_pssh(fleet, True, "warmup")
            if "ansible_warm" in variants:
                run_ansible(fleet, cold=False)
            for trial, name in interleaved(trials, variants):
                if name.startswith("ansible") and trial % 2:
                    continue  # ansible takes seconds a run: every other trial is enough
                if name == "outpost_warm":
                    start = time.perf_counter()
                    got = await outpost_call(fleet, warm)
                    took = time.perf_counter() - start
                elif name == "outpost_cold":
                    took, got = await outpost_cold(fleet)
                elif name.startswith("pssh"):
                    took, got = run_pssh(fleet, name == "pssh_controlmaster", trial)
                else:
                    took, got = run_ansible(fleet, cold=name == "ansible_cold")
                samples[name].append(took)
                present[name].append(got)
    finally:
        fleet.stop()
    return {"hosts": count, "command": COMMAND, "versions": versions(),
            "variants": {v: {"seconds": summary(samples[v]), "present_min": min(present[v]),
                             "complete_trials": sum(p == count for p in present[v]), "trials": len(present[v])}
                         for v in samples}}


def versions():
    def out(argv):
        with contextlib.suppress(OSError, IndexError):
            done = subprocess.run(argv, capture_output=True, text=True)
            return (done.stdout or done.stderr).strip().splitlines()[0]
        return "not installed"
    return {"pssh": out(["dpkg-query", "-W", "-f", "${Version}", "pssh"]),
            "ansible": out([str(ANSIBLE), "--version"]) if ANSIBLE.exists() else "not installed"}


LABELS = {
    "outpost_warm": "outpost `remote_exec` `hosts: [\"@fleet\"]`, warm (pool open)",
    "outpost_cold": "outpost, cold: new server, start → `initialize` → result",
    "pssh": "`parallel-ssh` (a new ssh per host every run)",
    "pssh_controlmaster": "`parallel-ssh` over ControlMaster (`ControlPersist`), warm",
    "ansible_warm": "`ansible -m shell`, warm (its default `ControlPersist` masters open)",
    "ansible_cold": "`ansible -m shell`, cold (no master open)",
}


def markdown(r):
    """The fan-out section of BENCHMARKS.md."""
    n, v = r["hosts"], r["variants"]
    base = v["outpost_warm"]["seconds"]["median"]
    fmt = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    lines = [f"## Fan-out: `uptime` on {n} SSH hosts (issue 17)", "",
             f"{n} `~/.ssh/config` aliases, each an sshd of its own on 127.0.0.1, logged in as the same",
             f"`/bin/sh` account, the variants interleaved in random order ({v['outpost_warm']['trials']} runs each,",
             "ansible every other trial). Wall time is the whole run: a tool's process start to its exit, or an",
             f"MCP call to its result. parallel-ssh {r['versions']['pssh']} (Debian `pssh`, `-p 32`),",
             f"{r['versions']['ansible']} (`-f {n}`, its defaults otherwise).", "",
             "| tool | wall time, median [min–max] | × outpost warm | every host's output present |",
             "|---|---|---|---|"]
    for name, label in LABELS.items():
        if name not in v:
            continue
        s = v[name]
        complete = f"{s['complete_trials']}/{s['trials']} runs"
        if s["complete_trials"] < s["trials"]:
            complete = f"**{complete}** (fewest: {s['present_min']}/{n} hosts)"
        lines.append(f"| {label} | {fmt(s['seconds']['median'])} [{fmt(s['seconds']['min'])}–"
                     f"{fmt(s['seconds']['max'])}] | {s['seconds']['median'] / base:.1f}× | {complete} |")
    if "pssh" in v:
        ratio = v["pssh"]["seconds"]["median"] / base
        met = "met" if ratio >= 2 else "**not met**"
        lines += ["", f"Target (issue 17): outpost warm at least 2× faster than parallel-ssh: "
                      f"{ratio:.1f}× faster, {met}."]
    return "\n".join(lines) + "\n"
