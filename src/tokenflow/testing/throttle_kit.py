"""The login throttle conformance kit.

Backend authors call :func:`check_login_throttle` or
:func:`check_async_login_throttle` from their own test suite with a factory
for their throttle; it raises :class:`AssertionError` with an explanation on
the first breach of the :class:`~tokenflow.ports.LoginThrottle` contract.

Every check is written once, as a scenario (a generator yielding the calls
it needs and receiving their results); the sync driver answers with direct
calls and threads, the async driver with awaits and tasks.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from .._throttle import FailureCount

if TYPE_CHECKING:
    from ..ports import AsyncLoginThrottle, LoginThrottle

__all__ = ["check_async_login_throttle", "check_login_throttle"]

_T0 = 1_000_000_000.125
"""Logical start time: years away from any real clock, so a backend that
judged expiry by its own clock instead of ``now`` fails the window checks."""
_WINDOW = 3600.0
_DAY = 86400.0
_CALL_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    args: tuple[object, ...]
    kwargs: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Race:
    """The same call, started ``n`` times at once (threads or tasks)."""

    call: _Call
    n: int


@dataclass(frozen=True, slots=True)
class _Burst:
    """``n`` login attempts at once on the same keys, each doing what the flow
    does: read the counts, stop at ``limit``, reserve, read again on a lost race.
    The answer is how many reserved (were let through to a verification)."""

    keys: tuple[str, ...]
    limit: int
    now: float
    n: int


_Ops = Generator["_Call | _Race | _Burst", Any, None]


def _fail(message: str) -> NoReturn:
    raise AssertionError(f"login throttle contract: {message}")


def _counts(value: object, keys: Sequence[str], what: str) -> list[FailureCount]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        _fail(f"{what} returned {type(value).__name__}, not a sequence of FailureCount")
    got = list(value)
    if len(got) != len(keys):
        _fail(f"{what} returned {len(got)} counts for {len(keys)} keys")
    for item in got:
        if not isinstance(item, FailureCount):
            _fail(f"{what} returned a {type(item).__name__}, not a FailureCount")
    return got


def _expect(got: Sequence[FailureCount], expected: Sequence[tuple[int, float]], what: str) -> None:
    pairs = [(c.count, c.last_failure_at) for c in got]
    if pairs != [(n, float(t)) for n, t in expected]:
        _fail(f"{what}: expected (count, last_failure_at) {list(expected)}, got {pairs}")


def _failures(keys: Sequence[str], now: float) -> Generator[_Call, Any, list[FailureCount]]:
    value = yield _Call("failures", (list(keys),), {"now": now})
    return _counts(value, keys, f"failures({len(keys)} keys, now={now!r})")


def _record(
    keys: Sequence[str], now: float, window: float = _WINDOW
) -> Generator[_Call, Any, list[FailureCount]]:
    value = yield _Call("record_failure", (list(keys),), {"now": now, "window": window})
    return _counts(value, keys, f"record_failure({len(keys)} keys, now={now!r})")


def _reserve(
    keys: Sequence[str], expected: Sequence[int], now: float, window: float = _WINDOW
) -> Generator[_Call, Any, object]:
    value = yield _Call("reserve", (list(keys), list(expected)), {"now": now, "window": window})
    if value is not True and value is not False:
        _fail(f"reserve() returned {type(value).__name__}, not a bool")
    return value


_BURST_TRIES = 64
"""Lost races one burst attempt may retry: more than any exact backend needs."""


def _attempt_sync(throttle: LoginThrottle, burst: _Burst) -> bool:
    keys = list(burst.keys)
    for _ in range(_BURST_TRIES):
        counts = throttle.failures(keys, now=burst.now)
        if max(c.count for c in counts) >= burst.limit:
            return False
        expected = [c.count for c in counts]
        if throttle.reserve(keys, expected, now=burst.now, window=_WINDOW):
            return True
    return False


async def _attempt_async(throttle: AsyncLoginThrottle, burst: _Burst) -> bool:
    keys = list(burst.keys)
    for _ in range(_BURST_TRIES):
        counts = await throttle.failures(keys, now=burst.now)
        if max(c.count for c in counts) >= burst.limit:
            return False
        expected = [c.count for c in counts]
        if await throttle.reserve(keys, expected, now=burst.now, window=_WINDOW):
            return True
    return False


def _v4() -> str:
    """An address key shaped like tokenflow's IPv4 keys, fresh on every call.

    All 32 bits are random: a persistent backend keeps counts between runs of
    the kit (for a day, with the longest window), and a key drawn from a small
    range would meet an earlier run's count sooner or later."""
    return "a:" + ".".join(str(b) for b in secrets.token_bytes(4))


