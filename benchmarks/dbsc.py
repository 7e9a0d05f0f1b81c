"""Device-bound sessions (DBSC): the cost of a proof-of-possession refresh, and attack runs.

Four figures:

* **dbsc_refresh_vs_floor**: ``flow.refresh_device`` with a valid ES256 proof
  (load the device key, verify the signature, read the proof, open the sealed
  challenge, rotate, mint both cookies and the next challenge) over its floor:
  a plain refresh decision (``flow.decide`` with an expired access cookie:
  rotate and mint) plus one bare ES256 verification with ``cryptography``
  (``public_key.verify`` of a DER signature, nothing else). All four are
  timed in the same interleaved rounds, on SQLite (the embedded default,
  where a rotation is a committed write) and on PostgreSQL when reachable;
  the in-memory store's pair is printed for reference. A proof names the
  refresh token it comes with, so every refresh needs a newly signed proof;
  signing it is the browser's work, so before each batch, outside the timed
  region, one proof is signed for each session the batch refreshes (each
  session once per batch), and neither side of the ratio times a signature.
  ``es256_sign``, the browser's share, is printed for reference only. The
  floor's verification cycles through 64 device keys; a batch of proof
  refreshes uses at least as many.
  The ratio is what tokenflow adds over the work it cannot avoid.
  Goal: at most 1.2 on each store measured.
* **dbsc_stolen_cookie_grants**: 1,000 bound sessions (100 with ``--quick``)
  on the memory store, and 100 on SQLite and PostgreSQL; each one's cookies
  are copied to a client without the key, which tries the plain refresh
  path, the DBSC endpoint without a proof, and the endpoint with a proof
  signed by a key of its own over a challenge the server just gave it.
  Grants counted (any answer that mints a cookie); afterwards every owner
  must still refresh. Goal: 0 grants.
* **dbsc_captured_proof_grants**: the same sessions; the attacker captured
  the headers of one of the owner's refreshes (its cookies and its proof).
  The owner refreshes twice more; the attacker replays the captured proof
  with the cookie jar of every other generation (before and after), and
  replays the captured request itself inside the grace window. Goal: 0.
* **dbsc_extra_403_per_cycle**: real Chromium (when the machine has it and
  ``--quick`` is off) at the default timings, access_ttl 120 s and
  challenge_ttl 60 s, for two refresh cycles (about five minutes): the
  number of 403 answers to refreshes, per cycle. Goal: 0.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

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

__all__ = ["EXTRA_403_GOAL", "GRANTS_GOAL", "RATIO_GOAL", "run"]

GROUP: Final = "dbsc"
RATIO_GOAL: Final = 1.2
"""A proof refresh may cost at most this many times a plain refresh plus one bare verification."""
GRANTS_GOAL: Final = 0
EXTRA_403_GOAL: Final = 0
THEFT_SESSIONS: Final = 1000
THEFT_SESSIONS_QUICK: Final = 100
THEFT_SESSIONS_DURABLE: Final = 100
"""Sessions of the attack runs on SQLite and PostgreSQL (each is a committed write)."""
CHROMIUM_CYCLES: Final = 2
SESSIONS: Final = 64
"""Sessions each timed case cycles through."""
LIBRARIES: Final = ("tokenflow", "joserfc", "cryptography")


def _flow(store: Any, clock: FakeClock) -> Flow:
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
        clock=clock,
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
    """One proof-of-possession refresh per call, each on a session of its own.

    A proof names the refresh token it comes with, so each refresh needs a
    proof over the challenge the previous one returned. Signing it is the
    browser's work: :meth:`prepare` signs, before each batch and outside the
    timed region, one proof for each of the ``n`` sessions the batch will
    refresh (adding sessions when a batch is larger than any before), and a
    call only refreshes.
    """

    def __init__(self, flow: Flow, clock: FakeClock, now: float, offset: int) -> None:
        self.flow, self.clock, self.now, self.offset = flow, clock, now, offset
        self.refresh: list[str] = []
        self.ids: list[str] = []
        self.challenges: list[str] = []
        self.proofs: list[str] = []
        self.keys: list[Any] = []
        self.i = 0
        self.prepare(SESSIONS)

    def _add_session(self) -> None:
        client = _login(self.flow, self.clock, self.offset + len(self.ids))
        if type(client.register(self.flow)) is not DeviceRegistered:
            raise AssertionError("registration failed")
        assert client.session_id is not None
        assert client.key is not None
        self.keys.append(client.key)
        self.challenges.append(client.challenges[client.session_id])
        self.proofs.append("")
        self.ids.append(client.session_id)
        self.refresh.append(_pair_of(client, self.flow.config.cookies.refresh_name))

    def prepare(self, n: int) -> None:
        """Sign the proofs of the next ``n`` calls (the client's work, not timed)."""
        if self.offset + n > THEFT_SESSIONS:
            raise AssertionError(f"a batch of {n} proof refreshes needs more users")
        while len(self.ids) < n:
            self._add_session()
        for i in range(n):
            self.proofs[i] = sign_proof(self.keys[i], {"jti": self.challenges[i]}, with_jwk=False)
        self.i = 0

    def __call__(self) -> None:
        i = self.i
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
        # The challenge of the next proof, which the next prepare() signs.
        self.challenges[i] = decision.headers[0][1].split('"', 2)[1]
        self.i += 1


class _Sign:
    """One ES256 refresh proof signed per call (the browser's share, for reference)."""

    def __init__(self) -> None:
        self.keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(SESSIONS)]
        self.challenge = "1700000000000.abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        self.i = 0

    def __call__(self) -> None:
        sign_proof(self.keys[self.i % SESSIONS], {"jti": self.challenge}, with_jwk=False)
        self.i += 1


