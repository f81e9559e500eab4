"""A TCP proxy on loopback that can stop forwarding on demand, as a stalled network would: the
connections stay open, nothing gets through either way, and nothing is refused."""

import pathlib
import select
import socket
import threading


class StallProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`target` until `stall()`, again after `resume()`."""

    def __init__(self, target: int):
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self.stopped = threading.Event()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def close(self):
        self.stopped.set()
        self.flowing.set()
        self.listener.close()
        for s in self.sockets:
            s.close()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _wait_flowing(self) -> bool:
        while not self.flowing.wait(0.1):
            pass
        return not self.stopped.is_set()

    def _pump(self, src, dst):
        try:
            while self._wait_flowing():
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                if not self._wait_flowing():
                    return
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def alias_through(proxy: StallProxy, sshd, home: pathlib.Path, name: str, extra: str = ""):
    """Adds ~/.ssh/config alias `name` reaching `sshd` through `proxy`, its host key trusted."""
    kind, key = sshd.host_public_key
    with open(home / ".ssh" / "known_hosts", "a") as f:
        f.write(f"[127.0.0.1]:{proxy.port} {kind} {key}\n")
    with open(home / ".ssh" / "config", "a") as f:
        f.write(f"Host {name}\n  HostName 127.0.0.1\n  Port {proxy.port}\n{extra}")
