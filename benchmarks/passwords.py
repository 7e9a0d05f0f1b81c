"""Password logins: equal timing for unknown users, and what a throttled guess costs.

All cases run through :class:`tokenflow.Flow` with the **default** argon2id
parameters (cheap parameters would make every ratio meaningless), measured
side by side in interleaved rounds:

* **unknown user**: a login for a username the lookup does not know; the
  verifier checks the dummy hash;
* **wrong password**: a known user, a wrong password: one real check.
  ``password_unknown_vs_wrong`` is the ratio of their medians; goal within
  [0.95, 1.05], so that timing does not tell which usernames exist;
* **throttled**: a login attempt for a username already over the throttle's
  limit (a :class:`~tokenflow.throttles.MemoryThrottle`): answered 429
  without any hash;
* **disabled account**: the right password of an account the user
  directory refuses: ``password_disabled_vs_wrong`` is its median over the
  wrong password's, goal within [0.95, 1.05] too, so that timing does not
  tell that the password was right;
* **verification**: one full ``verify_password`` of the right password.
  ``throttled_vs_verify`` is throttled ÷ verification; goal at most 0.01, so
  that guessing against a throttled account costs the server nothing.

Two counts, not timings, on the default argon2id parameters:

* ``throttle_burst_verifications``: 50 wrong guesses for one account
  released together (threads behind a barrier) through ``Flow`` with a limit
  of 5, on each backend (memory, SQLite, and Redis and PostgreSQL when their
  servers answer): how many passwords were verified. Goal **= 5** on each.
* ``throttle_spellings_verifications``: 40 spellings of one account (spaces
  around it) through a lookup that trims them, one after the other, limit 5:
  how many were verified. Goal **= 5**.

Hashes verified per second at the default parameters (one core) are printed
with the parameters.
"""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from tokenflow import (
    Flow,
    KeyRing,
    PasswordCredentials,
    Request,
    TooManyRequests,
    Unauthorized,
)
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeUserDirectory
from tokenflow.throttles import MemoryThrottle

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure

__all__ = ["run"]

GROUP: Final = "passwords"
PASSWORD: Final = "correct horse battery staple"
NOW: Final = 1_700_000_000.0
FULL_BATCH_MS: Final = 150.0
FULL_ROUNDS: Final = 31
"""A hash takes tens of milliseconds, so each batch holds one: more rounds
than other groups, for a median that separates a few percent."""


