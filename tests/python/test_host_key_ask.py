"""`strict_host_key_checking: ask`: an unknown host key is shown to the person through elicitation
(real sshd, unknown key); accepted keys are recorded, declined ones run nothing."""

import base64
import hashlib
import json
import pathlib

import pytest

from asking import Person, asking_session
from conftest import data, open_session, text
from sshd import keygen

pytestmark = pytest.mark.anyio


def fingerprint(sshd) -> str:
    """The host key's fingerprint as OpenSSH prints it."""
    _, key = sshd.host_public_key
    digest = hashlib.sha256(base64.b64decode(key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts(env) -> pathlib.Path:
    return pathlib.Path(env["HOME"]) / ".ssh" / "known_hosts"


def configure(env, config):
    pathlib.Path(env["OUTPOST_CONFIG"]).write_text(json.dumps(config))


GLOBAL_ASK = {"ssh": {"strict_host_key_checking": "ask"}}


async def test_accepted_key_is_recorded_and_the_command_runs(env, sshd, tmp_path):
    configure(env, GLOBAL_ASK)  # `box` is an ~/.ssh/config alias: the global default covers it
    marker = tmp_path / "ran"
    person = Person("trust")
    async with asking_session(env, person) as s:
        r = await s.call_tool("remote_exec", {"host": "box", "command": f"touch {marker} && echo ok"})
        assert not r.is_error, text(r)
        assert data(r)["stdout"] == "ok\n"
        # Known now: a second call asks nothing.
        r = await s.call_tool("remote_exec", {"host": "box", "command": "true"})
        assert not r.is_error, text(r)
    assert marker.exists()
    assert len(person.questions) == 1
    question = person.questions[0]
    assert "`box`" in question and str(sshd.port) in question and "ssh-ed25519" in question
    assert fingerprint(sshd) in question
    kind, key = sshd.host_public_key
    assert f"[127.0.0.1]:{sshd.port} {kind} {key}" in known_hosts(env).read_text()


async def test_declined_key_runs_nothing_and_records_nothing(env, sshd, tmp_path):
    configure(env, {"remotes": {"gpu": {"host": "box", "strict_host_key_checking": "ask"}}})
    marker = tmp_path / "ran"
    async with asking_session(env, Person("refuse")) as s:
        r = await s.call_tool("remote_exec", {"host": "gpu", "command": f"touch {marker}"})
    assert r.is_error and "declined" in text(r) and fingerprint(sshd) in text(r)
    assert not marker.exists()
    assert not known_hosts(env).exists() or known_hosts(env).read_text() == ""
    # Dismissing the form is no yes either.
    async with asking_session(env, Person(None)) as s:
        r = await s.call_tool("remote_exec", {"host": "gpu", "command": f"touch {marker}"})
    assert r.is_error and "declined" in text(r)
    assert not marker.exists()


async def test_a_client_without_elicitation_gets_the_fix(env, sshd, tmp_path):
    configure(env, GLOBAL_ASK)
    marker = tmp_path / "ran"
    async with open_session(env) as s:
        r = await s.call_tool("remote_exec", {"host": "box", "command": f"touch {marker}"})
    message = text(r)
    assert r.is_error and "is not known" in message
    assert sshd.known_hosts_line().strip() in message, "the command that trusts it"
    assert "elicitation" in message
    assert not marker.exists()


async def test_a_changed_key_is_refused_without_asking(env, sshd, tmp_path):
    configure(env, GLOBAL_ASK)
    other = tmp_path / "other_host_key"
    keygen(other)
    kind, key = pathlib.Path(str(other) + ".pub").read_text().split()[:2]
    known_hosts(env).write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    marker = tmp_path / "ran"
    person = Person("trust")
    async with asking_session(env, person) as s:
        r = await s.call_tool("remote_exec", {"host": "box", "command": f"touch {marker}"})
    assert r.is_error and "HAS CHANGED" in text(r)
    assert person.questions == []
    assert not marker.exists()


async def test_sync_sessions_meets_the_key_first(env, sshd, tmp_path):
    configure(env, GLOBAL_ASK)
    person = Person("refuse")
    async with asking_session(env, person) as s:
        r = await s.call_tool("sync_sessions", {"host": "box", "cwd": str(tmp_path), "direction": "pull"})
    assert r.is_error and "declined" in text(r)
    assert len(person.questions) == 1


@pytest.mark.parametrize("policy", ["ask", "accept-new"])
async def test_a_key_of_another_type_than_the_recorded_one_is_refused_without_asking(env, sshd, tmp_path, policy):
    # known_hosts holds an RSA key for the host; it presents ed25519: not new, a different key.
    configure(env, {"ssh": {"strict_host_key_checking": policy}})
    other = tmp_path / "rsa_host_key"
    keygen(other, kind="rsa")
    kind, key = pathlib.Path(str(other) + ".pub").read_text().split()[:2]
    assert kind == "ssh-rsa" and sshd.host_public_key[0] != kind
    known_hosts(env).write_text(f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    marker = tmp_path / "ran"
    person = Person("trust")
    async with asking_session(env, person) as s:
        r = await s.call_tool("remote_exec", {"host": "box", "command": f"touch {marker}"})
    assert r.is_error and "HAS CHANGED" in text(r), text(r)
    assert person.questions == [] and not marker.exists()
    assert known_hosts(env).read_text().count("\n") == 1, "nothing was recorded"
