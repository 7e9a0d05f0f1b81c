"""tokenflow.testing's store tools: the call recorder, the store race trial, fault errors,
and the conformance kit's sizes following the Hypothesis profile."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tokenflow._sessions import derive_successor, verifier_of
from tokenflow.stores import (
    AsyncMemoryStore,
    MemoryStore,
    NewSession,
    Rotation,
    RotationOutcome,
    RotationResult,
    SessionInfo,
    StoredSession,
    apply_rotation,
)
from tokenflow.testing import (
    AsyncFaultyStore,
    AsyncRecordingStore,
    Fault,
    FaultyStore,
    InjectedFault,
    RecordedCall,
    RecordingStore,
    check_session_store,
    run_rotation_race,
    run_rotation_race_async,
)

T0 = 1_700_000_000.0


def _session(sid: str = "s1", user: str = "alice") -> tuple[NewSession, bytes]:
    secret = secrets.token_bytes(32)
    info = SessionInfo(sid, user, T0, T0, T0 + 1800, T0 + 86_400)
    return NewSession(info, verifier_of(secret)), secret


def _rotation(sid: str, secret: bytes, now: float = T0 + 1) -> Rotation:
    salt = secrets.token_bytes(16)
    successor = verifier_of(derive_successor(secret, salt))
    return Rotation(sid, verifier_of(secret), successor, salt, now, 1800.0, 5.0)


# ------------------------------------------------------------------ RecordingStore


def test_recording_store_records_every_call_with_arguments_and_result() -> None:
    store = RecordingStore(MemoryStore())
    new, secret = _session()
    store.create(new)
    rotation = _rotation("s1", secret)
    rotated = store.rotate(rotation)
    listed = store.sessions_of("alice", now=T0 + 2)
    assert store.revoke("s1") is True
    assert store.revoke_user("alice") == 0

    assert store.methods == ["create", "rotate", "sessions_of", "revoke", "revoke_user"]
    create, rotate, sessions_of, revoke, revoke_user = store.calls
    assert create == RecordedCall("create", (new,), {}, None)
    assert rotate == RecordedCall("rotate", (rotation,), {}, rotated)
    assert rotated.outcome is RotationOutcome.ROTATED
    assert sessions_of == RecordedCall("sessions_of", ("alice",), {"now": T0 + 2}, listed)
    assert revoke.result is True
    assert revoke_user.result == 0
    assert store.calls_to("rotate") == [rotate]


def test_recording_store_records_a_failed_call_and_reraises_it() -> None:
    faulty = FaultyStore(MemoryStore())
    store = RecordingStore(faulty)
    faulty.arm(Fault.BEFORE_COMMIT, ["revoke"])
    with pytest.raises(InjectedFault) as raised:
        store.revoke("s1")
    (call,) = store.calls
    assert call.method == "revoke"
    assert call.result is None
    assert call.error is raised.value


def test_recording_store_clear_and_copies() -> None:
    store = RecordingStore(MemoryStore())
    store.revoke("nope")
    calls = store.calls
    calls.clear()  # a copy: the record is untouched
    assert store.methods == ["revoke"]
    store.clear()
    assert store.calls == []


def test_recording_store_repr_shows_no_secret() -> None:
    store = RecordingStore(MemoryStore())
    new, secret = _session()
    store.create(new)
    rotation = _rotation("s1", secret)
    store.rotate(rotation)
    assert repr(store) == "RecordingStore(MemoryStore, calls=2)"
    text = repr(store.calls)
    for value in (new.verifier, rotation.presented, rotation.successor, rotation.salt, secret):
        assert value.hex() not in text
        assert repr(value) not in text


def test_recording_store_is_safe_from_many_threads() -> None:
    store = RecordingStore(MemoryStore())
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(100):
            store.revoke("nope")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.calls) == 800


@pytest.mark.asyncio
async def test_async_recording_store_records_results_and_errors() -> None:
    faulty = AsyncFaultyStore(AsyncMemoryStore())
    store = AsyncRecordingStore(faulty)
    new, secret = _session()
    await store.create(new)
    rotation = _rotation("s1", secret)
    rotated = await store.rotate(rotation)
    listed = await store.sessions_of("alice", now=T0 + 2)
    assert await store.revoke_user("alice") == 1
    outage = TimeoutError("store timed out")
    faulty.arm(Fault.BEFORE_COMMIT, ["revoke"], error=outage)
    with pytest.raises(TimeoutError):
        await store.revoke("s1")
    assert store.methods == ["create", "rotate", "sessions_of", "revoke_user", "revoke"]
    assert store.calls[1] == RecordedCall("rotate", (rotation,), {}, rotated)
    assert store.calls[2].result == listed
    assert store.calls[-1].error is outage
    assert repr(store) == "AsyncRecordingStore(AsyncFaultyStore, calls=5)"


# ------------------------------------------------------------------ FaultyStore's own error


def test_an_armed_fault_raises_the_given_error_object() -> None:
    faulty = FaultyStore(MemoryStore())
    new, _ = _session()
    outage = ConnectionError("the very object")
    faulty.arm(Fault.AFTER_COMMIT, ["create"], error=outage)
    with pytest.raises(ConnectionError) as raised:
        faulty.create(new)
    assert raised.value is outage
    assert faulty.injected == 1
    faulty.disarm()
    assert faulty.revoke("s1") is True  # AFTER_COMMIT: the session was created


# ------------------------------------------------------------------ the store race trial


@pytest.mark.parametrize("callers", [2, 20])
def test_the_rotation_race_passes_an_atomic_store_with_exact_counts(callers: int) -> None:
    store = RecordingStore(MemoryStore())
    report = run_rotation_race(store, callers=callers, trials=5)
    report.assert_ok()
    assert report.ok
    assert report.label == "RecordingStore"
    assert report.trials == 5
    assert report.outcomes == {
        RotationOutcome.ROTATED: 5,
        RotationOutcome.GRACE: 5 * (callers - 1),
    }
    assert report.problems == []
    assert f"N={callers}: 5 trials, 5 ROTATED" in report.summary()
    # Per trial: create, the race, the winner's follow-up, revoke; then revoke_user.
    assert store.methods.count("create") == 5
    assert store.methods.count("rotate") == 5 * (callers + 1)
    assert store.methods[-1] == "revoke_user"
    assert store.calls[-1].result == 0  # every trial's session was revoked already


class NotAtomic(MemoryStore):
    """Reads, decides and writes in separate steps: concurrent callers all rotate."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier: threading.Barrier | None = None

    def rotate(self, rotation: Rotation) -> RotationResult:
        stored = self._sessions.get(rotation.session_id)
        if stored is None:
            return RotationResult(RotationOutcome.UNKNOWN_SESSION)
        result, state = apply_rotation(stored, rotation)
        if self.barrier is not None:
            self.barrier.wait()  # every caller has read before any writes
        self._sessions[rotation.session_id] = state if state is not None else stored
        return result