class _BareVerify:
    """One bare ES256 verification with ``cryptography`` per call: a proof-sized input,
    cycling through 64 device keys (a batch of :class:`_Proof` uses at least as many)."""

    def __init__(self) -> None:
        self.algorithm = ec.ECDSA(hashes.SHA256())
        self.items: list[tuple[Any, bytes, bytes]] = []
        for _ in range(SESSIONS):
            key = ec.generate_private_key(ec.SECP256R1())
            data = sign_proof(key, {"jti": "x" * 64}, with_jwk=False).rsplit(".", 1)[0].encode()
            self.items.append((key.public_key(), key.sign(data, self.algorithm), data))
        self.i = 0

    def __call__(self) -> None:
        public, signature, data = self.items[self.i % SESSIONS]
        public.verify(signature, data, self.algorithm)
        self.i += 1


def _bound_owners(flow: Flow, clock: FakeClock, sessions: int) -> list[DbscClient]:
    owners = []
    for i in range(sessions):
        client = _login(flow, clock, i)
        if type(client.register(flow)) is not DeviceRegistered:
            raise AssertionError("registration failed")
        owners.append(client)
    return owners


def _minted(decision: Any) -> bool:
    return bool(decision.set_cookies) and decision.status == 200


def _theft(store: Any, sessions: int, now: float) -> dict[str, Any]:
    """Copied cookie jars, no key: the plain path, no proof, a key of the thief's own."""
    clock = FakeClock(now)
    flow = _flow(store, clock)
    owners = _bound_owners(flow, clock, sessions)
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
        grants += sum(1 for a in answers if _minted(a))
    elapsed = time.perf_counter() - started
    survivors = sum(1 for owner in owners if type(owner.refresh(flow)) is Reissue)
    return {
        "sessions": sessions,
        "attempts": attempts,
        "grants": grants,
        "owners_still_refreshing": survivors,
        "us_per_attempt": round(elapsed / attempts * 1e6, 2),
    }


def _captured(store: Any, sessions: int, now: float) -> dict[str, Any]:
    """Captured request headers (cookies and proof) replayed with every other generation."""
    clock = FakeClock(now)
    flow = _flow(store, clock)
    owners = _bound_owners(flow, clock, sessions)
    jars: list[list[dict[str, Any]]] = [[dict(o.jar)] for o in owners]  # generation 0
    clock.advance(flow.config.access_ttl)
    captured = []
    for owner, generations in zip(owners, jars, strict=True):
        request = owner.refresh_request()
        captured.append(request)
        owner.receive_decision(flow.refresh_device(request))
        generations.append(dict(owner.jar))
    # Inside the grace window: the captured request itself, replayed as is.
    clock.advance(1)
    grants = attempts = 0
    for request in captured:
        attempts += 1
        grants += _minted(flow.refresh_device(request))
    for _ in range(2):
        clock.advance(flow.config.access_ttl)
        for owner, generations in zip(owners, jars, strict=True):
            owner.refresh(flow)
            generations.append(dict(owner.jar))
    # The captured proof (issued for generation 0's token) with every other jar.
    for owner, request, generations in zip(owners, captured, jars, strict=True):
        for jar in generations[1:]:
            thief = DbscClient(clock, owner.host, owner.origin, jar, key=None)
            thief.session_id = owner.session_id
            forged = thief.refresh_request()
            forged = Request(
                forged.method,
                cookie_header=forged.cookie_header,
                sec_fetch_site=forged.sec_fetch_site,
                origin=forged.origin,
                host=forged.host,
                session_response=request.session_response,
                session_id_header=forged.session_id_header,
            )
            attempts += 1
            grants += _minted(flow.refresh_device(forged))
    survivors = sum(1 for owner in owners if type(owner.refresh(flow)) is Reissue)
    return {
        "sessions": sessions,
        "attempts": attempts,
        "grants": grants,
        "owners_still_refreshing": survivors,
    }


