"""The login throttle against what guessers send: bursts, spellings, refused accounts, sprays.

- **Bursts.** M simultaneous wrong guesses on one account with a limit of N
  get at most N verifications, on every backend (memory, SQLite, Redis and
  PostgreSQL, the real servers) and through both drivers: an attempt is
  counted (reserved) before its password is hashed.
- **Spellings.** With a lookup that trims spaces, or one that ignores
  accents (as MySQL's default collation does), every spelling of an account
  shares the account's count.
- **Refused accounts.** The right password for a disabled account is
  answered, counted and followed exactly like a wrong one.
- **Sprays.** Filling a :class:`MemoryThrottle` with fresh usernames never
  frees the account under attack.
"""

from __future__ import annotations

import asyncio
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest

from tokenflow import (
    AsyncFlow,
    Flow,
    FlowConfig,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Request,
    ThrottlePolicy,
    ThrottleRule,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tokenflow._throttle import username_key
from tokenflow.events import LoginFailed, LoginFailedReason, LoginThrottled, PortFailed
from tokenflow.passwords import (
    Argon2Parameters,
    AsyncPasswordVerifier,
    PasswordHasher,
    PasswordVerifier,
)
from tokenflow.stores import AsyncMemoryStore, MemoryStore
from tokenflow.testing import (
    AsyncFakeUserDirectory,
    FakeClock,
    FakeUserDirectory,
)
from tokenflow.throttles import (
    AsyncMemoryThrottle,
    AsyncSQLiteThrottle,
    MemoryThrottle,
    SQLiteThrottle,
    ThrottleFull,
)

ADDRESS = "203.0.113.9"
PASSWORD = "correct horse battery staple"
LIMIT = 5
BURST = 50
CHEAP = Argon2Parameters(time_cost=1, memory_cost=64)
POLICY = ThrottlePolicy(username=ThrottleRule(LIMIT, 1.0, 300.0))


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    return PasswordHasher(CHEAP)


class Table:
    """A host's user table: ``fold`` is its rule for comparing usernames."""

    def __init__(self, hasher: PasswordHasher, fold: Callable[[str], str] = str) -> None:
        self.fold = fold
        self.rows = {fold("ada@example.com"): ("user-ada", hasher.hash(PASSWORD))}
        self.hashes = 0
        self._lock = threading.Lock()
        self.slow = 0.0

    def find_password(self, username: str) -> tuple[str, str] | None:
        return self.rows.get(self.fold(username))


class AsyncTable:
    def __init__(self, table: Table) -> None:
        self.sync = table

    async def find_password(self, username: str) -> tuple[str, str] | None:
        return self.sync.find_password(username)


class CountingVerifier(PasswordVerifier):
    """Counts the verifications that ran; each one holds the CPU a little, so that
    a burst really overlaps."""

    def __init__(self, lookup: Table, hasher: PasswordHasher) -> None:
        super().__init__(lookup, hasher=hasher)
        self.verified = 0
        self._lock = threading.Lock()

    def verify_password(self, username: str, password: str) -> str | None:
        with self._lock:
            self.verified += 1
        time.sleep(0.005)
        return super().verify_password(username, password)


class AsyncCountingVerifier(AsyncPasswordVerifier):
    def __init__(self, lookup: AsyncTable, hasher: PasswordHasher) -> None:
        super().__init__(lookup, hasher=hasher)
        self.verified = 0

    async def verify_password(self, username: str, password: str) -> str | None:
        self.verified += 1
        await asyncio.sleep(0.005)
        return await super().verify_password(username, password)


def _trim(username: str) -> str:
    return username.strip()


def _accent_insensitive(username: str) -> str:
    """What a case- and accent-insensitive collation compares (MySQL's default)."""
    decomposed = unicodedata.normalize("NFKD", username.strip())
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _flow(verifier: Any, throttle: Any, clock: FakeClock, users: Any = None) -> Flow:
    if users is None:
        users = FakeUserDirectory()
        users.add_user("user-ada")
    return Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        passwords=verifier,
        throttle=throttle,
        config=FlowConfig(throttle=POLICY),
        clock=clock,
    )


def _login(flow: Flow, username: str, password: str, address: str = ADDRESS) -> Any:
    credentials = PasswordCredentials(username, password)
    return flow.login(Request("POST", credentials=credentials, client_address=address))


# -- the backends, sync and async ---------------------------------------------------------


