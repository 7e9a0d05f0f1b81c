"""The session store conformance kit.

Adapter authors call :func:`check_session_store` or
:func:`check_async_session_store` from their own test suite with a factory for
their store; it raises :class:`AssertionError` with an explanation on the
first breach of the :class:`~tokenflow.ports.SessionStore` contract.

The kit needs Hypothesis (``pip install 'tokenflow[testing]'``), imported only
when a check runs.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .._sessions import (
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    StoredSession,
    apply_rotation,
    derive_successor,
    verifier_of,
)

if TYPE_CHECKING:
    from ..ports import AsyncSessionStore, SessionStore

__all__ = ["check_async_session_store", "check_session_store"]

_T = TypeVar("_T")

# Every check is written once, as a scenario: a generator that yields the
# store calls it needs (one ``_Call``, or a ``_Race`` of calls to release
# together) and receives their outcomes, the way tokenflow's core is written.
# The sync driver answers with direct calls and threads, the async driver
# with awaits and tasks; no check exists twice. The Hypothesis state machine
# is synchronous, so for an async store it runs in a worker thread and hands
# each call to the caller's event loop, where the store lives.

_T0 = 1_700_000_000.0
"""Logical start time of every scenario."""
_CALL_TIMEOUT = 60.0
"""Seconds a single store call may take before the kit calls it hung."""


@dataclass(frozen=True, slots=True)
class _Call:
    """One store call: ``store.<method>(*args, **kwargs)``."""

    method: str
    args: tuple[object, ...]
    kwargs: Mapping[str, object] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Race:
    """Calls to start at the same instant, on their own thread or task each."""

    calls: tuple[_Call, ...]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a call returned or raised."""

    value: object = None
    error: Exception | None = None


_Step = _Call | _Race
_Ops = Generator[_Step, Any, _T]
"""A scenario: yields steps, receives an ``_Outcome`` per ``_Call`` and a list
of them per ``_Race``, returns its result."""


def _fail(message: str) -> NoReturn:
    # Not ``assert``: the kit must still check under ``python -O``.
    raise AssertionError(message)


def _unwrap(outcome: _Outcome, what: str) -> object:
    if outcome.error is not None:
        raise AssertionError(f"{what} raised {outcome.error!r}") from outcome.error
    return outcome.value


def _typed(value: object, kind: type[_T], what: str) -> _T:
    if not isinstance(value, kind):
        _fail(f"{what} returned {value!r}, not a {kind.__name__}")
    return value


# Store operations as scenario steps, each checking the type of its answer.


def _create(session: NewSession, what: str) -> _Ops[None]:
    _unwrap((yield _Call("create", (session,))), what)


def _rotate(rotation: Rotation, what: str) -> _Ops[RotationResult]:
    value = _unwrap((yield _Call("rotate", (rotation,))), what)
    return _typed(value, RotationResult, what)


def _revoke(session_id: str, what: str) -> _Ops[bool]:
    value = _unwrap((yield _Call("revoke", (session_id,))), what)
    return _typed(value, bool, what)


def _revoke_user(user_id: str, what: str) -> _Ops[int]:
    value = _unwrap((yield _Call("revoke_user", (user_id,))), what)
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(f"{what} returned {value!r}, not an int")
    return value


def _purge(now: float, what: str) -> _Ops[int]:
    value = _unwrap((yield _Call("purge", (), {"now": now})), what)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(f"{what} returned {value!r}, not a count (an int >= 0)")
    return value


def _has_purge(store: object) -> bool:
    """Whether the store offers the optional ``purge(now=...)``."""
    return callable(getattr(store, "purge", None))


def _sessions_of(user_id: str, now: float, what: str) -> _Ops[list[SessionInfo]]:
    value = _unwrap((yield _Call("sessions_of", (user_id,), {"now": now})), what)
    if not isinstance(value, Sequence):
        _fail(f"{what} returned {value!r}, not a sequence")
    return [_typed(info, SessionInfo, f"an item of {what}") for info in value]


# Drivers.


def _call_sync(store: SessionStore, call: _Call) -> _Outcome:
    try:
        return _Outcome(getattr(store, call.method)(*call.args, **call.kwargs))
    except Exception as exc:
        return _Outcome(error=exc)


async def _call_async(store: AsyncSessionStore, call: _Call) -> _Outcome:
    try:
        return _Outcome(await getattr(store, call.method)(*call.args, **call.kwargs))
    except Exception as exc:
        return _Outcome(error=exc)


def _race_threads(store: SessionStore, calls: Sequence[_Call]) -> list[_Outcome]:
    """Run each call on its own thread, all released by one barrier."""
    barrier = threading.Barrier(len(calls), timeout=_CALL_TIMEOUT)
    outcomes: list[_Outcome | None] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError as exc:
            outcomes[i] = _Outcome(error=exc)
            return
        outcomes[i] = _call_sync(store, calls[i])

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(_CALL_TIMEOUT * 2)
    done = [o for o in outcomes if o is not None]
    if len(done) != len(calls):
        _fail(f"{len(calls) - len(done)} of {len(calls)} concurrent store calls never returned")
    return done


async def _race_tasks(store: AsyncSessionStore, calls: Sequence[_Call]) -> list[_Outcome]:
    """Run each call in its own task; none starts its call before all are waiting."""
    # A hand-made barrier: asyncio.Barrier needs Python 3.11.
    ready = asyncio.Event()
    waiting = 0

    async def run(call: _Call) -> _Outcome:
        nonlocal waiting
        waiting += 1
        if waiting == len(calls):
            ready.set()
        await ready.wait()
        return await _call_async(store, call)

    gathered = asyncio.gather(*(run(c) for c in calls))
    try:
        return list(await asyncio.wait_for(gathered, _CALL_TIMEOUT * 2))
    except TimeoutError:
        _fail(f"{len(calls)} concurrent store calls did not all return")


def _drive(
    ops: _Ops[_T],
    call: Callable[[_Call], _Outcome],
    race: Callable[[Sequence[_Call]], list[_Outcome]] | None = None,
) -> _T:
    """Run a scenario synchronously: ``call`` makes one store call, ``race`` several at once."""
    reply: object = None
    while True:
        try:
            step = ops.send(reply)
        except StopIteration as stop:
            result: _T = stop.value
            return result
        if isinstance(step, _Call):
            reply = call(step)
        elif race is not None:
            reply = race(step.calls)
        else:
            raise TypeError("this driver runs no races")


async def _adrive(ops: _Ops[_T], store: AsyncSessionStore) -> _T:
    reply: object = None
    while True:
        try:
            step = ops.send(reply)
        except StopIteration as stop:
            result: _T = stop.value
            return result
        if isinstance(step, _Race):
            reply = await _race_tasks(store, step.calls)
        else:
            reply = await _call_async(store, step)


