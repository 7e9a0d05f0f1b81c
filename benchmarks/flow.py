"""The flow's per-request cost: decisions against the token opening inside them.

Opening the access token is the one piece of cryptography a valid request
needs, and the ``tokens`` group holds it to within 15 % of hand-written
AES-GCM. This group asks what the rest of the flow adds on top, measuring in
the same interleaved rounds:

* **open**: ``codec.open`` of an access token alone, the baseline: each call
  opens a token the codec has not remembered (base64, AES-GCM, the claim
  checks), the cost of a token's first request;
* **open, remembered**: ``codec.open`` of a token it opened before (time
  checks and a copy of the claims; reported, no goal). The decisions below
  open a remembered token, as every request after a token's first does;
* **access decision**: ``flow.decide`` for a request whose ``Cookie`` header
  carries six cookies (analytics, consent, CSRF, locale and the two auth
  cookies, about 700 bytes): header scan, token open, decision object. Goal:
  at most 1.3 times the open;
* **refresh decision**: ``flow.decide`` for a request whose access cookie
  has expired, on a :class:`~tokenflow.stores.MemoryStore`: refresh token
  open, user reload, successor derivation, atomic rotation, two tokens sealed
  and two ``Set-Cookie`` values rendered. Goal: at most 4 times the open.
  Every operation presents the *current* refresh token of one of 1024
  sessions (each operation stores the successor it was given for the next
  visit to that session), each one is checked to be a real rotation
  (``Refreshed(grace=False)``), and after the run the store's generations
  must add up to the number of operations. A refresh that quietly took the
  grace or reuse path would be cheaper and would flatter the figure.

Then, outside the interleaved rounds:

* **a million access decisions** in a plain loop, with the process's current
  resident set (``/proc/self/statm``) and peak (``getrusage``) before and
  after: memory that grows with the number of requests is a leak;
* **Cookie header scanning**, through ``read_auth_cookies`` and through
  ``flow.decide``: an 8 KiB header as a cookie-heavy site sends it, and
  16 KiB headers built to hurt a parser (thousands of backslashes, quotes,
  semicolons, empty names, the auth cookie's name repeated hundreds of
  times). Each must take well under a millisecond: the header is the one
  input every client controls in full.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import tokenflow
from tokenflow import (
    CookiePolicy,
    Decision,
    ExternalTokenCredentials,
    Flow,
    FlowConfig,
    KeyRing,
    Process,
    Reissue,
    Request,
)
from tokenflow._cookies import MAX_COOKIE_HEADER_BYTES, read_auth_cookies
from tokenflow._token import OPENED_CACHE_SIZE
from tokenflow.events import Refreshed
from tokenflow.ports import SessionStore
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeExternalTokenVerifier, FakeUserDirectory
from tokenflow.tokens import Purpose, TokenCodec

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure

__all__ = ["ACCESS_GOAL", "PARSE_LIMIT_US", "REFRESH_GOAL", "run"]

GROUP: Final = "flow"
ACCESS_GOAL: Final = 1.3
"""Regression bound, no longer a goal: an access decision has cost at most this many
times opening its token, and a rise past it is a regression to look into."""
REFRESH_GOAL: Final = 4.0
"""Regression bound, no longer a goal: a refresh decision (MemoryStore) has cost at most
this many times opening an access token."""
PARSE_LIMIT_US: Final = 1000.0
"""Every Cookie header, however hostile, must be handled in less than this (µs)."""

SESSIONS: Final = 1024
"""Sessions the refresh case cycles through: a store of realistic size, not one hot entry."""
DECISIONS: Final = 1_000_000
QUICK_DECISIONS: Final = 100_000
HOST: Final = "app.example"
PROVIDER: Final = "bench-idp"
ROLES: Final = {"roles": ["admin", "editor"]}

# The four cookies besides tokenflow's that a typical page sends: analytics,
# a consent manager's record, a CSRF token and a locale.
OTHER_COOKIES: Final = (
    "_ga=GA1.1.1234567890.1700000000",
    "OptanonConsent=isGpcEnabled=0&datestamp=Tue+Nov+05+2024&version=202409.1.0"
    "&groups=C0001%3A1%2CC0002%3A1%2CC0003%3A0",
    "csrftoken=q3Vx8kJb2NfZ0aLw9RtY7cUe1HmGs4Pd",
    "locale=en-GB",
)


# -- the world ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class World:
    """A flow over a MemoryStore with ``SESSIONS`` users logged in at ``now``."""

    flow: Flow
    codec: TokenCodec
    now: float
    access: str
    """The first session's access token."""
    access_pair: str
    """``name=value`` of the first session's access cookie."""
    access_header: str
    """The six-cookie header of a request with a valid access token."""
    refresh_pairs: list[str]
    """``name=value`` of every session's refresh cookie, in session order."""
    users: list[str]


