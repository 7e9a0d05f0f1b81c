"""Second factors and step-up: replays, parallel guesses and forged claims, through the flow.

Everything goes through the real flow (:class:`tokenflow.Flow`, and
:class:`tokenflow.AsyncFlow` for the async race) with
:class:`tokenflow.mfa.SecondFactors` (TOTP over pyotp, secrets sealed with
the key ring) and a real login throttle, on each of the four backends:
memory, SQLite, PostgreSQL and Redis (sessions, throttle and second-factor
store all on the same backend). A server that does not answer is reported
as skipped (``TOKENFLOW_REQUIRE_SERVICES=1`` makes that an error).

Three goals (issue 22), each a count that must be 0:

* **totp_replays_granted**: right codes replayed, with a fresh account per
  run so that every replay reaches the verifier (the throttle's free
  failures are not used up): the same code again after a success (second
  login step then second login step, step-up then step-up, and across the
  two), the same code sent by several requests at once (half of them as a
  second login step, half as a step-up of an existing session), and the
  previous time step's code after a newer step was used (the ±1 window still
  matches it). Sessions granted by a replay are counted.
* **totp_guesses_granted_over_limit**: 50 threads (and, separately, 50
  tasks of the async driver) guess codes for one account at once, through
  the second login step and through step-up. The right code is among them,
  but it is sent only once as many guesses as the throttle allows have
  reached the verifier; a session it gets is a grant over the limit. The
  limit (``ThrottlePolicy.second_factor.free`` failures at one instant) and the
  number of guesses that reached the verifier are reported beside it.
* **stepup_bypasses**: a table of forged, stale and downgraded claims (the
  rows of ``tests/test_flow_stepup_table.py`` and more: claims with ``aal``
  as a string, float or bool under the right key, tokens of the wrong
  purpose, partial-login cookies as sessions or as a step-up's session...),
  each sent on a fresh account; a row whose request is served (``Process``
  or ``Reissue``) is a bypass.

And, as information only (never pass/fail): the second login step (the
code, with the partial-login cookie) and a step-up by TOTP of an existing
session, each against a whole argon2id password login, on the memory and
SQLite stores, timed side by side in the same interleaved rounds. Codes are
computed before timing (a client's cost); the partial-login cookies and
sessions the timed calls use are made by a second flow on the same key ring
and stores, with a cheap password check (setup, not timed).
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final

from tokenflow import (
    AsyncFlow,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Process,
    Reissue,
    Request,
    Requirement,
    SecondFactorCredentials,
    SecondFactorRequired,
    ThrottlePolicy,
    TooManyRequests,
)
from tokenflow.events import LoginFailed, LoginFailedReason
from tokenflow.stores import AsyncMemoryStore, AsyncSQLiteStore, MemoryStore, SQLiteStore
from tokenflow.testing import (
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    Browser,
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
)
from tokenflow.throttles import (
    AsyncMemoryThrottle,
    AsyncSQLiteThrottle,
    MemoryThrottle,
    SQLiteThrottle,
)
from tokenflow.tokens import Purpose, TokenCodec

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure
from .stores import POSTGRES_DSN, REDIS_URL, REQUIRE_ENV

__all__ = ["BACKENDS", "GOALS", "PARALLEL_GUESSES", "run"]

GROUP: Final = "mfa"
GOALS: Final = {
    "totp_replays_granted": 0,
    "totp_guesses_granted_over_limit": 0,
    "stepup_bypasses": 0,
}
BACKENDS: Final = ("memory", "sqlite", "postgres", "redis")
TIMED_BACKENDS: Final = ("memory", "sqlite")
PARALLEL_GUESSES: Final = 50
PARALLEL_REPLAYS: Final = 4
"""Requests sending one code at once: fewer than the throttle's limit, so all reach the
verifier and the store's once-only rule alone decides."""
REPLAY_RUNS: Final = 20
REPLAY_RUNS_QUICK: Final = 4
PASSWORD: Final = "correct horse battery staple"
ORIGIN: Final = "https://app.example"
HOST: Final = "app.example"
NOW: Final = 1_800_000_000.0
STEP: Final = 30
CONFIG: Final = FlowConfig(second_factor_ttl=3600)
"""The longest partial login the flow allows: the timed second steps use cookies made
before timing while the clock moves on by a time step whenever the pool is spent."""
POOL: Final = 64
POOL_QUICK: Final = 8
POOL_STEPS: Final = 100
"""Time steps whose codes are computed before timing, for each account of a pool."""
AAL2: Final = Requirement(aal=2)
BOTH: Final = Requirement(aal=2, max_age=300)


def _limit() -> int:
    """Failures one account may make at one instant before the throttle waits."""
    return ThrottlePolicy().second_factor.free


# -- backends ----------------------------------------------------------------------------