class _Ids:
    """Fresh names and verifiers for one scenario.

    Every scenario works under a random prefix, so stores need not start
    empty: a factory may hand the kit the same store every time, or a store
    already holding other data, and no scenario ever sees another's sessions.
    Verifiers are distinct by construction (a collision would make "current"
    and "previous" ambiguous, which never happens with real 256-bit secrets).
    """

    def __init__(self) -> None:
        self.prefix = f"tfcheck-{secrets.token_hex(6)}"
        self._n = 0

    def _next(self) -> int:
        self._n += 1
        return self._n

    def user(self, i: int) -> str:
        return f"{self.prefix}-user{i}"

    def session(self, tag: str = "s") -> str:
        # The suffix hashes the counter so that ids do not sort in creation
        # order (a store listing by insertion order gets caught), yet depends
        # on nothing random: Hypothesis replays a failure to the same order.
        suffix = hashlib.sha256(str(self._next()).encode()).hexdigest()[:10]
        return f"{self.prefix}-{tag}-{suffix}"

    def secret(self) -> bytes:
        return hashlib.sha256(f"{self.prefix}/secret/{self._next()}".encode()).digest()

    def verifier(self) -> bytes:
        return verifier_of(self.secret())

    def salt(self) -> bytes:
        return hashlib.sha256(f"{self.prefix}/salt/{self._next()}".encode()).digest()[:16]

    def new_session(
        self,
        user_id: str,
        now: float,
        *,
        idle: float,
        absolute: float,
        metadata: Mapping[str, str] | None = None,
        session_id: str | None = None,
        verifier: bytes | None = None,
    ) -> NewSession:
        info = SessionInfo(
            session_id=session_id if session_id is not None else self.session(),
            user_id=user_id,
            created_at=now,
            refreshed_at=now,
            idle_expires_at=now + idle,
            absolute_expires_at=now + absolute,
            metadata=dict(metadata) if metadata else {},
        )
        return NewSession(info, verifier if verifier is not None else self.verifier())


_WHY = {
    RotationOutcome.ROTATED: "the presented verifier is the current one",
    RotationOutcome.GRACE: (
        "the presented verifier is the immediate predecessor and "
        "now - rotated_at < grace_seconds; GRACE changes nothing and carries the stored salt"
    ),
    RotationOutcome.REUSED_PREVIOUS: (
        "the presented verifier is the immediate predecessor, outside the grace window"
    ),
    RotationOutcome.REUSED_UNKNOWN: "the presented verifier is neither current nor predecessor",
    RotationOutcome.EXPIRED: "now is past the session's idle or absolute expiry",
    RotationOutcome.UNKNOWN_SESSION: "the store holds no such session",
    RotationOutcome.DEVICE_BOUND: (
        "the session is bound to a device key and the rotation does not carry that key; "
        "DEVICE_BOUND changes nothing"
    ),
}


def _info_diff(expected: SessionInfo | None, got: SessionInfo | None) -> str:
    if expected is None or got is None:
        return f"{got!r}, expected {expected!r}"
    diffs = [
        f"{f.name}={getattr(got, f.name)!r} (expected {getattr(expected, f.name)!r})"
        for f in dataclasses.fields(SessionInfo)
        if getattr(got, f.name) != getattr(expected, f.name)
    ]
    return ", ".join(diffs) or "equal"


def _result_diff(expected: RotationResult, got: RotationResult) -> str:
    parts = []
    if got.outcome is not expected.outcome:
        parts.append(
            f"outcome {got.outcome.name}, expected {expected.outcome.name} "
            f"({_WHY[expected.outcome]})"
        )
    if got.session != expected.session:
        parts.append(f"session differs: {_info_diff(expected.session, got.session)}")
    if got.salt != expected.salt:
        if expected.salt is None:
            parts.append("a salt was returned; only GRACE carries one")
        elif got.salt is None:
            parts.append("no salt was returned; GRACE must carry the stored one")
        else:
            parts.append("the salt differs from the one stored by the rotation being replayed")
    return "; ".join(parts)


def _check_rotation(
    got: RotationResult, expected: RotationResult, what: str, *, may_forget: bool = False
) -> None:
    """Compare with the reference answer. ``may_forget``: an expired session
    may already have been dropped by the store, which then rightly answers
    UNKNOWN_SESSION instead of EXPIRED."""
    if got == expected:
        return
    if may_forget and got == RotationResult(RotationOutcome.UNKNOWN_SESSION):
        return
    _fail(f"{what}: {_result_diff(expected, got)}")


def _rotation(
    session_id: str,
    presented: bytes,
    ids: _Ids,
    now: float,
    *,
    idle: float = 1800.0,
    grace: float = 60.0,
) -> Rotation:
    return Rotation(session_id, presented, ids.verifier(), ids.salt(), now, idle, grace)


