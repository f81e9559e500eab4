"""Real container engines for the tests: podman and docker (Debian's packages), each with its own
storage and, for docker, its own `dockerd`, under one directory per checkout. Both run a busybox
image built here from the `busybox-static` package (no registry is reachable), and, for the tests
that need Python (the fake `claude`), that image plus Debian's python3. Nothing outlives a
run: `stop_all()` (the session fixture's end, and `scripts/test`'s trap through `python engines.py
stop`) removes the containers, stops `dockerd` and deletes the storage; a run that crashed is
cleaned up the same way by the next one.

An engine that cannot start raises EngineUnavailable with the engine's own words: the tests that
need it fail, they are never skipped."""

import hashlib
import io
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Short (docker's and conmon's unix sockets live here) and one per checkout, so two checkouts'
# suites never share a daemon, and a rerun finds what a crashed run left.
BASE = pathlib.Path("/tmp") / f"outpost-engines-{hashlib.sha1(str(ROOT).encode()).hexdigest()[:8]}"
IMAGE = "localhost/outpost-test-busybox:1"
PYTHON_IMAGE = "localhost/outpost-test-python:1"
BUSYBOX = pathlib.Path("/bin/busybox")
# Debian's python3 (`/usr/bin/python3` → `python3.11`), not one on PATH (pyenv's, a venv's).
PYTHON = pathlib.Path("/usr/bin/python3")
FAKE_CLAUDE = ROOT / "tests" / "fake_claude" / "claude"
# In the Python image: the fake claude, started by a script (busybox has no /usr/bin/env).
CLAUDE_IN_IMAGE = "/usr/local/bin/claude"
# Parts of the standard library the fake claude never loads (most of its size).
STDLIB_LEFT_OUT = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
                   "distutils", "dist-packages", "site-packages", "__pycache__"}
# The Debian packages' CLIs by full path: another `docker` (a newer client alone) may come first on PATH.
DOCKER, DOCKERD, PODMAN = "/usr/bin/docker", "/usr/sbin/dockerd", "/usr/bin/podman"
START_LIMIT = 60.0
HOSTNAME = "outpost-ctr"
# "NAME: VERSION" of each engine this session started, for the summary at its end.
STARTED: list[str] = []


class EngineUnavailable(Exception):
    pass


