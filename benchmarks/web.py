"""The middleware's cost: in process against ``decide``, and over real HTTP.

* **asgi_middleware_vs_decide** (in process, interleaved rounds): the ASGI
  callable of :class:`tokenflow.asgi.TokenflowMiddleware` invoked directly on
  a prepared scope whose ``Cookie`` header (about 700 bytes) carries a valid
  access token, driving a wrapped application that returns at once, against
  ``flow.decide`` on the equivalent, ready-made :class:`~tokenflow.Request`.
  The difference is what the middleware adds: reading the scope into a
  Request, the route checks, the scope copy that carries the identity. Both
  a :class:`~tokenflow.Flow` and an :class:`~tokenflow.AsyncFlow` behind the
  middleware are timed. Goal: at most 1.5.
* **asgi_access_rps_vs_bare** (over loopback): uvicorn, one worker, serves a
  two-byte endpoint twice, once bare and once behind the middleware (a
  ``Flow`` on SQLite), in two server processes; ``wrk`` sends both the same
  ~700-byte Cookie header with a valid access token, in alternating runs.
  Requests per second behind the middleware over bare. Goal: at least 0.85.
* **refresh on every request** (over loopback): the guarded server again,
  with only a refresh cookie: every request rotates its session on SQLite
  (the store work runs in a worker thread). ``wrk`` runs one connection per
  thread, each carrying its own session, and a script sends back the refresh
  token each answer set. Requests per second and p99 latency are printed;
  every answer must be a 200.

The HTTP figures need ``wrk`` (Debian package ``wrk``) and uvicorn; without
them, the group says so and skips those figures.
"""

from __future__ import annotations

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

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure

GROUP: Final = "web"
IN_PROCESS_GOAL: Final = 1.5
RPS_GOAL: Final = 0.85
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
    """A uvicorn process, one worker, serving ``benchmarks._asgi_server:app``."""

    def __init__(self, mode: str, env: Mapping[str, str]) -> None:
        self.port = _free_port()
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


@dataclass(frozen=True, slots=True)
class OverHttp:
    bare: list[WrkRun]
    guarded: list[WrkRun]
    refresh: WrkRun
    seconds: float
    header_bytes: int

    @property
    def ratios(self) -> list[float]:
        return [g.rps / b.rps for b, g in zip(self.bare, self.guarded, strict=True)]

    @property
    def ratio(self) -> float:
        return statistics.median(g.rps for g in self.guarded) / statistics.median(
            b.rps for b in self.bare
        )


def _over_http(settings: Settings) -> OverHttp:
    rounds = 1 if settings.quick else 5
    seconds = 2.0 if settings.quick else 5.0
    refresh_threads = 2
    with tempfile.TemporaryDirectory(prefix="tokenflow-web-bench-") as tmp:
        ring = KeyRing.generate()
        db = str(Path(tmp) / "sessions.db")
        store = SQLiteStore(db)
        flow = Flow(ring, store, _users(1 + refresh_threads), passwords=_passwords(8))
        access, _ = _login(flow, "user-0")
        header = _cookie_header([access])
        refresh_name = flow.config.cookies.refresh_name
        tokens = [
            _login(flow, f"user-{n}")[1].partition("=")[2] for n in range(1, 1 + refresh_threads)
        ]
        prefix = "; ".join(OTHER_COOKIES) + f"; {refresh_name}="
        script = Path(tmp) / "refresh.lua"
        script.write_text(
            _LUA
            % {
                "tokens": ", ".join(f'"{t}"' for t in tokens),
                "prefix": prefix,
                "host": HOST,
                "name": re.sub(r"([^\w])", r"%\1", refresh_name),
            }
        )
        env = {"TF_BENCH_KEYS": ring.serialize(), "TF_BENCH_DB": db, "TF_BENCH_USERS": "8"}
        servers = {mode: _Server(mode, env) for mode in ("bare", "guarded")}
        try:
            for server in servers.values():  # warm up (imports, first connections)
                _wrk(server.port, 1, threads=1, connections=8, header=header)
            runs: dict[str, list[WrkRun]] = {"bare": [], "guarded": []}
            order = list(servers)
            shuffler = random.Random(settings.seed)
            for number in range(1, rounds + 1):
                shuffler.shuffle(order)
                for mode in order:
                    run = _wrk(
                        servers[mode].port, seconds, threads=1, connections=16, header=header
                    )
                    if run.non_2xx:
                        raise AssertionError(f"{mode}: {run.non_2xx} answers were not 200")
                    runs[mode].append(run)
                settings.log(
                    f"{GROUP}: http round {number}/{rounds}: bare {runs['bare'][-1].rps:,.0f} "
                    f"req/s, guarded {runs['guarded'][-1].rps:,.0f} req/s"
                )
            refresh = _wrk(
                servers["guarded"].port,
                seconds,
                threads=refresh_threads,
                connections=refresh_threads,
                script=script,
            )
        finally:
            for server in servers.values():
                server.stop()
            store.close()
    generations = refresh.requests
    if refresh.non_2xx:
        raise AssertionError(f"refresh: {refresh.non_2xx} of {generations} answers were not 200")
    return OverHttp(runs["bare"], runs["guarded"], refresh, seconds, len(header))