def _pair(set_cookie: str) -> str:
    """The ``name=value`` part of a ``Set-Cookie`` value: what the browser sends back."""
    return set_cookie.partition(";")[0]


def build_world(now: float, sessions: int = SESSIONS, store: SessionStore | None = None) -> World:
    """Log ``sessions`` users in through the flow itself (an external-token login,
    which costs no password hashing), and keep what their browsers would hold.

    The flow's store is ``store``, or a fresh :class:`MemoryStore`."""
    users = FakeUserDirectory()
    idp = FakeExternalTokenVerifier(PROVIDER)
    keyring = KeyRing.generate()
    flow = Flow(keyring, MemoryStore() if store is None else store, users, external={PROVIDER: idp})
    config = flow.config
    names = {
        Purpose.ACCESS: config.cookies.access_name,
        Purpose.REFRESH: config.cookies.refresh_name,
    }
    # A codec of its own over the same key ring, built through the public API:
    # it opens the flow's tokens exactly as the flow's own codec does.
    codec = TokenCodec(keyring, leeway=config.leeway, cookie_names=names)
    access_pair = ""
    refresh_pairs: list[str] = []
    user_ids: list[str] = []
    for i in range(sessions):
        user_id = f"user-{i:04d}"
        users.add_user(user_id, ROLES)
        users.link(PROVIDER, f"subject-{i}", user_id)
        token = idp.issue(f"subject-{i}", expires_at=now + 3600)
        login = Request("POST", credentials=ExternalTokenCredentials(PROVIDER, token))
        decision = flow.decide(login, now=now)
        if type(decision) is not Reissue:
            raise AssertionError(f"login {i} gave {decision!r}, not Reissue")
        access_cookie, refresh_cookie = decision.set_cookies
        if i == 0:
            access_pair = _pair(access_cookie)
        refresh_pairs.append(_pair(refresh_cookie))
        user_ids.append(user_id)
    # Auth cookies between the others, as a browser orders them by creation time.
    header = "; ".join([*OTHER_COOKIES[:2], access_pair, *OTHER_COOKIES[2:], refresh_pairs[0]])
    access = access_pair.partition("=")[2]
    return World(flow, codec, now, access, access_pair, header, refresh_pairs, user_ids)


def _fresh_opener(world: World) -> Callable[[], object]:
    """Opens, one per call, access tokens the codec has not remembered: a full open.

    A codec remembers up to ``OPENED_CACHE_SIZE`` access tokens it opened and
    forgets them all at once when full. Twice that many distinct tokens (the
    first session's claims sealed again, each with its own nonce), opened in
    turn, are each opened from scratch: base64, AES-GCM, the claim checks.
    """
    claims = world.codec.open(Purpose.ACCESS, world.access, now=world.now)
    tokens = [world.codec.seal(Purpose.ACCESS, claims) for _ in range(2 * OPENED_CACHE_SIZE)]
    turn = itertools.cycle(tokens)
    open_, purpose, now = world.codec.open, Purpose.ACCESS, world.now

    def fresh_open() -> object:
        return open_(purpose, next(turn), now=now)

    return fresh_open


