"""A store that lost rotations is named for what it is, not taken for a replay.

After a failover to an asynchronous replica, the store may hold an older
generation of a session than the client's refresh token proves was issued.
The refresh token carries its generation (``gen``, sealed like every claim),
and the store answers REUSED_UNKNOWN with the generation it held: a token
newer than the store is ``NEWER_THAN_STORE``, a token older than the
predecessor is ``OLDER_GENERATION``. Both revoke the session.
"""

from __future__ import annotations

import copy
import threading

import pytest

from tokenflow import Flow, KeyRing, PasswordCredentials, Reissue, Request, Unauthorized
from tokenflow._sessions import (
    NewSession,
    Rotation,
    RotationResult,
    SessionInfo,
    StoredSession,
    apply_binding,
    apply_rotation,
)
from tokenflow.events import ReuseDetected, ReuseDetectedReason, SessionRevoked
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeClock, FakePasswordVerifier, FakeUserDirectory

REFRESH = "__Host-tf_refresh"


class SnapshotStore:
    """A session store whose state can be saved and put back: a failover to a
    replica that had replicated up to the snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, StoredSession] = {}

    def snapshot(self) -> dict[str, StoredSession]:
        with self._lock:
            return copy.copy(self._sessions)

    def restore(self, saved: dict[str, StoredSession]) -> None:
        with self._lock:
            self._sessions = copy.copy(saved)

    def create(self, session: NewSession) -> None:
        with self._lock:
            self._sessions[session.info.session_id] = StoredSession.new(session)

    def rotate(self, rotation: Rotation) -> RotationResult:
        with self._lock:
            stored = self._sessions.get(rotation.session_id)
            if stored is None:
                from tokenflow._sessions import RotationOutcome

                return RotationResult(RotationOutcome.UNKNOWN_SESSION)
            result, state = apply_rotation(stored, rotation)
            if state is None:
                del self._sessions[rotation.session_id]
            else:
                self._sessions[rotation.session_id] = state
            return result

    def revoke(self, session_id: str) -> bool:
        with self._lock:
            return self._sessions.pop(session_id, None) is not None

    def bind_device(self, session_id: str, device_key: str, *, now: float) -> SessionInfo | None:
        with self._lock:
            stored = self._sessions.get(session_id)
            if stored is None:
                return None
            info, state = apply_binding(stored, device_key, now)
            if state is not None:
                self._sessions[session_id] = state
            return info

    def device_key_of(self, session_id: str, *, now: float) -> str | None:
        with self._lock:
            stored = self._sessions.get(session_id)
        if stored is None or not stored.info.is_live(now):
            return None
        return stored.info.device_key

    def revoke_user(self, user_id: str) -> int:
        return 0

    def sessions_of(self, user_id: str, *, now: float) -> list[SessionInfo]:
        return []


KEYRING = KeyRing.generate()


def _world(store: object) -> tuple[Flow, FakeClock]:
    users = FakeUserDirectory()
    users.add_user("ada")
    passwords = FakePasswordVerifier({"ada": "pw"})
    clock = FakeClock()
    return Flow(KEYRING, store, users, passwords=passwords, clock=clock), clock


def _refresh_token(decision: object) -> str:
    assert isinstance(decision, Reissue)
    for header in decision.set_cookies:
        name, _, rest = header.partition("=")
        if name == REFRESH:
            return rest.split(";", 1)[0]
    raise AssertionError("no refresh cookie")


def _refresh(flow: Flow, token: str) -> object:
    return flow.decide(Request("GET", cookies={REFRESH: token}))


def _reasons(decision: object) -> list[ReuseDetectedReason]:
    return [e.reason for e in decision.events if isinstance(e, ReuseDetected)]  # type: ignore[attr-defined]


def test_a_token_newer_than_the_store_is_named_so_and_revokes() -> None:
    store = SnapshotStore()
    flow, clock = _world(store)
    token = _refresh_token(
        flow.login(Request("POST", credentials=PasswordCredentials("ada", "pw")))
    )
    clock.advance(200)
    token = _refresh_token(_refresh(flow, token))  # generation 1
    replicated = store.snapshot()
    for _ in range(3):  # generations 2 to 4: lost with the primary
        clock.advance(200)
        token = _refresh_token(_refresh(flow, token))
    store.restore(replicated)
    clock.advance(200)
    answer = _refresh(flow, token)
    assert isinstance(answer, Unauthorized)
    assert _reasons(answer) == [ReuseDetectedReason.NEWER_THAN_STORE]
    assert any(isinstance(e, SessionRevoked) for e in answer.events)
    assert store.snapshot() == {}  # revoked all the same: the store cannot tell a copy


def test_a_replayed_older_token_is_still_older_generation() -> None:
    store = SnapshotStore()
    flow, clock = _world(store)
    first = _refresh_token(
        flow.login(Request("POST", credentials=PasswordCredentials("ada", "pw")))
    )
    token = first
    for _ in range(3):
        clock.advance(200)
        token = _refresh_token(_refresh(flow, token))
    clock.advance(200)
    answer = _refresh(flow, first)
    assert _reasons(answer) == [ReuseDetectedReason.OLDER_GENERATION]


def test_a_fork_after_a_rollback_is_not_excused() -> None:
    """The store rolled back to generation 1, a copy of the generation 1 token
    rotated it to 2, then the client's own generation 2 token comes: the same
    generation as the store's, a different secret. Nothing proves a lost
    rotation here (the store did reach 2): a replay, OLDER_GENERATION."""
    store = SnapshotStore()
    flow, clock = _world(store)
    login = flow.login(Request("POST", credentials=PasswordCredentials("ada", "pw")))
    clock.advance(200)
    gen1 = _refresh_token(_refresh(flow, _refresh_token(login)))
    replicated = store.snapshot()
    clock.advance(200)
    gen2 = _refresh_token(_refresh(flow, gen1))
    store.restore(replicated)
    clock.advance(200)
    assert isinstance(_refresh(flow, gen1), Reissue)  # the copy rotates the rolled-back store
    clock.advance(200)
    assert _reasons(_refresh(flow, gen2)) == [ReuseDetectedReason.OLDER_GENERATION]


@pytest.mark.parametrize("reported", [None, 7])
def test_the_store_answer_decides_only_with_a_known_generation(reported: int | None) -> None:
    """A store that reports no generation, or a higher one, gets OLDER_GENERATION."""
    from tokenflow._sessions import RotationOutcome

    class Reporting(MemoryStore):
        def rotate(self, rotation: Rotation) -> RotationResult:
            result = super().rotate(rotation)
            if result.outcome is RotationOutcome.REUSED_UNKNOWN:
                return RotationResult(RotationOutcome.REUSED_UNKNOWN, generation=reported)
            return result

    flow, clock = _world(Reporting())
    first = _refresh_token(
        flow.login(Request("POST", credentials=PasswordCredentials("ada", "pw")))
    )
    token = first
    for _ in range(2):
        clock.advance(200)
        token = _refresh_token(_refresh(flow, token))
    clock.advance(200)
    assert _reasons(_refresh(flow, first)) == [ReuseDetectedReason.OLDER_GENERATION]


def test_a_wrong_generation_type_from_a_store_is_a_port_failure() -> None:
    from tokenflow import Unavailable
    from tokenflow._sessions import RotationOutcome

    class Lying(MemoryStore):
        def rotate(self, rotation: Rotation) -> RotationResult:
            result = super().rotate(rotation)
            if result.outcome is RotationOutcome.REUSED_UNKNOWN:
                return RotationResult(RotationOutcome.REUSED_UNKNOWN, generation="2")  # type: ignore[arg-type]
            return result

    flow, clock = _world(Lying())
    first = _refresh_token(
        flow.login(Request("POST", credentials=PasswordCredentials("ada", "pw")))
    )
    token = first
    for _ in range(2):
        clock.advance(200)
        token = _refresh_token(_refresh(flow, token))
    clock.advance(200)
    assert isinstance(_refresh(flow, first), Unavailable)


def test_refresh_tokens_carry_their_generation_and_old_ones_still_work() -> None:
    """Tokens sealed before ``gen`` existed rotate normally and get one."""
    store = SnapshotStore()
    flow, clock = _world(store)
    token = _refresh_token(
        flow.login(Request("POST", credentials=PasswordCredentials("ada", "pw")))
    )
    from tokenflow._token import Purpose, TokenCodec

    codec = TokenCodec(KEYRING)  # the flow's key ring: the test seals a token of the old shape

    claims = dict(codec.open(Purpose.REFRESH, token, now=clock()))
    assert claims["gen"] == 0
    del claims["gen"]
    legacy = codec.seal(Purpose.REFRESH, claims)
    clock.advance(200)
    renewed = _refresh_token(_refresh(flow, legacy))
    assert codec.open(Purpose.REFRESH, renewed, now=clock())["gen"] == 1


def test_a_device_bound_refresh_newer_than_the_store_is_named_so() -> None:
    """The device-bound refresh (``refresh_device``) tells a store that lost
    rotations from a replay like the bare one: its token's generation reaches
    the rotation."""
    pytest.importorskip("joserfc")
    from tokenflow import DeviceBinding, DeviceRegistered, FlowConfig
    from tokenflow.dbsc import DbscProofVerifier
    from tokenflow.testing.dbsc import DbscClient

    store = SnapshotStore()
    users = FakeUserDirectory()
    users.add_user("ada")
    clock = FakeClock()
    flow = Flow(
        KEYRING,
        store,
        users,
        passwords=FakePasswordVerifier({"ada": "pw"}),
        config=FlowConfig(device_binding=DeviceBinding()),
        clock=clock,
        proofs=DbscProofVerifier(),
    )
    client = DbscClient(clock)
    login = flow.login(client.request("POST", credentials=PasswordCredentials("ada", "pw")))
    client.receive_decision(login)
    assert isinstance(client.register(flow), DeviceRegistered)
    clock.advance(200)
    assert isinstance(client.refresh(flow), Reissue)  # generation 1
    replicated = store.snapshot()
    for _ in range(3):  # generations 2 to 4: lost with the primary
        clock.advance(200)
        assert isinstance(client.refresh(flow), Reissue)
    store.restore(replicated)
    clock.advance(200)
    answer = client.refresh(flow)
    assert isinstance(answer, Unauthorized)
    assert _reasons(answer) == [ReuseDetectedReason.NEWER_THAN_STORE]
    assert store.snapshot() == {}