class SlowReads:
    """A throttle whose counts arrive a moment after they were read: every
    attempt of a burst reads before any of them reserves, as on a busy server."""

    def __init__(self, throttle: Any) -> None:
        self.inner = throttle

    def failures(self, keys: Any, *, now: float) -> Any:
        counts = self.inner.failures(keys, now=now)
        time.sleep(0.002)
        return counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class AsyncSlowReads:
    def __init__(self, throttle: Any) -> None:
        self.inner = throttle

    async def failures(self, keys: Any, *, now: float) -> Any:
        counts = await self.inner.failures(keys, now=now)
        await asyncio.sleep(0.002)
        return counts

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@contextmanager
def _sync_throttle(kind: str, request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Any]:
    if kind == "memory":
        yield MemoryThrottle(policy=POLICY)
    elif kind == "sqlite":
        with SQLiteThrottle(tmp_path / "throttle.db") as throttle:
            yield throttle
    elif kind == "redis":
        from tokenflow.throttles import RedisThrottle

        client = request.getfixturevalue("redis_client")
        yield RedisThrottle(client, prefix=request.getfixturevalue("redis_prefix"))
    else:
        from tokenflow.throttles import PostgresThrottle

        conninfo, table = request.getfixturevalue("pg_throttle_table")
        with PostgresThrottle(conninfo, table=table) as throttle:
            yield throttle


@asynccontextmanager
async def _async_throttle(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any
) -> AsyncIterator[Any]:
    if kind == "memory":
        yield AsyncMemoryThrottle(policy=POLICY)
    elif kind == "sqlite":
        async with AsyncSQLiteThrottle(tmp_path / "throttle.db") as throttle:
            yield throttle
    elif kind == "redis":
        import redis.asyncio

        from tokenflow.throttles import AsyncRedisThrottle

        client = redis.asyncio.Redis.from_url(request.getfixturevalue("redis_url"))
        try:
            yield AsyncRedisThrottle(client, prefix=request.getfixturevalue("redis_prefix"))
        finally:
            await client.aclose()
    else:
        from tokenflow.throttles import AsyncPostgresThrottle

        conninfo, table = request.getfixturevalue("pg_throttle_table")
        async with AsyncPostgresThrottle(conninfo, table=table) as throttle:
            yield throttle


@pytest.fixture(scope="module")
def pg_throttle_table(
    postgres_conninfo: str, unique_name: Callable[[str], str]
) -> Iterator[tuple[str, str]]:
    import psycopg

    from tokenflow.throttles.postgres import apply_schema

    name = unique_name("throttle")
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        apply_schema(conn, table=name)
    yield postgres_conninfo, name
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}"')


BACKENDS = ["memory", "sqlite", "redis", "postgres"]


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_burst_of_wrong_guesses_gets_the_limit_of_verifications_flow(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any, hasher: PasswordHasher
) -> None:
    """50 threads released by a barrier, one instant, one account, limit 5: 5 hashes."""
    clock = FakeClock()
    verifier = CountingVerifier(Table(hasher), hasher)
    username = f"ada+{kind}@example.com"
    table: Table = verifier._lookup  # type: ignore[assignment]
    # A user id of its own: the Redis and PostgreSQL tables outlive one test.
    table.rows[username] = (f"user-{kind}-{time.time_ns()}", table.rows["ada@example.com"][1])
    with _sync_throttle(kind, request, tmp_path) as throttle:
        flow = _flow(verifier, SlowReads(throttle), clock)
        barrier = threading.Barrier(BURST)
        answers: list[Any] = []

        def guess(i: int) -> None:
            barrier.wait(30)
            answers.append(_login(flow, username, f"wrong {i}", address=f"198.51.100.{i}"))

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(BURST)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert verifier.verified == LIMIT
    assert sum(isinstance(a, Unauthorized) for a in answers) == LIMIT
    assert sum(isinstance(a, TooManyRequests) for a in answers) == BURST - LIMIT


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_burst_of_wrong_guesses_gets_the_limit_of_verifications_asyncflow(
    kind: str, request: pytest.FixtureRequest, tmp_path: Any, hasher: PasswordHasher
) -> None:
    """50 tasks started together by asyncio.gather: 5 hashes."""
    clock = FakeClock()
    table = Table(hasher)
    username = f"ada+async-{kind}@example.com"
    table.rows[username] = (f"user-async-{kind}-{time.time_ns()}", table.rows["ada@example.com"][1])
    verifier = AsyncCountingVerifier(AsyncTable(table), hasher)
    users = FakeUserDirectory()
    users.add_user("user-ada")
    async with _async_throttle(kind, request, tmp_path) as throttle:
        flow = AsyncFlow(
            KeyRing.generate(),
            AsyncMemoryStore(),
            AsyncFakeUserDirectory(users),
            passwords=verifier,
            throttle=AsyncSlowReads(throttle),
            config=FlowConfig(throttle=POLICY),
            clock=clock,
        )
        go = asyncio.Event()

        async def guess(i: int) -> Any:
            await go.wait()
            credentials = PasswordCredentials(username, f"wrong {i}")
            return await flow.login(
                Request("POST", credentials=credentials, client_address=f"198.51.100.{i}")
            )

        tasks = [asyncio.create_task(guess(i)) for i in range(BURST)]
        await asyncio.sleep(0)
        go.set()
        answers = await asyncio.gather(*tasks)
    assert not [a for a in answers if isinstance(a, Unavailable)], answers[0].events
    assert verifier.verified == LIMIT
    assert sum(isinstance(a, TooManyRequests) for a in answers) == BURST - LIMIT