def _chromium(settings: Settings) -> dict[str, Any] | None:
    """403s per refresh cycle of real Chromium at default timings, or None if not run."""
    from ._chromium import (
        CHROMIUM,
        POLLING_PAGE,
        default_config,
        refresh_cycles,
        run_chromium,
        serve,
    )

    if settings.quick or CHROMIUM is None:
        return None

    def done(served: Any) -> bool:
        return len(refresh_cycles(served)) > CHROMIUM_CYCLES

    settings.log(f"dbsc: real Chromium at default timings, {CHROMIUM_CYCLES} refresh cycles")
    with serve(default_config(), POLLING_PAGE) as served:
        run_chromium(served, done, 120 * CHROMIUM_CYCLES + 150)
    cycles = refresh_cycles(served)[:CHROMIUM_CYCLES]
    if len(cycles) < CHROMIUM_CYCLES:
        return {"cycles": cycles, "complete": False}
    per_cycle = max(cycle.count(403) for cycle in cycles)
    return {
        "cycles": cycles,
        "complete": True,
        "extra_403_per_cycle": per_cycle,
        "refreshes_per_cycle": [len(cycle) for cycle in cycles],
    }


def _pair_of(client: DbscClient, name: str) -> str:
    value = client.cookies()[name]
    return f"{name}={value}"


def _postgres(tag: str) -> tuple[Any, Any] | None:
    """A PostgreSQL store on a fresh table and a cleanup, or None when unreachable."""
    try:
        import psycopg

        from tokenflow.stores.postgres import PostgresStore, apply_schema
    except ImportError:
        return None
    dsn = os.environ.get(
        "TOKENFLOW_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"
    )
    table = f"tokenflow_bench_dbsc_{tag}_{os.getpid()}"
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


def _stores(directory: str, settings: Settings, tag: str) -> list[tuple[str, Any, Any]]:
    """``(name, store, cleanup)``: SQLite, memory, and PostgreSQL when reachable."""
    stores: list[tuple[str, Any, Any]] = [
        ("sqlite", SQLiteStore(os.path.join(directory, f"{tag}.sqlite3")), None),
        ("memory", MemoryStore(), None),
    ]
    postgres = _postgres(tag)
    if postgres is None:
        settings.log("dbsc: PostgreSQL not reachable; its figures are skipped")
    else:
        stores.append(("postgres", postgres[0], postgres[1]))
    return stores


def _close(store: Any, cleanup: Any) -> None:
    if cleanup is None:
        store.close()
    else:
        cleanup()


