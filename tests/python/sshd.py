"""A real OpenSSH sshd on 127.0.0.1 for tests: throwaway host and user keys, stock config, its own port."""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: pathlib.Path, kind="ed25519", passphrase=""):
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-f", str(path), "-C", path.name],
                   check=True)


class Sshd:
    """One sshd process. `home` is the client-side HOME whose key is authorized."""

    def __init__(self, root: pathlib.Path, home: pathlib.Path, port=None, host_key=None, extra=(),
                 sftp=True):
        self.root = root
        self.home = home
        self.port = port or free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.host_key = host_key or root / "host_ed25519"
        if not self.host_key.exists():
            keygen(self.host_key)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        self.user_key = ssh_dir / "id_ed25519"
        if not self.user_key.exists():
            keygen(self.user_key)
        self.authorized = root / "authorized_keys"
        self.authorized.write_text(pathlib.Path(str(self.user_key) + ".pub").read_text())
        os.chmod(self.authorized, 0o600)
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized}",
            f"PidFile {root / 'sshd.pid'}",
            "UsePAM no",
            "StrictModes no",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "LogLevel ERROR",
            *(["Subsystem sftp internal-sftp"] if sftp else []),
            *extra,
            "",
        ]))
        self.proc = None

    @property
    def host_public_key(self) -> str:
        return pathlib.Path(str(self.host_key) + ".pub").read_text().split()[:2]

    def known_hosts_line(self) -> str:
        kind, key = self.host_public_key
        return f"[127.0.0.1]:{self.port} {kind} {key}\n"

    def trust(self):
        with open(self.home / ".ssh" / "known_hosts", "a") as f:
            f.write(self.known_hosts_line())

    def start(self):
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "a"))
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.poll() is None, (self.root / "sshd.log").read_text()
                assert time.monotonic() < deadline, "sshd did not start"
                time.sleep(0.05)

    def stop(self, connections=True):
        """Stops the listener and, unless told otherwise, every connection it serves (as a reboot would)."""
        if self.proc and self.proc.poll() is None and connections:
            # Every sshd process of every connection (the monitor and its unprivileged child,
            # which holds the socket), not only the listener's direct children.
            for pid in sshd_descendants(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None


def sshd_descendants(root: int) -> list:
    """Pids of the sshd processes below `root` (user commands they started are left alone)."""
    children = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append((int(stat.parent.name), comm))
    found, todo = [], [root]
    while todo:
        for pid, comm in children.get(todo.pop(), []):
            if comm.startswith("sshd"):
                found.append(pid)
                todo.append(pid)
    return found