def access_request(header: str) -> Request:
    """A same-origin page load with ``header`` as its Cookie header."""
    return Request("GET", cookie_header=header, sec_fetch_site="same-origin", host=HOST)


# -- the refresh case ----------------------------------------------------------------


class Refresher:
    """One refresh per call, always with a session's current refresh token.

    Cycles through the world's sessions; each call sends the cookies a
    browser sends once its access cookie has expired (the other cookies and
    the refresh cookie), checks that the decision is a rotation, and keeps
    the successor for that session's next turn. Building the request and
    reading the successor back cost about a microsecond (some 5 % of a
    refresh); a host builds a request for every refresh anyway.
    """

    __slots__ = ("_decide", "_headers", "_next", "_now", "_prefix", "_refresh_key", "count")

    def __init__(self, world: World) -> None:
        self._decide = world.flow.decide
        self._now = world.now
        self._prefix = "; ".join(OTHER_COOKIES) + "; "
        self._headers = [self._prefix + pair for pair in world.refresh_pairs]
        self._refresh_key = world.flow.config.cookies.refresh_name + "="
        self._next = 0
        self.count = 0
        """Refreshes done so far (calibration included)."""

    def __call__(self) -> None:
        i = self._next
        self._next = i + 1 if i + 1 < len(self._headers) else 0
        decision = self._decide(
            Request("GET", cookie_header=self._headers[i], sec_fetch_site="same-origin", host=HOST),
            now=self._now,
        )
        # The decision must be exactly one rotation: anything else (grace,
        # reuse, a 401) is a different and cheaper path, and the figure a lie.
        if type(decision) is not Reissue or len(decision.events) != 1:
            raise AssertionError(f"refresh {self.count} gave {decision!r}")
        event = decision.events[0]
        if type(event) is not Refreshed or event.grace:
            raise AssertionError(f"refresh {self.count} was not a rotation: {event!r}")
        successor = _pair(decision.set_cookies[1])
        if not successor.startswith(self._refresh_key):
            raise AssertionError(
                f"refresh {self.count} set {successor[:40]!r}, not a refresh cookie"
            )
        self._headers[i] = self._prefix + successor
        self.count += 1


def _check_rotations(world: World, refresher: Refresher) -> int:
    """Every refresh rotated exactly once: the sessions' generations add up to the count."""
    total = sum(
        info.generation
        for user_id in world.users
        for info in world.flow.sessions_of(user_id, now=world.now)
    )
    if total != refresher.count:
        raise AssertionError(
            f"{refresher.count} refreshes were timed, but the store counts {total} rotations"
        )
    return total


# -- Cookie headers ----------------------------------------------------------------


def _fill(unit: str, size: int = MAX_COOKIE_HEADER_BYTES) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def realistic_8k_header(access_pair: str, refresh_pair: str) -> str:
    """An 8 KiB Cookie header as a cookie-heavy site sends it, auth cookies in the middle."""
    cookies = [
        *OTHER_COOKIES,
        "_gid=GA1.2.987654321.1700000000",
        "_gcl_au=1.1.1122334455.1700000000",
        "_fbp=fb.1.1700000000000.1234567890",
        "ajs_anonymous_id=%22b2f7c6d0-4f1e-4b8a-9c3d-2e1f0a9b8c7d%22",
        "amplitude_id_fef1e872c952688acd962d30aa545b9e=eyJkZXZpY2VJZCI6IjEyMzQ1Njc4LTlhYmMtNGRlZi0"
        "5MDEyLTM0NTY3ODlhYmNkZSIsInVzZXJJZCI6bnVsbCwib3B0T3V0IjpmYWxzZSwic2Vzc2lvbklkIjoxNzAwMDAw"
        "MDAwMDAwLCJsYXN0RXZlbnRUaW1lIjoxNzAwMDAwMDAwMDAwfQ==",
        "OptanonAlertBoxClosed=2024-11-05T10:00:00.000Z",
        "theme=dark",
        "tz=Europe%2FLondon",
    ]
    cookies[4:4] = [access_pair, refresh_pair]
    # Feature flags and A/B assignments pad it out, as they do on real sites.
    flags = (
        f"ab_{i:03d}=variant-{'abcdefgh'[i % 8]}.{i * 7919 % 100000:05d}" for i in itertools.count()
    )
    header = "; ".join(cookies)
    while len(header) < 8192:
        header += "; " + next(flags)
    # Trim the last flag's value so that the header is exactly 8 KiB.
    return header[:8192].rstrip("; =")