def _run(argv, env, timeout=START_LIMIT, check=True) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EngineUnavailable(f"`{' '.join(argv)}` failed: {e}") from e
    if check and done.returncode != 0:
        raise EngineUnavailable(
            f"`{' '.join(argv)}` exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _is_static_elf(path: pathlib.Path) -> bool:
    """Whether an ELF executable has no program interpreter (runs in an image with no libc)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    size, count = int.from_bytes(data[54:56], "little"), int.from_bytes(data[56:58], "little")
    return all(int.from_bytes(data[phoff + i * size:phoff + i * size + 4], "little") != 3  # PT_INTERP
               for i in range(count))


def rootfs_tar(python=False) -> bytes:
    """A root filesystem: static busybox with every applet, root (home /root) and `app` (home
    /home/app), and a WORKDIR (/work) that is not a home, so a default cwd shows which it is.
    With `python`: also Debian's python3 (see `_add_python`) and the fake claude."""
    if not BUSYBOX.exists() or not _is_static_elf(BUSYBOX):
        raise EngineUnavailable(
            f"{BUSYBOX} is missing or not statically linked: install Debian's `busybox-static` (scripts/test does)")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        def add(name, kind=tarfile.DIRTYPE, data=b"", mode=0o755, target=""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname = kind, mode, len(data), target
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ["bin", "etc", "root", "home", "home/app", "work", "proc", "sys", "dev"]:
            add(d, mode=0o700 if d == "root" else 0o755)
        add("tmp", mode=0o1777)
        add("bin/busybox", tarfile.REGTYPE, BUSYBOX.read_bytes())
        for applet in applets:
            if applet != "busybox":
                add(f"bin/{applet}", tarfile.SYMTYPE, target="busybox", mode=0o777)
        add("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
            mode=0o644)
        add("etc/group", tarfile.REGTYPE, b"root:x:0:\napp:x:1000:\n", mode=0o644)
        if python:
            _add_python(tar, add)
    return out.getvalue()


def _add_python(tar: tarfile.TarFile, add):
    """Debian's python3 at its own paths: the interpreter, the standard library (less the parts
    in STDLIB_LEFT_OUT), every shared library they load (by `ldd`), and the fake claude."""
    if not PYTHON.exists():
        raise EngineUnavailable(f"{PYTHON} is missing: install Debian's `python3` (scripts/test does)")
    python = PYTHON.resolve()
    stdlib = python.parent.parent / "lib" / python.name

    def keep(info):
        name = pathlib.Path(info.name).name
        return None if name in STDLIB_LEFT_OUT or name.startswith("config-") else info
    for d in ["usr", "usr/bin", "usr/lib", "usr/local", "usr/local/bin", "opt", "lib64"]:
        add(d)
    tar.add(python, arcname="usr/bin/python3")
    tar.add(stdlib, arcname=str(stdlib).lstrip("/"), filter=keep)
    objects = [python, *(stdlib / "lib-dynload").glob("*.so")]
    libraries = set()
    for line in subprocess.run(["ldd", *map(str, objects)], capture_output=True, text=True).stdout.splitlines():
        # `/usr/lib/…/libz.so.1 (0x…)`, `libz.so.1 => /lib/…/libz.so.1 (0x…)`; not the `FILE:` headers.
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 3 else parts[0] if parts else ""
        if path.startswith("/") and not path.endswith(":"):
            libraries.add(pathlib.Path(path))
    made = {pathlib.Path(p) for p in ("/", "/usr", "/usr/lib")}
    for library in sorted(libraries):
        real = library.resolve()
        for parent in reversed(real.parents):
            if parent not in made:
                made.add(parent)
                add(str(parent).lstrip("/"))
        if real not in made:
            made.add(real)
            tar.add(real, arcname=str(real).lstrip("/"))
        name = real.parent / library.name
        if name not in made:
            # The name the loader asks for (`libz.so.1`), beside the file it names.
            made.add(name)
            add(str(name).lstrip("/"), tarfile.SYMTYPE, target=real.name, mode=0o777)
        if library.name.startswith("ld-linux"):
            add(f"lib64/{library.name}", tarfile.SYMTYPE, target=str(real), mode=0o777)
    add("opt/fake-claude")
    add("opt/fake-claude/claude", tarfile.REGTYPE, FAKE_CLAUDE.read_bytes())
    add(CLAUDE_IN_IMAGE.lstrip("/"), tarfile.REGTYPE,
        b'#!/bin/sh\nexec /usr/bin/python3 /opt/fake-claude/claude "$@"\n')


class Engine:
    """One engine: its CLI, the environment the CLI needs (outpost runs it with that too)."""

    name = ""
    cli = ""
    # Removes containers at once (PID 1 `sleep` ignores the TERM a stop would wait on).
    remove = ("rm", "-f")

    def __init__(self, extra: dict):
        self.dir = BASE / self.name
        self.extra = extra
        self.env = {**os.environ, **extra}
        self.version = ""
        self.python_imported = False

    def cmd(self, *args, check=True, timeout=START_LIMIT) -> subprocess.CompletedProcess:
        return _run([self.cli, *args], self.env, timeout=timeout, check=check)

    def start_container(self, name=None, python=False) -> "Container":
        """A container of the busybox image, or with `python` of the Python one (imported on first use)."""
        name = name or f"outpost-test-{uuid.uuid4().hex[:10]}"
        if python and not self.python_imported:
            _import(self, python=True)
            self.python_imported = True
        self.cmd(*self.remove, name, check=False)
        self.cmd("run", "-d", "--name", name, "--hostname", HOSTNAME, "--network", "none",
                 PYTHON_IMAGE if python else IMAGE, "sleep", "infinity")
        return Container(self, name)

    def remove_containers(self):
        listed = self.cmd("ps", "-aq", check=False).stdout.split()
        if listed:
            self.cmd(*self.remove, *listed, check=False)


class Container:
    """A running container whose PID 1 is `sleep infinity` (which never reaps orphans): `init` is
    PID 1's pid on this host, `env` what outpost needs to run the engine's CLI."""

    def __init__(self, engine: Engine, name: str):
        self.engine, self.name, self.env = engine, name, engine.extra
        self.label = engine.name
        self.init = int(engine.cmd("inspect", "-f", "{{.State.Pid}}", name).stdout.strip())
        # How `docker exec` is started for a remote with no `user` (the client's argv starts so).
        self.client = [engine.cli, "exec", "-i", "--", name]

    def remote(self, **extra) -> dict:
        return {"kind": "docker", "container": self.name, "cli": self.engine.cli, **extra}

    def stop(self):
        self.engine.cmd(*self.engine.remove, self.name, check=False)


class Podman(Engine):
    name, cli = "podman", PODMAN
    remove = ("rm", "-f", "-t", "0")

    def __init__(self):
        storage, conf = BASE / self.name / "storage.conf", BASE / self.name / "containers.conf"
        super().__init__({"CONTAINERS_STORAGE_CONF": str(storage), "CONTAINERS_CONF": str(conf)})
        self.storage, self.conf = storage, conf

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{self.dir}/root"\n'
                                f'runroot = "{self.dir}/run"\n')
        # crun refuses hybrid cgroups, the default rlimits fail without CAP_SYS_RESOURCE, no systemd
        # or journald here: runc, explicit ulimits, cgroupfs, events in a file.
        self.conf.write_text(
            '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
            f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'events_logfile_path = "{self.dir}/events.log"\ntmp_dir = "{self.dir}/tmp"\n')
        self.version = self.cmd("--version").stdout.strip()
        _import(self)
        STARTED.append(f"podman: {self.version}")
        return self

    def stop(self):
        if self.storage.exists():
            self.remove_containers()


class Docker(Engine):
    name, cli = "docker", DOCKER

    def __init__(self):
        self.socket, self.pidfile = BASE / self.name / "docker.sock", BASE / self.name / "dockerd.pid"
        super().__init__({"DOCKER_HOST": f"unix://{self.socket}"})
        self.proc = None

    def start(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "dockerd.log", "w") as log:
            self.proc = _popen(
                [DOCKERD, "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
                 "--host", f"unix://{self.socket}", "--pidfile", str(self.pidfile),
                 "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_LIMIT
        while self.cmd("version", check=False, timeout=10).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "dockerd.log").read_text()[-3000:]
                raise EngineUnavailable(f"dockerd did not start (exit {self.proc.poll()}); its log ends:\n{tail}")
            time.sleep(0.2)
        self.version = self.cmd("version", "-f", "client {{.Client.Version}}, daemon {{.Server.Version}}").stdout.strip()
        _import(self)
        STARTED.append(f"docker: {self.version}")
        return self

    def stop(self):
        """Removes the containers, then stops this run's dockerd, or one a crashed run left."""
        pid = _dockerd_pid(self.pidfile)
        if pid is None:
            return
        self.remove_containers()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + START_LIMIT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=START_LIMIT)


def _popen(argv, **kw) -> subprocess.Popen:
    try:
        return subprocess.Popen(argv, **kw)
    except OSError as e:
        raise EngineUnavailable(f"cannot start `{argv[0]}`: {e}") from e


def _import(engine: Engine, python=False):
    image = PYTHON_IMAGE if python else IMAGE
    try:
        subprocess.run([engine.cli, "import", "--change", "WORKDIR /work", "-", image], input=rootfs_tar(python),
                       env=engine.env, capture_output=True, timeout=START_LIMIT, check=True)
    except subprocess.CalledProcessError as e:
        raise EngineUnavailable(f"`{engine.cli} import` failed: {e.stderr.decode(errors='replace').strip()}") from e


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _dockerd_pid(pidfile: pathlib.Path):
    """The pid in `pidfile` if it is a dockerd of this checkout's (its argv names BASE), else None."""
    try:
        pid = int(pidfile.read_text().strip())
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if b"dockerd" in argv and str(BASE).encode() in argv and _alive(pid) else None


def _unmount_under(path: pathlib.Path):
    """Lazily unmounts what a killed engine left mounted under `path`, deepest first."""
    mounts = [line.split()[1] for line in pathlib.Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(str(path) + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def clean(engine: Engine):
    """Leaves nothing of `engine`: containers removed, dockerd stopped, storage deleted."""
    engine.stop()
    if engine.dir.exists():
        _unmount_under(engine.dir)
        shutil.rmtree(engine.dir, ignore_errors=True)
    try:
        BASE.rmdir()
    except OSError:
        pass  # the other engine is still there, or it is gone already


def stop_all():
    for engine in (Podman(), Docker()):
        clean(engine)


if __name__ == "__main__":
    if sys.argv[1:] != ["stop"]:
        sys.exit("usage: engines.py stop")
    stop_all()
