"""outpost as the official MCP TypeScript SDK sees it: its Ajv compiles every tool schema cleanly."""

import json
import pathlib
import subprocess

from conftest import BIN, HANG_GUARD

TS = pathlib.Path(__file__).resolve().parents[1] / "ts"


def test_the_typescript_sdk_lists_the_tools_without_a_warning(env):
    assert (TS / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir(), \
        "the TypeScript SDK is not installed: run `npm ci --prefix tests/ts` (scripts/test does)"
    p = subprocess.run(["node", str(TS / "list_tools.mjs"), BIN], env=env, capture_output=True,
                       text=True, timeout=HANG_GUARD)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout)
    assert "spawn_claude" in seen["tools"] and "job_output" in seen["tools"], seen
    # Before: 42 `unknown format "uint64"` (…) warnings on output schemas, 8 on input schemas.
    assert seen["printed"] == [], "\n".join(seen["printed"])
