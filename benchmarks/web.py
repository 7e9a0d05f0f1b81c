"""The middleware's cost: in process against ``decide``, and over real HTTP beside its peers.

* **In process** (interleaved rounds): the ASGI callable of
  :class:`tokenflow.asgi.TokenflowMiddleware` invoked directly on a prepared
  scope whose ``Cookie`` header (about 700 bytes) carries a valid access token,
  against ``flow.decide`` on the equivalent, ready-made
  :class:`~tokenflow.Request` (``asgi_middleware_vs_decide``, for a ``Flow``
  and an ``AsyncFlow``).
* **Access path over loopback, beside its peers**: uvicorn, one worker per
  variant, every variant answering the same two bytes to the same Cookie
  header (tokenflow's access token and every peer's cookie in it): a bare
  endpoint, ``TokenflowMiddleware``, Starlette's ``SessionMiddleware``, a
  PyJWT cookie middleware as the common tutorials write it (Starlette's
  ``BaseHTTPMiddleware``), and in FastAPI a bare route, the route behind
  tokenflow's middleware and its dependency, and the route behind authx.
  Each round runs ``wrk`` once against every variant, in a shuffled order;
  ratios are paired per round (FastAPI variants with the bare FastAPI route,
  the others with the bare endpoint). Both uvicorn stacks are measured,
  httptools + uvloop (the headline) and h11 + asyncio. Per variant: req/s,
  ratio to bare, server µs added per request, p99.
  Goals: ``asgi_access_rps_vs_bare`` >= 0.80, ``asgi_access_rps_vs_best_peer``
  >= 1.5, ``fastapi_access_rps_vs_fastapi_bare`` >= 0.85. Two yardsticks run in
  the same rounds: the AES-GCM floor (one cookie found, opened and its expiry
  checked, nothing else: ``floor_access_rps_vs_bare``, and
  ``asgi_access_rps_vs_floor``), and a FastAPI route behind a dependency that
  does nothing (``fastapi_dependency_rps_vs_fastapi_bare``, FastAPI's own
  price of any dependency, and ``fastapi_access_rps_vs_fastapi_dependency``).
* **Refresh on every request** (over loopback): the middleware's server and a
  hand-wired one (``flow.decide`` called on the event loop) with only a
  refresh cookie, so that every request rotates its session on SQLite.
  ``wrk`` runs one connection per thread, each carrying its own session, and
  a script sends back the refresh token each answer set; every answer must
  be a 200. ``mw_refresh_p99_vs_hand_wired`` (p99 over p99, paired per
  round) <= 1.2.

The HTTP figures need ``wrk`` (Debian package ``wrk``), uvicorn, Starlette and
PyJWT; FastAPI, authx, httptools and uvloop are measured when installed
(``pip install 'tokenflow[bench,examples]'``). ``--quick`` runs one short
round on the headline stack only.
"""

from __future__ import annotations

import base64
import datetime
import importlib.util
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tokenflow import AsyncFlow, Flow, KeyRing, PasswordCredentials, Process, Reissue, Request
from tokenflow.asgi import TokenflowMiddleware, auth_of
from tokenflow.stores import AsyncMemoryStore, MemoryStore, SQLiteStore
from tokenflow.testing import AsyncFakeUserDirectory, FakePasswordVerifier, FakeUserDirectory

from ._asgi_server import FLOOR_COOKIE, seal_floor
from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure

GROUP: Final = "web"
RPS_GOAL: Final = 0.80
PEER_GOAL: Final = 1.5
FASTAPI_GOAL: Final = 0.85
REFRESH_P99_GOAL: Final = 1.2
HOST: Final = "app.example"
# The cookies besides tokenflow's that a typical page sends (analytics,
# consent, CSRF, locale), padded to make the header about 700 bytes.
OTHER_COOKIES: Final = (
    "_ga=GA1.1.1234567890.1700000000",
    "_gid=GA1.2.987654321.1700000000",
    "OptanonConsent=isGpcEnabled=0&datestamp=Tue+Nov+05+2024&version=202409.1.0"
    "&groups=C0001%3A1%2CC0002%3A1%2CC0003%3A0",
    "csrftoken=q3Vx8kJb2NfZ0aLw9RtY7cUe1HmGs4Pd",
    "locale=en-GB",
)
TARGET_HEADER: Final = 700
PASSWORD: Final = "a long benchmark passphrase"


