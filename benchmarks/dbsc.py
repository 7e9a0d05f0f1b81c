"""Device-bound sessions (DBSC): the cost of a proof-of-possession refresh, and a theft run.

Two figures:

* **dbsc_refresh_vs_refresh**: ``flow.refresh_device`` with a valid ES256
  proof (parse the header, load the device key, verify the signature, open
  the sealed challenge, rotate, mint both cookies and the next challenge)
  over a plain refresh decision (``flow.decide`` with an expired access
  cookie: rotate and mint), on the same store, interleaved in the same
  rounds. Both cycle through their own sessions with the current refresh
  token each time. The store is a SQLite file, the embedded default, where
  a rotation is a committed write; the same pair on the in-memory store and
  (when reachable) on PostgreSQL is printed beside it for reference. The
  extra cost is one ECDSA P-256 verification, which costs more than a whole
  plain refresh on the local stores: the ratio measures that fact.
  Proofs are signed outside the timed region, once per session, as a browser
  may resend the same proof for a cached challenge. Goal: at most 1.5.
* **dbsc_stolen_cookie_grants**: 1,000 bound sessions (100 with
  ``--quick``); each one's cookies are copied to a client without the key,
  which tries the plain refresh path, the DBSC endpoint without a proof, and
  the endpoint with a proof signed by a key of its own over a challenge the
  server just gave it. Grants counted (any answer that mints a cookie);
  afterwards every owner must still refresh. Goal: 0 grants.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Final

from tokenflow import (
    DeviceBinding,
    DeviceProofRequired,
    DeviceRegistered,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Request,
)
from tokenflow.dbsc import DbscProofVerifier
from tokenflow.stores import MemoryStore, SQLiteStore
from tokenflow.testing import FakeClock, FakePasswordVerifier, FakeUserDirectory
from tokenflow.testing.dbsc import DbscClient, sign_proof

from ._harness import Call, Case, Report, Settings, Stats, format_table, measure

__all__ = ["GRANTS_GOAL", "RATIO_GOAL", "run"]

GROUP: Final = "dbsc"
RATIO_GOAL: Final = 1.5
"""A proof-of-possession refresh may cost at most this many times a plain refresh."""
GRANTS_GOAL: Final = 0
THEFT_SESSIONS: Final = 1000
THEFT_SESSIONS_QUICK: Final = 100
SESSIONS: Final = 64
"""Sessions each timed case cycles through."""
LIBRARIES: Final = ("tokenflow", "joserfc", "cryptography")


def _flow(store: Any, now: float) -> Flow:
    users = FakeUserDirectory()
    passwords = {f"user{i}": "pw" for i in range(THEFT_SESSIONS)}
    for name in passwords:
        users.add_user(name, {"roles": ["member"]})
    return Flow(
        KeyRing.generate(),
        store,
        users,
        passwords=FakePasswordVerifier(passwords),
        config=FlowConfig(device_binding=DeviceBinding()),
        clock=FakeClock(now),
        proofs=DbscProofVerifier(),
    )


def _login(flow: Flow, clock: FakeClock, i: int) -> DbscClient:
    client = DbscClient(clock, host="bench.example", origin="https://bench.example")
    decision = flow.login(client.request("POST", credentials=PasswordCredentials(f"user{i}", "pw")))
    if type(decision) is not Reissue:
        raise AssertionError(f"login {i} gave {decision!r}")
    client.receive_decision(decision)
    return client


def _pair(set_cookie: str) -> str:
    return set_cookie.split(";", 1)[0]


class _Plain:
    """One plain refresh decision per call, with each session's current refresh token."""

    def __init__(self, flow: Flow, clock: FakeClock, now: float) -> None:
        self.flow, self.now = flow, now
        self.refresh = [
            _pair_of(_login(flow, clock, i), flow.config.cookies.refresh_name)
            for i in range(SESSIONS)
        ]
        self.i = 0

    def __call__(self) -> None:
        i = self.i % SESSIONS
        decision = self.flow.decide(
            Request("GET", cookie_header=self.refresh[i], host="bench.example"), now=self.now
        )
        if type(decision) is not Reissue:
            raise AssertionError(f"plain refresh gave {decision!r}")
        self.refresh[i] = _pair(decision.set_cookies[1])
        self.i += 1