@dataclass
class _Backend:
    """Sessions, throttle and second-factor store on one backend, made per use and
    cleaned up at the end of the group."""

    name: str
    directory: str
    tag: str
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    counter: int = 0

    def _unique(self) -> str:
        self.counter += 1
        return f"tokenflow_bench_mfa_{self.tag}_{self.counter}"

    def sync(self) -> tuple[Any, Any, Any]:
        """``(session store, throttle, second-factor store)``, fresh and empty."""
        name = self._unique()
        if self.name == "memory":
            from tokenflow.mfa import MemorySecondFactorStore

            return MemoryStore(), MemoryThrottle(), MemorySecondFactorStore()
        if self.name == "sqlite":
            from tokenflow.mfa.sqlite import SQLiteSecondFactorStore

            path = os.path.join(self.directory, f"{name}.sqlite3")
            return SQLiteStore(path), SQLiteThrottle(path), SQLiteSecondFactorStore(path)
        if self.name == "postgres":
            from tokenflow.mfa.postgres import PostgresSecondFactorStore
            from tokenflow.stores.postgres import PostgresStore
            from tokenflow.throttles import PostgresThrottle

            self._postgres_tables(name)
            parts = (
                PostgresStore(POSTGRES_DSN, table=f"{name}_s"),
                PostgresThrottle(POSTGRES_DSN, table=f"{name}_t"),
                PostgresSecondFactorStore(POSTGRES_DSN, table=f"{name}_m"),
            )
            self.cleanups.insert(0, lambda: _close_all(parts))
            return parts
        from tokenflow.mfa.redis import RedisSecondFactorStore
        from tokenflow.stores.redis import RedisStore
        from tokenflow.throttles import RedisThrottle

        client = self._redis(name)
        return (
            RedisStore(client, prefix=f"{name}:s"),
            RedisThrottle(client, prefix=f"{name}:t"),
            RedisSecondFactorStore(client, prefix=f"{name}:m:"),
        )

    async def asynchronous(self) -> tuple[Any, Any, Any, Callable[[], Awaitable[None]] | None]:
        """``(async store, async throttle, second-factor store, close)``, made inside
        the running loop (async pools and clients belong to their loop)."""
        name = self._unique()
        if self.name == "memory":
            from tokenflow.mfa import MemorySecondFactorStore

            return AsyncMemoryStore(), AsyncMemoryThrottle(), MemorySecondFactorStore(), None
        if self.name == "sqlite":
            from tokenflow.mfa.sqlite import SQLiteSecondFactorStore

            path = os.path.join(self.directory, f"{name}.sqlite3")
            return (
                AsyncSQLiteStore(path),
                AsyncSQLiteThrottle(path),
                SQLiteSecondFactorStore(path),
                None,
            )
        if self.name == "postgres":
            from tokenflow.mfa.postgres import PostgresSecondFactorStore
            from tokenflow.stores.postgres import AsyncPostgresStore
            from tokenflow.throttles import AsyncPostgresThrottle

            self._postgres_tables(name)
            store = AsyncPostgresStore(POSTGRES_DSN, table=f"{name}_s")
            throttle = AsyncPostgresThrottle(POSTGRES_DSN, table=f"{name}_t")
            factors = PostgresSecondFactorStore(POSTGRES_DSN, table=f"{name}_m")

            async def close() -> None:
                await store.aclose()
                await throttle.aclose()
                factors.close()

            return store, throttle, factors, close
        import redis.asyncio

        from tokenflow.mfa.redis import RedisSecondFactorStore
        from tokenflow.stores.redis import AsyncRedisStore
        from tokenflow.throttles import AsyncRedisThrottle

        client = redis.asyncio.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        return (
            AsyncRedisStore(client, prefix=f"{name}:s"),
            AsyncRedisThrottle(client, prefix=f"{name}:t"),
            RedisSecondFactorStore(self._redis(name), prefix=f"{name}:m:"),
            client.aclose,
        )

    def _postgres_tables(self, name: str) -> None:
        import psycopg

        from tokenflow.stores.postgres import apply_schema as sessions_schema
        from tokenflow.throttles.postgres import apply_schema as throttle_schema

        with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=3) as conn:
            sessions_schema(conn, table=f"{name}_s")
            throttle_schema(conn, table=f"{name}_t")

        def drop() -> None:
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                    (f"{name}\\_%",),
                ).fetchall()
                for (table,) in rows:
                    conn.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')

        self.cleanups.append(drop)

    def _redis(self, name: str) -> Any:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=30)

        def drop() -> None:
            keys = list(client.scan_iter(match=f"{name}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            client.close()

        self.cleanups.append(drop)
        return client

    def close(self) -> None:
        for cleanup in self.cleanups:
            cleanup()
        self.cleanups.clear()


def _close_all(parts: tuple[Any, ...]) -> None:
    for part in parts:
        part.close()


def _reachable(name: str) -> str | None:
    """None when the backend's server answers, else why not (one line)."""
    if name in ("postgres", "redis"):
        import importlib.util

        library = "psycopg" if name == "postgres" else "redis"
        if importlib.util.find_spec(library) is None:
            return f"no {library} client: pip install -e '.[{name}]'"
    try:
        if name == "postgres":
            import psycopg

            with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        elif name == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
    except Exception as exc:  # any failure to reach the server is a skip
        return " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return None


# -- one world: a flow with the real second factors ---------------------------------------


def _counting_factors(keyring: KeyRing, store: Any) -> Any:
    """The real :class:`tokenflow.mfa.SecondFactors`, counting the codes that reach
    it (a subclass, so that :class:`~tokenflow.mfa.AsyncSecondFactors` takes it)."""
    from tokenflow.mfa import SecondFactors

    class Counting(SecondFactors):
        def __init__(self) -> None:
            super().__init__(keyring, store, issuer="Bench")
            self.lock = threading.Lock()
            self.verified = 0

        def verify_second_factor(self, user_id: str, code: str, *, now: float) -> Any:
            with self.lock:
                self.verified += 1
            return super().verify_second_factor(user_id, code, now=now)

    return Counting()


@dataclass
class _World:
    clock: FakeClock
    keyring: KeyRing
    flow: Flow
    factors: Any
    users: FakeUserDirectory
    passwords: FakePasswordVerifier
    store: Any
    throttle: Any
    secrets: dict[str, str] = field(default_factory=dict)
    serial: int = 0

    def account(self, *, enrolled: bool = True, advance: bool = True) -> str:
        """A fresh user with a password, enrolled in TOTP (the enrolment's step used up)."""
        self.serial += 1
        user = f"user{self.serial}"
        self.users.add_user(user)
        self.passwords.set_password(user, PASSWORD)
        if enrolled:
            self.enrol(user, advance=advance)
        return user

    def enrol(self, user: str, *, advance: bool = True) -> None:
        """Enrol ``user`` in TOTP; the confirming code's step is spent, so the clock
        moves on a step (unless ``advance`` is off: the caller does it once for many)."""
        enrolment = self.factors.begin_totp(user, account_name=user, now=self.clock())
        self.secrets[user] = enrolment.secret
        self.factors.confirm_totp(user, self.code(user), now=self.clock())
        if advance:
            self.clock.advance(STEP)

    def code(self, user: str, offset: int = 0) -> str:
        import pyotp

        return str(pyotp.TOTP(self.secrets[user]).at(self.clock() + offset))

    def partial(self, user: str) -> Browser:
        """A browser holding the partial-login cookie of ``user`` (password right)."""
        browser = Browser(self.clock, origin=ORIGIN, host=HOST)
        first = self.flow.login(browser.request("POST", credentials=_password(user)))
        if not isinstance(first, SecondFactorRequired):
            raise AssertionError(f"the first step gave {first!r}")
        browser.receive(first.set_cookies)
        return browser

    def session(self, user: str) -> Browser:
        """A browser with a one-factor session of ``user`` (signed in before enrolling)."""
        browser = Browser(self.clock, origin=ORIGIN, host=HOST)
        login = self.flow.login(browser.request("POST", credentials=_password(user)))
        if not isinstance(login, Reissue) or login.aal != 1:
            raise AssertionError(f"the one-factor login gave {login!r}")
        browser.receive(login.set_cookies)
        return browser

    def aal1_enrolled(self) -> tuple[str, Browser]:
        """A user with a one-factor session, enrolled afterwards: a step-up's subject."""
        user = self.account(enrolled=False)
        browser = self.session(user)
        self.enrol(user)
        return user, browser


def _password(user: str) -> PasswordCredentials:
    return PasswordCredentials(user, PASSWORD)


def _code(code: str) -> SecondFactorCredentials:
    return SecondFactorCredentials(code)


def _world(backend: _Backend) -> _World:
    store, throttle, factor_store = backend.sync()
    clock = FakeClock(NOW)
    keyring = KeyRing.generate()
    users = FakeUserDirectory()
    passwords = FakePasswordVerifier()
    factors = _counting_factors(keyring, factor_store)
    flow = Flow(
        keyring,
        store,
        users,
        passwords=passwords,
        throttle=throttle,
        second_factors=factors,
        config=CONFIG,
        clock=clock,
    )
    return _World(clock, keyring, flow, factors, users, passwords, store, throttle)


def _granted(decision: object) -> bool:
    return isinstance(decision, Reissue)


def _replayed(decision: object) -> bool:
    return any(
        isinstance(e, LoginFailed) and e.reason is LoginFailedReason.SECOND_FACTOR_REPLAYED
        for e in getattr(decision, "events", ())
    )


# -- totp_replays_granted --------------------------------------------------------------


@dataclass
class _Tally:
    attempts: int = 0
    granted: int = 0
    refused_as_replay: int = 0
    throttled: int = 0
    other: int = 0

    def add(self, decision: object) -> None:
        self.attempts += 1
        if _granted(decision):
            self.granted += 1
        elif isinstance(decision, TooManyRequests):
            self.throttled += 1
        elif _replayed(decision):
            self.refused_as_replay += 1
        else:
            self.other += 1

    def as_json(self) -> dict[str, JSON]:
        return {
            "attempts": self.attempts,
            "granted": self.granted,
            "refused_as_replay": self.refused_as_replay,
            "throttled": self.throttled,
            "refused_otherwise": self.other,
        }


def _genuine(decision: object, what: str) -> Reissue:
    if not isinstance(decision, Reissue) or decision.aal != 2:
        raise AssertionError(f"the genuine {what} was not granted: {decision!r}")
    return decision


def _second_step(w: _World, user: str, code: str) -> object:
    browser = w.partial(user)
    return w.flow.login(browser.request("POST", credentials=_code(code)))


def _step_up(w: _World, browser: Browser, code: str) -> object:
    decision = w.flow.step_up(browser.request("POST", credentials=_code(code)))
    if isinstance(decision, Reissue):
        browser.receive(decision.set_cookies)
    return decision


def _replays(w: _World, runs: int) -> dict[str, _Tally]:
    tallies: dict[str, _Tally] = {}

    def tally(name: str) -> _Tally:
        return tallies.setdefault(name, _Tally())

    for _ in range(runs):
        # The same code again after a success: login, login.
        user = w.account()
        code = w.code(user)
        _genuine(_second_step(w, user, code), "second step")
        tally("login_then_login").add(_second_step(w, user, code))
        # Step-up, step-up (the same session, its rotated cookies).
        user, browser = w.aal1_enrolled()
        code = w.code(user)
        _genuine(_step_up(w, browser, code), "step-up")
        tally("stepup_then_stepup").add(_step_up(w, browser, code))
        # Across the two: a step-up's code as a second login step, and back.
        tally("stepup_then_login").add(_second_step(w, user, code))
        user, browser = w.aal1_enrolled()
        code = w.code(user)
        _genuine(_second_step(w, user, code), "second step")
        tally("login_then_stepup").add(_step_up(w, browser, code))
        # The previous step's code after a newer one was used (window -1 still matches).
        user, browser = w.aal1_enrolled()
        previous = w.code(user)
        w.clock.advance(STEP)
        _genuine(_second_step(w, user, w.code(user)), "second step")
        tally("previous_step_login").add(_second_step(w, user, previous))
        tally("previous_step_stepup").add(_step_up(w, browser, previous))
        # The current step's code after the next step's (window +1) was used.
        user, browser = w.aal1_enrolled()
        _genuine(_step_up(w, browser, w.code(user, STEP)), "step-up with the next step's code")
        tally("current_after_next_login").add(_second_step(w, user, w.code(user)))
        tally("current_after_next_stepup").add(_step_up(w, browser, w.code(user)))
        # One code from several requests at once: half second steps, half step-ups
        # of one session; exactly one may win, every further grant is a replay.
        user, browser = w.aal1_enrolled()
        wins, answers = _parallel_replay(w, user, browser)
        parallel = tally("parallel_same_code")
        for answer in answers:
            parallel.add(answer)
        if wins == 0:
            raise AssertionError("no request of the parallel replay was granted")
        parallel.granted -= 1  # the one genuine use
        parallel.attempts -= 1
        w.clock.advance(2 * STEP)
    return tallies


def _parallel_replay(w: _World, user: str, session: Browser) -> tuple[int, list[object]]:
    code = w.code(user)
    requests: list[Callable[[], object]] = []
    for i in range(PARALLEL_REPLAYS):
        if i % 2:
            browser = w.partial(user)
            request = browser.request("POST", credentials=_code(code))
            requests.append(functools.partial(w.flow.login, request))
        else:
            request = session.request("POST", credentials=_code(code))
            requests.append(functools.partial(w.flow.step_up, request))
    answers = _at_once(requests)
    return sum(1 for a in answers if _granted(a)), answers


def _at_once(calls: list[Callable[[], object]]) -> list[object]:
    barrier = threading.Barrier(len(calls))
    answers: list[object] = [None] * len(calls)

    def go(i: int) -> None:
        barrier.wait()
        answers[i] = calls[i]()

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


# -- totp_guesses_granted_over_limit ----------------------------------------------------


def _wrong_codes(right: set[str], seed: int) -> list[str]:
    """``PARALLEL_GUESSES - 1`` distinct six-digit codes none of which matches (±1 step)."""
    rng = random.Random(seed)
    wrong: list[str] = []
    while len(wrong) < PARALLEL_GUESSES - 1:
        code = f"{rng.randrange(1_000_000):06d}"
        if code not in right and code not in wrong:
            wrong.append(code)
    return wrong


def _race_result(
    limit: int, verified: int, sent_at: int, right: object, answers: list[object]
) -> dict[str, JSON]:
    granted = _granted(right)
    return {
        "guesses": len(answers) + 1,
        "limit": limit,
        "reached_verifier": verified,
        "throttled": sum(1 for a in [*answers, right] if isinstance(a, TooManyRequests)),
        "right_code_sent_after": sent_at,
        "right_code_granted": granted,
        "wrong_codes_granted": sum(1 for a in answers if _granted(a)),
        "granted_over_limit": int(granted and sent_at >= limit)
        + sum(1 for a in answers if _granted(a)),
    }


def _guess_race(w: _World, via: str, seed: int) -> dict[str, JSON]:
    """``PARALLEL_GUESSES`` threads guess one account's code at once; the right code
    goes once ``limit`` guesses have reached the verifier."""
    limit = _limit()
    if via == "login":
        user = w.account()
        browser = w.partial(user)
        call = w.flow.login
    else:
        user, browser = w.aal1_enrolled()
        call = w.flow.step_up
    right = w.code(user)
    wrong = _wrong_codes({w.code(user, o) for o in (-STEP, 0, STEP)}, seed)
    requests = [browser.request("POST", credentials=_code(c)) for c in wrong]
    right_request = browser.request("POST", credentials=_code(right))
    before = w.factors.verified
    done = [0]
    lock = threading.Lock()
    sent_at = [0]

    def guess(request: Request) -> Callable[[], object]:
        def go() -> object:
            try:
                return call(request)
            finally:
                with lock:
                    done[0] += 1

        return go

    def right_guess() -> object:
        deadline = time.monotonic() + 60
        while w.factors.verified - before < limit and done[0] < len(wrong):
            if time.monotonic() > deadline:
                raise AssertionError("the wrong guesses never reached the limit")
            time.sleep(0.0005)
        sent_at[0] = w.factors.verified - before
        return call(right_request)

    answers = _at_once([*(guess(r) for r in requests), right_guess])
    verified = w.factors.verified - before
    w.clock.advance(2 * STEP)
    return _race_result(limit, verified, sent_at[0], answers[-1], answers[:-1])


async def _async_guess_race(backend: _Backend, via: str, seed: int) -> dict[str, JSON]:
    """The same race with :class:`~tokenflow.AsyncFlow`: ``PARALLEL_GUESSES`` tasks."""
    from tokenflow.mfa import AsyncSecondFactors

    store, throttle, factor_store, close = await backend.asynchronous()
    try:
        clock = FakeClock(NOW)
        keyring = KeyRing.generate()
        users = FakeUserDirectory()
        passwords = FakePasswordVerifier()
        factors = _counting_factors(keyring, factor_store)
        flow = AsyncFlow(
            keyring,
            store,
            AsyncFakeUserDirectory(users),
            passwords=AsyncFakePasswordVerifier(passwords),
            throttle=throttle,
            second_factors=AsyncSecondFactors(factors),
            config=CONFIG,
            clock=clock,
        )
        users.add_user("alice")
        passwords.set_password("alice", PASSWORD)
        browser = Browser(clock, origin=ORIGIN, host=HOST)
        first = await flow.login(browser.request("POST", credentials=_password("alice")))
        browser.receive(first.set_cookies)
        enrolment = factors.begin_totp("alice", account_name="alice", now=clock())
        import pyotp

        totp = pyotp.TOTP(enrolment.secret)
        factors.confirm_totp("alice", totp.at(clock()), now=clock())
        clock.advance(STEP)
        if via == "login":
            if not isinstance(first, Reissue):
                raise AssertionError(f"the one-factor login gave {first!r}")
            browser = Browser(clock, origin=ORIGIN, host=HOST)
            partial = await flow.login(browser.request("POST", credentials=_password("alice")))
            if not isinstance(partial, SecondFactorRequired):
                raise AssertionError(f"the first step gave {partial!r}")
            browser.receive(partial.set_cookies)
            call = flow.login
        else:
            call = flow.step_up
        limit = _limit()
        right = totp.at(clock())
        wrong = _wrong_codes({totp.at(clock() + o) for o in (-STEP, 0, STEP)}, seed)
        before = factors.verified
        done = [0]
        sent_at = [0]

        async def guess(code: str) -> object:
            try:
                return await call(browser.request("POST", credentials=_code(code)))
            finally:
                done[0] += 1

        async def right_guess() -> object:
            deadline = time.monotonic() + 60
            while factors.verified - before < limit and done[0] < len(wrong):
                if time.monotonic() > deadline:
                    raise AssertionError("the wrong guesses never reached the limit")
                await asyncio.sleep(0.0005)
            sent_at[0] = factors.verified - before
            return await call(browser.request("POST", credentials=_code(right)))

        answers = await asyncio.gather(*(guess(c) for c in wrong), right_guess())
        return _race_result(limit, factors.verified - before, sent_at[0], answers[-1], answers[:-1])
    finally:
        if close is not None:
            await close()


# -- stepup_bypasses --------------------------------------------------------------------

# A row: its name, and what builds (from the world) the flow method to call,
# the request, and the requirement the protected route declares.
_Built = tuple[str, Request, Requirement | None]
_Row = tuple[str, Callable[[_World], _Built]]


def _cookie_names(w: _World) -> tuple[str, str, str]:
    cookies = w.flow.config.cookies
    return cookies.access_name, cookies.refresh_name, w.flow.partial_cookie_name


def _only(cookies: dict[str, str], credentials: Any = None) -> Request:
    method = "POST" if credentials is not None else "GET"
    return Request(
        method,
        cookies=cookies,
        credentials=credentials,
        host=HOST,
        origin=ORIGIN if credentials is not None else None,
        sec_fetch_site="same-origin",
    )


def _flip(token: str) -> str:
    i = len(token) // 2
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def _reseal(w: _World, token: str, purpose: Purpose, **changes: Any) -> str:
    """New claims in ``token``, sealed under a key ring the server does not have."""
    claims = TokenCodec(w.keyring).open(purpose, token, now=w.clock())
    claims.update(changes)
    return TokenCodec(KeyRing.generate()).seal(purpose, claims)


def _sealed_access(w: _World, ring: KeyRing | None = None, **changes: Any) -> str:
    """An access token for a real aal2 user, its claims changed, sealed under ``ring``
    (default: the server's own, as a faulty minting server would)."""
    now = int(w.clock())
    claims: dict[str, Any] = {
        "sub": w.account(),
        "sid": "s" * 22,
        "iat": now,
        "exp": now + 60,
        "aal": 2,
        "amr": ["pwd", "otp"],
        "auth_time": now,
    }
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}  # None: the claim left out
    return TokenCodec(ring or w.keyring).seal(Purpose.ACCESS, claims)


def _aal2(w: _World) -> tuple[str, Browser]:
    user = w.account()
    browser = w.partial(user)
    login = w.flow.login(browser.request("POST", credentials=_code(w.code(user))))
    browser.receive(_genuine(login, "second step").set_cookies)
    return user, browser


def _aal1(w: _World) -> Browser:
    return w.session(w.account(enrolled=False))


def _rows() -> list[_Row]:
    def served_by(requirement: Requirement | None, request: Request) -> _Built:
        return "decide", request, requirement

    def tampered_aal2(w: _World) -> _Built:
        access, _, _ = _cookie_names(w)
        return served_by(AAL2, _only({access: _flip(_aal2(w)[1].cookies()[access])}))

    def tampered_aal1(w: _World) -> _Built:
        access, _, _ = _cookie_names(w)
        return served_by(AAL2, _only({access: _flip(_aal1(w).cookies()[access])}))

    def aal1_access(w: _World) -> _Built:
        access, _, _ = _cookie_names(w)
        return served_by(AAL2, _only({access: _aal1(w).cookies()[access]}))

    def aal1_both(w: _World) -> _Built:
        return served_by(AAL2, _aal1(w).request())

    def aal1_refresh(w: _World) -> _Built:
        _, refresh, _ = _cookie_names(w)
        browser = _aal1(w)
        w.clock.advance(w.flow.config.access_ttl + 10)
        return served_by(AAL2, _only({refresh: browser.cookies()[refresh]}))

    def stale(w: _World) -> _Built:
        access, _, _ = _cookie_names(w)
        browser = _aal2(w)[1]
        w.clock.advance(61)
        return served_by(Requirement(aal=2, max_age=60), _only({access: browser.cookies()[access]}))

    def stale_rotated(w: _World) -> _Built:
        _, refresh, _ = _cookie_names(w)
        browser = _aal2(w)[1]
        w.clock.advance(400)
        return served_by(BOTH, _only({refresh: browser.cookies()[refresh]}))

    def forged_access(w: _World) -> _Built:
        access, _, _ = _cookie_names(w)
        token = _reseal(w, _aal1(w).cookies()[access], Purpose.ACCESS, aal=2, amr=["pwd", "otp"])
        return served_by(AAL2, _only({access: token}))

    def forged_refresh(w: _World) -> _Built:
        _, refresh, _ = _cookie_names(w)
        token = _reseal(w, _aal1(w).cookies()[refresh], Purpose.REFRESH, aal=2)
        return served_by(AAL2, _only({refresh: token}))

    def partial_as(slot: int) -> Callable[[_World], _Built]:
        def build(w: _World) -> _Built:
            names = _cookie_names(w)
            partial = w.partial(w.account()).cookies()[names[2]]
            return served_by(Requirement(), _only({names[slot]: partial}))

        return build

    def partial_expired(w: _World) -> _Built:
        _, refresh, name = _cookie_names(w)
        partial = w.partial(w.account()).cookies()[name]
        w.clock.advance(w.flow.config.second_factor_ttl + 60)
        return served_by(Requirement(), _only({refresh: partial, name: partial}))

    def pre_step_up_access(w: _World) -> _Built:
        access, _, _ = _cookie_names(w)
        user, browser = w.aal1_enrolled()
        old = browser.cookies()[access]
        _genuine(_step_up(w, browser, w.code(user)), "step-up")
        return served_by(AAL2, _only({access: old}))

    def pre_step_up_refresh(w: _World) -> _Built:
        _, refresh, _ = _cookie_names(w)
        user, browser = w.aal1_enrolled()
        old = browser.cookies()[refresh]
        _genuine(_step_up(w, browser, w.code(user)), "step-up")
        w.clock.advance(w.flow.config.grace_seconds + 1)
        return served_by(AAL2, _only({refresh: old}))

    def refresh_as_access(w: _World) -> _Built:
        access, refresh, _ = _cookie_names(w)
        return served_by(AAL2, _only({access: _aal2(w)[1].cookies()[refresh]}))

    def access_as_refresh(w: _World) -> _Built:
        access, refresh, _ = _cookie_names(w)
        token = _aal2(w)[1].cookies()[access]
        w.clock.advance(w.flow.config.access_ttl + 10)
        return served_by(AAL2, _only({refresh: token}))

    def after_logout(w: _World) -> _Built:
        _, refresh, _ = _cookie_names(w)
        browser = _aal2(w)[1]
        token = browser.cookies()[refresh]
        w.flow.logout(browser.request("POST"))
        w.clock.advance(w.flow.config.access_ttl + 10)
        return served_by(AAL2, _only({refresh: token}))

    def sealed(requirement: Requirement, **changes: Any) -> Callable[[_World], _Built]:
        def build(w: _World) -> _Built:
            access, _, _ = _cookie_names(w)
            return served_by(requirement, _only({access: _sealed_access(w, **changes)}))

        return build

    def other_ring(w: _World) -> _Built:
        access, _, _ = _cookie_names(w)
        return served_by(AAL2, _only({access: _sealed_access(w, KeyRing.generate())}))

    def step_up_with_partial_as_refresh(w: _World) -> _Built:
        _, refresh, name = _cookie_names(w)
        user = w.account()
        partial = w.partial(user).cookies()[name]
        return "step_up", _only({refresh: partial}, _code(w.code(user))), None

    def step_up_with_partial_alone(w: _World) -> _Built:
        _, _, name = _cookie_names(w)
        user = w.account()
        partial = w.partial(user).cookies()[name]
        return "step_up", _only({name: partial}, _code(w.code(user))), None

    def step_up_other_users_code(w: _World) -> _Built:
        _, browser = w.aal1_enrolled()
        other = w.account()
        return "step_up", browser.request("POST", credentials=_code(w.code(other))), None

    def step_up_forged_refresh(w: _World) -> _Built:
        _, refresh, _ = _cookie_names(w)
        user, browser = w.aal1_enrolled()
        token = _reseal(w, browser.cookies()[refresh], Purpose.REFRESH, aal=2)
        return "step_up", _only({refresh: token}, _code(w.code(user))), None

    def step_up_cross_site(w: _World) -> _Built:
        user, browser = w.aal1_enrolled()
        request = browser.request("POST", credentials=_code(w.code(user)), same_origin=False)
        return "step_up", replace(request, origin="https://evil.example"), None

    def forged_partial(w: _World) -> _Built:
        _, _, name = _cookie_names(w)
        user = w.account()
        now = int(w.clock())
        claims = {"sub": user, "iat": now, "exp": now + 300, "m": "password", "amr": ["pwd"]}
        # A partial login the attacker seals under a ring of their own (no password).
        token = _foreign_partial(claims)
        return "login", _only({name: token}, _code(w.code(user))), None

    def access_as_partial(w: _World) -> _Built:
        access, _, name = _cookie_names(w)
        user, browser = w.aal1_enrolled()  # the token of a stolen cookie jar, no password
        token = browser.cookies()[access]
        return "login", _only({name: token}, _code(w.code(user))), None

    def partial_of_another_user(w: _World) -> _Built:
        _, _, name = _cookie_names(w)
        victim = w.account()
        partial = w.partial(w.account()).cookies()[name]  # the attacker's own account
        return "login", _only({name: partial}, _code(w.code(victim))), None

    return [
        ("tampered aal2 access token", tampered_aal2),
        ("tampered aal1 access token", tampered_aal1),
        ("aal1 access token to an aal2 route", aal1_access),
        ("aal1 session, both cookies, to an aal2 route", aal1_both),
        ("aal1 refresh token to an aal2 route", aal1_refresh),
        ("auth_time older than max_age", stale),
        ("auth_time older than max_age after rotations", stale_rotated),
        ("aal forged in an access token under another key", forged_access),
        ("aal forged in a refresh token under another key", forged_refresh),
        ("partial cookie as the access token", partial_as(0)),
        ("partial cookie as the refresh token", partial_as(1)),
        ("partial cookie alone", partial_as(2)),
        ("partial cookie past its expiry", partial_expired),
        ("access token minted before a step-up", pre_step_up_access),
        ("refresh token spent by a step-up, after grace", pre_step_up_refresh),
        ("aal2 token sealed under an unknown key ring", other_ring),
        ("auth_time in the future", sealed(Requirement(max_age=300), auth_time=int(NOW) + 10**6)),
        ("aal as a string", sealed(AAL2, aal="2")),
        ("aal as a float", sealed(AAL2, aal=2.0)),
        ("aal as a bool", sealed(AAL2, aal=True)),
        ("aal 3 (no such level)", sealed(AAL2, aal=3)),
        ("aal missing", sealed(AAL2, aal=None)),
        ("auth_time as a string", sealed(BOTH, auth_time="now")),
        ("auth_time as a float", sealed(BOTH, auth_time=float(NOW))),
        ("auth_time missing on a max_age route", sealed(BOTH, auth_time=None)),
        ("refresh token as the access token", refresh_as_access),
        ("access token as the refresh token", access_as_refresh),
        ("aal2 refresh token after logout", after_logout),
        ("step-up with the partial cookie as its session", step_up_with_partial_as_refresh),
        ("step-up with only a partial cookie", step_up_with_partial_alone),
        ("step-up with another user's right code", step_up_other_users_code),
        ("step-up on a refresh token forged to aal2", step_up_forged_refresh),
        ("step-up from a cross-site page", step_up_cross_site),
        ("second step on a partial login sealed by another ring", forged_partial),
        ("second step on the victim's access token as the partial login", access_as_partial),
        ("second step: own partial login, the victim's code", partial_of_another_user),
    ]


def _foreign_partial(claims: dict[str, Any]) -> str:
    """A partial login an attacker without the server's key ring seals: the right
    purpose, any claims, a key ring of their own."""
    return TokenCodec(KeyRing.generate()).seal(Purpose.PARTIAL_LOGIN, claims)


def _bypasses(w: _World) -> dict[str, JSON]:
    served: list[str] = []
    rows = _rows()
    for name, build in rows:
        kind, request, requirement = build(w)
        if requirement is not None:
            request = replace(request, requirement=requirement)
        decision = getattr(w.flow, kind)(request)
        if isinstance(decision, (Process, Reissue)):
            served.append(name)
        w.clock.advance(2 * STEP)
    # The honest counterparts are served: the rows fail for the claim they attack.
    access, refresh, _ = _cookie_names(w)
    _, browser = _aal2(w)
    controls = [
        w.flow.decide(replace(browser.request(), requirement=BOTH)),
        w.flow.decide(replace(_only({access: _sealed_access(w)}), requirement=BOTH)),
    ]
    w.clock.advance(w.flow.config.access_ttl + 10)
    controls.append(
        w.flow.decide(replace(_only({refresh: browser.cookies()[refresh]}), requirement=AAL2))
    )
    if not all(isinstance(c, (Process, Reissue)) for c in controls):
        raise AssertionError(f"an honest aal2 request was refused: {controls!r}")
    return {"rows": len(rows), "served": served, "bypasses": len(served)}


# -- timings (information) ------------------------------------------------------------


class _Pool:
    """Accounts the timed calls of one case take in turn, each once per time step:
    when every account has had its turn, the clock moves on by a step. Codes are
    computed before timing; past ``POOL_STEPS`` steps the rest are computed inline."""

    def __init__(self, w: _World, browsers: list[tuple[str, Browser]], steps: int) -> None:
        import pyotp

        self.w = w
        self.browsers = browsers
        self.i = 0
        self.codes: dict[tuple[str, int], str] = {}
        self.computed_inline = 0
        start = int(w.clock()) // STEP
        for user, _ in browsers:
            totp = pyotp.TOTP(w.secrets[user])
            for k in range(steps):
                self.codes[(user, start + k)] = totp.at((start + k) * STEP)

    def next(self) -> tuple[Browser, SecondFactorCredentials]:
        index = self.i % len(self.browsers)
        if index == 0 and self.i:
            self.w.clock.advance(STEP)
        self.i += 1
        user, browser = self.browsers[index]
        code = self.codes.get((user, int(self.w.clock()) // STEP))
        if code is None:
            self.computed_inline += 1
            code = self.w.code(user)
        return browser, _code(code)


class _SecondSteps(_Pool):
    """One second login step per call: a partial-login cookie and a right code."""

    def __call__(self) -> None:
        browser, code = self.next()
        decision = self.w.flow.login(browser.request("POST", credentials=code))
        if type(decision) is not Reissue:
            raise AssertionError(f"the second step gave {decision!r}")


class _StepUps(_Pool):
    """One step-up by TOTP per call, of an existing session (its cookies kept current)."""

    def __call__(self) -> None:
        browser, code = self.next()
        decision = self.w.flow.step_up(browser.request("POST", credentials=code))
        if type(decision) is not Reissue:
            raise AssertionError(f"the step-up gave {decision!r}")
        browser.receive(decision.set_cookies)


def _timed_flow(w: _World) -> tuple[Flow, Request]:
    """A flow on ``w``'s key ring and stores whose passwords are argon2id at the
    library's defaults, and one account without a second factor to sign in."""
    from tokenflow.passwords import PasswordHasher, PasswordVerifier

    stored = PasswordHasher().hash(PASSWORD)

    class Table:
        def find_password(self, username: str) -> tuple[str, str] | None:
            return ("plain", stored) if username == "plain" else None

    w.users.add_user("plain")
    flow = Flow(
        w.keyring,
        w.store,
        w.users,
        passwords=PasswordVerifier(Table()),
        throttle=w.throttle,
        second_factors=w.factors,
        config=CONFIG,
        clock=w.clock,
    )
    request = Browser(w.clock, origin=ORIGIN, host=HOST).request(
        "POST", credentials=_password("plain")
    )
    if not _granted(flow.login(request)):
        raise AssertionError("the password login case does not log in")
    return flow, request


def _timings(backend: _Backend, settings: Settings) -> tuple[dict[str, Stats], dict[str, JSON]]:
    w = _world(backend)
    flow, password_request = _timed_flow(w)
    size = POOL_QUICK if settings.quick else POOL
    steps = 10 if settings.quick else POOL_STEPS
    # Enrolments at one instant, then one step on (their codes are spent), so
    # that no session or partial login ages while the cases are timed.
    sessions = []
    for _ in range(size):
        user = w.account(enrolled=False)
        sessions.append((user, w.session(user)))
        w.enrol(user, advance=False)
    accounts = [w.account(advance=False) for _ in range(size)]
    w.clock.advance(STEP)
    partials = [(user, w.partial(user)) for user in accounts]
    second = _SecondSteps(w, partials, steps)
    stepups = _StepUps(w, sessions, steps)
    second()  # both cases work before they are timed
    stepups()
    cases = [
        Case(f"{backend.name}/password_login", Call(flow.login, (password_request,))),
        Case(f"{backend.name}/second_step", Call(second)),
        Case(f"{backend.name}/step_up", Call(stepups)),
    ]
    stats = measure(f"{GROUP}/{backend.name}", cases, settings)
    extra: dict[str, JSON] = {
        "pool_accounts": size,
        "codes_computed_inline": second.computed_inline + stepups.computed_inline,
        "clock_advanced_s": round(w.clock() - NOW),
    }
    return stats, extra


# -- the group --------------------------------------------------------------------------


def _skip(settings: Settings, name: str, reason: str) -> None:
    if os.environ.get(REQUIRE_ENV, "") == "1":
        raise RuntimeError(f"{name} unavailable ({reason}); {REQUIRE_ENV}=1 makes this an error")
    print(f"skipped: {name} ({reason})")
    settings.log(f"{GROUP}: {name} unavailable; its runs are skipped")


def _attacks(backend: _Backend, settings: Settings) -> dict[str, Any]:
    runs = REPLAY_RUNS_QUICK if settings.quick else REPLAY_RUNS
    settings.log(f"{GROUP}: {backend.name}: replays ({runs} runs)")
    replays = _replays(_world(backend), runs)
    settings.log(f"{GROUP}: {backend.name}: {PARALLEL_GUESSES} parallel guesses, threads and tasks")
    w = _world(backend)
    races: dict[str, dict[str, JSON]] = {}
    for seed, via in enumerate(("login", "step_up")):
        races[f"threads/{via}"] = _guess_race(w, via, seed)
        races[f"async/{via}"] = asyncio.run(_async_guess_race(backend, via, seed))
    settings.log(f"{GROUP}: {backend.name}: step-up bypass table")
    bypasses = _bypasses(_world(backend))
    return {"replays": replays, "races": races, "bypasses": bypasses}


def run(settings: Settings, report: Report) -> None:
    """Run the mfa group: attack counts on every backend, timings on memory and SQLite."""
    found: dict[str, dict[str, Any]] = {}
    timed: dict[str, tuple[dict[str, Stats], dict[str, JSON]]] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tokenflow-bench-mfa-") as directory:
        for name in BACKENDS:
            reason = _reachable(name)
            if reason is not None:
                skipped[name] = reason
                _skip(settings, name, reason)
                continue
            backend = _Backend(name, directory, f"{os.getpid()}_{name}")
            try:
                found[name] = _attacks(backend, settings)
                if name in TIMED_BACKENDS:
                    timed[name] = _timings(backend, settings)
            finally:
                backend.close()

    replays_granted = sum(t.granted for f in found.values() for t in f["replays"].values())
    over_limit = sum(
        int(r["granted_over_limit"]) for f in found.values() for r in f["races"].values()
    )
    bypasses = sum(int(f["bypasses"]["bypasses"]) for f in found.values())

    print(f"\n== {GROUP}: second factors through the flow, real throttle and TOTP ==")
    if settings.quick:
        print("QUICK MODE: fewer runs and short batches; do not quote the timings.")
    rows = []
    for name, f in found.items():
        tallies = f["replays"].values()
        races = f["races"]
        rows.append(
            [
                name,
                str(sum(t.attempts for t in tallies)),
                str(sum(t.granted for t in tallies)),
                str(max(int(r["reached_verifier"]) for r in races.values())),
                str(_limit()),
                str(sum(int(r["granted_over_limit"]) for r in races.values())),
                f"{f['bypasses']['rows']}",
                str(f["bypasses"]["bypasses"]),
            ]
        )
    for name, reason in skipped.items():
        rows.append([name, f"skipped: {reason}"])
    print(
        format_table(
            [
                "backend",
                "replays",
                "granted",
                f"max verified of {PARALLEL_GUESSES}",
                "limit",
                "over limit",
                "bypass rows",
                "served",
            ],
            rows,
            "lrrrrrrr",
        )
    )
    if timed:
        print(f"\ntimings (information, not goals): median of {settings.rounds} rounds, µs")
        trows = []
        for name, (stats, _extra) in timed.items():
            password = stats[f"{name}/password_login"].median
            for case in ("password_login", "second_step", "step_up"):
                s = stats[f"{name}/{case}"]
                trows.append(
                    [
                        f"{name}/{case}",
                        f"{s.median:,.1f}",
                        f"{s.minimum:,.1f}",
                        f"{s.noise_pct:.1f}%",
                        f"{s.median / password:.4f}",
                    ]
                )
        print(format_table(["case", "median µs", "min µs", "noise", "vs password"], trows, "lrrrr"))
        print("(password_login: a whole argon2id login; the others: the flow with TOTP)")
    goals = (
        ("totp_replays_granted", replays_granted),
        ("totp_guesses_granted_over_limit", over_limit),
        ("stepup_bypasses", bypasses),
    )
    for key, value in goals:
        verdict = "PASS" if value <= GOALS[key] else "MISS"
        print(f"{key} = {value}  (goal {GOALS[key]}: {verdict}; on {', '.join(found)})")
    served = [f"{n}: {row}" for n, f in found.items() for row in f["bypasses"]["served"]]
    if served:
        print("served bypass rows: " + "; ".join(served))

    for name, f in found.items():
        report.add_row(
            GROUP,
            name,
            {
                "replays": {k: t.as_json() for k, t in f["replays"].items()},
                "guess_races": f["races"],
                "stepup_bypass_rows": f["bypasses"]["rows"],
                "stepup_bypasses_served": f["bypasses"]["served"],
            },
        )
    for name, (stats, extra) in timed.items():
        password = stats[f"{name}/password_login"].median
        report.add_row(
            GROUP,
            f"{name}/timings",
            {
                "second_step_vs_password_login": round(
                    stats[f"{name}/second_step"].median / password, 4
                ),
                "step_up_vs_password_login": round(stats[f"{name}/step_up"].median / password, 4),
                **{case: stats[f"{name}/{case}"].as_json() for case in _CASES},
                **extra,
            },
        )
    for name, reason in skipped.items():
        report.add_row(GROUP, name, {"skipped": reason})
    report.add_detail(GROUP, "goal", dict(GOALS))
    report.add_detail(GROUP, "counts", dict(goals))
    report.add_detail(
        GROUP,
        "summary",
        "TOTP replays, "
        f"{PARALLEL_GUESSES} parallel guesses (threads and async tasks; throttle limit "
        f"{_limit()}) and {len(_rows())} forged, stale or downgraded claims, through the flow "
        "with tokenflow.mfa.SecondFactors and a real throttle on "
        + (", ".join(found) or "no backend")
        + "; the second login step and a step-up timed against an argon2id password login.",
    )
    report.add_detail(GROUP, "backends", list(found))
    report.add_detail(GROUP, "parallel_guesses", PARALLEL_GUESSES)
    report.add_detail(GROUP, "throttle_limit", _limit())
    report.add_key("totp_replays_granted", replays_granted)
    report.add_key("totp_guesses_granted_over_limit", over_limit)
    report.add_key("stepup_bypasses", bypasses)
    report.add_libraries("pyotp", "argon2-cffi")


_CASES: Final = ("password_login", "second_step", "step_up")