def hostile_headers(access_name: str) -> dict[str, str]:
    """16 KiB headers (the most the reader scans) built to hurt a cookie parser."""
    limit = MAX_COOKIE_HEADER_BYTES
    prefix = f'{access_name}="'
    return {
        # Quadratic in parsers that unescape quoted strings (http.cookies).
        "backslashes": prefix + "\\" * (limit - len(prefix) - 1) + '"',
        "escaped_quotes": _fill('\\"'),
        "quotes": '"' * limit,
        "semicolons": ";" * limit,
        "empty_names": _fill("=;"),
        "tiny_pairs": _fill("a=b; "),
        "mixed_punctuation": _fill('\\";= ,'),
        # The auth cookie's own name, hundreds of times: every occurrence is a
        # candidate pair start that the reader must rule out.
        "auth_name_repeated": _fill(access_name + "="),
        "auth_name_in_every_pair": _fill(f"x{access_name}=1;"),
        "auth_name_after_spaces": _fill(f";{' ' * 64}x{access_name}="),
        "auth_cookie_duplicated": _fill(f"{access_name}=x; "),
        "over_the_limit": "a" * (limit + 1),
    }


# -- memory ------------------------------------------------------------------------


def current_rss_kib() -> int | None:
    """This process's resident set now, in KiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kib() -> int | None:
    """The largest resident set this process has had, in KiB."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes there, KiB elsewhere


@dataclass(frozen=True, slots=True)
class LoopResult:
    """A long loop of access decisions and the memory around it."""

    count: int
    seconds: float
    rss_before_kib: int | None
    rss_after_kib: int | None
    peak_before_kib: int | None
    peak_after_kib: int | None

    @property
    def us_per_decision(self) -> float:
        return 1e6 * self.seconds / self.count


def decide_in_a_loop(
    settings: Settings, decide: Callable[[Request, float], Decision], request: Request, now: float
) -> LoopResult:
    """``count`` decisions in a plain loop, collector on (as in production), in ten chunks."""
    count = QUICK_DECISIONS if settings.quick else DECISIONS
    chunk = count // 10
    gc.collect()
    rss_before, peak_before = current_rss_kib(), peak_rss_kib()
    settings.log(f"{GROUP}: {count:,} access decisions in a loop (RSS before: {rss_before} KiB)")
    started = time.perf_counter()
    for part in range(1, 11):
        for _ in itertools.repeat(None, chunk):
            decide(request, now=now)
        settings.log(
            f"{GROUP}: {part * chunk:,} decisions ({time.perf_counter() - started:.1f} s, "
            f"RSS {current_rss_kib()} KiB)"
        )
    seconds = time.perf_counter() - started
    gc.collect()
    return LoopResult(count, seconds, rss_before, current_rss_kib(), peak_before, peak_rss_kib())


# -- the group -----------------------------------------------------------------------


def _ratio(numerator: Stats, denominator: Stats) -> float:
    return numerator.median / denominator.median


def _status(stats: Mapping[str, Stats]) -> str:
    access = _ratio(stats["access_decision"], stats["open"])
    refresh = _ratio(stats["refresh_decision"], stats["open"])
    return f"vs open so far: access {access:.2f}x, refresh {refresh:.2f}x"