class _Proof:
    """One proof-of-possession refresh per call, with each session's current token."""

    def __init__(self, flow: Flow, clock: FakeClock, now: float, offset: int) -> None:
        self.flow, self.now = flow, now
        self.refresh: list[str] = []
        self.ids: list[str] = []
        self.proofs: list[str] = []
        name = flow.config.cookies.refresh_name
        for i in range(SESSIONS):
            client = _login(flow, clock, offset + i)
            if type(client.register(flow)) is not DeviceRegistered:
                raise AssertionError("registration failed")
            assert client.session_id is not None
            assert client.key is not None
            challenge = client.challenges[client.session_id]
            self.proofs.append(sign_proof(client.key, {"jti": challenge}, with_jwk=False))
            self.ids.append(client.session_id)
            self.refresh.append(_pair_of(client, name))
        self.i = 0

    def __call__(self) -> None:
        i = self.i % SESSIONS
        decision = self.flow.refresh_device(
            Request(
                "POST",
                cookie_header=self.refresh[i],
                sec_fetch_site="same-origin",
                origin="https://bench.example",
                host="bench.example",
                session_response=self.proofs[i],
                session_id_header=self.ids[i],
            ),
            now=self.now,
        )
        if type(decision) is not Reissue:
            raise AssertionError(f"proof refresh gave {decision!r}")
        self.refresh[i] = _pair(decision.set_cookies[1])
        self.i += 1


def _theft(sessions: int, now: float) -> dict[str, Any]:
    clock = FakeClock(now)
    flow = _flow(MemoryStore(), now)
    owners = []
    for i in range(sessions):
        client = _login(flow, clock, i)
        if type(client.register(flow)) is not DeviceRegistered:
            raise AssertionError("registration failed")
        owners.append(client)
    clock.advance(flow.config.access_ttl + 1)  # every bound cookie has expired
    grants = attempts = 0
    started = time.perf_counter()
    for owner in owners:
        thief = owner.without_key()
        answers = [flow.decide(thief.request("GET"))]
        asked = flow.refresh_device(thief.refresh_request())
        answers.append(asked)
        forger = owner.with_other_key()
        if isinstance(asked, DeviceProofRequired):
            forger.receive_decision(asked)
        answers.append(flow.refresh_device(forger.refresh_request()))
        attempts += len(answers)
        grants += sum(1 for a in answers if a.set_cookies and a.status == 200)
    elapsed = time.perf_counter() - started
    survivors = sum(1 for owner in owners if type(owner.refresh(flow)) is Reissue)
    return {
        "sessions": sessions,
        "attempts": attempts,
        "grants": grants,
        "owners_still_refreshing": survivors,
        "us_per_attempt": round(elapsed / attempts * 1e6, 2),
    }


def _pair_of(client: DbscClient, name: str) -> str:
    value = client.cookies()[name]
    return f"{name}={value}"


def _postgres() -> tuple[Any, Any] | None:
    """A PostgreSQL store on a fresh table and a cleanup, or None when unreachable."""
    try:
        import psycopg

        from tokenflow.stores.postgres import PostgresStore, apply_schema
    except ImportError:
        return None
    dsn = os.environ.get(
        "TOKENFLOW_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"
    )
    table = f"tokenflow_bench_dbsc_{os.getpid()}"
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            apply_schema(conn, table=table)
    except psycopg.Error:
        return None
    store = PostgresStore(dsn, table=table)

    def drop() -> None:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")

    return store, drop


