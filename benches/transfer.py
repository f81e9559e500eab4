"""B7: `transfer` against scp and rsync over the same sshd and login user, interleaved: a 200 MB file
up (here → SSH host) and down, the server's peak RSS meanwhile, and a folder of 2,000 small files up.

Used by compare.py (`b7`); every variant writes to a destination removed before each trial, so
nothing is skipped as unchanged and each run copies every byte.
"""

import os
import pathlib
import random
import shutil
import subprocess
import time

from hosts import BENCH_USER

MB = 1_000_000


def _fresh(path: pathlib.Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _small_files(root: pathlib.Path, count: int):
    """`count` files of 1-8 KiB in 20 folders, with modes and mtimes to keep."""
    for i in range(count):
        folder = root / f"d{i % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"f{i:05d}.txt"
        path.write_bytes(os.urandom(1024 * (1 + i % 8)))
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))


async def b7_transfer(bench, mcp_class, trials, size, small_count):
    """Times each variant; `bench` is compare.py's Bench, `mcp_class` its Mcp client."""
    remote = bench.work / "remote"  # the bench user's folder on the "host" (this machine)
    remote.mkdir(exist_ok=True)
    shutil.chown(remote, BENCH_USER)
    src = bench.work / "big.bin"
    with open(src, "wb") as f:
        for _ in range(size // MB):
            f.write(os.urandom(MB))
    tree = bench.work / "small"
    _small_files(tree, small_count)
    ssh_opts = ["-F", str(bench.ssh_config), "-o", f"ControlPath={bench.control}"]
    rsync_ssh = ["-e", "ssh " + " ".join(ssh_opts)]
    up_dest, down_dest = remote / "big.bin", bench.work / "down.bin"
    tree_dest = remote / "small"

    mcp = await mcp_class.start(bench.binary, bench.env)
    await mcp.call("remote_exec", {"host": "box", "command": "true"})  # warm, as scp's master is
    variants = {
        "up": {
            "outpost": lambda: mcp.call("transfer", {"source": str(src), "destination": f"box:{up_dest}"}),
            "outpost_cp": [bench.binary, "cp", str(src), f"box:{up_dest}"],
            "scp": ["scp", "-q", *ssh_opts, str(src), f"box:{up_dest}"],
            "rsync": ["rsync", "-a", *rsync_ssh, str(src), f"box:{up_dest}"],
        },
        "down": {
            "outpost": lambda: mcp.call("transfer", {"source": f"box:{up_dest}", "destination": str(down_dest)}),
            "scp": ["scp", "-q", *ssh_opts, f"box:{up_dest}", str(down_dest)],
            "rsync": ["rsync", "-a", *rsync_ssh, f"box:{up_dest}", str(down_dest)],
        },
        "small": {
            "outpost": lambda: mcp.call("transfer", {"source": str(tree), "destination": f"box:{remote}/"}),
            "scp_r": ["scp", "-q", "-r", "-p", *ssh_opts, str(tree), f"box:{remote}/"],
            "rsync_a": ["rsync", "-a", *rsync_ssh, str(tree), f"box:{remote}/"],
        },
    }
    destinations = {"up": up_dest, "down": down_dest, "small": tree_dest}
    results = {}
    for kind, runs in variants.items():
        if kind == "down":  # the file to download, put there once
            _fresh(up_dest)
            bench.run(runs["scp"][:-2] + [str(src), f"box:{up_dest}"])
        samples = {name: [] for name in runs}
        for trial in range(trials):
            order = list(runs)
            random.shuffle(order)
            for name in order:
                _fresh(destinations[kind])
                run = runs[name]
                start = time.perf_counter()
                if callable(run):
                    await run()
                else:
                    bench.run(run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                samples[name].append(time.perf_counter() - start)
                _check(kind, src, tree, destinations[kind])
        results[kind] = {name: _summary(s) for name, s in samples.items()}
    results["peak_rss_mib"] = mcp.rss_kib("VmHWM") / 1024
    results["size"], results["small_count"] = size, small_count
    await mcp.close()
    return results


def _check(kind, src, tree, dest):
    """Every variant must have copied it all: sizes of every file match."""
    if kind == "small":
        got = sorted((p.relative_to(dest), p.stat().st_size) for p in dest.rglob("*") if p.is_file())
        want = sorted((p.relative_to(tree), p.stat().st_size) for p in tree.rglob("*") if p.is_file())
        assert got == want, f"{dest}: {len(got)} files of {len(want)}"
    else:
        assert dest.stat().st_size == src.stat().st_size, dest


def _summary(samples):
    ordered = sorted(samples)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


def b7_rows(r, spread, ms, verdict):
    """The B7 rows of compare.py's table."""
    rows = []
    size = r["size"]
    mbs = lambda s: f"{size / s / MB:.0f} MB/s"  # noqa: E731

    def rate(x):
        return {"median": x["median"], "min": x["max"], "max": x["min"]}

    for kind, label in (("up", "here → SSH host"), ("down", "SSH host → here")):
        o, scp, rsync = r[kind]["outpost"], r[kind]["scp"], r[kind]["rsync"]
        ratio = scp["median"] / o["median"]
        rows.append(("B7", f"`transfer` of a {size // MB} MB file, {label}", spread(rate(o), mbs),
                     "scp " + spread(rate(scp), mbs), f"{ratio:.2f}×", "≥ 0.9× scp", verdict(ratio >= 0.9)))
        rows.append(("B7", f"the same against rsync", spread(rate(o), mbs), "rsync " + spread(rate(rsync), mbs),
                     f"{rsync['median'] / o['median']:.2f}×", "(for comparison)", "—"))
    cp = r["up"].get("outpost_cp")
    if cp:
        scp = r["up"]["scp"]
        rows.append(("B7", "`outpost cp` of the same file, here → SSH host", spread(rate(cp), mbs),
                     "scp " + spread(rate(scp), mbs), f"{scp['median'] / cp['median']:.2f}×", "(for comparison)", "—"))
    rows.append(("B7", "server peak RSS over all of B7", f"{r['peak_rss_mib']:.0f} MiB", "—", "—", "≤ 64 MiB",
                 verdict(r["peak_rss_mib"] <= 64)))
    small = r["small"]
    n = r["small_count"]
    for name, label in (("rsync_a", "rsync -a"), ("scp_r", "scp -r -p")):
        rows.append(("B7", f"a folder of {n} small files (1–8 KiB), here → SSH host", spread(small["outpost"], ms),
                     f"{label} " + spread(small[name], ms), f"{small['outpost']['median'] / small[name]['median']:.2f}×",
                     "(for comparison)", "—"))
    return rows