def _contract_scenario(ids: _Ids) -> _Ops[None]:
    """(c) The contract, one rule at a time, with explicit expectations."""
    t0 = _T0
    alice, bob = ids.user(0), ids.user(1)
    metadata = {"user_agent": "tokenflow conformance kit", "note": 'ünïcödé ☃ "q" \\ {}'}

    # create, then read back through sessions_of: every field round-trips.
    a = ids.new_session(alice, t0, idle=1800.0, absolute=86_400.0, metadata=metadata)
    yield from _create(a, "create(new session)")
    listed = yield from _sessions_of(alice, t0, "sessions_of after create")
    if listed != [a.info]:
        _fail(
            "sessions_of must list a created session with every field unchanged "
            f"(floats exact, metadata equal); got {listed!r}, expected {[a.info]!r}"
        )

    # A duplicate id is refused and changes nothing: silently overwriting would
    # hand an existing session to whoever created the duplicate.
    dup = ids.new_session(bob, t0 + 1, idle=10.0, absolute=20.0, session_id=a.info.session_id)
    outcome = yield _Call("create", (dup,))
    if outcome.error is None:
        _fail("create accepted a session id that already exists; it must raise")
    if (yield from _sessions_of(alice, t0, "sessions_of after duplicate")) != [a.info]:
        _fail("a refused duplicate create changed the existing session")
    if (yield from _sessions_of(bob, t0 + 1, "sessions_of after duplicate")) != []:
        _fail("a refused duplicate create left a session behind")

    # Unknown session.
    ghost = _rotation(ids.session("ghost"), ids.verifier(), ids, t0)
    got = yield from _rotate(ghost, "rotate(never-created session)")
    _check_rotation(got, RotationResult(RotationOutcome.UNKNOWN_SESSION), "rotate(unknown id)")

    # Current → ROTATED; the predecessor inside the window → GRACE with the salt.
    r1 = _rotation(a.info.session_id, a.verifier, ids, t0 + 10, idle=600.0, grace=30.0)
    rotated = replace(a.info, refreshed_at=t0 + 10, idle_expires_at=t0 + 10 + 600.0, generation=1)
    got = yield from _rotate(r1, "rotate(current verifier)")
    _check_rotation(got, RotationResult(RotationOutcome.ROTATED, rotated), "rotate(current)")
    replay = replace(r1, successor=ids.verifier(), salt=ids.salt(), now=t0 + 20)
    got = yield from _rotate(replay, "rotate(predecessor, inside grace)")
    grace = RotationResult(RotationOutcome.GRACE, rotated, r1.salt)
    _check_rotation(got, grace, "rotate(predecessor 10 s after rotation, grace_seconds=30)")
    listed = yield from _sessions_of(alice, t0 + 20, "sessions_of after GRACE")
    if listed != [rotated]:
        _fail(f"GRACE must leave the session unchanged; sessions_of gives {listed!r}")

    # Predecessor outside the window → REUSED_PREVIOUS, and the session is gone.
    late = replace(replay, now=t0 + 10 + 30.0)
    got = yield from _rotate(late, "rotate(predecessor, grace over)")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.REUSED_PREVIOUS),
        "rotate(predecessor exactly grace_seconds after the rotation)",
    )
    after = replace(r1, successor=ids.verifier(), presented=r1.successor, now=t0 + 41)
    got = yield from _rotate(after, "rotate(current verifier) after reuse")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.UNKNOWN_SESSION),
        "a session revoked by REUSED_PREVIOUS must be deleted, but rotating its current verifier",
    )

    # grace_seconds=0: the predecessor is always reuse, even at the same instant.
    b = ids.new_session(alice, t0, idle=1800.0, absolute=86_400.0)
    yield from _create(b, "create")
    rb = _rotation(b.info.session_id, b.verifier, ids, t0 + 5, grace=0.0)
    got = yield from _rotate(rb, "rotate(current, grace_seconds=0)")
    if got.outcome is not RotationOutcome.ROTATED:
        _fail(f"rotate(current verifier) gave {got.outcome.name}, expected ROTATED")
    same_instant = replace(rb, successor=ids.verifier(), salt=ids.salt())
    got = yield from _rotate(same_instant, "rotate(predecessor, grace_seconds=0)")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.REUSED_PREVIOUS),
        "with grace_seconds=0, rotate(predecessor at the very instant of its rotation)",
    )

    # An older generation → REUSED_UNKNOWN with the generation the store held
    # (2: the flow tells a store that lost rotations from a replay with it),
    # and the session is gone.
    c = ids.new_session(alice, t0, idle=1800.0, absolute=86_400.0)
    yield from _create(c, "create")
    rc1 = _rotation(c.info.session_id, c.verifier, ids, t0 + 1)
    rc2 = _rotation(c.info.session_id, rc1.successor, ids, t0 + 2)
    for r in (rc1, rc2):
        got = yield from _rotate(r, "rotate(current verifier)")
        if got.outcome is not RotationOutcome.ROTATED:
            _fail(f"rotate(current verifier) gave {got.outcome.name}, expected ROTATED")
    oldest = _rotation(c.info.session_id, c.verifier, ids, t0 + 3)
    got = yield from _rotate(oldest, "rotate(generation 0 after two rotations)")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.REUSED_UNKNOWN, generation=2),
        "rotate(two generations old)",
    )
    gone = _rotation(c.info.session_id, rc2.successor, ids, t0 + 4)
    got = yield from _rotate(gone, "rotate(current) after REUSED_UNKNOWN")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.UNKNOWN_SESSION),
        "a session revoked by REUSED_UNKNOWN must be deleted, but rotating its current verifier",
    )

    # Sliding renewal never passes the absolute expiry.
    d = ids.new_session(alice, t0, idle=60.0, absolute=100.0)
    yield from _create(d, "create")
    rd = _rotation(d.info.session_id, d.verifier, ids, t0 + 50, idle=1000.0)
    capped = replace(
        d.info, refreshed_at=t0 + 50, idle_expires_at=d.info.absolute_expires_at, generation=1
    )
    got = yield from _rotate(rd, "rotate(idle_seconds beyond the absolute expiry)")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.ROTATED, capped),
        "idle renewal must be capped at absolute_expires_at; rotate",
    )

    # Expiry: idle, then absolute. A store that already dropped the session
    # may say UNKNOWN_SESSION; afterwards it must be gone either way.
    for label, idle, absolute in (("idle", 30.0, 86_400.0), ("absolute", 1800.0, 30.0)):
        e = ids.new_session(alice, t0, idle=idle, absolute=absolute)
        yield from _create(e, "create")
        at = t0 + 30.0
        re = _rotation(e.info.session_id, e.verifier, ids, at)
        got = yield from _rotate(re, f"rotate(at its {label} expiry)")
        _check_rotation(
            got,
            RotationResult(RotationOutcome.EXPIRED),
            f"rotate(exactly at the {label} expiry)",
            may_forget=True,
        )
        again = replace(re, successor=ids.verifier(), salt=ids.salt())
        got = yield from _rotate(again, "rotate after EXPIRED")
        _check_rotation(
            got,
            RotationResult(RotationOutcome.UNKNOWN_SESSION),
            "an expired session must be deleted, but rotating it again",
        )

    # revoke reports whether the session existed.
    f = ids.new_session(bob, t0, idle=1800.0, absolute=86_400.0)
    yield from _create(f, "create")
    if (yield from _revoke(f.info.session_id, "revoke(existing)")) is not True:
        _fail("revoke of an existing session must return True")
    if (yield from _revoke(f.info.session_id, "revoke(again)")) is not False:
        _fail("revoke of an already revoked session must return False")
    if (yield from _revoke(ids.session("ghost"), "revoke(unknown)")) is not False:
        _fail("revoke of a never-created session must return False")
    got = yield from _rotate(_rotation(f.info.session_id, f.verifier, ids, t0 + 1), "rotate")
    _check_rotation(
        got, RotationResult(RotationOutcome.UNKNOWN_SESSION), "rotate of a revoked session"
    )

    # revoke_user counts and touches nobody else.
    carol, dave = ids.user(2), ids.user(3)
    for _ in range(3):
        yield from _create(ids.new_session(carol, t0, idle=1800.0, absolute=86_400.0), "create")
    kept = ids.new_session(dave, t0, idle=1800.0, absolute=86_400.0)
    yield from _create(kept, "create")
    if (n := (yield from _revoke_user(carol, "revoke_user"))) != 3:
        _fail(f"revoke_user of a user with 3 sessions returned {n}")
    if (yield from _sessions_of(carol, t0, "sessions_of after revoke_user")) != []:
        _fail("sessions_of lists sessions of a user after revoke_user")
    if (yield from _sessions_of(dave, t0, "sessions_of")) != [kept.info]:
        _fail("revoke_user of one user removed another user's session")
    if (n := (yield from _revoke_user(carol, "revoke_user(again)"))) != 0:
        _fail(f"revoke_user of a user without sessions returned {n}")

    # sessions_of: live only, oldest first, ties broken by session id.
    erin = ids.user(4)
    late_ = ids.new_session(
        erin, t0 + 5, idle=1800.0, absolute=86_400.0, session_id=ids.session("a")
    )
    tie_z = ids.new_session(
        erin, t0 + 1, idle=1800.0, absolute=86_400.0, session_id=ids.session("z")
    )
    tie_m = ids.new_session(
        erin, t0 + 1, idle=1800.0, absolute=86_400.0, session_id=ids.session("m")
    )
    idle_dead = ids.new_session(erin, t0, idle=9.0, absolute=86_400.0)
    abs_dead = ids.new_session(erin, t0, idle=1800.0, absolute=10.0)
    for s in (late_, tie_z, idle_dead, tie_m, abs_dead):
        yield from _create(s, "create")
    listed = yield from _sessions_of(erin, t0 + 10, "sessions_of")
    expected = [tie_m.info, tie_z.info, late_.info]
    if listed != expected:
        _fail(
            "sessions_of must list live sessions only, by (created_at, session_id); got ids "
            f"{[i.session_id for i in listed]}, expected {[i.session_id for i in expected]}"
        )


