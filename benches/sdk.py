"""An MCP server over stdio driven by the official MCP Python SDK, with its process tree in view.

The fan-out and peer benchmarks use it for every server alike (outpost and the npm peers), so the
client's own cost is the same in every column.
"""

import contextlib
import os
import pathlib
import time

from mcp import ClientSession, StdioServerParameters, stdio_client


def children(pid):
    """Pids whose parent is `pid`."""
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def tree(pid):
    """`pid` and every process below it."""
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children(pid))
    return found


def status_kib(pid, field):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """One server process and an initialized SDK session with it (`async with Server(...)`)."""

    def __init__(self, argv, env, cwd=None):
        self.argv, self.env, self.cwd = argv, env, cwd
        self.stack = contextlib.AsyncExitStack()
        self.session = None
        self.pid = None
        self.initialize_seconds = None

    async def __aenter__(self):
        before = set(children(os.getpid()))
        params = StdioServerParameters(command=self.argv[0], args=list(self.argv[1:]), env=self.env,
                                       cwd=self.cwd)
        start = time.perf_counter()
        errlog = self.stack.enter_context(open(os.devnull, "w"))
        read, write = await self.stack.enter_async_context(stdio_client(params, errlog=errlog))
        self.session = await self.stack.enter_async_context(ClientSession(read, write))
        await self.session.initialize()
        self.initialize_seconds = time.perf_counter() - start
        spawned = set(children(os.getpid())) - before
        self.pid = spawned.pop() if len(spawned) == 1 else None
        return self

    async def __aexit__(self, *exc):
        await self.stack.aclose()

    def rss_kib(self, field="VmRSS"):
        """The server's process tree's resident memory (`VmHWM`: each process's peak, summed)."""
        return sum(status_kib(pid, field) for pid in tree(self.pid)) if self.pid else 0

    async def call(self, tool, arguments, **kw):
        return await self.session.call_tool(tool, arguments, **kw)