def _v6() -> str:
    """An address key shaped like tokenflow's IPv6 /64 keys, fresh on every call."""
    a, b = secrets.token_hex(2), secrets.token_hex(2)
    return f"a:2001:db8:{a}:{b}::/64"


def _keys(tag: str) -> list[str]:
    """Keys shaped like tokenflow's, and harder: colons, slashes, braces, non-ASCII."""
    return [f"u:{secrets.token_hex(16)}", _v6(), _v4(), f"x:{tag}{{slot}}/é ü"]


def _scenario(tag: str, parallel: int, repr_of: Callable[[], str]) -> _Ops:
    user, address, v4, odd = _keys(tag)
    t = _T0

    # Unknown keys: zero, in order; empty requests give empty answers.
    _expect((yield from _failures([user, address, odd], t)), [(0, 0.0)] * 3, "unknown keys")
    if list((yield _Call("failures", ([],), {"now": t}))) != []:
        _fail("failures([]) must return an empty sequence")

    # Counting: every key given, by one; answers in key order; exact times.
    now = t + 0.1
    _expect((yield from _record([user, address], now)), [(1, now)] * 2, "first failure")
    now2 = t + 1.7
    _expect((yield from _record([address, user], now2)), [(2, now2)] * 2, "second failure")
    _expect((yield from _record([address, v4], now2)), [(3, now2), (1, now2)], "mixed keys")
    _expect(
        (yield from _failures([v4, odd, user, address], now2)),
        [(1, now2), (0, 0.0), (2, now2), (3, now2)],
        "failures in the order asked",
    )

    # Opaque keys: nothing in them is interpreted (colons, braces, non-ASCII).
    _expect((yield from _record([odd], now2)), [(1, now2)], "an unusual key")

    # The window runs from the last failure; at exactly ``window`` it is over.
    end = now2 + _WINDOW
    before = end - 0.25
    _expect((yield from _failures([user], before)), [(2, now2)], "just inside the window")
    _expect((yield from _failures([user, address], end)), [(0, 0.0)] * 2, "window over")
    _expect((yield from _record([user], end)), [(1, end)], "a failure after the window restarts")
    # A short window, and a count extended by a failure inside it.
    short = end + 100.0
    _expect((yield from _record([v4], short, 2.5)), [(1, short)], "short window restart")
    _expect((yield from _record([v4], short + 2.0, 2.5)), [(2, short + 2.0)], "inside short")
    _expect((yield from _failures([v4], short + 4.0)), [(2, short + 2.0)], "window from last")
    _expect((yield from _failures([v4], short + 4.5)), [(0, 0.0)], "short window over")

    # Reset forgets exactly the keys named; unknown keys and [] are fine.
    now3 = short + 10.0
    yield from _record([user, address], now3)
    yield _Call("reset", ([user],))
    _expect((yield from _failures([user, address], now3)), [(0, 0.0), (1, now3)], "after reset")
    yield _Call("reset", ([f"u:{secrets.token_hex(16)}", address],))
    yield _Call("reset", ([],))
    _expect((yield from _failures([address], now3)), [(0, 0.0)], "after resetting the rest")
    _expect((yield from _record([user], now3)), [(1, now3)], "counting again after reset")

    # Parallel failures: N at once count exactly N, each caller seeing its own count.
    hot_user, hot_address = f"u:{secrets.token_hex(16)}", f"a:2001:db8:{tag}::/64"
    now4 = now3 + 1.0
    results = yield _Race(
        _Call("record_failure", ([hot_user, hot_address],), {"now": now4, "window": _WINDOW}),
        parallel,
    )
    seen: dict[str, list[int]] = {hot_user: [], hot_address: []}
    for value in results:
        counted = _counts(value, [hot_user, hot_address], "a raced call")
        for key, count in zip((hot_user, hot_address), counted, strict=True):
            seen[key].append(count.count)
    for counts in seen.values():
        if sorted(counts) != list(range(1, parallel + 1)):
            _fail(
                f"{parallel} parallel failures of one key returned counts {sorted(counts)}: "
                "each must see its own count, 1 to N (a lost or doubled update)"
            )
    _expect(
        (yield from _failures([hot_user, hot_address], now4)),
        [(parallel, now4)] * 2,
        f"{parallel} parallel failures",
    )

    # Reservations: a compare-and-set on the counts read.
    r_user, r_address = f"u:{secrets.token_hex(16)}", _v4()
    now5 = now4 + 1.0
    if (yield from _reserve([r_user, r_address], [0, 0], now5)) is not True:
        _fail("reserve() with the counts as they are must return True")
    _expect((yield from _failures([r_user, r_address], now5)), [(1, now5)] * 2, "reserved once")
    if (yield from _reserve([r_user, r_address], [0, 1], now5)) is not False:
        _fail("reserve() with a count that moved must return False")
    _expect(
        (yield from _failures([r_user, r_address], now5)),
        [(1, now5)] * 2,
        "a refused reservation changes no count (not even of the keys that matched)",
    )
    now6 = now5 + 2.0
    if (yield from _reserve([r_address, r_user], [1, 1], now6)) is not True:
        _fail("reserve() with the current counts, keys in another order, must return True")
    _expect((yield from _failures([r_user, r_address], now6)), [(2, now6)] * 2, "reserved twice")
    yield _Call("release", ([r_address],), {"now": now6})
    _expect(
        (yield from _failures([r_user, r_address], now6)),
        [(2, now6), (1, now6)],
        "release() takes one back from exactly the keys named, keeping last_failure_at",
    )
    yield _Call("release", ([r_address, r_address[:-1] + "x"],), {"now": now6})
    yield _Call("release", ([r_address],), {"now": now6})
    _expect((yield from _failures([r_address], now6)), [(0, 0.0)], "release never goes below 0")
    if (yield from _reserve([r_address], [0], now6)) is not True:
        _fail("reserve() of a key released to 0, expected at 0, must return True")
    # A dead count (window over) is 0: reserving it expected at 0 restarts it.
    late = now6 + _WINDOW
    if (yield from _reserve([r_user], [2], late)) is not False:
        _fail("reserve() expecting a count whose window ran out must return False")
    if (yield from _reserve([r_user], [0], late)) is not True:
        _fail("reserve() expecting 0 of a key whose window ran out must return True")
    _expect((yield from _failures([r_user], late)), [(1, late)], "a reservation restarts a count")
    # Each reservation keeps the window it was given: the flow reserves an
    # account's second-factor key for a day and its address for an hour.
    w_code, w_address = f"u:!{secrets.token_hex(16)}", f"a:{secrets.token_hex(8)}"
    if (yield from _reserve([w_code], [0], late, _DAY)) is not True:
        _fail("reserve() of a new key with a day's window must return True")
    if (yield from _reserve([w_address], [0], late, 2.5)) is not True:
        _fail("reserve() of a new key with a short window must return True")
    _expect((yield from _failures([w_code, w_address], late + 2.0)), [(1, late)] * 2, "windows")
    _expect(
        (yield from _failures([w_code, w_address], late + 2.5)),
        [(1, late), (0, 0.0)],
        "a reservation's short window over, the long one still running",
    )
    _expect(
        (yield from _failures([w_code], late + _WINDOW + 1.0)),
        [(1, late)],
        "a reservation's day-long window outlives the ordinary one",
    )
    _expect((yield from _failures([w_code], late + _DAY)), [(0, 0.0)], "a day's window over")

    # Simultaneous reservations with the same expected counts: exactly one wins.
    s_user, s_address = f"u:{secrets.token_hex(16)}", _v4()
    now7 = late + 1.0
    won = yield _Race(
        _Call("reserve", ([s_user, s_address], [0, 0]), {"now": now7, "window": _WINDOW}),
        parallel,
    )
    if [w for w in won if w is not True and w is not False]:
        _fail("reserve() must return a bool")
    if sum(1 for w in won if w is True) != 1:
        _fail(
            f"{parallel} simultaneous reservations of the same counts: "
            f"{sum(1 for w in won if w is True)} won, exactly 1 must"
        )
    _expect((yield from _failures([s_user, s_address], now7)), [(1, now7)] * 2, "one won")

    # The flow's whole check-then-reserve, raced: with a limit of L, of any
    # number of simultaneous attempts exactly L are let through.
    b_user, b_address = f"u:{secrets.token_hex(16)}", _v6()
    limit = max(1, parallel // 3)
    granted = yield _Burst((b_user, b_address), limit, now7 + 1.0, parallel)
    if granted != limit:
        _fail(
            f"{parallel} simultaneous attempts with a limit of {limit}: {granted} reserved "
            f"(let through to a verification); exactly {limit} must"
        )
    _expect(
        (yield from _failures([b_user, b_address], now7 + 1.0)),
        [(limit, now7 + 1.0)] * 2,
        "the counts after a burst",
    )

    # The repr: short, and no key it has seen (a repr is logged).
    text = repr_of()
    for key in (user, address, odd, hot_user):
        if key in text:
            _fail(f"repr {text!r} shows a key")
    if len(text) > 200:
        _fail("repr is over 200 characters")


def _race_threads(throttle: LoginThrottle, call: _Call | _Burst, n: int) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(_CALL_TIMEOUT)
            if isinstance(call, _Burst):
                results[i] = _attempt_sync(throttle, call)
            else:
                results[i] = getattr(throttle, call.method)(*call.args, **call.kwargs)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(_CALL_TIMEOUT)
    if any(thread.is_alive() for thread in threads):
        _fail(f"a raced call did not return within {_CALL_TIMEOUT} s")
    if errors:
        raise errors[0]
    return results


def _drive_sync(throttle: LoginThrottle, ops: _Ops) -> None:
    value: Any = None
    while True:
        try:
            step = ops.send(value)
        except StopIteration:
            return
        if isinstance(step, _Call):
            value = getattr(throttle, step.method)(*step.args, **step.kwargs)
        elif isinstance(step, _Burst):
            value = sum(1 for ok in _race_threads(throttle, step, step.n) if ok is True)
        else:
            value = _race_threads(throttle, step.call, step.n)


async def _drive_async(throttle: AsyncLoginThrottle, ops: _Ops) -> None:
    value: Any = None
    while True:
        try:
            step = ops.send(value)
        except StopIteration:
            return
        if isinstance(step, _Call):
            value = await getattr(throttle, step.method)(*step.args, **step.kwargs)
            continue
        start = asyncio.Event()
        call: _Call | _Burst = step if isinstance(step, _Burst) else step.call

        async def run(call: _Call | _Burst = call, go: asyncio.Event = start) -> object:
            await go.wait()
            if isinstance(call, _Burst):
                return await _attempt_async(throttle, call)
            return await getattr(throttle, call.method)(*call.args, **call.kwargs)

        tasks = [asyncio.create_task(run()) for _ in range(step.n)]
        await asyncio.sleep(0)
        start.set()
        value = await asyncio.wait_for(asyncio.gather(*tasks), _CALL_TIMEOUT)
        if isinstance(step, _Burst):
            value = sum(1 for ok in value if ok is True)


def _validate(parallel: int) -> None:
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 2:
        raise ValueError("the number of parallel callers must be an int of at least 2")


def check_login_throttle(make_throttle: Callable[[], LoginThrottle], *, threads: int = 16) -> None:
    """Check a :class:`~tokenflow.ports.LoginThrottle` against its contract.

    Raises :class:`AssertionError` on the first breach; returns ``None`` when
    the throttle conforms. It checks: zero counts (and ``last_failure_at``
    0.0) for unknown keys; answers in the order of the keys asked; counting
    by one per key per call, with ``last_failure_at`` exactly the ``now``
    passed; keys treated as opaque text; the window running from the last
    failure and ending exactly ``window`` seconds after it (a later failure
    restarts at 1), each reservation keeping the ``window`` it was given (a
    day and a few seconds side by side), judged by ``now`` alone (the scenario's times are decades
    from the real clock); ``reset`` of exactly the keys named; ``threads``
    parallel failures of the same two keys counted exactly ``threads`` times,
    each caller seeing a distinct count; ``reserve`` as a compare-and-set
    (True and one more failure on every key when the counts are the expected
    ones, False and no count changed otherwise, a dead count read as 0);
    ``release`` taking one back, never below 0; ``threads`` simultaneous
    reservations of the same counts with exactly one winner; and a burst of
    ``threads`` simultaneous attempts doing the flow's check-then-reserve with
    a limit of ``threads // 3``, of which exactly that many must get through;
    a short repr that shows no key.

    ``make_throttle`` is called once; the kit uses fresh random keys, so a
    throttle shared with other tests is fine. The kit never closes it.
    """
    _validate(threads)
    throttle = make_throttle()
    _drive_sync(throttle, _scenario(secrets.token_hex(8), threads, lambda: repr(throttle)))


async def check_async_login_throttle(
    make_throttle: Callable[[], AsyncLoginThrottle], *, tasks: int = 16
) -> None:
    """Check an :class:`~tokenflow.ports.AsyncLoginThrottle` against its contract.

    The checks of :func:`check_login_throttle`, with ``tasks`` asyncio tasks
    released together for the parallel failures, reservations and burst. Await it on the event loop
    the throttle belongs to.
    """
    _validate(tasks)
    throttle = make_throttle()
    await _drive_async(throttle, _scenario(secrets.token_hex(8), tasks, lambda: repr(throttle)))