# Metadata the contract promises to round-trip exactly: any keys and values
# that are ``str`` encodable as UTF-8 (every Unicode scalar value). U+0000 is
# the one a PostgreSQL text or jsonb value cannot hold; the others are where
# hand-written escaping tends to go wrong.
_AWKWARD_METADATA: Mapping[str, str] = {
    "nul": "a\x00b",
    "\x00": "key with a NUL",
    "astral": "\U0001f600 \U0010ffff",
    "controls": "\x01\x1f\x7f\x80\x9f",
    "separators": "\u2028\u2029\ufeff\uffff",
    "json": '{"a": [1, "\\u0000"]}\\',
    "": "",
}

# Stored times the reference rule must be followed on, whatever their value:
# ``SessionInfo.is_live`` compares with ``<``, so a NaN expiry is never live.
_AWKWARD_TIMES = (
    float("nan"),
    float("inf"),
    float("-inf"),
    1.7976931348623157e308,
    -1.7976931348623157e308,
    1e300,
    -1.0,
    0.0,
    5e-324,
    _T0 - 0.5,
    _T0,
    _T0 + 0.5,
)
# When those sessions are listed and rotated: finite clocks, far and near.
_AWKWARD_NOWS = (_T0, -1.0, -1e300, 1e300)


def _values_scenario(ids: _Ids) -> _Ops[None]:
    """(d) Awkward stored values: every string round-trips, and every stored
    time (NaN, infinities, huge, negative) is judged as the reference rule does."""
    t0 = _T0
    user = ids.user(0)
    s = ids.new_session(user, t0, idle=1800.0, absolute=86_400.0, metadata=_AWKWARD_METADATA)
    yield from _create(s, "create(session whose metadata holds U+0000)")
    listed = yield from _sessions_of(user, t0, "sessions_of(metadata with U+0000)")
    if listed != [s.info]:
        shown = dict(listed[0].metadata) if len(listed) == 1 else listed
        _fail(
            "metadata must round-trip exactly, for any str that encodes as UTF-8 (U+0000 "
            f"included); sessions_of gives {shown!r}, expected {dict(s.info.metadata)!r}"
        )
    r = _rotation(s.info.session_id, s.verifier, ids, t0 + 1, idle=600.0)
    rotated = replace(s.info, refreshed_at=t0 + 1, idle_expires_at=t0 + 601, generation=1)
    got = yield from _rotate(r, "rotate(session with awkward metadata)")
    _check_rotation(
        got, RotationResult(RotationOutcome.ROTATED, rotated), "rotate(awkward metadata)"
    )

    # Each awkward value as either expiry beside a far one, and the awkward
    # values paired with each other, for one user per clock reading: first
    # listed, then each session rotated once, both checked against the rule.
    far = 1e301
    pairs = [(v, far) for v in _AWKWARD_TIMES] + [(far, v) for v in _AWKWARD_TIMES]
    pairs += [(v, v) for v in _AWKWARD_TIMES[:6]]
    pairs += [(v, w) for v in _AWKWARD_TIMES[:3] for w in _AWKWARD_TIMES[:3] if v is not w]
    for n, now in enumerate(_AWKWARD_NOWS):
        owner = ids.user(10 + n)
        held: list[NewSession] = []
        for k, (idle_at, absolute_at) in enumerate(pairs):
            # created_at varies too (and orders the listing); it is never NaN.
            created = _AWKWARD_TIMES[1 + k % (len(_AWKWARD_TIMES) - 1)]
            info = SessionInfo(
                ids.session(),
                owner,
                created,
                created,
                idle_at,
                absolute_at,
                k % 3,
            )
            new = NewSession(info, ids.verifier())
            what = f"create(idle_expires_at={idle_at!r}, absolute_expires_at={absolute_at!r})"
            yield from _create(new, what)
            held.append(new)
        expected = sorted(
            (h.info for h in held if h.info.is_live(now)),
            key=lambda i: (i.created_at, i.session_id),
        )
        listed = yield from _sessions_of(owner, now, f"sessions_of(now={now!r})")
        if listed != expected:
            wrong = {i.session_id for i in listed} ^ {i.session_id for i in expected}
            times = {
                h.info.session_id: (h.info.idle_expires_at, h.info.absolute_expires_at)
                for h in held
            }
            _fail(
                f"sessions_of(now={now!r}) must list the sessions SessionInfo.is_live(now) "
                "calls live (now < idle_expires_at and now < absolute_expires_at, so a NaN "
                "expiry is never live), oldest first; it differs on sessions with "
                f"(idle, absolute) expiries {sorted(map(repr, (times[w] for w in wrong)))}"
                + ("" if wrong else " (in order or values)")
            )
        for k, h in enumerate(held):
            # Renewals from none to forever, so capping at the absolute expiry is exercised.
            idle = (0.0, 60.0, 1e9, float("inf"))[k % 4]
            rot = _rotation(h.info.session_id, h.verifier, ids, now, idle=idle)
            expected_result, _ = apply_rotation(StoredSession.new(h), rot)
            what = (
                f"rotate(now={now!r}, idle_seconds={idle!r}) of a session stored with "
                f"idle_expires_at={h.info.idle_expires_at!r}, "
                f"absolute_expires_at={h.info.absolute_expires_at!r}"
            )
            got = yield from _rotate(rot, what)
            _check_rotation(
                got,
                expected_result,
                what,
                may_forget=expected_result.outcome is RotationOutcome.EXPIRED,
            )
        yield from _revoke_user(owner, "revoke_user")


def _device_key(n: int) -> str:
    """A device key as stores see it: canonical JWK JSON text (any text will do)."""
    return json.dumps({"crv": "P-256", "kty": "EC", "x": f"x{n}", "y": f"y{n}"}, sort_keys=True)


def _bind(session_id: str, key: str, now: float, what: str) -> _Ops[SessionInfo | None]:
    value = _unwrap((yield _Call("bind_device", (session_id, key), {"now": now})), what)
    return None if value is None else _typed(value, SessionInfo, what)


def _key_of(session_id: str, now: float, what: str) -> _Ops[str | None]:
    value = _unwrap((yield _Call("device_key_of", (session_id,), {"now": now})), what)
    return None if value is None else _typed(value, str, what)