def _cookie_header(auth_pairs: list[str]) -> str:
    """Other cookies, padding, then the auth cookies: about TARGET_HEADER bytes."""
    base = "; ".join([*OTHER_COOKIES, *auth_pairs])
    missing = TARGET_HEADER - len(base) - len("; _pad=")
    if missing > 0:
        return "; ".join([*OTHER_COOKIES, "_pad=" + "x" * missing, *auth_pairs])
    return base


def _pair(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0]


def _login(flow: Flow, user: str) -> tuple[str, str]:
    decision = flow.login(Request(method="POST", credentials=PasswordCredentials(user, PASSWORD)))
    if not isinstance(decision, Reissue):
        raise AssertionError(f"benchmark login failed: {decision!r}")
    access, refresh = decision.set_cookies
    return _pair(access), _pair(refresh)


def _passwords(count: int) -> FakePasswordVerifier:
    verifier = FakePasswordVerifier()
    for n in range(count):
        verifier.set_password(f"user-{n}", PASSWORD, user_id=f"user-{n}")
    return verifier


def _users(count: int) -> FakeUserDirectory:
    directory = FakeUserDirectory()
    for n in range(count):
        directory.add_user(f"user-{n}")
    return directory


# -- in process ----------------------------------------------------------------------


async def _returns(scope: Any, receive: Any, send: Any) -> None:
    return None


async def _receive() -> MutableMapping[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: MutableMapping[str, Any]) -> None:
    return None


def _drive(app: Any, scope: Mapping[str, Any]) -> None:
    """Run one ASGI call that never suspends (the access path) to completion."""
    coroutine = app(scope, _receive, _send)
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("the middleware suspended on the access path")