def _verdict(ratio: float, goal: float) -> str:
    return "PASS" if ratio <= goal else "MISS"


def _regression(ratio: float, bound: float) -> str:
    return "within" if ratio <= bound else "REGRESSION?"


def run(settings: Settings, report: Report) -> None:
    """Benchmark the flow's decisions; print the tables and fill in ``report``."""
    now = float(int(time.time()))
    settings.log(f"{GROUP}: logging {SESSIONS} sessions in")
    world = build_world(now)
    request = access_request(world.access_header)
    # Prove each case does what its name says before timing it.
    first = world.flow.decide(request, now=now)
    if type(first) is not Process or first.user_id != world.users[0]:
        raise AssertionError(f"the access request gave {first!r}, not Process")
    if world.codec.open(Purpose.ACCESS, world.access, now=now) != first.claims:
        raise AssertionError("codec.open and the access decision disagree on the claims")
    refresher = Refresher(world)

    cases = [
        Case("open", Call(_fresh_opener(world), ())),
        Case(
            "open_remembered", Call(world.codec.open, (Purpose.ACCESS, world.access), {"now": now})
        ),
        Case("access_decision", Call(world.flow.decide, (request,), {"now": now})),
        Case("refresh_decision", Call(refresher)),
    ]
    stats = measure(GROUP, cases, settings, status=_status)
    rotations = _check_rotations(world, refresher)
    settings.log(f"{GROUP}: checked: all {rotations:,} timed refreshes were rotations")

    loop = decide_in_a_loop(settings, world.flow.decide, request, now)
    parse = _measure_cookie_headers(settings, world)

    open_, access, refresh = stats["open"], stats["access_decision"], stats["refresh_decision"]
    access_ratio, refresh_ratio = _ratio(access, open_), _ratio(refresh, open_)
    _print_decisions(settings, world, stats, access_ratio, refresh_ratio, rotations)
    _print_loop(loop)
    pathological_read, pathological_decide = _print_parse(parse)

    labels = {
        "open": "codec.open (access token, not remembered)",
        "open_remembered": "codec.open (access token, remembered)",
        "access_decision": f"flow.decide, valid access ({len(world.access_header)} B header)",
        "refresh_decision": "flow.decide, refresh rotated on MemoryStore",
    }
    for key, label in labels.items():
        row: dict[str, JSON] = {"label": label, **stats[key].as_json()}
        if key not in ("open", "open_remembered"):
            row["vs_open"] = round(_ratio(stats[key], open_), 4)
        report.add_row(GROUP, key, row)
    for name, (header, read_stats, decide_stats, outcome) in parse.items():
        report.add_row(
            GROUP,
            f"cookie_header/{name}",
            {
                "header_bytes": len(header),
                "decision": outcome,
                "read_auth_cookies": read_stats.as_json(),
                "decide": decide_stats.as_json(),
            },
        )
    report.environment["tokenflow_imported_from"] = os.path.dirname(tokenflow.__file__)
    report.add_detail(
        GROUP,
        "goals",
        {"cookie_header_us": PARSE_LIMIT_US},
    )
    report.add_detail(
        GROUP,
        "regression_bounds",
        {"access_decision_vs_open": ACCESS_GOAL, "refresh_decision_vs_open": REFRESH_GOAL},
    )
    report.add_detail(GROUP, "access_cookie_header", world.access_header)
    report.add_detail(GROUP, "refresh_sessions", SESSIONS)
    report.add_detail(GROUP, "refresh_rotations_checked", rotations)
    report.add_key("access_decision_vs_open", round(access_ratio, 4))
    report.add_key("refresh_decision_vs_open", round(refresh_ratio, 4))
    report.add_key("million_decisions_count", loop.count)
    report.add_key("million_decisions_seconds", round(loop.seconds, 3))
    report.add_key("million_decisions_us_per_decision", round(loop.us_per_decision, 4))
    report.add_key("million_decisions_rss_before_kib", loop.rss_before_kib)
    report.add_key("million_decisions_rss_after_kib", loop.rss_after_kib)
    report.add_key("million_decisions_peak_rss_before_kib", loop.peak_before_kib)
    report.add_key("million_decisions_peak_rss_after_kib", loop.peak_after_kib)
    report.add_key("cookie_parse_8k_us", round(parse["realistic_8k"][1].median, 4))
    report.add_key("cookie_decide_8k_us", round(parse["realistic_8k"][2].median, 4))
    report.add_key("cookie_parse_pathological_max_us", round(pathological_read, 4))
    report.add_key("cookie_decide_pathological_max_us", round(pathological_decide, 4))