def _device_scenario(ids: _Ids, callers: int) -> _Ops[None]:
    """(d) Device binding: the first key wins, and a bound session rotates only with it."""
    t0 = _T0
    user = ids.user(0)
    a = ids.new_session(user, t0, idle=1800.0, absolute=86_400.0)
    sid = a.info.session_id
    yield from _create(a, "create")
    if (yield from _key_of(sid, t0, "device_key_of(unbound session)")) is not None:
        _fail("device_key_of must be None for a session that was never bound")
    if a.info.device_key is not None:
        _fail("kit bug: new sessions are unbound")

    first, second = _device_key(1), _device_key(2)
    bound = replace(a.info, device_key=first)
    got = yield from _bind(sid, first, t0 + 1, "bind_device(unbound, live)")
    if got != bound:
        _fail(f"bind_device must return the session with its new key; got {got!r}")
    if (yield from _key_of(sid, t0 + 1, "device_key_of(bound)")) != first:
        _fail("device_key_of must return the bound key")
    if (yield from _sessions_of(user, t0 + 1, "sessions_of(bound)")) != [bound]:
        _fail("sessions_of must report the device key of a bound session")
    again = yield from _bind(sid, second, t0 + 2, "bind_device(already bound, other key)")
    if again != bound:
        _fail(f"a session registered twice keeps its first key; bind_device gave {again!r}")
    if (yield from _key_of(sid, t0 + 2, "device_key_of after a second bind")) != first:
        _fail("a second bind_device replaced the first key")

    # A bound session: no key, another key, or any verifier without the key -> DEVICE_BOUND.
    refused = RotationResult(RotationOutcome.DEVICE_BOUND)
    bare = _rotation(sid, a.verifier, ids, t0 + 3)
    for rotation, what in (
        (bare, "rotate(current verifier, no device key)"),
        (replace(bare, device_key=second), "rotate(current verifier, another device key)"),
        (replace(bare, presented=ids.verifier()), "rotate(unknown verifier, no device key)"),
    ):
        _check_rotation((yield from _rotate(rotation, what)), refused, what)
    if (yield from _sessions_of(user, t0 + 3, "sessions_of after DEVICE_BOUND")) != [bound]:
        _fail("DEVICE_BOUND must change nothing: the session must stay as it was")
    keyed = replace(bare, device_key=first, now=t0 + 4)
    rotated = replace(bound, refreshed_at=t0 + 4, idle_expires_at=t0 + 4 + 1800.0, generation=1)
    got_rotation = yield from _rotate(keyed, "rotate(current verifier, its device key)")
    _check_rotation(
        got_rotation, RotationResult(RotationOutcome.ROTATED, rotated), "rotate(with its key)"
    )
    replay = replace(keyed, successor=ids.verifier(), salt=ids.salt(), now=t0 + 5)
    _check_rotation(
        (yield from _rotate(replay, "rotate(predecessor, its key, inside grace)")),
        RotationResult(RotationOutcome.GRACE, rotated, keyed.salt),
        "rotate(predecessor with its key inside the grace window)",
    )

    # Unknown and dead sessions bind nothing.
    if (yield from _bind(ids.session("ghost"), first, t0, "bind_device(unknown)")) is not None:
        _fail("bind_device must return None for an unknown session")
    short = ids.new_session(user, t0, idle=10.0, absolute=20.0)
    yield from _create(short, "create(short-lived)")
    if (yield from _bind(short.info.session_id, first, t0 + 10, "bind_device(expired)")):
        _fail("bind_device must return None for a session past its expiry (and bind nothing)")
    if (yield from _key_of(short.info.session_id, t0 + 10, "device_key_of(expired)")) is not None:
        _fail("device_key_of must be None for a session past its expiry")

    # Racing registrations: one key wins, and every caller is told which.
    c = ids.new_session(user, t0, idle=1800.0, absolute=86_400.0)
    yield from _create(c, "create(for racing binds)")
    keys = [_device_key(100 + i) for i in range(callers)]
    calls = tuple(_Call("bind_device", (c.info.session_id, k), {"now": t0 + 1}) for k in keys)
    outcomes = yield _Race(calls)
    what = f"{callers} concurrent bind_device() with different keys"
    answers = [_typed(_unwrap(o, what), SessionInfo, what).device_key for o in outcomes]
    if len(set(answers)) != 1 or answers[0] not in keys:
        _fail(f"{what}: every caller must be told the one key that won, got {answers!r}")
    if (yield from _key_of(c.info.session_id, t0 + 1, "device_key_of after race")) != answers[0]:
        _fail(f"{what}: the stored key is not the one reported")


