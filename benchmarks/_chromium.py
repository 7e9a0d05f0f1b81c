"""Real Chromium against a device-bound session: the harness the DBSC test and benchmark share.

:func:`serve` runs the WSGI middleware over HTTPS on 127.0.0.1 with a throwaway
self-signed certificate (the browser is told to accept it by its public-key
hash); :func:`run_chromium` starts the machine's headless Chromium, which runs
DBSC with a software key behind two features, on the login page until a
condition holds or a bounded wait ends. Every answer the server gives is
recorded with its time, so callers can count refreshes and 403s per cycle.
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tokenflow import (
    DeviceBinding,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Request,
)
from tokenflow.dbsc import DbscProofVerifier
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakePasswordVerifier, FakeUserDirectory
from tokenflow.wsgi import TokenflowMiddleware

__all__ = [
    "CHROMIUM",
    "POLLING_PAGE",
    "SINGLE_FETCH_PAGE",
    "Served",
    "refresh_cycles",
    "run_chromium",
    "serve",
]

CHROMIUM = next(
    (
        p
        for p in ("/usr/lib/chromium/chromium", shutil.which("chromium"))
        if p and os.path.exists(p)
    ),
    None,
)
"""The machine's Chromium, or None."""

SINGLE_FETCH_PAGE = b"""<!doctype html><title>signed in</title><script>
setTimeout(async () => {
  const r = await fetch('/private');
  document.title = 'private ' + r.status;
}, 4000);
</script>"""
"""One protected request 4 s after the login (with a 2 s cookie: one refresh)."""

POLLING_PAGE = b"""<!doctype html><title>signed in</title><script>
setInterval(() => fetch('/private'), 130000);
</script>"""
"""A protected request every 130 s: at the default access_ttl (120 s) each one finds
the bound cookie expired, so Chromium defers it and refreshes with the challenge it
cached 130 s earlier (the case a 120 s challenge window answered with a 403)."""


@dataclass
class Served:
    """A running server: its flow, its port, the certificate pin and what it answered."""

    flow: Flow
    port: int
    pin: str
    profile: str
    timed: list[tuple[float, str, str, int]] = field(default_factory=list)
    """``(monotonic time, method, path, status)`` of every answer, in order."""

    @property
    def seen(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every answer, in order."""
        return [(method, path, status) for _at, method, path, status in self.timed]


def _certificate(directory: str) -> tuple[str, str, str]:
    """A self-signed P-256 certificate for localhost: (cert path, key path, SPKI pin)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
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


@contextmanager
def serve(config: FlowConfig, page: bytes) -> Iterator[Served]:
    """Serve ``/login`` (signs ada in, answers ``page``) and a protected ``/private``."""
    users = FakeUserDirectory()
    users.add_user("ada")
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=FakePasswordVerifier({"ada": "pw"}),
        config=config,
        proofs=DbscProofVerifier(),
    )

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/login":
            decision = flow.login(
                Request.from_wsgi(environ, credentials=PasswordCredentials("ada", "pw"))
            )
            if not isinstance(decision, Reissue):
                raise AssertionError(f"login gave {decision!r}")
            headers = [("content-type", "text/html"), *decision.headers]
            headers += [("set-cookie", c) for c in decision.set_cookies]
            start_response("200 OK", headers)
            return [page]
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"private"]

    middleware = TokenflowMiddleware(app, flow, required=["/private"])
    with tempfile.TemporaryDirectory(prefix="tokenflow-chromium-") as directory:
        cert, key, pin = _certificate(directory)
        served = Served(flow, 0, pin, os.path.join(directory, "profile"))

        def recording(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            def start(status: str, headers: Any, exc_info: Any = None) -> Any:
                served.timed.append(
                    (
                        time.monotonic(),
                        environ["REQUEST_METHOD"],
                        environ["PATH_INFO"],
                        int(status[:3]),
                    )
                )
                return start_response(status, headers)

            return middleware(environ, start)

        server = make_server("127.0.0.1", 0, recording, server_class=_Server, handler_class=_Quiet)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        served.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield served
        finally:
            server.shutdown()
            server.server_close()


def run_chromium(served: Served, done: Callable[[Served], bool], seconds: float) -> None:
    """Headless Chromium on the login page, until ``done(served)`` or ``seconds`` have passed."""
    if CHROMIUM is None:
        raise RuntimeError("no Chromium on this machine")
    read_end, write_end = os.pipe()
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={served.profile}",
        "--enable-features=DeviceBoundSessions,"
        "EnableBoundSessionCredentialsSoftwareKeysForManualTesting",
        f"--ignore-certificate-errors-spki-list={served.pin}",
        "--host-resolver-rules=MAP localhost 127.0.0.1",
        "--remote-debugging-pipe",
        f"https://localhost:{served.port}/login",
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
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done(served):
            time.sleep(0.25)
    finally:
        browser.kill()
        browser.wait()
        os.close(read_end)
        os.close(write_end)


def refresh_cycles(served: Served, gap: float = 30.0) -> list[list[int]]:
    """The refresh answers' statuses grouped into cycles (``gap`` seconds or more apart)."""
    cycles: list[list[int]] = []
    last: float | None = None
    for at, _method, path, status in served.timed:
        if path != "/auth/dbsc/refresh":
            continue
        if last is None or at - last >= gap:
            cycles.append([])
        cycles[-1].append(status)
        last = at
    return cycles


def default_config() -> FlowConfig:
    """The flow's defaults with device binding on (access_ttl 120 s, challenge_ttl 60 s)."""
    return FlowConfig(device_binding=DeviceBinding())