def _scope(cookie_header: str) -> dict[str, Any]:
    headers = [
        (b"host", HOST.encode()),
        (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        (b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        (b"accept-language", b"en-GB,en;q=0.5"),
        (b"accept-encoding", b"gzip, deflate, br"),
        (b"sec-fetch-site", b"same-origin"),
        (b"cookie", cookie_header.encode()),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": "/account",
        "raw_path": b"/account",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("192.0.2.10", 51000),
        "server": (HOST, 443),
        "state": {},
    }


@dataclass(frozen=True, slots=True)
class InProcess:
    stats: dict[str, Stats]
    header_bytes: int

    def ratio(self, label: str) -> float:
        return self.stats[label].median / self.stats["decide"].median


def _in_process(settings: Settings) -> InProcess:
    ring = KeyRing.generate()
    flow = Flow(ring, MemoryStore(), _users(1), passwords=_passwords(1))
    async_flow = AsyncFlow(ring, AsyncMemoryStore(), AsyncFakeUserDirectory(_users(1)))
    access, refresh = _login(flow, "user-0")
    header = _cookie_header([access, refresh])
    scope = _scope(header)
    request = Request(method="GET", cookie_header=header, sec_fetch_site="same-origin", host=HOST)
    seen: list[object] = []

    async def checking(scope: Any, receive: Any, send: Any) -> None:
        seen.append(auth_of(scope).decision)

    # Prove each case takes the access path before timing it.
    if type(flow.decide(request)) is not Process:
        raise AssertionError("the prepared request is not on the access path")
    for chosen in (flow, async_flow):
        _drive(TokenflowMiddleware(checking, chosen, required=["/account"]), scope)
        if type(seen[-1]) is not Process:
            raise AssertionError(f"the middleware saw {seen[-1]!r}, not Process")
    cases = [
        Case("decide", Call(flow.decide, (request,))),
        Case(
            "middleware_flow",
            Call(_drive, (TokenflowMiddleware(_returns, flow, required=["/account"]), scope)),
        ),
        Case(
            "middleware_async_flow",
            Call(_drive, (TokenflowMiddleware(_returns, async_flow, required=["/account"]), scope)),
        ),
    ]
    return InProcess(measure(GROUP, cases, settings), len(header))


# -- over loopback -------------------------------------------------------------------

ACCESS_VARIANTS: Final = (
    ("bare", "bare ASGI endpoint"),
    ("tokenflow", "TokenflowMiddleware"),
    ("starlette_session", "Starlette SessionMiddleware"),
    ("pyjwt_cookie", "PyJWT cookie (BaseHTTPMiddleware)"),
    ("fastapi_bare", "FastAPI, bare route"),
    ("fastapi_tokenflow", "FastAPI + TokenflowMiddleware + dependency"),
    ("fastapi_authx", "FastAPI + authx (cookie)"),
    ("aesgcm_floor", "floor: AES-GCM cookie, no checks"),
    ("fastapi_dependency", "FastAPI + a no-op dependency"),
)
"""Every server of the access rounds, with its label: same endpoint, same Cookie header."""
PEERS: Final = ("starlette_session", "pyjwt_cookie")
"""The plain-ASGI peers that tokenflow's middleware is compared with."""
STACKS: Final = (("httptools", "uvloop"), ("h11", "asyncio"))
"""uvicorn's two server stacks; the first is the headline."""
REFRESH_THREADS: Final = 2
"""wrk threads (one connection each, one session each) on the refresh path."""


@dataclass(frozen=True, slots=True)
class WrkRun:
    rps: float
    p99_ms: float | None
    non_2xx: int
    requests: int


_UNITS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _parse_wrk(output: str) -> WrkRun:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise RuntimeError(f"wrk printed no Requests/sec:\n{output}")
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    done = re.search(r"(\d+) requests in", output)
    return WrkRun(
        float(rps.group(1)),
        None if p99 is None else float(p99.group(1)) * _UNITS[p99.group(2)],
        0 if bad is None else int(bad.group(1)),
        0 if done is None else int(done.group(1)),
    )


def _wrk(
    port: int,
    seconds: float,
    *,
    threads: int,
    connections: int,
    header: str | None = None,
    script: Path | None = None,
) -> WrkRun:
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
    ]
    if header is not None:
        command += ["-H", f"Cookie: {header}", "-H", f"Host: {HOST}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(f"http://127.0.0.1:{port}/")
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)  # noqa: S603
    return _parse_wrk(done.stdout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Server:
    """A uvicorn process, one worker, serving ``benchmarks._asgi_server:app`` in one mode."""

    def __init__(self, mode: str, stack: tuple[str, str], env: Mapping[str, str]) -> None:
        self.port = _free_port()
        http, loop = stack
        self.process = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "uvicorn",
                "benchmarks._asgi_server:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--http",
                http,
                "--loop",
                loop,
                "--no-access-log",
                "--log-level",
                "warning",
                "--lifespan",
                "off",
            ],
            env={**os.environ, **env, "TF_BENCH_MODE": mode},
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn ({mode}) exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"uvicorn ({mode}) did not start within 30 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


_LUA: Final = """
local tokens = {%(tokens)s}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("token", tokens[counter])
end
function request()
  return wrk.format("GET", "/", {["Cookie"] = "%(prefix)s" .. token, ["Host"] = "%(host)s"})
end
function response(status, headers, body)
  local set = headers["set-cookie"] or headers["Set-Cookie"]
  if set ~= nil then
    local value = string.match(set, "^%(name)s=([^;]+)")
    if value ~= nil then token = value end
  end
end
"""


class _Minter:
    """Mints, in the parent, the cookies every variant's server accepts.

    tokenflow's access token lives two minutes, so a fresh one is minted for
    every round; the peers' tokens are made once, valid for the whole run.
    """

    def __init__(self, flow: Flow, secret: bytes) -> None:
        import json

        import jwt
        from itsdangerous import TimestampSigner

        self.flow = flow
        self._next_user = 1
        session = base64.b64encode(json.dumps({"user": "user-0"}).encode())
        signed = TimestampSigner(secret.hex()).sign(session).decode()
        bearer = jwt.encode({"sub": "user-0", "exp": int(time.time()) + 7200}, secret, "HS256")
        self.peer_pairs = [f"session={signed}", f"access_token={bearer}"]
        try:
            from authx import AuthX, AuthXConfig
        except ImportError:
            self.authx = False
        else:
            self.authx = True
            config = AuthXConfig(
                JWT_SECRET_KEY=secret.hex(), JWT_ALGORITHM="HS256", JWT_TOKEN_LOCATION=["cookies"]
            )
            token = AuthX(config=config).create_access_token(
                uid="user-0", expiry=datetime.timedelta(hours=2)
            )
            self.peer_pairs.append(f"access_token_cookie={token}")
        # The AES-GCM floor's cookie carries claims shaped like tokenflow's access claims.
        now = int(time.time())
        floor = seal_floor(
            secret,
            {
                "sub": "user-0",
                "sid": base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode(),
                "iat": now,
                "exp": now + 7200,
                "aal": 1,
                "amr": ["pwd"],
                "auth_time": now,
            },
        )
        self.peer_pairs.append(f"{FLOOR_COOKIE}={floor}")

    def access_header(self) -> str:
        """Other cookies, padding, every variant's auth cookie, a fresh tokenflow access token."""
        access, _ = _login(self.flow, "user-0")
        return _cookie_header([*self.peer_pairs, access])

    def refresh_tokens(self, count: int) -> list[str]:
        """Fresh sessions' refresh tokens: a rotated token must never be sent twice."""
        tokens = []
        for _ in range(count):
            tokens.append(_login(self.flow, f"user-{self._next_user}")[1].partition("=")[2])
            self._next_user += 1
        return tokens


@dataclass(frozen=True, slots=True)
class StackRuns:
    """The access rounds on one server stack: every variant's run, round by round."""

    stack: str
    runs: dict[str, list[WrkRun]]

    def paired(self, variant: str, baseline: str) -> list[float]:
        """Requests per second over the baseline's, round by round."""
        return [v.rps / b.rps for v, b in zip(self.runs[variant], self.runs[baseline], strict=True)]

    def added_us(self, variant: str, baseline: str) -> list[float]:
        """Server time a request added to the baseline's, round by round (1 worker)."""
        return [
            1e6 / v.rps - 1e6 / b.rps
            for v, b in zip(self.runs[variant], self.runs[baseline], strict=True)
        ]

    def best_peer(self) -> list[float]:
        """tokenflow's requests per second over the faster peer's, round by round."""
        return [
            t.rps / max(self.runs[p][n].rps for p in PEERS)
            for n, t in enumerate(self.runs["tokenflow"])
        ]

    def rps(self, variant: str) -> float:
        return statistics.median(r.rps for r in self.runs[variant])

    def p99(self, variant: str) -> float | None:
        found = [r.p99_ms for r in self.runs[variant] if r.p99_ms is not None]
        return statistics.median(found) if found else None


@dataclass(frozen=True, slots=True)
class OverHttp:
    stacks: list[StackRuns]
    refresh: dict[str, list[WrkRun]]
    refresh_stack: str
    seconds: float
    header_bytes: int
    variants: tuple[str, ...]


def _stack_name(stack: tuple[str, str]) -> str:
    return "+".join(stack)


def _access_rounds(
    stack: tuple[str, str],
    variants: tuple[str, ...],
    env: Mapping[str, str],
    minter: _Minter,
    settings: Settings,
    rounds: int,
    seconds: float,
) -> StackRuns:
    name = _stack_name(stack)
    servers = {mode: _Server(mode, stack, env) for mode in variants}
    try:
        header = minter.access_header()
        for server in servers.values():  # warm up (imports, first connections)
            _wrk(server.port, 1, threads=1, connections=8, header=header)
        runs: dict[str, list[WrkRun]] = {mode: [] for mode in variants}
        order = list(variants)
        shuffler = random.Random(settings.seed)
        for number in range(1, rounds + 1):
            header = minter.access_header()
            shuffler.shuffle(order)
            for mode in order:
                run = _wrk(servers[mode].port, seconds, threads=1, connections=16, header=header)
                if run.non_2xx:
                    raise AssertionError(f"{name} {mode}: {run.non_2xx} answers were not 200")
                runs[mode].append(run)
            settings.log(
                f"{GROUP}: {name} round {number}/{rounds}: "
                + ", ".join(f"{mode} {runs[mode][-1].rps:,.0f}" for mode in variants)
            )
    finally:
        for server in servers.values():
            server.stop()
    return StackRuns(name, runs)


def _refresh_rounds(
    stack: tuple[str, str],
    env: Mapping[str, str],
    minter: _Minter,
    settings: Settings,
    rounds: int,
    seconds: float,
    tmp: Path,
) -> dict[str, list[WrkRun]]:
    refresh_name = minter.flow.config.cookies.refresh_name
    prefix = "; ".join(OTHER_COOKIES) + f"; {refresh_name}="
    modes = ("tokenflow", "hand_wired")
    servers = {mode: _Server(mode, stack, env) for mode in modes}
    runs: dict[str, list[WrkRun]] = {mode: [] for mode in modes}
    order = list(modes)
    shuffler = random.Random(settings.seed + 1)
    try:
        for number in range(1, rounds + 1):
            shuffler.shuffle(order)
            for mode in order:
                script = tmp / f"refresh-{mode}-{number}.lua"
                script.write_text(
                    _LUA
                    % {
                        "tokens": ", ".join(
                            f'"{t}"' for t in minter.refresh_tokens(REFRESH_THREADS)
                        ),
                        "prefix": prefix,
                        "host": HOST,
                        "name": re.sub(r"([^\w])", r"%\1", refresh_name),
                    }
                )
                run = _wrk(
                    servers[mode].port,
                    seconds,
                    threads=REFRESH_THREADS,
                    connections=REFRESH_THREADS,
                    script=script,
                )
                if run.non_2xx:
                    raise AssertionError(
                        f"refresh {mode}: {run.non_2xx} of {run.requests} answers were not 200"
                    )
                runs[mode].append(run)
            settings.log(
                f"{GROUP}: refresh round {number}/{rounds}: "
                + ", ".join(
                    f"{m} {runs[m][-1].rps:,.0f} req/s p99 {runs[m][-1].p99_ms} ms" for m in modes
                )
            )
    finally:
        for server in servers.values():
            server.stop()
    return runs


def _available_variants() -> tuple[str, ...]:
    """The access variants whose libraries are installed (FastAPI and authx are optional)."""
    found = []
    for mode, _ in ACCESS_VARIANTS:
        needs = {
            "fastapi_bare": "fastapi",
            "fastapi_tokenflow": "fastapi",
            "fastapi_authx": "authx",
            "fastapi_dependency": "fastapi",
        }
        if mode in needs and importlib.util.find_spec(needs[mode]) is None:
            continue
        found.append(mode)
    return tuple(found)


def _over_http(settings: Settings) -> OverHttp:
    rounds = 1 if settings.quick else 5
    seconds = 1.0 if settings.quick else 5.0
    variants = _available_variants()
    # In a smoke run only the headline stack, so that CI stays quick.
    stacks = [s for s in STACKS if all(importlib.util.find_spec(m) for m in s if m != "asyncio")]
    if settings.quick:
        stacks = stacks[:1]
    with tempfile.TemporaryDirectory(prefix="tokenflow-web-bench-") as tmp:
        ring = KeyRing.generate()
        db = str(Path(tmp) / "sessions.db")
        store = SQLiteStore(db)
        users = 2 + rounds * 2 * REFRESH_THREADS
        flow = Flow(ring, store, _users(users), passwords=_passwords(users))
        secret = os.urandom(32)
        minter = _Minter(flow, secret)
        env = {
            "TF_BENCH_KEYS": ring.serialize(),
            "TF_BENCH_DB": db,
            "TF_BENCH_USERS": str(users),
            "TF_BENCH_SECRET": secret.hex(),
        }
        try:
            header_bytes = len(minter.access_header())
            results = [
                _access_rounds(stack, variants, env, minter, settings, rounds, seconds)
                for stack in stacks
            ]
            refresh = _refresh_rounds(stacks[0], env, minter, settings, rounds, seconds, Path(tmp))
        finally:
            store.close()
    return OverHttp(results, refresh, _stack_name(stacks[0]), seconds, header_bytes, variants)


def _http_unavailable() -> str | None:
    if shutil.which("wrk") is None:
        return "wrk is not installed (Debian: apt-get install -y wrk)"
    for module, extra in (("uvicorn", "uvicorn"), ("starlette", "starlette"), ("jwt", "pyjwt")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install {extra}, or tokenflow[bench])"
    return None


# -- report ----------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f}..{max(values):.3f}"


def _report_stack(
    http: OverHttp, result: StackRuns, report: Report, labels: Mapping[str, str]
) -> None:
    print(
        f"\n== {GROUP}: uvicorn (1 worker, {result.stack}) + wrk on loopback, "
        f"{http.header_bytes} B Cookie header, {len(result.runs['bare'])} x {http.seconds:g} s "
        "runs per variant, interleaved =="
    )
    rows = []
    for mode in http.variants:
        baseline = "fastapi_bare" if mode.startswith("fastapi_") else "bare"
        ratios = result.paired(mode, baseline)
        added = result.added_us(mode, baseline)
        p99 = result.p99(mode)
        rows.append(
            [
                labels[mode],
                f"{result.rps(mode):,.0f}",
                f"{statistics.median(ratios):.3f}",
                _spread(ratios),
                f"{statistics.median(added):+.1f}",
                "-" if p99 is None else f"{p99:.2f}",
            ]
        )
        key = "rps_vs_fastapi_bare" if baseline == "fastapi_bare" else "rps_vs_bare"
        row: dict[str, JSON] = {
            "label": f"{labels[mode]} ({result.stack})",
            "stack": result.stack,
            "rps": round(result.rps(mode), 1),
            "rps_per_round": [round(r.rps, 1) for r in result.runs[mode]],
            "p99_ms": None if p99 is None else round(p99, 3),
            "us_added": round(statistics.median(added), 2),
        }
        if mode != baseline:
            row[key] = round(statistics.median(ratios), 4)
            row[f"{key}_per_round"] = [round(r, 4) for r in ratios]
        report.add_row(GROUP, f"{result.stack}/{mode}", row)
    print(
        format_table(
            ["variant", "req/s", "vs bare", "per round", "µs added", "p99 ms"], rows, "lrrrrr"
        )
    )
    print("FastAPI variants are paired with the bare FastAPI route, the others with bare ASGI.")


@dataclass(frozen=True, slots=True)
class _Yardstick:
    """A variant that measures what no middleware avoids, and tokenflow's variant beside it."""

    mode: str
    baseline: str
    meaning: str
    ours: str
    own_key: str
    ours_key: str


_YARDSTICKS: Final = (
    _Yardstick(
        "aesgcm_floor",
        "bare",
        "the least a sealed-cookie middleware does",
        "tokenflow",
        "floor_access_rps_vs_bare",
        "asgi_access_rps_vs_floor",
    ),
    _Yardstick(
        "fastapi_dependency",
        "fastapi_bare",
        "FastAPI's own price of a dependency",
        "fastapi_tokenflow",
        "fastapi_dependency_rps_vs_fastapi_bare",
        "fastapi_access_rps_vs_fastapi_dependency",
    ),
)


def _report_yardsticks(head: StackRuns, variants: tuple[str, ...], report: Report) -> None:
    """The figures that separate tokenflow's cost from what no middleware avoids."""
    for stick in _YARDSTICKS:
        if stick.mode not in variants or stick.ours not in variants:
            continue
        own = statistics.median(head.paired(stick.mode, stick.baseline))
        versus = head.paired(stick.ours, stick.mode)
        print(
            f"{stick.own_key} = {own:.3f} ({stick.meaning}); {stick.ours_key} = "
            f"{statistics.median(versus):.3f}, per round {_spread(versus)}"
        )
        report.add_key(stick.own_key, round(own, 4))
        report.add_key(stick.ours_key, round(statistics.median(versus), 4))


def _report_http(http: OverHttp, report: Report) -> None:
    labels = dict(ACCESS_VARIANTS)
    for result in http.stacks:
        _report_stack(http, result, report, labels)
    head = http.stacks[0]
    tf = statistics.median(head.paired("tokenflow", "bare"))
    peer = statistics.median(head.best_peer())
    print(
        f"asgi_access_rps_vs_bare ({head.stack}) = {tf:.3f} (goal >= {RPS_GOAL}: "
        f"{_verdict(tf >= RPS_GOAL)}); per round {_spread(head.paired('tokenflow', 'bare'))}"
    )
    print(
        f"asgi_access_rps_vs_best_peer = {peer:.3f} (goal >= {PEER_GOAL}: "
        f"{_verdict(peer >= PEER_GOAL)}); per round {_spread(head.best_peer())}"
    )
    report.add_key("asgi_access_rps_vs_bare", round(tf, 4))
    report.add_key("asgi_access_rps_vs_best_peer", round(peer, 4))
    report.add_key("asgi_access_rps_bare", round(head.rps("bare"), 1))
    report.add_key("asgi_access_rps_guarded", round(head.rps("tokenflow"), 1))
    for other in http.stacks[1:]:
        ratio = statistics.median(other.paired("tokenflow", "bare"))
        print(f"asgi_access_rps_vs_bare ({other.stack}) = {ratio:.3f}")
        report.add_key(f"asgi_access_rps_vs_bare_{other.stack.split('+')[0]}", round(ratio, 4))
    if "fastapi_tokenflow" in http.variants:
        fast = statistics.median(head.paired("fastapi_tokenflow", "fastapi_bare"))
        print(
            f"fastapi_access_rps_vs_fastapi_bare = {fast:.3f} (goal >= {FASTAPI_GOAL}: "
            f"{_verdict(fast >= FASTAPI_GOAL)})"
        )
        report.add_key("fastapi_access_rps_vs_fastapi_bare", round(fast, 4))
    _report_yardsticks(head, http.variants, report)

    refresh = http.refresh
    print(
        f"\n== {GROUP}: refresh on every request (SQLite, {http.refresh_stack}, "
        f"{REFRESH_THREADS} connections with a session each, {len(refresh['tokenflow'])} x "
        f"{http.seconds:g} s runs each, interleaved, every answer a 200) =="
    )
    rows = []
    for mode, label in (
        ("tokenflow", "TokenflowMiddleware"),
        ("hand_wired", "flow.decide by hand"),
    ):
        p99s = [r.p99_ms for r in refresh[mode] if r.p99_ms is not None]
        rps = statistics.median(r.rps for r in refresh[mode])
        p99 = statistics.median(p99s) if p99s else float("nan")
        rows.append([label, f"{rps:,.0f}", f"{p99:.2f}", _spread(p99s) if p99s else "-"])
        report.add_row(
            GROUP,
            f"refresh/{mode}",
            {
                "label": f"refresh, {label}",
                "rps": round(rps, 1),
                "p99_ms": round(p99, 3) if p99s else None,
                "p99_ms_per_round": [round(p, 3) for p in p99s],
                "rotations": sum(r.requests for r in refresh[mode]),
            },
        )
    print(format_table(["refresh path", "req/s", "p99 ms", "p99 per round"], rows, "lrrr"))
    mw = [r.p99_ms for r in refresh["tokenflow"]]
    hand = [r.p99_ms for r in refresh["hand_wired"]]
    pairs = [m / h for m, h in zip(mw, hand, strict=True) if m is not None and h]
    tail = statistics.median(pairs) if pairs else None
    if tail is not None:
        print(
            f"mw_refresh_p99_vs_hand_wired = {tail:.3f} (goal <= {REFRESH_P99_GOAL}: "
            f"{_verdict(tail <= REFRESH_P99_GOAL)}); per round {_spread(pairs)}"
        )
    report.add_key("mw_refresh_p99_vs_hand_wired", None if tail is None else round(tail, 4))
    report.add_detail(GROUP, "refresh_p99_vs_hand_wired_per_round", [round(p, 4) for p in pairs])
    report.add_key(
        "asgi_refresh_rps", round(statistics.median(r.rps for r in refresh["tokenflow"]), 1)
    )
    mw_p99 = [p for p in mw if p is not None]
    report.add_key("asgi_refresh_p99_ms", round(statistics.median(mw_p99), 3) if mw_p99 else None)


def run(settings: Settings, report: Report) -> None:
    """Measure the middleware in process and over loopback; print and report."""
    local = _in_process(settings)
    rows = []
    for label, text in (
        ("decide", "flow.decide (Request ready-made)"),
        ("middleware_flow", "ASGI middleware, Flow"),
        ("middleware_async_flow", "ASGI middleware, AsyncFlow"),
    ):
        stats = local.stats[label]
        ratio = local.ratio(label)
        rows.append(
            [
                text,
                f"{stats.median:.2f}",
                f"{stats.minimum:.2f}",
                f"{stats.noise_pct:.1f}%",
                f"{ratio:.2f}",
            ]
        )
        row: dict[str, JSON] = {"label": text, **stats.as_json(), "vs_decide": round(ratio, 4)}
        report.add_row(GROUP, label, row)
    print(
        f"\n== {GROUP}: the middleware in process (access path, "
        f"{local.header_bytes} B Cookie header) =="
    )
    print(format_table(["case", "median µs", "min µs", "noise", "vs decide"], rows, "lrrrr"))
    headline = local.ratio("middleware_flow")
    async_ratio = local.ratio("middleware_async_flow")
    print(f"asgi_middleware_vs_decide = {headline:.2f}; with an AsyncFlow {async_ratio:.2f}")
    report.add_key("asgi_middleware_vs_decide", round(headline, 4))
    report.add_key("asgi_middleware_async_flow_vs_decide", round(async_ratio, 4))
    report.add_detail(
        GROUP,
        "goals",
        {
            "asgi_access_rps_vs_bare": RPS_GOAL,
            "asgi_access_rps_vs_best_peer": PEER_GOAL,
            "fastapi_access_rps_vs_fastapi_bare": FASTAPI_GOAL,
            "max_mw_refresh_p99_vs_hand_wired": REFRESH_P99_GOAL,
        },
    )

    missing = _http_unavailable()
    if missing is not None:
        print(f"over-HTTP figures skipped: {missing}")
        report.add_detail(GROUP, "http_skipped", missing)
        for key in (
            "asgi_access_rps_vs_bare",
            "asgi_access_rps_vs_best_peer",
            "fastapi_access_rps_vs_fastapi_bare",
            "mw_refresh_p99_vs_hand_wired",
        ):
            report.add_key(key, None)
        return
    http = _over_http(settings)
    report.add_detail(GROUP, "uvicorn_stacks", [s.stack for s in http.stacks])
    report.add_detail(GROUP, "cookie_header_bytes", http.header_bytes)
    report.add_libraries("uvicorn", "httptools", "uvloop", "starlette", "fastapi", "authx", "PyJWT")
    _report_http(http, report)