def _race_scenario(ids: _Ids, callers: int, rounds: int) -> _Ops[None]:
    """(b) Concurrent rotations converge on one generation; revocation wins races."""
    user = ids.user(0)
    secret = ids.secret()
    s = ids.new_session(user, _T0, idle=86_400.0, absolute=1e7, verifier=verifier_of(secret))
    sid = s.info.session_id
    yield from _create(s, "create")
    now = _T0
    grace = 600.0
    for rnd in range(1, rounds + 1):
        now += 1.0
        rotations = []
        for _ in range(callers):
            salt = ids.salt()
            successor = verifier_of(derive_successor(secret, salt))
            rotations.append(
                Rotation(sid, verifier_of(secret), successor, salt, now, 86_400.0, grace)
            )
        outcomes = yield _Race(tuple(_Call("rotate", (r,)) for r in rotations))
        what = f"round {rnd}: {callers} concurrent rotate() presenting the current verifier"
        results = [_typed(_unwrap(o, what), RotationResult, what) for o in outcomes]
        winners = [i for i, r in enumerate(results) if r.outcome is RotationOutcome.ROTATED]
        if len(winners) != 1:
            counts = collections.Counter(r.outcome.name for r in results)
            _fail(
                f"{what}: {len(winners)} got ROTATED, exactly one must (the others GRACE); "
                f"outcomes {dict(counts)}. Rotation is not an atomic compare-and-set"
            )
        won = results[winners[0]]
        if won.session is None or won.session.generation != rnd:
            _fail(f"{what}: the winner's session has generation {won.session!r}, expected {rnd}")
        expected_grace = RotationResult(
            RotationOutcome.GRACE, won.session, rotations[winners[0]].salt
        )
        for i, r in enumerate(results):
            if i != winners[0]:
                _check_rotation(r, expected_grace, f"{what}, a losing call")
        # Every caller now derives the same successor from the salt it got.
        successor_secret = derive_successor(secret, rotations[winners[0]].salt)
        listed = yield from _sessions_of(user, now, "sessions_of after a race")
        if listed != [won.session]:
            _fail(f"{what}: afterwards sessions_of gives {listed!r}, expected {[won.session]!r}")
        secret = successor_secret

    # The converged successor is the one live generation: it rotates...
    now += 1.0
    final = _rotation(sid, verifier_of(secret), ids, now, idle=86_400.0, grace=grace)
    got = yield from _rotate(final, "rotate(successor derived by every racer)")
    if got.outcome is not RotationOutcome.ROTATED:
        _fail(f"after the races, the successor every caller derived gave {got.outcome.name}")
    # ...and what was current before it is now a predecessor: reuse, once the window is over.
    stale = _rotation(sid, verifier_of(secret), ids, now + grace, idle=86_400.0, grace=grace)
    got = yield from _rotate(stale, "rotate(predecessor after the grace window)")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.REUSED_PREVIOUS),
        "after the races, rotate(predecessor, grace over)",
    )
    current = _rotation(sid, final.successor, ids, now + grace, grace=grace)
    got = yield from _rotate(current, "rotate(current verifier) after reuse")
    _check_rotation(
        got,
        RotationResult(RotationOutcome.UNKNOWN_SESSION),
        "a session revoked by REUSED_PREVIOUS must be deleted, but rotating its current verifier",
    )

    # revoke_user racing rotations: no rotation may resurrect a revoked session.
    for rnd in range(1, rounds + 1):
        victim = ids.user(100 + rnd)
        sessions = [
            ids.new_session(victim, now, idle=86_400.0, absolute=1e7)
            for _ in range(max(1, callers - 1))
        ]
        for ns in sessions:
            yield from _create(ns, "create")
        rots = [
            _rotation(ns.info.session_id, ns.verifier, ids, now + 1, grace=grace) for ns in sessions
        ]
        # Which racer starts first depends on its place (under the GIL, the
        # thread that trips the barrier runs on): move revoke_user around.
        at = (rnd - 1) % (len(rots) + 1)
        calls = [_Call("rotate", (r,)) for r in rots]
        calls.insert(at, _Call("revoke_user", (victim,)))
        outcomes = yield _Race(tuple(calls))
        what = f"round {rnd}: revoke_user() racing {len(rots)} rotate()"
        count = _unwrap(outcomes.pop(at), what)
        if count != len(sessions):
            _fail(f"{what}: revoke_user returned {count!r}, but {len(sessions)} sessions existed")
        for rot, outcome in zip(rots, outcomes, strict=True):
            got = _typed(_unwrap(outcome, what), RotationResult, what)
            if got.outcome not in (RotationOutcome.ROTATED, RotationOutcome.UNKNOWN_SESSION):
                _fail(f"{what}: a rotation gave {got.outcome.name}, not ROTATED or UNKNOWN_SESSION")
            for presented in (rot.presented, rot.successor):
                probe = _rotation(rot.session_id, presented, ids, now + 2)
                got = yield from _rotate(probe, what)
                _check_rotation(
                    got,
                    RotationResult(RotationOutcome.UNKNOWN_SESSION),
                    f"{what}: afterwards, rotating a revoked session",
                )
        if (left := (yield from _sessions_of(victim, now + 2, what))) != []:
            _fail(f"{what}: sessions survived revoke_user: {left!r}")
        now += 10.0


_GRACES = (0.0, 0.5, 10.0, 60.0)


