"""What a model receives from outpost, measured as Claude Code hands it over: on success
`JSON.stringify(structuredContent)`, on an error only the text. Through the built binary and the MCP SDK."""

import json

import anyio
import pytest

from conftest import HANG_GUARD, data, text

pytestmark = pytest.mark.anyio

BUDGET = 30_000  # exec.output_limit_bytes by default
# Everything in a result besides the output: host, status, exit code, job id, field names...
OVERHEAD = 400


def stringify(value) -> str:
    """JavaScript's JSON.stringify: no spaces, non-ASCII as is, control characters escaped."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def js_length(s: str) -> int:
    """String length as JavaScript counts it (UTF-16 units)."""
    return len(s.encode("utf-16-le")) // 2


PATHOLOGICAL = {
    "escape bytes": "head -c 30000 /dev/zero | tr '\\0' '\\033'",
    "random bytes": "head -c 200000 /dev/urandom",
    "quotes": "head -c 100000 /dev/zero | tr '\\0' '\"'",
    "backslashes": "head -c 100000 /dev/zero | tr '\\0' '\\\\\\\\'",
    "NUL bytes": "head -c 100000 /dev/zero",
    "4-byte emoji": "awk 'BEGIN { for (i = 0; i < 50000; i++) printf \"\\360\\237\\230\\200\" }'",
    "random on both streams": "head -c 100000 /dev/urandom; head -c 100000 /dev/urandom >&2",
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
async def test_a_result_stays_within_the_budget_whatever_the_bytes(session, name):
    result = await session.call_tool("remote_exec", {"command": PATHOLOGICAL[name]})
    assert not result.is_error, text(result)
    d = data(result)
    sent = stringify(d)
    assert len(sent) <= BUDGET + OVERHEAD and js_length(sent) <= BUDGET + OVERHEAD, (name, js_length(sent))
    assert js_length(text(result)) <= BUDGET + OVERHEAD
    assert "\x1b" not in d["stdout"] + d["stderr"]
    if d["truncated"]:
        page = data(await session.call_tool("job_output", {"job_id": d["job_id"]}))
        sent = stringify(page)
        assert js_length(sent) <= BUDGET + OVERHEAD, (name, js_length(sent))
        assert "\x1b" not in page["output"]


RAW = (b"\x1b[1;32mgreen\x1b[0m plain\r\n"
       b"10%\r50%\r\x1b[2K100%\n"
       b"bell\x07 nul\x00\n"
       b"\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\\n"
       b"bad \xff\xfe bytes \xe2\x82\xac\n")
CLEAN = "green plain\n100%\nbell\u2407 nul\u2400\nlink\nbad \ufffd bytes \u20ac\n"


async def test_escape_sequences_are_removed_and_controls_shown_compactly(session, tmp_path):
    raw = tmp_path / "raw"
    raw.write_bytes(RAW)
    d = data(await session.call_tool("remote_exec", {"command": f"cat {raw}; cat {raw} >&2"}))
    assert (d["stdout"], d["stderr"], d["truncated"]) == (CLEAN, CLEAN, False)


async def test_job_output_is_cleaned_and_its_offsets_count_raw_bytes(session, tmp_path):
    raw = tmp_path / "raw"
    raw.write_bytes(RAW * 50)
    job = data(await session.call_tool("remote_exec", {"command": f"cat {raw}", "background": True}))["job_id"]
    with anyio.fail_after(HANG_GUARD):
        while data(await session.call_tool("job_output", {"job_id": job, "wait_secs": 5}))["status"] == "running":
            pass
    output, offset = "", 0
    with anyio.fail_after(HANG_GUARD):
        while True:
            page = data(await session.call_tool("job_output", {"job_id": job, "offset": offset, "max_bytes": 7}))
            assert page["offset"] == offset and page["next_offset"] > offset
            assert len(stringify(page["output"])) - 2 <= 7
            output += page["output"]
            offset = page["next_offset"]
            if not page["more"]:
                break
    assert offset == len(RAW) * 50
    assert "\x1b" not in output and output.count("link\n") == 50 and output.count("green plain\n") == 50
    at_link = len(RAW) + RAW.index(b"link")
    page = data(await session.call_tool("job_output", {"job_id": job, "offset": at_link}))
    assert page["output"].startswith("link\nbad \ufffd bytes \u20ac\ngreen plain\n")


async def test_a_timed_out_result_says_in_its_text_all_its_structured_part_does(session):
    result = await session.call_tool("remote_exec", {
        "command": "echo partial; head -c 100000 /dev/zero | tr '\\0' x; echo; sleep 300", "timeout_secs": 1})
    assert result.is_error
    d, t = data(result), text(result)
    assert d["status"] == "timed_out" and d["truncated"] is True and d["job_id"]
    for line in ("host: local", "status: timed_out", "timed_out: true", "truncated: true",
                 f"job_id: {d['job_id']}", f"duration_ms: {d['duration_ms']}"):
        assert line in t.splitlines(), (line, t[:600])
    ended = f"signal: {d['signal']}" if d["signal"] else f"exit_code: {d['exit_code']}"
    assert ended in t.splitlines()
    assert "--- stdout ---\npartial\nxxxx" in t and "bytes omitted" in t
    assert js_length(t) <= BUDGET + OVERHEAD