_Parse = dict[str, tuple[str, Stats, Stats, str]]
"""Per header: the header, read_auth_cookies stats, decide stats, the decision's type."""


def _local_flow() -> Flow:
    """A flow with the local-development cookie names (``tf_access``, ``tf_refresh``)."""
    config = FlowConfig(cookies=CookiePolicy.local_development())
    return Flow(KeyRing.generate(), MemoryStore(), FakeUserDirectory(), config=config)


def _measure_cookie_headers(settings: Settings, world: World) -> _Parse:
    # The hostile headers' worst cases repeat the auth cookie's name, and the
    # shorter the name, the more repetitions fit in 16 KiB: the shipped
    # local-development names (tf_access, 10 bytes with its "=") get their own rows.
    local = _local_flow()
    subjects: dict[str, tuple[str, Flow]] = {
        "realistic_8k": (realistic_8k_header(world.access_pair, world.refresh_pairs[0]), world.flow)
    }
    for name, header in hostile_headers(world.flow.config.cookies.access_name).items():
        subjects[name] = (header, world.flow)
    for name, header in hostile_headers(local.config.cookies.access_name).items():
        if name.startswith("auth_"):
            subjects[f"{name} (tf_access)"] = (header, local)
    requests = {name: access_request(header) for name, (header, _) in subjects.items()}
    outcomes: dict[str, str] = {}
    for name, (_, flow) in subjects.items():
        # Never an exception, whatever the header: that is the flow's contract.
        outcomes[name] = type(flow.decide(requests[name], now=world.now)).__name__
    if outcomes["realistic_8k"] != "Process":
        raise AssertionError(f"the 8 KiB header gave {outcomes['realistic_8k']}, not Process")
    cases: list[Case] = []
    for name, (header, flow) in subjects.items():
        policy = flow.config.cookies
        cases.append(Case(f"read/{name}", Call(read_auth_cookies, (header, policy))))
        cases.append(
            Case(f"decide/{name}", Call(flow.decide, (requests[name],), {"now": world.now}))
        )
    stats = measure(f"{GROUP} cookie headers", cases, settings)
    return {
        name: (header, stats[f"read/{name}"], stats[f"decide/{name}"], outcomes[name])
        for name, (header, _) in subjects.items()
    }


# -- output --------------------------------------------------------------------------