# -- one account, many spellings -----------------------------------------------------------


def _trimmed_spellings(n: int) -> list[str]:
    pads = [" ", "\t", "\n", "\r", "\x0b"]
    return [pads[i % 5] * (1 + i // 5) + "ada@example.com" + " " * (i % 3) for i in range(n)]


def _accented_spellings() -> list[str]:
    letters = {"a": "àáâãäåā", "e": "èéêëē"}
    out = []
    for base, variants in letters.items():
        for variant in variants:
            out.append("ada@example.com".replace(base, variant, 1))
    out += ["ADA@example.com", "Ádá@example.com", "ADA@EXAMPLÉ.com", "àda@exàmple.com"]
    return out


@pytest.mark.parametrize(
    ("fold", "spellings"),
    [(_trim, _trimmed_spellings(40)), (_accent_insensitive, _accented_spellings())],
    ids=["trimming", "accent-insensitive"],
)
def test_every_spelling_of_one_account_shares_its_count(
    fold: Callable[[str], str], spellings: list[str], hasher: PasswordHasher
) -> None:
    table = Table(hasher, fold)
    verifier = CountingVerifier(table, hasher)
    assert len({fold(s) for s in spellings}) == 1
    # Distinct even as typed usernames are counted (NFKC, case-folded).
    assert len({username_key(s) for s in spellings}) == len(spellings)
    assert all(verifier.account_key(s) == "user-ada" for s in spellings)
    clock = FakeClock()
    flow = _flow(verifier, MemoryThrottle(policy=POLICY), clock)
    answers = [
        _login(flow, s, "a wrong guess", address=f"192.0.2.{i}") for i, s in enumerate(spellings)
    ]
    assert verifier.verified == LIMIT
    assert sum(isinstance(a, TooManyRequests) for a in answers) == len(spellings) - LIMIT
    # And the account's owner, typing it plainly, waits too.
    assert isinstance(
        _login(flow, "ada@example.com", PASSWORD, address="192.0.2.200"), TooManyRequests
    )


def test_unknown_usernames_are_counted_as_typed_with_the_same_answers(
    hasher: PasswordHasher,
) -> None:
    """No account: the normalised typed name is the key; answers, events and costs match."""
    table = Table(hasher, _trim)
    verifier = CountingVerifier(table, hasher)
    flow = _flow(verifier, MemoryThrottle(policy=POLICY), FakeClock())
    known = [
        _login(flow, "ada@example.com", f"wrong {i}", address=f"192.0.2.{i}") for i in range(7)
    ]
    unknown = [
        _login(flow, "eve@example.com", f"wrong {i}", address=f"192.0.3.{i}") for i in range(7)
    ]
    # NFKC + casefold still joins these: one count with "eve@example.com".
    folded = _login(flow, "EVE@example.com", "wrong", address="192.0.4.1")
    assert [type(a) for a in known] == [type(a) for a in unknown]
    assert [a.status for a in known] == [a.status for a in unknown]
    assert [_answer_shape(a) for a in known] == [_answer_shape(a) for a in unknown]
    assert isinstance(folded, TooManyRequests)
    assert verifier.verified == 2 * LIMIT


# -- no oracle for refused accounts --------------------------------------------------------


def _answer_shape(decision: Any) -> tuple[Any, ...]:
    """Everything a client can see of a decision: all but the server-side events."""
    import dataclasses

    fields = [f.name for f in dataclasses.fields(decision) if f.name != "events"]
    return (type(decision), decision.status, *(getattr(decision, f) for f in fields))


def test_a_disabled_account_with_the_right_password_answers_like_a_wrong_password(
    hasher: PasswordHasher,
) -> None:
    def world(disabled: bool) -> tuple[Flow, CountingVerifier]:
        users = FakeUserDirectory()
        users.add_user("user-ada")
        if disabled:
            users.disable("user-ada")
        verifier = CountingVerifier(Table(hasher), hasher)
        return _flow(verifier, MemoryThrottle(policy=POLICY), FakeClock(), users), verifier

    right_flow, right_verifier = world(disabled=True)
    wrong_flow, wrong_verifier = world(disabled=False)
    right = [_login(right_flow, "ada@example.com", PASSWORD) for _ in range(LIMIT + 2)]
    wrong = [_login(wrong_flow, "ada@example.com", "wrong") for _ in range(LIMIT + 2)]
    # Status, headers, cookies: the same, attempt after attempt (the 6th is a 429 in both).
    assert [_answer_shape(a) for a in right] == [_answer_shape(a) for a in wrong]
    assert isinstance(right[LIMIT], TooManyRequests)
    assert right_verifier.verified == wrong_verifier.verified == LIMIT
    # The server-side event keeps the real reason.
    reasons = [e.reason for e in right[0].events if isinstance(e, LoginFailed)]
    assert reasons == [LoginFailedReason.USER_DISABLED]


def test_a_disabled_account_resets_nothing_and_the_next_answer_says_nothing(
    hasher: PasswordHasher,
) -> None:
    """After LIMIT - 1 wrong guesses, the right password of a disabled account is the
    LIMIT-th failure: the next guess is throttled, exactly as after a wrong one."""
    users = FakeUserDirectory()
    users.add_user("user-ada")
    users.disable("user-ada")
    flow = _flow(
        CountingVerifier(Table(hasher), hasher), MemoryThrottle(policy=POLICY), FakeClock(), users
    )
    for i in range(LIMIT - 1):
        assert isinstance(_login(flow, "ada@example.com", f"wrong {i}"), Unauthorized)
    assert isinstance(_login(flow, "ada@example.com", PASSWORD), Unauthorized)
    nxt = _login(flow, "ada@example.com", "anything")
    assert isinstance(nxt, TooManyRequests)
    assert any(isinstance(e, LoginThrottled) for e in nxt.events)


def test_a_success_resets_the_account_and_gives_the_address_its_attempt_back(
    hasher: PasswordHasher,
) -> None:
    throttle = MemoryThrottle(policy=POLICY)
    flow = _flow(CountingVerifier(Table(hasher), hasher), throttle, FakeClock())
    for i in range(3):
        _login(flow, "ada@example.com", f"wrong {i}")
    assert isinstance(_login(flow, "ada@example.com", PASSWORD), Reissue)
    from tokenflow._throttle import account_key, address_key

    counts = throttle.failures([account_key("user-ada"), address_key(ADDRESS)], now=FakeClock()())
    assert [c.count for c in counts] == [0, 3]


# -- eviction ------------------------------------------------------------------------------


def test_a_spray_past_max_keys_never_frees_the_account_under_attack(
    hasher: PasswordHasher,
) -> None:
    throttle = MemoryThrottle(max_keys=64, policy=POLICY)
    clock = FakeClock()
    flow = _flow(CountingVerifier(Table(hasher), hasher), throttle, clock)
    for i in range(LIMIT):
        _login(flow, "ada@example.com", f"wrong {i}", address=f"10.0.0.{i}")
    assert isinstance(_login(flow, "ada@example.com", "x", address="10.0.1.1"), TooManyRequests)
    # Spray: fresh usernames from fresh addresses, far past max_keys.
    for i in range(400):
        _login(flow, f"spray{i}@example.com", "x", address=f"10.1.{i // 250}.{i % 250}")
    answer = _login(flow, "ada@example.com", "guess", address="10.2.0.1")
    assert isinstance(answer, TooManyRequests)


def test_a_throttle_full_of_throttled_keys_refuses_new_keys() -> None:
    """Fail closed: no throttled key is evicted; the new key is refused (503 in a flow)."""
    throttle = MemoryThrottle(max_keys=4, policy=POLICY)
    now = 1_000.0
    keys = [f"u:{i:032x}" for i in range(4)]
    for key in keys:
        for n in range(LIMIT + 1):
            assert throttle.reserve([key], [n], now=now, window=3600.0)
    with pytest.raises(ThrottleFull):
        throttle.reserve(["u:" + "f" * 32], [0], now=now, window=3600.0)
    assert [c.count for c in throttle.failures(keys, now=now)] == [LIMIT + 1] * 4
    # Once a delay runs out, its key is no longer throttled and may be evicted.
    later = now + 400.0
    assert throttle.reserve(["u:" + "f" * 32], [0], now=later, window=3600.0)


def test_a_full_memory_throttle_answers_unavailable_through_the_flow(
    hasher: PasswordHasher,
) -> None:
    throttle = MemoryThrottle(max_keys=2, policy=POLICY)
    clock = FakeClock()
    flow = _flow(CountingVerifier(Table(hasher), hasher), throttle, clock)
    for i in range(LIMIT + 1):
        _login(flow, "ada@example.com", f"wrong {i}", address=None)  # type: ignore[arg-type]
    for i in range(LIMIT + 1):
        _login(flow, "bob@example.com", f"wrong {i}", address=None)  # type: ignore[arg-type]
    answer = _login(flow, "carol@example.com", "x", address=None)  # type: ignore[arg-type]
    assert isinstance(answer, Unavailable)
    assert any(isinstance(e, PortFailed) and e.port == "throttle" for e in answer.events)


# -- Facebook classic tokens ---------------------------------------------------------------


def test_facebook_classic_garbage_tokens_are_failed_logins_throttled_before_graph() -> None:
    from tokenflow import ExternalTokenCredentials, oidc
    from tokenflow.testing.oidc import FakeEndpoints, FakeGraphAPI, FakeKeySetSource

    api = FakeGraphAPI()
    endpoints = FakeEndpoints()
    endpoints.serve_graph(api)
    verifier = oidc.facebook(api.app_id, api.app_secret, source=FakeKeySetSource(endpoints))
    users = FakeUserDirectory(allow_signup=True)
    policy = ThrottlePolicy(address=ThrottleRule(3, 1.0, 900.0))
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        users,
        external={"facebook": verifier},
        throttle=MemoryThrottle(policy=policy),
        config=FlowConfig(throttle=policy),
        clock=FakeClock(),
    )

    def send(token: str) -> Any:
        credentials = ExternalTokenCredentials("facebook", token)
        return flow.login(Request("POST", credentials=credentials, client_address=ADDRESS))

    url = "https://graph.facebook.com/v19.0/debug_token"
    # Graph answers 190 ("cannot parse") to tokens it does not know the shape of.
    answers = [send("garbage" + "x" * (20 + i)) for i in range(3)]
    assert [a.status for a in answers] == [401, 401, 401]
    assert endpoints.hits(url) == 3
    throttled = send("garbage" + "y" * 30)
    assert isinstance(throttled, TooManyRequests)
    assert endpoints.hits(url) == 3  # throttled before Graph is called


def test_a_valid_token_of_an_unlinked_identity_is_counted_too() -> None:
    """Else one real token of the attacker's own unlinked identity would buy
    unthrottled calls to the provider (Graph's debug_token, say)."""
    from tokenflow import ExternalTokenCredentials
    from tokenflow.ports import ExternalIdentity

    class Provider:
        calls = 0

        def verify_token(self, token: str, *, now: float) -> ExternalIdentity:
            Provider.calls += 1
            return ExternalIdentity(provider="idp", subject="stranger", claims={})

    policy = ThrottlePolicy(address=ThrottleRule(3, 1.0, 900.0))
    flow = Flow(
        KeyRing.generate(),
        MemoryStore(),
        FakeUserDirectory(allow_signup=False),
        external={"idp": Provider()},
        throttle=MemoryThrottle(policy=policy),
        config=FlowConfig(throttle=policy),
        clock=FakeClock(),
    )
    request = Request(
        "POST", credentials=ExternalTokenCredentials("idp", "t" * 40), client_address=ADDRESS
    )
    answers = [flow.login(request) for _ in range(6)]
    assert [a.status for a in answers] == [401, 401, 401, 429, 429, 429]
    assert Provider.calls == 3
