"""Shared helpers for the tests that run against real Redis and PostgreSQL servers.

Three parts:

- **Servers.** :func:`connect_redis` and :func:`postgres_conninfo` reach the
  local servers (127.0.0.1 unless ``TOKENFLOW_REDIS_URL`` /
  ``TOKENFLOW_POSTGRES_DSN`` say otherwise). When a server does not answer
  the test is skipped with a message saying how to start it, unless
  ``TOKENFLOW_REQUIRE_SERVICES=1`` is set (CI): then it fails instead, so that
  a dead service can never turn the suite green by skipping.
- **The reference.** :class:`Replay` applies operations to a store and to a
  model made of :class:`~tokenflow.stores.StoredSession` objects driven by
  :func:`~tokenflow.stores.apply_rotation`, and asserts that both give the
  same answer to every call. :func:`scripted_ops` is a fixed sequence that
  reaches every :class:`~tokenflow.stores.RotationOutcome`; :func:`op_lists`
  is the hypothesis strategy for random sequences.
- **Async stores under the same checks.** :class:`Blocking` runs an async
  store's coroutines on a private event loop, so one replay checks both.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import secrets
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import pytest
from hypothesis import strategies as st

from tokenflow._sessions import apply_binding, derive_successor, verifier_of
from tokenflow.stores import (
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    StoredSession,
    apply_rotation,
)

_T = TypeVar("_T")

REQUIRE_ENV = "TOKENFLOW_REQUIRE_SERVICES"
REDIS_URL = os.environ.get("TOKENFLOW_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get(
    "TOKENFLOW_POSTGRES_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)

_HOW_TO_START = {
    "Redis": (
        "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
        '--save "" --appendonly no'
    ),
    "PostgreSQL": (
        "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    ),
}


# --------------------------------------------------------------------------- servers


def services_required() -> bool:
    """True when a missing server must fail the run instead of skipping."""
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(service: str, where: str, error: object) -> NoReturn:
    """Skip (or, with TOKENFLOW_REQUIRE_SERVICES=1, fail) because a server is missing."""
    message = (
        f"{service} is not reachable at {where} ({error}); {_HOW_TO_START.get(service, '')}. "
        f"Set {REQUIRE_ENV}=1 to make this a failure instead of a skip."
    )
    if services_required():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_module(name: str) -> ModuleType:
    """Import a client library, or skip (fail, if services are required) the module."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"{name} is not installed ({exc}); install tokenflow's extras to run these tests"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


def connect_redis() -> Any:
    """A ``redis.Redis`` client that answered PING, or a skip/failure."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=30)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable("Redis", REDIS_URL, exc)
    return client


def drop_redis_keys(client: Any, prefix: str) -> int:
    """Delete every key under ``prefix`` (a name without glob characters)."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    return len(keys)


def postgres_conninfo() -> str:
    """A conninfo string for a server that accepted a connection, or a skip/failure."""
    import psycopg

    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        unavailable("PostgreSQL", POSTGRES_DSN, str(exc).strip())
    return POSTGRES_DSN


def unique_name(kind: str) -> str:
    """A name no other test run uses: for key prefixes and table names."""
    return f"tokenflow_test_{kind}_{os.getpid()}_{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- async facade