def _print_decisions(
    settings: Settings,
    world: World,
    stats: Mapping[str, Stats],
    access_ratio: float,
    refresh_ratio: float,
    rotations: int,
) -> None:
    open_ = stats["open"]
    rows = [
        [
            "codec.open, access token not remembered",
            f"{open_.median:.2f}",
            "1.00x",
            "",
            "",
            f"{open_.noise_pct:.1f}%",
        ],
        [
            "codec.open, access token remembered",
            f"{stats['open_remembered'].median:.2f}",
            f"{_ratio(stats['open_remembered'], open_):.2f}x",
            "",
            "",
            f"{stats['open_remembered'].noise_pct:.1f}%",
        ],
        [
            f"flow.decide, valid access ({len(world.access_header)} B, 6 cookies)",
            f"{stats['access_decision'].median:.2f}",
            f"{access_ratio:.2f}x",
            f"<= {ACCESS_GOAL}",
            _regression(access_ratio, ACCESS_GOAL),
            f"{stats['access_decision'].noise_pct:.1f}%",
        ],
        [
            "flow.decide, refresh rotated (MemoryStore)",
            f"{stats['refresh_decision'].median:.2f}",
            f"{refresh_ratio:.2f}x",
            f"<= {REFRESH_GOAL:g}",
            _regression(refresh_ratio, REFRESH_GOAL),
            f"{stats['refresh_decision'].noise_pct:.1f}%",
        ],
    ]
    print(
        f"\nFlow: median of {settings.rounds} interleaved rounds, µs per operation "
        "(ratio: case median / the median of a full codec.open)"
    )
    if settings.quick:
        print("QUICK MODE: few rounds and short batches; do not quote these figures.")
    print(format_table(["case", "µs", "vs open", "bound", "", "noise"], rows, "lrrrll"))
    print(
        f"Every timed refresh was checked to be a rotation ({rotations:,} in all, over "
        f"{SESSIONS} sessions)."
    )
    print(
        f"access_decision_vs_open = {access_ratio:.3f}  (regression figure, bound <= "
        f"{ACCESS_GOAL}: {_regression(access_ratio, ACCESS_GOAL)})"
    )
    print(
        f"refresh_decision_vs_open = {refresh_ratio:.3f}  (regression figure, bound <= "
        f"{REFRESH_GOAL:g}: {_regression(refresh_ratio, REFRESH_GOAL)})"
    )


def _kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,} KiB"


def _print_loop(loop: LoopResult) -> None:
    print(
        f"\n{loop.count:,} access decisions in a loop: {loop.seconds:.2f} s "
        f"({loop.us_per_decision:.2f} µs each)"
    )
    grew = (
        f"{loop.rss_after_kib - loop.rss_before_kib:+,} KiB"
        if loop.rss_before_kib is not None and loop.rss_after_kib is not None
        else "n/a"
    )
    print(
        f"  RSS now:  before {_kib(loop.rss_before_kib)}, after {_kib(loop.rss_after_kib)} ({grew})"
    )
    print(
        f"  RSS peak: before {_kib(loop.peak_before_kib)}, after {_kib(loop.peak_after_kib)} "
        "(the process's high-water mark, earlier groups included)"
    )


def _print_parse(parse: _Parse) -> tuple[float, float]:
    """Print the Cookie header table; the worst hostile read and decide times (µs)."""
    rows: list[list[str]] = []
    for name, (header, read_stats, decide_stats, outcome) in parse.items():
        worst = max(read_stats.median, decide_stats.median)
        rows.append(
            [
                name,
                f"{len(header):,}",
                f"{read_stats.median:.2f}",
                f"{decide_stats.median:.2f}",
                outcome,
                "yes" if worst < PARSE_LIMIT_US else "NO",
            ]
        )
    print("\nCookie headers: median µs per call, through read_auth_cookies and flow.decide")
    print(
        format_table(
            ["header", "bytes", "read µs", "decide µs", "decision", "< 1 ms"], rows, "lrrrll"
        )
    )
    hostile = [v for k, v in parse.items() if k != "realistic_8k"]
    worst_read = max(read.median for _, read, _, _ in hostile)
    worst_decide = max(decide.median for _, _, decide, _ in hostile)
    print(
        f"cookie_parse_8k_us = {parse['realistic_8k'][1].median:.2f}, "
        f"cookie_parse_pathological_max_us = {worst_read:.2f}, "
        f"cookie_decide_pathological_max_us = {worst_decide:.2f}  "
        f"(limit {PARSE_LIMIT_US:g} µs: {_verdict(max(worst_read, worst_decide), PARSE_LIMIT_US)})"
    )
    return worst_read, worst_decide
