"""TLS without a proxy: `outpost mcp serve --tls-cert/--tls-key` (wss://, https://), `outpost mcp connect
--url wss:// --ca`, plain-text bearer tokens refused off loopback, and stalled handshakes closed."""
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import subprocess

import anyio
import httpx2 as httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from websockets.asyncio.client import connect

from conftest import BIN, HANG_GUARD, data, text
from network import (Served, auth_header, closed_by_server, generate_token, host_port, write_secret, ws_call,
                     ws_session)

pytestmark = pytest.mark.anyio

KEY_FORMATS = {
    "ec-pkcs8": (lambda: ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8),
    "ec-sec1": (lambda: ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.TraditionalOpenSSL),
    "rsa-pkcs1": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
                  serialization.PrivateFormat.TraditionalOpenSSL),
}


def self_signed(directory, name="server", key_format="ec-pkcs8", ca=False, names=("localhost", "127.0.0.1")):
    """A throwaway self-signed certificate for `names`: (cert.pem, key.pem). `ca`: marked as a CA
    certificate, as `openssl req -x509` makes them by default."""
    make_key, private_format = KEY_FORMATS[key_format]
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption()))
    return cert_path, key_path


def san(name):
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def trusting(cert):
    """A client TLS context trusting only `cert`."""
    return ssl.create_default_context(cafile=str(cert))


def write_config(env, config):
    with open(env["OUTPOST_CONFIG"], "w") as f:
        json.dump(config, f)


@pytest.fixture
def secret(tmp_path):
    return write_secret(tmp_path)


@pytest.fixture
def pair(tmp_path):
    return self_signed(tmp_path)


def tls_args(pair):
    return ("--tls-cert", str(pair[0]), "--tls-key", str(pair[1]))


async def echo_over_wss(url, cert, token, word):
    async with connect(url, ssl=trusting(cert), additional_headers=auth_header(token), proxy=None,
                       open_timeout=HANG_GUARD) as ws:
        await ws_session(ws)
        with anyio.fail_after(HANG_GUARD):
            reply = await ws_call(ws, 1, "remote_exec", {"host": "local", "command": f"echo {word}"})
        return reply["result"]["structuredContent"]["stdout"].strip()