def run(settings: Settings, report: Report) -> None:
    """Benchmark DBSC refreshes, run the attack scenarios; print and fill in ``report``."""
    now = float(int(time.time()))
    stats: dict[str, dict[str, Stats]] = {}
    theft: dict[str, dict[str, Any]] = {}
    captured: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tokenflow-bench-dbsc-") as directory:
        for store_name, store, cleanup in _stores(directory, settings, "timed"):
            clock = FakeClock(now)
            flow = _flow(store, clock)
            plain = _Plain(flow, clock, now)
            proof = _Proof(flow, clock, now, SESSIONS)
            cases = [
                Case(f"{store_name}/plain_refresh", Call(plain)),
                Case(f"{store_name}/proof_refresh", Call(proof), proof.prepare),
                Case(f"{store_name}/es256_sign", Call(_Sign())),
                Case(f"{store_name}/es256_verify", Call(_BareVerify())),
            ]

            def status(s: Any, name: str = store_name) -> str:
                return f"{name}: proof vs floor so far {_ratio(s, name):.3f}x"

            stats[store_name] = measure(f"{GROUP}/{store_name}", cases, settings, status=status)
            _close(store, cleanup)
        for store_name, store, cleanup in _stores(directory, settings, "attacks"):
            sessions = THEFT_SESSIONS_DURABLE
            if store_name == "memory":
                sessions = THEFT_SESSIONS_QUICK if settings.quick else THEFT_SESSIONS
            elif settings.quick:
                sessions = THEFT_SESSIONS_QUICK // 4
            theft[store_name] = _theft(store, sessions, now)
            captured[store_name] = _captured(store, sessions, now + 10_000)
            _close(store, cleanup)
    chromium = _chromium(settings)

    rows = []
    ratios = {}
    for store_name, found in stats.items():
        ratios[store_name] = _ratio(found, store_name)
        for case in ("plain_refresh", "es256_verify", "proof_refresh", "es256_sign"):
            label = f"{store_name}/{case}"
            s = found[label]
            rows.append([label, f"{s.median:.2f}", f"{s.minimum:.2f}", f"{s.noise_pct:.1f}%"])
            report.add_row(GROUP, label, s.as_json())
    print(f"\nDBSC refresh: median of {settings.rounds} interleaved rounds, µs per operation")
    if settings.quick:
        print("QUICK MODE: few rounds and short batches; do not quote these figures.")
    print(format_table(["case", "median µs", "min µs", "noise"], rows, "lrrr"))
    print("(proof_refresh verifies a proof signed before the timed batch; es256_sign is the")
    print(" browser's signing, for reference, and not part of the ratio)")
    for store_name, ratio in ratios.items():
        print(f"proof refresh vs (plain refresh + bare ES256 verify) on {store_name}: {ratio:.3f}x")
    for store_name in theft:
        t, c = theft[store_name], captured[store_name]
        print(
            f"{store_name}: {t['sessions']} bound sessions; stolen cookies: {t['attempts']} "
            f"attempts, {t['grants']} grant(s); captured proofs: {c['attempts']} attempts, "
            f"{c['grants']} grant(s); owners still refreshing {t['owners_still_refreshing']}"
            f"/{t['sessions']} and {c['owners_still_refreshing']}/{c['sessions']}"
        )
    if chromium is None:
        print("real Chromium: not run (--quick, or no Chromium on this machine)")
    else:
        print(f"real Chromium at default timings: refresh statuses per cycle {chromium['cycles']}")
    durable = [ratios[name] for name in ("sqlite", "postgres") if name in ratios]
    worst = max(durable)
    stolen = sum(t["grants"] for t in theft.values())
    replayed = sum(c["grants"] for c in captured.values())
    goals: list[tuple[str, str, str, bool]] = [
        ("dbsc_refresh_vs_floor", f"{worst:.3f}", f"<= {RATIO_GOAL}", worst <= RATIO_GOAL),
        ("dbsc_stolen_cookie_grants", str(stolen), f"<= {GRANTS_GOAL}", stolen <= GRANTS_GOAL),
        ("dbsc_captured_proof_grants", str(replayed), f"<= {GRANTS_GOAL}", replayed <= GRANTS_GOAL),
    ]
    extra = None
    if chromium is not None and chromium["complete"]:
        extra = chromium["extra_403_per_cycle"]
        goals.append(
            (
                "dbsc_extra_403_per_cycle",
                str(extra),
                f"<= {EXTRA_403_GOAL}",
                extra <= EXTRA_403_GOAL,
            )
        )
    for name, value, goal, verdict in goals:
        print(f"{name} = {value}  (goal {goal}: {'PASS' if verdict else 'MISS'})")
    report.add_libraries(*LIBRARIES)
    report.add_detail(GROUP, "theft", theft)
    report.add_detail(GROUP, "captured", captured)
    report.add_detail(GROUP, "chromium", chromium)
    report.add_detail(GROUP, "ratios", {k: round(v, 4) for k, v in ratios.items()})
    report.add_detail(
        GROUP,
        "goal",
        {"max_ratio": RATIO_GOAL, "max_grants": GRANTS_GOAL, "max_extra_403": EXTRA_403_GOAL},
    )
    report.add_key("dbsc_refresh_vs_floor", round(worst, 4))
    report.add_key("dbsc_stolen_cookie_grants", stolen)
    report.add_key("dbsc_captured_proof_grants", replayed)
    report.add_key("dbsc_extra_403_per_cycle", extra)


def _ratio(found: Any, name: str) -> float:
    """A proof refresh (its proof signed beforehand) / (plain refresh + one bare verification)."""
    proof = found[f"{name}/proof_refresh"].median
    floor = found[f"{name}/plain_refresh"].median + found[f"{name}/es256_verify"].median
    return float(proof / floor)