def test_the_rotation_race_catches_a_store_that_is_not_atomic() -> None:
    store = NotAtomic()
    store.barrier = threading.Barrier(4)
    report = run_rotation_race(store, callers=4, trials=1, label="not atomic")
    assert not report.ok
    assert report.bad_trials == 1
    assert report.outcomes[RotationOutcome.ROTATED] == 4
    assert "4 ROTATED answers" in report.problems[0]
    expected = r"(?s)not atomic N=4: 1 trials.*trial 1: 4 ROTATED answers"
    with pytest.raises(AssertionError, match=expected):
        report.assert_ok()


class GraceWithOwnSalt(MemoryStore):
    def rotate(self, rotation: Rotation) -> RotationResult:
        result = super().rotate(rotation)
        if result.outcome is RotationOutcome.GRACE:
            return RotationResult(result.outcome, result.session, rotation.salt)
        return result


def test_the_rotation_race_catches_a_grace_answer_with_the_wrong_salt() -> None:
    report = run_rotation_race(GraceWithOwnSalt(), callers=3, trials=2)
    assert report.bad_trials == 2
    assert "GRACE carried a salt other than the winner's" in report.problems[0]


class ForgetsAfterRotating(MemoryStore):
    """Rotates, then loses the session: the winner's successor finds nothing."""

    def rotate(self, rotation: Rotation) -> RotationResult:
        result = super().rotate(rotation)
        if result.session is not None and result.session.generation == 1:
            self.revoke(rotation.session_id)
        return result