@pytest.mark.parametrize("key_format", list(KEY_FORMATS))
async def test_a_wss_session_runs_a_tool_call(env, tmp_path, secret, key_format):
    cert, key = self_signed(tmp_path, key_format=key_format)
    token = generate_token(env, secret, "--subject", "ana")
    with Served(env, tmp_path, "--websocket", "--port", "0", "--jwt-secret-file", str(secret),
                "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        assert server.url.startswith("wss://127.0.0.1:"), server.url
        assert await echo_over_wss(server.url, cert, token, "secure") == "secure"
        # A client speaking plain ws:// to it gets no session.
        with pytest.raises(Exception):
            async with connect(server.url.replace("wss://", "ws://"), additional_headers=auth_header(token),
                               proxy=None, open_timeout=HANG_GUARD):
                pass


async def test_an_https_streamable_http_session_runs_a_tool_call(env, tmp_path, secret, pair):
    token = generate_token(env, secret, "--subject", "ana")
    with Served(env, tmp_path, "--http", "--port", "0", "--jwt-secret-file", str(secret), *tls_args(pair)) as server:
        assert server.url.startswith("https://127.0.0.1:"), server.url
        with anyio.fail_after(HANG_GUARD):
            async with httpx.AsyncClient(verify=trusting(pair[0]), headers=auth_header(token),
                                         timeout=HANG_GUARD) as client:
                async with streamable_http_client(server.url, http_client=client) as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        result = await session.call_tool("remote_exec", {"host": "local", "command": "echo https"})
                        assert not result.is_error, text(result)
                        assert data(result)["stdout"] == "https\n"
            # The gate still answers over TLS.
            async with httpx.AsyncClient(verify=trusting(pair[0]), timeout=HANG_GUARD) as client:
                response = await client.post(server.url, json={"jsonrpc": "2.0", "id": 0, "method": "initialize"},
                                             headers={"Accept": "application/json, text/event-stream"})
                assert response.status_code == 401


def serve_fails(env, *args):
    out = subprocess.run([BIN, "mcp", "serve", "--websocket", "--port", "0", *args], env=env,
                         capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert out.returncode != 0, out.stderr
    assert "serving MCP" not in out.stderr
    return out.stderr


def test_missing_or_unusable_certificate_files_are_named_with_the_fix(env, tmp_path, secret, pair):
    cert, key = pair
    other_cert, other_key = self_signed(tmp_path, name="other")
    missing = tmp_path / "missing.pem"
    jwt = ("--jwt-secret-file", str(secret))
    error = serve_fails(env, *jwt, "--tls-cert", str(missing), "--tls-key", str(key))
    assert f"--tls-cert {missing}: cannot read it" in error, error
    error = serve_fails(env, *jwt, "--tls-cert", str(key), "--tls-key", str(key))
    assert f"--tls-cert {key}: holds no PEM certificate" in error, error
    error = serve_fails(env, *jwt, "--tls-cert", str(cert), "--tls-key", str(cert))
    assert f"--tls-key {cert}: holds no PEM private key (PKCS#8, RSA or EC)" in error, error
    error = serve_fails(env, *jwt, "--tls-cert", str(cert), "--tls-key", str(other_key))
    assert f"--tls-key {other_key}: does not go with the certificate in {cert}" in error, error
    error = serve_fails(env, *jwt, "--tls-cert", str(cert))
    assert "--tls-key" in error, error


@contextlib.asynccontextmanager
async def bridge(env, errlog, *args):
    params = StdioServerParameters(command=BIN, args=["mcp", "connect", *args], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write):
        async with ClientSession(read, write) as session:
            yield session


TRANSPORTS = {"--websocket": "wss://", "--http": "https://"}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
async def test_the_bridge_reaches_a_tls_server_trusting_its_certificate(env, tmp_path, secret, pair, transport):
    token = generate_token(env, secret, "--subject", "laptop")
    with Served(env, tmp_path, transport, "--port", "0", "--jwt-secret-file", str(secret),
                *tls_args(pair)) as server:
        assert server.url.startswith(TRANSPORTS[transport] + "127.0.0.1:"), server.url
        with open(tmp_path / "bridge.log", "w+") as errlog:
            async with bridge(dict(env, OUTPOST_TOKEN=token), errlog, "--url", server.url,
                              "--token-env", "OUTPOST_TOKEN", "--ca", str(pair[0])) as session:
                assert await echo(session, "bridged") == "bridged"
            # Without --ca, the system's roots: here the store SSL_CERT_FILE names.
            system = dict(env, OUTPOST_TOKEN=token, SSL_CERT_FILE=str(pair[0]))
            async with bridge(system, errlog, "--url", server.url, "--token-env", "OUTPOST_TOKEN") as session:
                assert await echo(session, "system") == "system"


async def echo(session, word):
    with anyio.fail_after(HANG_GUARD):
        await session.initialize()
        result = await session.call_tool("remote_exec", {"host": "local", "command": f"echo {word}"})
    assert not result.is_error, text(result)
    return data(result)["stdout"].strip()


UNTRUSTED = {
    "another CA": ({}, "UnknownIssuer: pass --ca FILE with the CA that signed it"),
    "a CA as the server's certificate": ({"ca": True}, "-addext basicConstraints=critical,CA:FALSE"),
    "another name": ({"names": ("buildbox",)}, "connect with a host name the certificate names"),
}


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("case", list(UNTRUSTED))
async def test_the_bridge_refuses_a_certificate_it_cannot_trust_saying_why(env, tmp_path, secret, pair, case,
                                                                          transport):
    options, expected = UNTRUSTED[case]
    served = self_signed(tmp_path, name="served", **options) if options else pair
    trusted = self_signed(tmp_path, name="stranger")[0] if not options else served[0]
    token = generate_token(env, secret, "--subject", "laptop")
    with Served(env, tmp_path, transport, "--port", "0", "--jwt-secret-file", str(secret),
                *tls_args(served)) as server:
        with open(tmp_path / "bridge.log", "w+") as errlog:
            async with bridge(dict(env, OUTPOST_TOKEN=token), errlog, "--url", server.url,
                              "--token-env", "OUTPOST_TOKEN", "--ca", str(trusted)) as session:
                with anyio.fail_after(HANG_GUARD), pytest.raises(Exception) as refused:
                    await session.initialize()
        message = str(refused.value)
        assert "is not trusted" in message and expected in message, message
        if transport == "--websocket":
            assert "WebSocket connection opened" not in server.text()


def test_the_bridge_refuses_ca_with_plain_urls_and_wss_without_any_roots(env, tmp_path, pair):
    for url, expected in (("ws://127.0.0.1:1/mcp", "--ca is for wss:// and https:// URLs"),
                          ("http://127.0.0.1:1/mcp", "--ca is for wss:// and https:// URLs; "
                                                     "http://127.0.0.1:1/mcp is plain http://: use https://"),
                          ("ftp://127.0.0.1:1/mcp", "is not a ws://, wss://, http:// or https:// URL")):
        out = subprocess.run([BIN, "mcp", "connect", "--url", url, "--ca", str(pair[0])], env=env,
                             capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
        assert out.returncode != 0 and expected in out.stderr, out.stderr
    no_roots = dict(env, SSL_CERT_FILE=str(tmp_path / "missing.pem"), SSL_CERT_DIR=str(tmp_path / "none"))
    out = subprocess.run([BIN, "mcp", "connect", "--url", "wss://127.0.0.1:1/mcp"], env=no_roots,
                         capture_output=True, text=True, timeout=HANG_GUARD, stdin=subprocess.DEVNULL)
    assert out.returncode != 0 and "no trusted root certificates found on this system" in out.stderr, out.stderr
    assert "pass --ca FILE" in out.stderr, out.stderr


async def test_bearer_tokens_in_plain_text_off_loopback_need_insecure_no_tls(env, tmp_path, secret, pair):
    off_loopback = ("--host", "0.0.0.0", "--jwt-secret-file", str(secret))
    error = serve_fails(env, *off_loopback)
    assert ("refusing to serve 0.0.0.0 with bearer tokens in plain text: use --tls-cert FILE --tls-key FILE, "
            "bind 127.0.0.1, or pass --insecure-no-tls") in error, error
    token = generate_token(env, secret, "--subject", "ana")
    with Served(env, tmp_path, "--websocket", "--port", "0", *off_loopback, "--insecure-no-tls") as server:
        assert "plain text" in server.text()
        _, port = host_port(server.url)
        async with connect(f"ws://127.0.0.1:{port}/mcp", additional_headers=auth_header(token), proxy=None,
                           open_timeout=HANG_GUARD) as ws:
            await ws_session(ws)
    with Served(env, tmp_path, "--websocket", "--port", "0", *off_loopback, *tls_args(pair), name="tls") as server:
        _, port = host_port(server.url)
        assert await echo_over_wss(f"wss://127.0.0.1:{port}/mcp", pair[0], token, "wide") == "wide"


@pytest.mark.parametrize("transport", ["--http", "--websocket"])
async def test_a_stalled_tls_handshake_is_closed_after_the_header_timeout(env, tmp_path, secret, pair, transport):
    write_config(env, {"serve": {"header_timeout_secs": 1}})
    with Served(env, tmp_path, transport, "--port", "0", "--jwt-secret-file", str(secret), *tls_args(pair)) as server:
        silent = socket.create_connection(host_port(server.url))
        try:
            assert closed_by_server(silent), "a connection that never started its TLS handshake stayed open"
        finally:
            silent.close()


async def test_stalled_tls_handshakes_cannot_lock_out_a_client(env, tmp_path, secret, pair):
    write_config(env, {"serve": {"max_connections": 2, "header_timeout_secs": 600}})
    token = generate_token(env, secret, "--subject", "ana")
    with Served(env, tmp_path, "--websocket", "--port", "0", "--jwt-secret-file", str(secret),
                *tls_args(pair)) as server:
        stalled = [socket.create_connection(host_port(server.url), timeout=HANG_GUARD) for _ in range(6)]
        try:
            assert await echo_over_wss(server.url, pair[0], token, "in") == "in"
            assert closed_by_server(stalled[0]), "the longest-waiting handshake was not closed to make room"
        finally:
            for sock in stalled:
                sock.close()