def _http_unavailable() -> str | None:
    if shutil.which("wrk") is None:
        return "wrk is not installed (Debian: apt-get install -y wrk)"
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        return "uvicorn is not installed (pip install uvicorn)"
    return None


# -- report ----------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


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
    print(
        f"asgi_middleware_vs_decide = {headline:.2f} (goal <= {IN_PROCESS_GOAL}: "
        f"{_verdict(headline <= IN_PROCESS_GOAL)}); with an AsyncFlow {async_ratio:.2f}"
    )
    report.add_key("asgi_middleware_vs_decide", round(headline, 4))
    report.add_key("asgi_middleware_async_flow_vs_decide", round(async_ratio, 4))
    report.add_detail(
        GROUP,
        "goals",
        {"asgi_middleware_vs_decide": IN_PROCESS_GOAL, "asgi_access_rps_vs_bare": RPS_GOAL},
    )

    missing = _http_unavailable()
    if missing is not None:
        print(f"asgi_access_rps_vs_bare: skipped: {missing}")
        report.add_detail(GROUP, "http_skipped", missing)
        report.add_key("asgi_access_rps_vs_bare", None)
        return
    http = _over_http(settings)
    ratios = http.ratios
    # uvicorn picks httptools and uvloop when installed (uvicorn[standard]),
    # else h11 and asyncio's loop: a slower server makes the ratio kinder.
    stack = "+".join(
        name if importlib.util.find_spec(name) else fallback
        for name, fallback in (("httptools", "h11"), ("uvloop", "asyncio"))
    )
    report.add_detail(GROUP, "uvicorn_stack", stack)
    print(
        f"\n== {GROUP}: uvicorn (1 worker, {stack}) + wrk on loopback, "
        f"{http.header_bytes} B Cookie header, {len(ratios)} x {http.seconds:g} s runs =="
    )
    table = [
        [f"round {n}", f"{b.rps:,.0f}", f"{g.rps:,.0f}", f"{r:.3f}"]
        for n, (b, g, r) in enumerate(zip(http.bare, http.guarded, ratios, strict=True), 1)
    ]
    print(format_table(["run", "bare req/s", "guarded req/s", "ratio"], table, "lrrr"))
    ratio = http.ratio
    spread = (min(ratios), max(ratios))
    print(
        f"asgi_access_rps_vs_bare = {ratio:.3f} (goal >= {RPS_GOAL}: "
        f"{_verdict(ratio >= RPS_GOAL)}); per-round ratios {spread[0]:.3f}..{spread[1]:.3f}"
    )
    p99 = http.refresh.p99_ms
    print(
        f"refresh on every request (SQLite, {http.refresh.requests:,} rotations, all 200): "
        f"{http.refresh.rps:,.0f} req/s, p99 {p99 if p99 is not None else float('nan'):.2f} ms"
    )
    report.add_key("asgi_access_rps_vs_bare", round(ratio, 4))
    report.add_key("asgi_access_rps_bare", round(statistics.median(b.rps for b in http.bare), 1))
    report.add_key(
        "asgi_access_rps_guarded", round(statistics.median(g.rps for g in http.guarded), 1)
    )
    report.add_key("asgi_refresh_rps", round(http.refresh.rps, 1))
    report.add_key("asgi_refresh_p99_ms", None if p99 is None else round(p99, 3))
    report.add_detail(GROUP, "rps_ratios_per_round", [round(r, 4) for r in ratios])
    report.add_detail(GROUP, "refresh_requests", http.refresh.requests)