def run(settings: Settings, report: Report) -> None:
    """Benchmark DBSC refreshes and run the theft scenario; print and fill in ``report``."""
    now = float(int(time.time()))
    stats: dict[str, dict[str, Stats]] = {}
    with tempfile.TemporaryDirectory(prefix="tokenflow-bench-dbsc-") as directory:
        stores: list[tuple[str, Any, Any]] = [
            ("sqlite", SQLiteStore(os.path.join(directory, "sessions.sqlite3")), None),
            ("memory", MemoryStore(), None),
        ]
        postgres = _postgres()
        if postgres is None:
            settings.log("dbsc: PostgreSQL not reachable; its reference pair is skipped")
        else:
            stores.append(("postgres", postgres[0], postgres[1]))
        for store_name, store, cleanup in stores:
            clock = FakeClock(now)
            flow = _flow(store, now)
            plain = _Plain(flow, clock, now)
            proof = _Proof(flow, clock, now, SESSIONS)
            cases = [
                Case(f"{store_name}/plain_refresh", Call(plain)),
                Case(f"{store_name}/proof_refresh", Call(proof)),
            ]

            def status(s: Any, name: str = store_name) -> str:
                ratio = s[f"{name}/proof_refresh"].median / s[f"{name}/plain_refresh"].median
                return f"{name}: proof vs plain so far {ratio:.3f}x"

            stats[store_name] = measure(f"{GROUP}/{store_name}", cases, settings, status=status)
            if cleanup is None:
                store.close()
            else:
                cleanup()
    theft = _theft(THEFT_SESSIONS_QUICK if settings.quick else THEFT_SESSIONS, now)

    rows = []
    ratios = {}
    for store_name, found in stats.items():
        plain_s = found[f"{store_name}/plain_refresh"]
        proof_s = found[f"{store_name}/proof_refresh"]
        ratios[store_name] = proof_s.median / plain_s.median
        for label, s in (
            (f"{store_name}/plain_refresh", plain_s),
            (f"{store_name}/proof_refresh", proof_s),
        ):
            rows.append([label, f"{s.median:.2f}", f"{s.minimum:.2f}", f"{s.noise_pct:.1f}%"])
            report.add_row(GROUP, label, s.as_json())
    print(f"\nDBSC refresh: median of {settings.rounds} interleaved rounds, µs per operation")
    if settings.quick:
        print("QUICK MODE: few rounds and short batches; do not quote these figures.")
    print(format_table(["case", "median µs", "min µs", "noise"], rows, "lrrr"))
    for reference in ("memory", "postgres"):
        if reference in ratios:
            print(
                f"proof vs plain refresh on the {reference} store (reference): "
                f"{ratios[reference]:.3f}x"
            )
    print(
        f"\ntheft run: {theft['sessions']} bound sessions, {theft['attempts']} attempts from "
        f"clients without the key: {theft['grants']} grant(s); "
        f"{theft['owners_still_refreshing']}/{theft['sessions']} owners still refresh"
    )
    ratio = ratios["sqlite"]
    for name, value, goal, verdict in (
        ("dbsc_refresh_vs_refresh", f"{ratio:.3f}", f"<= {RATIO_GOAL}", ratio <= RATIO_GOAL),
        (
            "dbsc_stolen_cookie_grants",
            str(theft["grants"]),
            f"<= {GRANTS_GOAL}",
            theft["grants"] <= GRANTS_GOAL,
        ),
    ):
        print(f"{name} = {value}  (goal {goal}: {'PASS' if verdict else 'MISS'})")
    report.add_libraries(*LIBRARIES)
    report.add_detail(GROUP, "theft", theft)
    report.add_detail(
        GROUP, "reference_ratios", {k: round(v, 4) for k, v in ratios.items() if k != "sqlite"}
    )
    report.add_detail(GROUP, "goal", {"max_ratio": RATIO_GOAL, "max_grants": GRANTS_GOAL})
    report.add_key("dbsc_refresh_vs_refresh", round(ratio, 4))
    report.add_key("dbsc_stolen_cookie_grants", theft["grants"])