def _run_state_machine(
    open_store: Callable[[], Callable[[_Call], _Outcome]],
    max_examples: int,
    *,
    purges: bool = False,
) -> None:
    """(a) Random sequences of operations, each answer checked against a model.

    The model holds :class:`StoredSession` objects and applies
    :func:`apply_rotation`: the reference rule, so any disagreement is the
    store's. ``open_store`` makes a store and returns how to call it.
    ``purges``: the store has ``purge(now=...)``, which joins the rules.
    """
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        initialize,
        invariant,
        rule,
        run_state_machine_as_test,
    )

    users = 3
    # Any str that encodes as UTF-8: every Unicode scalar value, NUL included.
    text = st.text(st.characters(codec="utf-8"), max_size=12)
    # Mostly lifetimes that outlast a few steps: a session that dies at once
    # reaches none of the interesting rotation states.
    lifetimes = st.sampled_from([1800.0, 86_400.0, 120.0, 30.0, 1.0, 0.0]) | st.floats(1, 4000)
    renewals = st.sampled_from([1800.0, 1e6, 60.0, 1.0, 0.0])
    graces = st.sampled_from(_GRACES)
    # Small steps keep sessions alive through many operations; expiry is
    # reached on purpose by ``advance_clock``, exactly on the boundary.
    steps = st.sampled_from([0.0, 0.25, 1.0, 5.0, 30.0, 600.0]) | st.floats(0, 100)

    new_sessions = st.tuples(
        st.integers(0, users - 1), lifetimes, lifetimes, st.dictionaries(text, text, max_size=3)
    )

    class SessionStoreMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.call = open_store()
            self.ids = _Ids()
            self.now = _T0
            # Sessions the store must still answer for (live or expired).
            self.model: dict[str, StoredSession] = {}
            self.history: dict[str, list[bytes]] = {}  # every verifier, oldest first
            self.created: list[str] = []  # every id ever created, deleted ones too

        def run(self, ops: _Ops[_T]) -> _T:
            return _drive(ops, self.call)

        def live_ids(self) -> list[str]:
            return [sid for sid, s in self.model.items() if s.info.is_live(self.now)]

        # A few rules, each drawing its variant with weights written here, and
        # no preconditions. How often Hypothesis picks a rule depends on the
        # rule's place in its ordering and on which rules it switches off for
        # a whole run (swarm testing): with a rule per case, runs were mostly
        # revocations of empty stores. This way sessions live through many
        # rotations, where the interesting answers are. (Older Hypothesis
        # versions also re-parse a lambda precondition's source at every
        # step, which made runs ten times slower.)

        @initialize(sessions=st.lists(new_sessions, min_size=1, max_size=4))
        def start(self, sessions: list[tuple[int, float, float, dict[str, str]]]) -> None:
            """Sessions to begin with, even in a run where ``create_session`` is off."""
            for args in sessions:
                self.create(*args)

        @rule(data=st.data())
        def create_session(self, data: st.DataObject) -> None:
            """A new session; now and then, a duplicate of a live id, which must be refused."""
            live = self.live_ids()
            if live and data.draw(st.sampled_from([False, False, False, True]), label="duplicate"):
                sid = data.draw(st.sampled_from(live), label="session")
                user = self.ids.user(data.draw(st.integers(0, users - 1), label="user"))
                dup = self.ids.new_session(user, self.now, idle=60.0, absolute=60.0, session_id=sid)
                if self.run(_raw(_Call("create", (dup,)))).error is None:
                    _fail(f"create accepted the id of live session {sid!r}; it must raise")
                return
            self.create(*data.draw(new_sessions, label="session"))

        def create(self, user: int, idle: float, absolute: float, metadata: dict[str, str]) -> None:
            new = self.ids.new_session(
                self.ids.user(user), self.now, idle=idle, absolute=absolute, metadata=metadata
            )
            self.run(_create(new, "create(new session)"))
            sid = new.info.session_id
            self.model[sid] = StoredSession.new(new)
            self.history[sid] = [new.verifier]
            self.created.append(sid)

        def pick_session(self, data: st.DataObject) -> str:
            """Mostly a session the store holds (one is created if there is
            none); now and then a deleted one, or one that never existed."""
            if not self.model:
                # Swarm testing may switch create_session off for a whole run;
                # rotating an empty store would then be all a run does.
                self.create(*data.draw(new_sessions, label="new session"))
            deleted = [sid for sid in self.created if sid not in self.model]
            kinds = ["held"] * 6 + (["deleted"] if deleted else []) + ["never created"]
            kind = data.draw(st.sampled_from(kinds), label="which session")
            if kind == "held":
                return data.draw(st.sampled_from(sorted(self.model)), label="session")
            if kind == "deleted":
                return data.draw(st.sampled_from(deleted), label="session")
            return self.ids.session("ghost")

        @rule(data=st.data())
        def rotate(self, data: st.DataObject) -> None:
            """A refresh presenting the session's current verifier."""
            sid = self.pick_session(data)
            history = self.history.get(sid) or [self.ids.verifier()]
            self.check_rotation(data, sid, history[-1], "its current")

        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            """A stale refresh: the predecessor (mostly), an older verifier, or
            one the session never had. Only verifiers that exist are offered."""
            rotated = [sid for sid in sorted(self.model) if len(self.history[sid]) >= 2]
            if rotated and data.draw(st.sampled_from([True, True, False]), label="rotated one"):
                sid = data.draw(st.sampled_from(rotated), label="session")
            else:
                sid = self.pick_session(data)
            history = self.history.get(sid, [])
            options: list[tuple[str, bytes]] = []
            if len(history) >= 2:
                options += [("its previous", history[-2])] * 3
            options += [(f"its generation-{g}", v) for g, v in enumerate(history[:-2])]
            options.append(("a random", self.ids.verifier()))
            label, presented = data.draw(st.sampled_from(options), label="presented")
            self.check_rotation(data, sid, presented, label)

        def check_rotation(
            self, data: st.DataObject, sid: str, presented: bytes, label: str
        ) -> None:
            """Rotate in the store and in the model; the answers must agree."""
            idle = data.draw(renewals, label="idle_seconds")
            grace = data.draw(graces, label="grace_seconds")
            rotation = Rotation(
                sid, presented, self.ids.verifier(), self.ids.salt(), self.now, idle, grace
            )
            stored = self.model.get(sid)
            if stored is None:
                expected, state = RotationResult(RotationOutcome.UNKNOWN_SESSION), None
            else:
                expected, state = apply_rotation(stored, rotation)
            what = (
                f"rotate(session {sid!r}, presenting {label} verifier, now=T0+{self.now - _T0!r}, "
                f"idle_seconds={idle!r}, grace_seconds={grace!r})"
            )
            got = self.run(_rotate(rotation, what))
            _check_rotation(
                got, expected, what, may_forget=expected.outcome is RotationOutcome.EXPIRED
            )
            if stored is not None:
                if state is None:
                    del self.model[sid]
                else:
                    self.model[sid] = state
            if expected.outcome is RotationOutcome.ROTATED:
                self.history[sid].append(rotation.successor)

        @rule(data=st.data())
        def advance_clock(self, data: st.DataObject) -> None:
            """A small step, or a jump exactly onto a boundary: a live session's
            idle or absolute expiry, or the end of a grace window after its
            last rotation (for each grace a rotation may be given)."""
            deadlines = []
            for stored in self.model.values():
                if stored.info.is_live(self.now):
                    deadlines += [stored.info.idle_expires_at, stored.info.absolute_expires_at]
                    if stored.rotated_at is not None:
                        deadlines += [stored.rotated_at + g for g in _GRACES]
            future = sorted({d for d in deadlines if d >= self.now})
            boundary = data.draw(
                st.sampled_from([False, False, False, True]), label="to a boundary"
            )
            if future and boundary:
                self.now = data.draw(st.sampled_from(future), label="boundary")
            else:
                self.now += data.draw(steps, label="seconds")

        @rule(data=st.data())
        def revoke(self, data: st.DataObject) -> None:
            """``revoke`` of one session (mostly a held one), or ``revoke_user``."""
            if data.draw(st.sampled_from([False, False, True]), label="whole user"):
                self.revoke_user(data.draw(st.integers(0, users - 1), label="user"))
                return
            pool = sorted(self.model) * 3 + self.created
            sid = data.draw(st.sampled_from(pool), label="session")
            stored = self.model.pop(sid, None)
            got = self.run(_revoke(sid, f"revoke({sid!r})"))
            if stored is None:
                allowed = {False}
            elif stored.info.is_live(self.now):
                allowed = {True}
            else:  # expired: the store may have dropped it already
                allowed = {True, False}
            if got not in allowed:
                _fail(f"revoke({sid!r}) returned {got!r}, expected one of {sorted(allowed)}")

        def revoke_user(self, user: int) -> None:
            uid = self.ids.user(user)
            mine = [sid for sid, s in self.model.items() if s.info.user_id == uid]
            live = sum(self.model[sid].info.is_live(self.now) for sid in mine)
            for sid in mine:
                del self.model[sid]
            got = self.run(_revoke_user(uid, f"revoke_user({uid!r})"))
            # Expired sessions may already be gone from the store.
            if not live <= got <= len(mine):
                _fail(
                    f"revoke_user({uid!r}) returned {got}; the user had {len(mine)} sessions, "
                    f"{live} of them live"
                )

        @invariant()
        def listings_match(self) -> None:
            for user in range(users):
                uid = self.ids.user(user)
                expected = sorted(
                    (
                        s.info
                        for s in self.model.values()
                        if s.info.user_id == uid and s.info.is_live(self.now)
                    ),
                    key=lambda i: (i.created_at, i.session_id),
                )
                what = f"sessions_of({uid!r}, T0+{self.now - _T0!r})"
                got = self.run(_sessions_of(uid, self.now, what))
                if got != expected:
                    _fail(
                        f"{what} returned {got!r}; expected the live sessions oldest first: "
                        f"{expected!r}"
                    )

    if purges:

        def purge(self: SessionStoreMachine) -> None:
            """``purge(now)``: every dead session must go, every live one stay.

            The count is not compared: the store may hold other sessions (a
            shared store), and a TTL may have dropped some already. What is
            checked is the effect: rotating a purged session must answer
            UNKNOWN_SESSION and revoking it False (the model forgets it), and
            ``sessions_of`` must still list every live one.
            """
            self.run(_purge(self.now, f"purge(now=T0+{self.now - _T0!r})"))
            for sid in [sid for sid, s in self.model.items() if not s.info.is_live(self.now)]:
                del self.model[sid]

        # Added only for stores that have the method: a rule that returned
        # early would waste steps.
        setattr(SessionStoreMachine, "purge", rule()(purge))  # noqa: B010

    run_state_machine_as_test(
        SessionStoreMachine,
        settings=settings(
            max_examples=max_examples,
            deadline=None,  # stores do I/O; latency is not what is checked here
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


def _raw(call: _Call) -> _Ops[_Outcome]:
    """A single call whose outcome, exception included, the scenario inspects."""
    outcome: _Outcome = yield call
    return outcome


def _examples(max_examples: int | None) -> int:
    """``max_examples``, or the active Hypothesis profile's when it is None."""
    if max_examples is not None:
        return max_examples
    from hypothesis import settings

    return settings().max_examples


def _validate(max_examples: int, callers: int, rounds: int) -> None:
    if max_examples < 1:
        raise ValueError("max_examples must be >= 1")
    if callers < 2:
        raise ValueError("a race needs at least 2 concurrent callers")
    if rounds < 1:
        raise ValueError("rounds must be >= 1")


def check_session_store(
    make_store: Callable[[], SessionStore],
    *,
    max_examples: int | None = None,
    threads: int = 8,
    rounds: int = 5,
) -> None:
    """Check a :class:`~tokenflow.ports.SessionStore` against its contract.

    Raises :class:`AssertionError` saying what went wrong on the first breach;
    returns ``None`` when the store conforms. Three parts run in order:

    1. **Contract checks**, one rule at a time: create and read back (every
       field, metadata included, round-trips exactly), duplicate ids refused,
       ROTATED / GRACE (with the stored salt) / REUSED_PREVIOUS /
       REUSED_UNKNOWN / EXPIRED / UNKNOWN_SESSION, deletion after reuse and
       expiry, idle renewal capped by the absolute expiry, ``grace_seconds=0``,
       ``revoke`` and ``revoke_user`` results, ``sessions_of`` order
       (``created_at``, then ``session_id``) and liveness. Then awkward
       values: metadata holding U+0000 and other rarely seen code points
       must round-trip exactly (any keys and values that are ``str``
       encodable as UTF-8), and sessions stored with every pair of expiries among NaN,
       the infinities, the largest and smallest doubles, negative and
       ordinary times are listed and rotated at far and near clock readings:
       each answer must be the reference rule's (a NaN expiry is never live:
       ``now < nan`` is false).
    2. **A Hypothesis state machine** (``max_examples`` runs of up to the
       profile's ``stateful_step_count`` steps, 50 by default): create (and
       duplicate), rotate presenting the current, previous, an older or a
       random verifier, advance a logical clock (by small steps, or exactly
       onto an expiry or the end of a grace window), revoke, revoke_user,
       and ``purge(now=...)`` for a store that has that optional method
       (every dead session must go, every live one stay), with
       ``sessions_of`` compared after every step.
       Each answer must equal that of :func:`tokenflow.stores.apply_rotation`
       on a model of the sessions. Times must round-trip exactly and be
       compared exactly as the reference rule does
       (``now - rotated_at < grace_seconds``,
       ``min(now + idle_seconds, absolute_expires_at)``).
    3. **Races** (``rounds`` each): ``threads`` threads released together
       rotate one session presenting the same verifier with their own salts:
       exactly one must get ROTATED and every other GRACE with the winner's
       salt, so that all derive the same successor, which must then be the one
       live generation. Then ``revoke_user`` races rotations of the user's
       sessions: no session may survive.
    4. **Device binding**, for stores that offer ``bind_device`` (a
       :class:`~tokenflow.ports.DeviceBindingStore`): a live unbound session
       takes a key, a second key never replaces the first (also when
       ``threads`` binds race), unknown and expired sessions bind nothing,
       ``device_key_of`` and ``sessions_of`` report the key, and a bound
       session answers DEVICE_BOUND, changing nothing, to a rotation without
       its key (none, another one, or with an unknown verifier), while one
       carrying its key rotates and replays inside the grace window as usual.

    One leniency, in every part: a session past its expiry may already have
    been dropped by the store (a TTL, a purge), so for it UNKNOWN_SESSION is
    accepted instead of EXPIRED, and ``revoke`` / ``revoke_user`` may leave
    it out of their answers. Live sessions get no leniency.

    The state machine runs under the current Hypothesis settings profile
    (database, phases, verbosity, steps...), with ``max_examples`` and no
    deadline set by the kit: load a profile to tune it, e.g. without the
    shrink phase for a slow store. ``max_examples=None`` (the default) takes
    the active profile's ``max_examples``, so a fast profile for everyday runs
    and a thorough one for CI size the kit along with every other property.

    ``make_store`` is called once per part and once per Hypothesis example.
    It may return a fresh store or the same one every time: every scenario
    works under random session and user ids, so a store need not be empty
    and earlier data is never seen. The kit never closes a store; whoever
    makes them owns them. Metadata in the generated sessions is any ``str``
    that encodes as UTF-8 (NUL included).
    """
    max_examples = _examples(max_examples)
    _validate(max_examples, threads, rounds)

    def open_store() -> Callable[[_Call], _Outcome]:
        return functools.partial(_call_sync, make_store())

    first = make_store()
    _drive(_contract_scenario(_Ids()), functools.partial(_call_sync, first))
    _drive(_values_scenario(_Ids()), functools.partial(_call_sync, first))
    _run_state_machine(open_store, max_examples, purges=_has_purge(first))
    store = make_store()
    race = functools.partial(_race_threads, store)
    _drive(_race_scenario(_Ids(), threads, rounds), functools.partial(_call_sync, store), race)
    if hasattr(store, "bind_device"):
        _drive(_device_scenario(_Ids(), threads), functools.partial(_call_sync, store), race)


async def check_async_session_store(
    make_store: Callable[[], AsyncSessionStore],
    *,
    max_examples: int | None = None,
    tasks: int = 8,
    rounds: int = 5,
) -> None:
    """Check an :class:`~tokenflow.ports.AsyncSessionStore` against its contract.

    The same checks as :func:`check_session_store`, with ``tasks`` asyncio
    tasks (released together) instead of threads in the races. Await it from
    a test running on the event loop the store belongs to: ``make_store`` is
    called, and every store call awaited, on that loop. (The Hypothesis state
    machine itself is synchronous; it runs in a worker thread and submits
    each call to the loop.)
    """
    max_examples = _examples(max_examples)
    _validate(max_examples, tasks, rounds)
    loop = asyncio.get_running_loop()
    first = make_store()
    await _adrive(_contract_scenario(_Ids()), first)
    await _adrive(_values_scenario(_Ids()), first)

    async def made() -> AsyncSessionStore:
        return make_store()

    def on_loop(coro: Coroutine[Any, Any, _T]) -> _T:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(_CALL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            _fail(f"a store call did not return within {_CALL_TIMEOUT} s")

    def open_store() -> Callable[[_Call], _Outcome]:
        store = on_loop(made())
        return lambda call: on_loop(_call_async(store, call))

    await asyncio.to_thread(
        functools.partial(_run_state_machine, purges=_has_purge(first)), open_store, max_examples
    )
    await _adrive(_race_scenario(_Ids(), tasks, rounds), make_store())
    store = make_store()
    if hasattr(store, "bind_device"):
        await _adrive(_device_scenario(_Ids(), tasks), store)
