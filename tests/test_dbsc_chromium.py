"""A real browser: headless Chromium registers and refreshes a device-bound session.

Opt-in (it starts a browser and waits on real time): set TOKENFLOW_CHROMIUM_TESTS=1. It
needs the machine's Chromium (``/usr/lib/chromium/chromium`` or ``chromium`` on PATH), which
runs DBSC with a software key behind two features. The server is the WSGI middleware over
HTTPS on 127.0.0.1 with a throwaway self-signed certificate that the browser is told to
accept by its public-key hash.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

pytest.importorskip("joserfc")

if os.environ.get("TOKENFLOW_CHROMIUM_TESTS", "") != "1":
    pytest.skip("set TOKENFLOW_CHROMIUM_TESTS=1 to run the Chromium test", allow_module_level=True)

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tokenflow import (
    DeviceBinding,
    Flow,
    FlowConfig,
    PasswordCredentials,
    Reissue,
    Request,
)
from tokenflow._keyring import KeyRing
from tokenflow.dbsc import DbscProofVerifier
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory
from tokenflow.wsgi import TokenflowMiddleware

CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"))
        if p and os.path.exists(p)
    ),
    None,
)
if CHROMIUM is None:
    pytest.skip("no Chromium on this machine", allow_module_level=True)

PAGE = b"""<!doctype html><title>signed in</title><script>
setTimeout(async () => {
  const r = await fetch('/private');
  document.title = 'private ' + r.status;
}, 4000);
</script>"""


def _certificate(directory: str) -> tuple[str, str, str]:
    """A self-signed P-256 certificate for localhost: (cert path, key path, SPKI pin)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    users = FakeUserDirectory()
    users.add_user("ada")
    config = FlowConfig(
        access_ttl=2,
        refresh_idle_ttl=300,
        device_binding=DeviceBinding(challenge_ttl=30),
    )
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=FakePasswordVerifier({"ada": "pw"}),
        config=config,
        proofs=DbscProofVerifier(),
    )
    seen: list[tuple[str, str, int]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/login":
            decision = flow.login(
                Request.from_wsgi(environ, credentials=PasswordCredentials("ada", "pw"))
            )
            assert isinstance(decision, Reissue)
            headers = [("content-type", "text/html"), *decision.headers]
            headers += [("set-cookie", c) for c in decision.set_cookies]
            start_response("200 OK", headers)
            return [PAGE]
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"private"]

    middleware = TokenflowMiddleware(app, flow, required=["/private"])

    def recording(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], int(status[:3])))
            return start_response(status, headers)

        return middleware(environ, start)

    with tempfile.TemporaryDirectory(prefix="tokenflow-chromium-") as directory:
        cert, key, pin = _certificate(directory)
        server = make_server("127.0.0.1", 0, recording, server_class=_Server, handler_class=_Quiet)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield {
                "flow": flow,
                "seen": seen,
                "port": server.server_address[1],
                "pin": pin,
                "profile": os.path.join(directory, "profile"),
            }
        finally:
            server.shutdown()
            server.server_close()


def test_chromium_registers_and_refreshes_with_its_key(world: dict[str, Any]) -> None:
    assert CHROMIUM is not None
    read_end, write_end = os.pipe()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={world['profile']}",
        "--enable-features=DeviceBoundSessions,"
        "EnableBoundSessionCredentialsSoftwareKeysForManualTesting",
        f"--ignore-certificate-errors-spki-list={world['pin']}",
        "--host-resolver-rules=MAP localhost 127.0.0.1",
        "--remote-debugging-pipe",
        f"https://localhost:{world['port']}/login",
    ]

    def fds() -> None:
        # --remote-debugging-pipe keeps the browser running; nothing is sent on it.
        os.dup2(read_end, 3)
        os.dup2(write_end, 4)

    browser = subprocess.Popen(  # noqa: S603 - a fixed local binary, no shell
        command,
        preexec_fn=fds,
        close_fds=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if ("GET", "/private", 200) in world["seen"]:
                break
            time.sleep(0.25)
    finally:
        browser.kill()
        browser.wait()
        os.close(read_end)
        os.close(write_end)
    seen = world["seen"]
    assert ("POST", "/auth/dbsc/register", 200) in seen, seen
    assert ("POST", "/auth/dbsc/refresh", 200) in seen, seen
    assert ("GET", "/private", 200) in seen, seen
    (info,) = world["flow"].sessions_of("ada")
    assert info.device_key is not None
    assert '"crv":"P-256"' in info.device_key
    assert info.generation >= 1  # refreshed with the proof, not with the bare cookie