class Blocking:
    """A sync face for an async store: each call runs to completion on ``loop``."""

    def __init__(self, store: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self.loop = loop

    def __repr__(self) -> str:
        return f"Blocking({self.store!r})"

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run one coroutine on the facade's loop."""
        return self.loop.run_until_complete(coro)

    def create(self, session: NewSession) -> None:
        self.run(self.store.create(session))

    def rotate(self, rotation: Rotation) -> RotationResult:
        result: RotationResult = self.run(self.store.rotate(rotation))
        return result

    def revoke(self, session_id: str) -> bool:
        result: bool = self.run(self.store.revoke(session_id))
        return result

    def revoke_user(self, user_id: str) -> int:
        result: int = self.run(self.store.revoke_user(user_id))
        return result

    def sessions_of(self, user_id: str, now: float) -> list[SessionInfo]:
        result: list[SessionInfo] = self.run(self.store.sessions_of(user_id, now=now))
        return result

    def purge(self, now: float) -> int:
        result: int = self.run(self.store.purge(now=now))
        return result

    def bind_device(self, session_id: str, device_key: str, *, now: float) -> SessionInfo | None:
        result: SessionInfo | None = self.run(
            self.store.bind_device(session_id, device_key, now=now)
        )
        return result

    def device_key_of(self, session_id: str, *, now: float) -> str | None:
        result: str | None = self.run(self.store.device_key_of(session_id, now=now))
        return result


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Create:
    """Open a session for user number ``user`` at the current time."""

    user: int
    idle: float
    absolute: float
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refresh:
    """Rotate session number ``session`` presenting one of its tokens.

    ``token``: ``current`` (the newest), ``previous`` (the one before),
    ``older`` (two or more back) or ``stranger`` (a secret it never had).
    """

    session: int
    token: str
    salt: bytes
    idle: float = 1800.0
    grace: float = 30.0
    device: str | None = None


@dataclass(frozen=True)
class Bind:
    """Bind session number ``session`` to a device key (device-bound sessions)."""

    session: int
    key: str


@dataclass(frozen=True)
class Advance:
    """Move the clock forward."""

    seconds: float


@dataclass(frozen=True)
class Revoke:
    """Revoke session number ``session``."""

    session: int


@dataclass(frozen=True)
class RevokeUser:
    """Revoke every session of user number ``user``."""

    user: int


@dataclass(frozen=True)
class ListSessions:
    """List user number ``user``'s live sessions."""

    user: int


@dataclass(frozen=True)
class Purge:
    """Purge dead sessions (stores that have ``purge`` only)."""


Op = Create | Refresh | Advance | Revoke | RevokeUser | ListSessions | Purge | Bind


@dataclass
class _Tracked:
    session_id: str
    user_id: str
    chain: list[bytes]  # the refresh secrets, generation by generation


class Replay:
    """Applies operations to ``store`` and to the reference model; asserts equal answers.

    Ids carry a tag unique to the replay, so many replays can share one store,
    and characters that key-value stores must handle as plain bytes (a colon,
    braces that look like a Redis Cluster hash tag, non-ASCII).
    """

    def __init__(self, store: Any, *, start: float = 1_700_000_000.25) -> None:
        self.store = store
        self.now = start
        self.tag = secrets.token_hex(6)
        self.model: dict[str, StoredSession] = {}
        self.sessions: list[_Tracked] = []
        self.outcomes: list[RotationOutcome] = []
        self.users: set[int] = set()
        self._strangers = 0

    def user_id(self, user: int) -> str:
        return f"user:{self.tag}:{user}{{é}}"

    def _secret(self, *parts: object) -> bytes:
        return hashlib.sha256(repr((self.tag, *parts)).encode()).digest()

    # The reference: what MemoryStore does, spelled out on StoredSession values.

    def _expect_rotate(self, rotation: Rotation) -> RotationResult:
        stored = self.model.get(rotation.session_id)
        if stored is None:
            return RotationResult(RotationOutcome.UNKNOWN_SESSION)
        result, state = apply_rotation(stored, rotation)
        if state is None:
            del self.model[rotation.session_id]
        else:
            self.model[rotation.session_id] = state
        return result

    def _expect_list(self, user_id: str) -> list[SessionInfo]:
        infos = [s.info for s in self.model.values() if s.info.user_id == user_id]
        live = [i for i in infos if i.is_live(self.now)]
        return sorted(live, key=lambda i: (i.created_at, i.session_id))

    def _delete_where(self, predicate: Any) -> int:
        doomed = [sid for sid, s in self.model.items() if predicate(s)]
        for sid in doomed:
            del self.model[sid]
        return len(doomed)

    def _pick(self, index: int) -> _Tracked | None:
        return self.sessions[index % len(self.sessions)] if self.sessions else None

    def apply(self, op: Op) -> object:
        """Apply one operation to both sides; returns the store's (checked) answer."""
        if isinstance(op, Advance):
            self.now += op.seconds
            return None
        if isinstance(op, Create):
            n = len(self.sessions)
            sid = f"s:{self.tag}:{n}{{ü}}"
            user_id = self.user_id(op.user)
            secret = self._secret("session", n)
            info = SessionInfo(
                session_id=sid,
                user_id=user_id,
                created_at=self.now,
                refreshed_at=self.now,
                idle_expires_at=self.now + op.idle,
                absolute_expires_at=self.now + op.absolute,
                metadata=op.metadata,
            )
            new = NewSession(info, verifier_of(secret))
            self.store.create(new)
            self.model[sid] = StoredSession.new(new)
            self.sessions.append(_Tracked(sid, user_id, [secret]))
            self.users.add(op.user)
            return None
        if isinstance(op, Refresh):
            return self._refresh(op)
        if isinstance(op, Revoke):
            tracked = self._pick(op.session)
            if tracked is None:
                return None
            got = self.store.revoke(tracked.session_id)
            expected = self.model.pop(tracked.session_id, None) is not None
            assert got == expected, f"{op}: store said {got}, reference {expected}"
            return got
        if isinstance(op, RevokeUser):
            user_id = self.user_id(op.user)
            got_count = self.store.revoke_user(user_id)
            expected_count = self._delete_where(lambda s: s.info.user_id == user_id)
            assert got_count == expected_count, f"{op}: store {got_count}, ref {expected_count}"
            return got_count
        if isinstance(op, ListSessions):
            user_id = self.user_id(op.user)
            listed = list(self.store.sessions_of(user_id, now=self.now))
            expected_list = self._expect_list(user_id)
            assert listed == expected_list, (
                f"{op} at {self.now}: store {listed}, ref {expected_list}"
            )
            return listed
        if isinstance(op, Bind):
            tracked = self._pick(op.session)
            if tracked is None:
                return None
            bound = self.store.bind_device(tracked.session_id, op.key, now=self.now)
            stored = self.model.get(tracked.session_id)
            expected_info = None
            if stored is not None:
                expected_info, state = apply_binding(stored, op.key, self.now)
                if state is not None:
                    self.model[tracked.session_id] = state
            assert bound == expected_info, f"{op}: store {bound}, reference {expected_info}"
            return bound
        if isinstance(op, Purge):
            purged = self.store.purge(now=self.now)
            expected_purged = self._delete_where(lambda s: not s.info.is_live(self.now))
            assert purged == expected_purged, f"{op}: store {purged}, ref {expected_purged}"
            return purged
        raise TypeError(op)

    def _refresh(self, op: Refresh) -> RotationResult | None:
        tracked = self._pick(op.session)
        if tracked is None:
            return None
        chain = tracked.chain
        if op.token == "current":
            presented = chain[-1]
        elif op.token == "previous" and len(chain) >= 2:
            presented = chain[-2]
        elif op.token == "older" and len(chain) >= 3:
            presented = chain[-3]
        else:
            self._strangers += 1
            presented = self._secret("stranger", self._strangers)
        successor = derive_successor(presented, op.salt)
        rotation = Rotation(
            session_id=tracked.session_id,
            presented=verifier_of(presented),
            successor=verifier_of(successor),
            salt=op.salt,
            now=self.now,
            idle_seconds=op.idle,
            grace_seconds=op.grace,
            device_key=op.device,
        )
        got = self.store.rotate(rotation)
        expected = self._expect_rotate(rotation)
        # RotationResult equality covers the outcome, the session and the GRACE salt.
        assert got == expected, f"{op} at {self.now}: store {got}, reference {expected}"
        self.outcomes.append(got.outcome)
        if got.outcome is RotationOutcome.ROTATED:
            chain.append(successor)
        elif got.outcome is RotationOutcome.GRACE:
            # What the core does with the salt: the client lands on the current secret.
            assert got.salt is not None
            assert derive_successor(presented, got.salt) == chain[-1]
        return got

    def run(self, ops: Sequence[Op]) -> None:
        """Apply every operation, then compare every user's listing once more."""
        for op in ops:
            self.apply(op)
        for user in sorted(self.users):
            self.apply(ListSessions(user))


def _salt(n: int) -> bytes:
    # Salts with NUL and 0xFF bytes: values must be stored as raw bytes.
    return bytes([0, 255, n % 256]) + hashlib.sha256(bytes([n])).digest()[:13]


def scripted_ops(*, with_purge: bool) -> list[Op]:
    """A fixed sequence that reaches every RotationOutcome (the comments say which)."""
    ops: list[Op] = [
        Create(0, 1800.0, 86400.0, {"user_agent": "Firefox/128 ü", "ip": "2001:db8::1"}),
        Create(0, 1800.0, 3600.0),  # session 1
        Create(1, 1800.0, 86400.0),  # session 2
        ListSessions(0),
        Refresh(1, "current", _salt(1)),  # ROTATED: generation 1
        Advance(10.0),
        Refresh(1, "previous", _salt(2)),  # GRACE: the salt of rotation 1
        Refresh(1, "current", _salt(3)),  # ROTATED: generation 2
        Advance(30.0),
        Refresh(1, "previous", _salt(4), grace=30.0),  # REUSED_PREVIOUS at exactly 30 s
        Refresh(1, "current", _salt(5)),  # UNKNOWN_SESSION: revoked by the reuse
        Refresh(2, "current", _salt(6)),  # ROTATED
        Refresh(2, "current", _salt(7)),  # ROTATED: generation 2
        Refresh(2, "older", _salt(8)),  # REUSED_UNKNOWN: generation 0 came back
        Create(1, 60.0, 86400.0),  # session 3
        Advance(60.0),
        Refresh(3, "current", _salt(9)),  # EXPIRED: idle, exactly at the boundary
        Create(1, 1800.0, 100.0),  # session 4: absolute lifetime shorter than idle
        Advance(50.0),
        Refresh(4, "current", _salt(10), idle=1800.0),  # ROTATED, idle capped at absolute
        Advance(49.5),
        Refresh(4, "current", _salt(11)),  # ROTATED, still capped
        Advance(0.5),
        Refresh(4, "current", _salt(12)),  # EXPIRED: absolute lifetime over
        Create(2, 1800.0, 86400.0),  # session 5
        Refresh(5, "stranger", _salt(13)),  # REUSED_UNKNOWN: never rotated, foreign secret
        Create(0, 1800.0, 86400.0, {"device": "phone"}),  # sessions 6 and 7: same
        Create(0, 1800.0, 86400.0, {"device": "tablet"}),  # created_at, ordered by id
        ListSessions(0),
        Advance(1799.0),
        Refresh(6, "current", _salt(14), idle=0.25),  # ROTATED with a tiny idle renewal
        ListSessions(0),
        Advance(0.5),
        ListSessions(0),  # session 6 is dead but not deleted yet
        Create(2, 1800.0, 86400.0),  # session 8
        Bind(8, '{"kty":"EC","x":"k1"}'),
        Bind(8, '{"kty":"EC","x":"k2"}'),  # keeps its first key
        Refresh(8, "current", _salt(15)),  # DEVICE_BOUND: no key
        Refresh(8, "current", _salt(16), device='{"kty":"EC","x":"k2"}'),  # DEVICE_BOUND
        Refresh(8, "current", _salt(17), device='{"kty":"EC","x":"k1"}'),  # ROTATED with it
        ListSessions(2),
    ]
    if with_purge:
        ops += [Purge(), ListSessions(0)]
    ops += [
        Revoke(0),
        Revoke(0),  # already gone
        RevokeUser(0),
        RevokeUser(0),
        ListSessions(0),
        RevokeUser(1),
    ]
    return ops


# --------------------------------------------------------------------------- hypothesis

_ADVANCES = st.one_of(
    st.sampled_from([0.0, 0.25, 1.0, 29.75, 30.0, 31.0, 59.5, 60.0, 600.0, 1799.0, 1800.0]),
    st.floats(min_value=0.0, max_value=90_000.0, allow_nan=False, allow_infinity=False),
)


def op_lists(
    *, with_purge: bool, metadata_text: st.SearchStrategy[str]
) -> st.SearchStrategy[list[Op]]:
    """Random operation sequences over three users and the sessions they open."""
    users = st.integers(0, 2)
    sessions = st.integers(0, 30)
    metadata = st.dictionaries(metadata_text, metadata_text, max_size=2)
    ops = [
        st.builds(
            Create,
            users,
            st.sampled_from([1.0, 60.0, 1800.0]),
            st.sampled_from([30.0, 3600.0, 86400.0]),
            metadata,
        ),
        st.builds(
            Refresh,
            sessions,
            st.sampled_from(["current", "current", "previous", "older", "stranger"]),
            st.binary(min_size=16, max_size=16),
            st.sampled_from([0.5, 60.0, 1800.0]),
            st.sampled_from([0.0, 30.0, 60.0]),
        ),
        st.builds(Advance, _ADVANCES),
        st.builds(Revoke, sessions),
        st.builds(RevokeUser, users),
        st.builds(ListSessions, users),
    ]
    if with_purge:
        ops.append(st.just(Purge()))
    return st.lists(st.one_of(*ops), max_size=40)


ANY_TEXT = st.text(max_size=8)
"""Any str, lone surrogates included (stores that keep metadata as ASCII JSON)."""

JSONB_TEXT = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8
)
"""What PostgreSQL's jsonb can hold: no NUL, no lone surrogates."""
