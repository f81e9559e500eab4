"""The official TypeScript MCP SDK (installed by scripts/test into tests/ts) against outpost."""
import json
import subprocess

from conftest import HANG_GUARD, ROOT
from network import Served

SDK_DIR = ROOT / "tests" / "ts"
CLIENT = ROOT / "tests" / "ts" / "websocket_client.cjs"


def test_websocket_client_transport_lists_and_calls_tools(env, tmp_path):
    assert (SDK_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir(), \
        "the TypeScript SDK is missing: run `npm ci --prefix tests/ts` (scripts/test does)"
    with Served(env, tmp_path, "--websocket", "--port", "0", "--auth", "none") as server:
        # Node 20 has the WebSocket global behind this flag; later versions accept it as well.
        out = subprocess.run(["node", "--experimental-websocket", str(CLIENT), str(SDK_DIR), server.url],
                             capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["server"]["name"] == "outpost"
    assert {"remote_exec", "job_output", "list_hosts"} <= set(report["tools"])
    assert report["call"]["structuredContent"]["stdout"] == "from-typescript\n", report["call"]
    assert not report["call"].get("isError")