BURST: Final = 50
SPELLINGS: Final = 40
LIMIT: Final = 5
"""The default policy's free failures per account."""
REDIS_URL: Final = os.environ.get("TOKENFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN: Final = os.environ.get(
    "TOKENFLOW_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)


class _Users:
    """The host's table: "ada" and "bob" (whom the directory disables); names are
    compared with surrounding spaces trimmed, as many sign-in forms do."""

    def __init__(self, stored: str) -> None:
        self.stored = stored

    def find_password(self, username: str) -> tuple[str, str] | None:
        name = username.strip()
        return (name, self.stored) if name in ("ada", "bob") else None


class _Counting:
    """A password verifier that counts the verifications that ran."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.verified = 0
        self._lock = threading.Lock()

    def account_key(self, username: str) -> str | None:
        key: str | None = self.inner.account_key(username)
        return key

    def verify_password(self, username: str, password: str) -> str | None:
        with self._lock:
            self.verified += 1
        user: str | None = self.inner.verify_password(username, password)
        return user


@contextmanager
def _backend(kind: str, tag: str) -> Iterator[Any]:
    """A fresh throttle of each kind; raises OSError-like errors when a server is down."""
    if kind == "memory":
        yield MemoryThrottle()
    elif kind == "sqlite":
        from tokenflow.throttles import SQLiteThrottle

        with (
            tempfile.TemporaryDirectory() as folder,
            SQLiteThrottle(os.path.join(folder, "throttle.db")) as throttle,
        ):
            yield throttle
    elif kind == "redis":
        import redis

        from tokenflow.throttles import RedisThrottle

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=30)
        try:
            client.ping()
            yield RedisThrottle(client, prefix=f"tfbench-{tag}")
            for key in client.scan_iter(match=f"tfbench-{tag}:*"):
                client.delete(key)
        finally:
            client.close()
    else:
        import psycopg

        from tokenflow.throttles.postgres import PostgresThrottle, apply_schema

        table = f"tfbench_throttle_{tag}"
        with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=2) as conn:
            apply_schema(conn, table=table)
        try:
            with PostgresThrottle(POSTGRES_DSN, table=table) as throttle:
                yield throttle
        finally:
            with psycopg.connect(POSTGRES_DSN, autocommit=True, connect_timeout=2) as conn:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def _burst(make_flow: Callable[[Any], Flow], verifier: _Counting, throttle: Any) -> int:
    """Verifications granted to BURST simultaneous wrong guesses for "ada"."""
    flow = make_flow(throttle)
    barrier = threading.Barrier(BURST)
    before = verifier.verified

    def guess(i: int) -> None:
        barrier.wait(60)
        flow.decide(_login("ada", f"guess {i}", f"198.51.100.{i}"), now=NOW)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return verifier.verified - before


def _bursts(make_flow: Callable[[Any], Flow], verifier: _Counting) -> dict[str, int | None]:
    granted: dict[str, int | None] = {}
    tag = f"{os.getpid()}_{time.time_ns()}"
    for kind in ("memory", "sqlite", "redis", "postgres"):
        try:
            with _backend(kind, tag) as throttle:
                granted[kind] = _burst(make_flow, verifier, throttle)
        except (ImportError, OSError) as exc:
            print(f"throttle burst on {kind}: skipped ({type(exc).__name__})")
            granted[kind] = None
        except Exception as exc:  # a driver's own connection error class
            if (
                "connect" not in type(exc).__name__.lower()
                and "Operational" not in type(exc).__name__
            ):
                raise
            print(f"throttle burst on {kind}: skipped ({type(exc).__name__})")
            granted[kind] = None
    return granted


def _spellings(make_flow: Callable[[Any], Flow], verifier: _Counting) -> int:
    """Verifications granted to SPELLINGS spellings of "ada", one after the other."""
    flow = make_flow(MemoryThrottle())
    before = verifier.verified
    pads = (" ", "\t", "\n", "\r", "\x0b")
    for i in range(SPELLINGS):
        spelling = pads[i % 5] * (1 + i // 5) + "ada" + " " * (i % 3)
        flow.decide(_login(spelling, "guess", f"192.0.2.{i}"), now=NOW)
    return verifier.verified - before


def _login(username: str, password: str, address: str = "192.0.2.10") -> Request:
    return Request(
        "POST",
        credentials=PasswordCredentials(username, password),
        sec_fetch_site="same-origin",
        client_address=address,
    )


def _ratio(numerator: Stats, denominator: Stats) -> float:
    return numerator.median / denominator.median


def _status(stats: Mapping[str, Stats]) -> str:
    equal = _ratio(stats["unknown_user"], stats["wrong_password"])
    return f"unknown/wrong so far {equal:.3f}"


def run(settings: Settings, report: Report) -> None:
    """Measure the passwords group and add it to ``report``."""
    # Imported here: the other groups run without the argon2 extra.
    from tokenflow.passwords import PasswordHasher, PasswordVerifier

    hasher = PasswordHasher()  # the defaults: the subject of every figure here
    users = _Users(hasher.hash(PASSWORD))
    verifier = PasswordVerifier(users, hasher=hasher)
    directory = FakeUserDirectory()
    directory.add_user("ada")
    directory.add_user("bob")
    directory.disable("bob")
    flow = Flow(KeyRing.generate(), MemoryStore(), directory, passwords=verifier)
    throttle = MemoryThrottle()
    guarded = Flow(
        KeyRing.generate(), MemoryStore(), directory, passwords=verifier, throttle=throttle
    )

    unknown, wrong, throttled = _login("eve", "guess"), _login("ada", "guess"), _login("ada", "x")
    disabled = _login("bob", PASSWORD)
    # Put "ada" far over the limit: every timed attempt is refused unverified.
    for _ in range(30):
        guarded.decide(wrong, now=NOW)
    # Prove each case does what its name says before timing it.
    for request in (unknown, wrong, disabled):
        if not isinstance(flow.decide(request, now=NOW), Unauthorized):
            raise AssertionError("a wrong login was not refused")
    if not isinstance(guarded.decide(throttled, now=NOW), TooManyRequests):
        raise AssertionError("the throttled case was not throttled")
    if verifier.verify_password("ada", PASSWORD) != "ada":
        raise AssertionError("the verification case does not verify")

    decide = functools.partial(flow.decide, now=NOW)
    decide_guarded = functools.partial(guarded.decide, now=NOW)
    cases = [
        Case("unknown_user", Call(decide, (unknown,))),
        Case("wrong_password", Call(decide, (wrong,))),
        Case("disabled_right_password", Call(decide, (disabled,))),
        Case("throttled", Call(decide_guarded, (throttled,))),
        Case("verify", Call(verifier.verify_password, ("ada", PASSWORD))),
    ]
    rounds = settings.rounds if settings.quick else max(settings.rounds, FULL_ROUNDS)
    tuned = Settings(
        rounds=rounds,
        # A few hashes per batch in a full run smooth out scheduler noise.
        batch_ms=settings.batch_ms if settings.quick else max(settings.batch_ms, FULL_BATCH_MS),
        seed=settings.seed,
        quick=settings.quick,
        progress=settings.progress,
    )
    stats = measure(GROUP, cases, tuned, status=_status)

    equal = _ratio(stats["unknown_user"], stats["wrong_password"])
    disabled_equal = _ratio(stats["disabled_right_password"], stats["wrong_password"])
    # The same ratio taken round by round (the two batches of a round ran
    # back to back), then its median: drifts that span rounds cancel out.
    paired = sorted(
        u / w
        for u, w in zip(
            stats["unknown_user"].samples_us, stats["wrong_password"].samples_us, strict=True
        )
    )
    paired_median = statistics.median(paired)
    cheap = _ratio(stats["throttled"], stats["verify"])
    per_second = 1_000_000 / stats["verify"].median
    params = hasher.parameters
    labels = {
        "unknown_user": "login through Flow, unknown user (dummy hash)",
        "wrong_password": "login through Flow, known user, wrong password",
        "disabled_right_password": "login through Flow, disabled user, right password",
        "throttled": "login through Flow, throttled (429, no hash)",
        "verify": "PasswordVerifier.verify_password, right password",
    }
    rows = [
        [
            labels[key],
            f"{stats[key].median:,.1f}",
            f"{stats[key].minimum:,.1f}",
            f"{stats[key].noise_pct:.1f}",
        ]
        for key in labels
    ]
    print(f"\n== {GROUP}: {params.describe()}, {rounds} rounds ==")
    print(format_table(["case", "median us", "min us", "noise %"], rows, "lrrr"))
    in_band = 0.95 <= equal <= 1.05
    print(
        f"password_unknown_vs_wrong = {equal:.4f} (goal within [0.95, 1.05]: "
        f"{'PASS' if in_band else 'MISS'})"
    )
    quartiles = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
    print(
        f"  paired by round: median {paired_median:.4f}, "
        f"quartiles {quartiles[0]:.4f} to {quartiles[2]:.4f}"
    )
    disabled_in_band = 0.95 <= disabled_equal <= 1.05
    print(
        f"password_disabled_vs_wrong = {disabled_equal:.4f} (goal within [0.95, 1.05]: "
        f"{'PASS' if disabled_in_band else 'MISS'})"
    )
    print(
        f"throttled_vs_verify = {cheap:.6f} (goal <= 0.01: {'PASS' if cheap <= 0.01 else 'MISS'})"
    )

    counting = _Counting(verifier)

    def make_flow(throttle: Any) -> Flow:
        return Flow(
            KeyRing.generate(), MemoryStore(), directory, passwords=counting, throttle=throttle
        )

    bursts = _bursts(make_flow, counting)
    for kind, granted in bursts.items():
        verdict = "skipped" if granted is None else ("PASS" if granted == LIMIT else "MISS")
        print(
            f"throttle_burst_verifications[{kind}] = {granted} "
            f"({BURST} simultaneous wrong guesses, limit {LIMIT}; goal = {LIMIT}: {verdict})"
        )
    spelled = _spellings(make_flow, counting)
    print(
        f"throttle_spellings_verifications = {spelled} ({SPELLINGS} spellings, trimming "
        f"lookup, limit {LIMIT}; goal = {LIMIT}: {'PASS' if spelled == LIMIT else 'MISS'})"
    )
    print(f"hashes verified per second, one core, {params.describe()}: {per_second:,.1f}")

    for key, label in labels.items():
        row: dict[str, JSON] = {"label": label, **stats[key].as_json()}
        report.add_row(GROUP, key, row)
    report.add_detail(
        GROUP,
        "argon2_parameters",
        {
            "type": "argon2id",
            "memory_cost_kib": params.memory_cost,
            "time_cost": params.time_cost,
            "parallelism": params.parallelism,
            "hash_len": params.hash_len,
            "salt_len": params.salt_len,
        },
    )
    report.add_detail(
        GROUP,
        "goals",
        {
            "unknown_vs_wrong": [0.95, 1.05],
            "disabled_vs_wrong": [0.95, 1.05],
            "throttled_vs_verify": 0.01,
            "throttle_burst_verifications": LIMIT,
            "throttle_spellings_verifications": LIMIT,
        },
    )
    report.add_detail(
        GROUP,
        "throttle_counts",
        {"burst": BURST, "spellings": SPELLINGS, "limit": LIMIT, "burst_by_backend": bursts},
    )
    report.add_libraries("argon2-cffi")
    report.add_key("password_unknown_vs_wrong", round(equal, 4))
    report.add_key("password_unknown_vs_wrong_paired", round(paired_median, 4))
    report.add_key("password_disabled_vs_wrong", round(disabled_equal, 4))
    report.add_key("throttled_vs_verify", round(cheap, 6))
    report.add_key("throttle_burst_verifications", dict(bursts))
    report.add_key("throttle_spellings_verifications", spelled)
    report.add_key("password_hashes_verified_per_second", round(per_second, 2))
    report.add_key("password_hash_parameters", params.describe())