def test_the_rotation_race_checks_the_winners_successor_and_the_final_revoke() -> None:
    report = run_rotation_race(ForgetsAfterRotating(), callers=2, trials=1)
    (problem,) = report.problems
    assert "answered UNKNOWN_SESSION, not ROTATED at generation 2" in problem
    assert "gone before the final revoke" in problem


@pytest.mark.parametrize(("callers", "trials", "message"), [(1, 1, "2 concurrent"), (2, 0, ">= 1")])
def test_the_rotation_race_refuses_nonsense_sizes(callers: int, trials: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_rotation_race(MemoryStore(), callers=callers, trials=trials)


def test_an_empty_race_report_is_not_ok() -> None:
    from tokenflow.testing import RotationRaceReport

    report = RotationRaceReport("empty", 2)
    assert not report.ok
    with pytest.raises(AssertionError, match="no trial ran"):
        report.assert_ok()
    assert "0.0 ms/trial" in report.summary()


@pytest.mark.asyncio
@pytest.mark.parametrize("callers", [2, 20])
async def test_the_async_rotation_race_passes_an_atomic_store(callers: int) -> None:
    store = AsyncRecordingStore(AsyncMemoryStore())
    report = await run_rotation_race_async(store, callers=callers, trials=4, label="async")
    report.assert_ok()
    assert report.outcomes[RotationOutcome.ROTATED] == 4
    assert report.outcomes[RotationOutcome.GRACE] == 4 * (callers - 1)
    assert store.methods.count("rotate") == 4 * (callers + 1)


class AsyncNotAtomic:
    """Awaits between reading and writing a rotation."""

    def __init__(self) -> None:
        self.inner = MemoryStore()

    async def create(self, session: NewSession) -> None:
        self.inner.create(session)

    async def rotate(self, rotation: Rotation) -> RotationResult:
        stored: StoredSession | None = self.inner._sessions.get(rotation.session_id)
        if stored is None:
            return RotationResult(RotationOutcome.UNKNOWN_SESSION)
        result, state = apply_rotation(stored, rotation)
        await asyncio.sleep(0)
        if state is not None:
            self.inner._sessions[rotation.session_id] = state
        return result

    async def revoke(self, session_id: str) -> bool:
        return self.inner.revoke(session_id)

    async def revoke_user(self, user_id: str) -> int:
        return self.inner.revoke_user(user_id)

    async def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        return self.inner.sessions_of(user_id, now=now)


@pytest.mark.asyncio
async def test_the_async_rotation_race_catches_a_store_that_is_not_atomic() -> None:
    report = await run_rotation_race_async(AsyncNotAtomic(), callers=3, trials=2)
    assert report.bad_trials == 2
    assert report.outcomes[RotationOutcome.ROTATED] == 6
    with pytest.raises(ValueError, match="2 concurrent"):
        await run_rotation_race_async(AsyncNotAtomic(), callers=1, trials=1)


# ------------------------------------------------------------------ the kit follows the profile


@pytest.fixture
def tiny_profile() -> Iterator[int]:
    previous = settings.default
    settings.register_profile("tokenflow-tiny", parent=previous, max_examples=3, database=None)
    settings.load_profile("tokenflow-tiny")
    try:
        yield 3
    finally:
        settings.register_profile("tokenflow-restored", parent=previous)
        settings.load_profile("tokenflow-restored")


def test_the_kit_takes_max_examples_from_the_active_profile(tiny_profile: int) -> None:
    made = 0

    def make() -> MemoryStore:
        nonlocal made
        made += 1
        return MemoryStore()

    check_session_store(make, threads=2, rounds=1)
    # One store for the fixed scenarios, one per state-machine example, one for the races.
    assert made == 1 + tiny_profile + 1
    made = 0
    check_session_store(make, max_examples=5, threads=2, rounds=1)
    assert made == 1 + 5 + 1
