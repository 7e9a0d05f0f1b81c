"""Device-bound sessions (DBSC) through the flow, with the spec-following client, on every store.

Memory and SQLite always run; Redis and PostgreSQL skip when their server is
down (fail under TOKENFLOW_REQUIRE_SERVICES=1), as in the other store tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("joserfc")

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import drop_redis_keys
from tokenflow import (
    ConfigError,
    DeviceBinding,
    DeviceProofRequired,
    DeviceRegistered,
    Flow,
    FlowConfig,
    KeyRing,
    LoggedOut,
    PasswordCredentials,
    Process,
    Reissue,
    Unauthorized,
)
from tokenflow.dbsc import DbscProofVerifier
from tokenflow.events import (
    BareRefreshRefused,
    DeviceBound,
    DeviceProofRejected,
    ProofFailure,
    Refreshed,
    SessionRevoked,
    SessionRevokedReason,
    UnauthorizedReason,
)
from tokenflow.stores import MemoryStore
from tokenflow.stores.sqlite import SQLiteStore
from tokenflow.testing import FakeClock, FakePasswordVerifier, FakeUserDirectory
from tokenflow.testing.dbsc import DbscClient, sign_proof

T0 = 1_700_000_000.0
LOGIN = PasswordCredentials("ada", "correct horse")
RSA_KEYS = {
    bits: rsa.generate_private_key(public_exponent=65537, key_size=bits) for bits in (2048, 3072)
}


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, unique_name: Callable[[str], str]
) -> Iterator[Any]:
    # Every test gets empty storage (a fresh prefix or table): they count sessions.
    kind = request.param
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        with SQLiteStore(tmp_path / "sessions.db") as sqlite_store:
            yield sqlite_store
    elif kind == "redis":
        from tokenflow.stores.redis import RedisStore

        client = request.getfixturevalue("redis_client")
        prefix = unique_name("dbsc")
        try:
            yield RedisStore(client, prefix=prefix)
        finally:
            drop_redis_keys(client, prefix)
    else:
        import psycopg

        from tokenflow.stores.postgres import PostgresStore, apply_schema

        conninfo = request.getfixturevalue("postgres_conninfo")
        table = unique_name("dbsc")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            apply_schema(conn, table=table)
        pg_store = PostgresStore(conninfo, table=table)
        try:
            yield pg_store
        finally:
            pg_store.close()
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")


def make_flow(store: Any, clock: FakeClock, **binding: Any) -> Flow:
    users = FakeUserDirectory()
    users.add_user("ada", {"name": "Ada"})
    return Flow(
        KeyRing.generate(),
        store,
        users,
        passwords=FakePasswordVerifier({"ada": "correct horse"}),
        config=FlowConfig(device_binding=DeviceBinding(**binding)),
        clock=clock,
        proofs=DbscProofVerifier(),
    )


def logged_in(flow: Flow, clock: FakeClock) -> DbscClient:
    client = DbscClient(clock)
    decision = flow.login(client.request("POST", credentials=LOGIN))
    assert isinstance(decision, Reissue)
    client.receive_decision(decision)
    return client


def bound(flow: Flow, clock: FakeClock) -> DbscClient:
    client = logged_in(flow, clock)
    assert isinstance(client.register(flow), DeviceRegistered)
    return client


def test_login_invites_registration_and_registration_binds(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = DbscClient(clock)
    login = flow.login(client.request("POST", credentials=LOGIN))
    assert isinstance(login, Reissue)
    (name, value), *_ = login.headers
    assert name == "Secure-Session-Registration"
    assert value.startswith('(ES256 RS256);path="/auth/dbsc/register";challenge="')
    client.receive_decision(login)

    decision = client.register(flow)
    assert isinstance(decision, DeviceRegistered)
    assert decision.status == 200
    assert decision.session_id == login.session_id
    body = json.loads(decision.body)
    assert body["session_identifier"] == login.session_id
    assert body["refresh_url"] == "/auth/dbsc/refresh"
    assert body["scope"] == {"include_site": False}
    assert body["credentials"] == [
        {
            "type": "cookie",
            "name": "__Host-tf_access",
            "attributes": "Path=/; Secure; HttpOnly; SameSite=Lax",
        }
    ]
    assert decision.set_cookies[0].startswith("__Host-tf_access=")
    assert dict(decision.headers)["Secure-Session-Challenge"].endswith(f';id="{login.session_id}"')
    assert any(isinstance(e, DeviceBound) for e in decision.events)
    (info,) = flow.sessions_of("ada")
    assert info.device_key is not None
    assert '"kty":"EC"' in info.device_key


def test_bound_session_refreshes_only_with_its_key(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(121)  # the bound (access) cookie has expired
    assert client.bound_cookie_missing()
    decision = client.get(flow)
    assert isinstance(decision, Process)
    assert decision.user_id == "ada"
    # The refresh rotated the refresh token too, and handed out the next challenge.
    (info,) = flow.sessions_of("ada")
    assert info.generation == 1
    # A proactive refresh with the challenge the last refresh pre-provided
    # (still inside its window): no 403 round trip.
    clock.advance(100)
    answer = flow.refresh_device(client.refresh_request())
    assert isinstance(answer, Reissue)
    assert any(isinstance(e, Refreshed) for e in answer.events)


def test_refresh_without_proof_is_asked_for_one_with_403(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    client.challenges.clear()
    decision = flow.refresh_device(client.refresh_request())
    assert isinstance(decision, DeviceProofRequired)
    assert decision.status == 403
    assert decision.set_cookies == ()
    value = dict(decision.headers)["Secure-Session-Challenge"]
    assert value.endswith(f';id="{client.session_id}"')
    client.receive_decision(decision)
    assert isinstance(flow.refresh_device(client.refresh_request()), Reissue)


def test_stolen_refresh_cookie_without_the_key_gets_401_and_session_survives(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(121)
    thief = client.without_key()
    # The plain refresh path refuses the bare cookie.
    decision = flow.decide(thief.request("GET"))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.DEVICE_BOUND
    refused = [e for e in decision.events if isinstance(e, BareRefreshRefused)]
    assert refused
    assert refused[0].revoked is False
    assert not any(isinstance(e, SessionRevoked) for e in decision.events)
    # The refresh cookie is not cleared: the session is alive, and its own
    # browser refreshes through the device-bound endpoint.
    assert not any(c.startswith("__Host-tf_refresh=") for c in decision.set_cookies)
    # The DBSC endpoint asks for a proof the thief cannot give.
    assert isinstance(flow.refresh_device(thief.refresh_request()), DeviceProofRequired)
    # The session is intact: the owner still refreshes.
    assert isinstance(client.get(flow), Process)
    (info,) = flow.sessions_of("ada")
    assert info.generation == 1


def test_revoke_on_bare_refresh_when_configured(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock, revoke_on_bare_refresh=True)
    client = bound(flow, clock)
    clock.advance(121)
    decision = flow.decide(client.without_key().request("GET"))
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.DEVICE_BOUND
    assert any(isinstance(e, SessionRevoked) for e in decision.events)
    assert flow.sessions_of("ada") == []


def test_proof_signed_by_another_key_fails(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(121)
    forger = client.with_other_key()
    decision = flow.refresh_device(forger.refresh_request())
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.DEVICE_PROOF
    assert DeviceProofRejected(client.session_id or "", ProofFailure.SIGNATURE) in decision.events
    assert decision.set_cookies == ()
    # Smuggling the forger's key in a jwk header: the stored key checks the
    # signature before the header is even decoded, so the jwk is never read.
    challenge = client.challenges[client.session_id or ""]
    assert forger.key is not None
    smuggled = sign_proof(forger.key, {"jti": challenge}, with_jwk=True)
    request = forger.refresh_request()
    request = type(request)(**{**_fields(request), "session_response": smuggled})
    rejected = flow.refresh_device(request)
    assert isinstance(rejected, Unauthorized)
    assert DeviceProofRejected(client.session_id or "", ProofFailure.SIGNATURE) in (rejected.events)
    # The device's own key with a jwk header: the signature holds, the header does not.
    assert client.key is not None
    own = sign_proof(client.key, {"jti": challenge}, with_jwk=True)
    request = type(request)(**{**_fields(request), "session_response": own})
    rejected = flow.refresh_device(request)
    assert isinstance(rejected, Unauthorized)
    assert DeviceProofRejected(client.session_id or "", ProofFailure.KEY) in rejected.events
    assert isinstance(client.get(flow), Process)


def _fields(request: Any) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


def test_replayed_proof_mints_nothing_and_reuse_after_grace_ends_the_session(
    store: Any,
) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(100)
    captured = client.refresh_request()  # proof + the refresh cookie of this moment
    first = flow.refresh_device(captured)
    assert isinstance(first, Reissue)
    # Inside the grace window the same request repeats the rotation it made: its
    # proof's challenge is older than that rotation, so nothing is handed out.
    clock.advance(1)
    again = flow.refresh_device(captured)
    assert isinstance(again, DeviceProofRequired)
    assert again.set_cookies == ()
    assert DeviceProofRejected(client.session_id or "", ProofFailure.CHALLENGE_STALE) in (
        again.events
    )
    assert [i.generation for i in flow.sessions_of("ada")] == [1]
    # After it, the rotated-away cookie is a reuse: refused, whatever the proof.
    clock.advance(10)
    replay = flow.refresh_device(captured)
    assert isinstance(replay, Unauthorized)
    assert replay.reason is UnauthorizedReason.REFRESH_REUSED


def test_lost_answer_is_recovered_by_a_fresh_proof_inside_the_grace_window(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(120)
    lost = flow.refresh_device(client.refresh_request())  # rotated; the answer never arrives
    assert isinstance(lost, Reissue)
    clock.advance(1)
    # The browser still holds the old cookie and signs again: 403, a challenge
    # issued now, and the retry over it gets the same successor (GRACE).
    retried = client.refresh(flow)
    assert isinstance(retried, Reissue)
    assert client.forbidden == 1
    # The same successor as the lost answer's: no second rotation.
    assert any(isinstance(e, Refreshed) and e.grace for e in retried.events)
    assert [i.generation for i in flow.sessions_of("ada")] == [1]
    clock.advance(120)
    assert isinstance(client.get(flow), Process)
    assert [i.generation for i in flow.sessions_of("ada")] == [2]


def test_captured_proof_is_refused_with_every_other_generation(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    jars = [dict(client.jar)]  # the cookie jar of generation 0
    clock.advance(120)
    captured = client.refresh_request()  # generation 0's cookie and a proof over its challenge
    client.receive_decision(flow.refresh_device(captured))
    for _ in range(2):  # generations 1 and 2
        jars.append(dict(client.jar))
        clock.advance(120)
        assert isinstance(client.refresh(flow), Reissue)
    jars.append(dict(client.jar))
    assert client.forbidden == 0
    sid = client.session_id or ""
    for generation, jar in enumerate(jars[1:], start=1):
        thief = DbscClient(clock, jar=jar, key=None, session_id=sid)
        request = thief.refresh_request()
        forged = type(request)(
            **{**_fields(request), "session_response": captured.session_response}
        )
        decision = flow.refresh_device(forged)
        assert not isinstance(decision, Reissue), generation
        assert decision.set_cookies == ()
        assert DeviceProofRejected(sid, ProofFailure.CHALLENGE_INVALID) in decision.events
    # The session is whole: the device carries on.
    clock.advance(120)
    assert isinstance(client.get(flow), Process)


def test_stale_challenge_is_asked_again_and_the_owner_recovers(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    # The challenge cached at registration, for the current refresh token, is
    # accepted for access_ttl + challenge_ttl = 180 s; after that, 403 and a retry.
    clock.advance(181)
    request = client.refresh_request()
    decision = flow.refresh_device(request)
    assert isinstance(decision, DeviceProofRequired)
    assert DeviceProofRejected(client.session_id or "", ProofFailure.CHALLENGE_STALE) in (
        decision.events
    )
    assert isinstance(client.get(flow), Process)
    assert len(flow.sessions_of("ada")) == 1


def test_default_timings_cost_no_403_per_refresh_cycle(store: Any) -> None:
    """The browser signs the challenge of its last refresh when its bound cookie
    expires, access_ttl (120 s) later, plus however late it notices: no 403."""
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    for late in (0, 1, 30, 59):
        clock.advance(120 + late)
        assert isinstance(client.get(flow), Process)
    assert client.forbidden == 0
    assert [i.generation for i in flow.sessions_of("ada")] == [4]


def test_registration_replay_mints_nothing_once_bound(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = logged_in(flow, clock)
    captured = client.registration_request()
    assert isinstance(flow.register_device(captured), DeviceRegistered)
    clock.advance(1)
    replay = flow.register_device(captured)
    assert isinstance(replay, Unauthorized)
    assert replay.set_cookies == ()
    sid = flow.sessions_of("ada")[0].session_id
    assert DeviceProofRejected(sid, ProofFailure.ALREADY_BOUND) in replay.events


@pytest.mark.parametrize("bits", [2048, 3072])
def test_rs256_device_keys_register_and_refresh(store: Any, bits: int) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = DbscClient(clock, key=RSA_KEYS[bits])
    client.receive_decision(flow.login(client.request("POST", credentials=LOGIN)))
    assert client.registration is not None
    assert isinstance(client.register(flow), DeviceRegistered)
    (info,) = flow.sessions_of("ada")
    assert info.device_key is not None
    assert json.loads(info.device_key)["kty"] == "RSA"
    for _ in range(2):
        clock.advance(120)
        assert isinstance(client.get(flow), Process)
    assert client.forbidden == 0
    # A thief's own RSA key proves nothing for the bound session.
    thief = client.with_other_key()
    thief.key = RSA_KEYS[2048 if bits == 3072 else 3072]
    clock.advance(120)
    assert isinstance(thief.refresh(flow), Unauthorized)
    assert isinstance(client.get(flow), Process)


def test_rs256_offered_only_when_configured() -> None:
    clock = FakeClock(T0)
    flow = make_flow(MemoryStore(), clock, algorithms=("ES256",))
    client = DbscClient(clock, key=RSA_KEYS[2048])
    client.receive_decision(flow.login(client.request("POST", credentials=LOGIN)))
    assert client.registration is None  # ES256 only: an RSA device does not register


# -- what a copied cookie can end ---------------------------------------------------------


def test_logout_with_a_copied_refresh_cookie_leaves_a_bound_session(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(121)  # the copied jar's access cookie has expired
    thief = client.without_key()
    decision = flow.logout(thief.request("POST"))
    assert isinstance(decision, LoggedOut)  # the thief's own cookies are cleared
    sid = client.session_id or ""
    assert BareRefreshRefused("ada", sid, False) in decision.events
    assert not any(isinstance(e, SessionRevoked) for e in decision.events)
    assert isinstance(client.get(flow), Process)
    # The owner's logout carries the live bound cookie: the session ends.
    owner = flow.logout(client.request("POST"))
    assert SessionRevoked("ada", sid, SessionRevokedReason.LOGOUT) in owner.events
    assert flow.sessions_of("ada") == []


def test_login_with_a_copied_refresh_cookie_leaves_a_bound_session(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    flow_users = flow  # the same flow: the thief logs in as ada too, from another machine
    client = bound(flow, clock)
    clock.advance(121)
    thief = client.without_key()
    decision = flow_users.login(thief.request("POST", credentials=LOGIN))
    assert isinstance(decision, Reissue)
    assert BareRefreshRefused("ada", client.session_id or "", False) in decision.events
    assert len(flow.sessions_of("ada")) == 2
    assert isinstance(client.get(flow), Process)


def test_logout_of_an_unbound_session_with_its_refresh_cookie_still_ends_it(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = logged_in(flow, clock)  # never registers
    clock.advance(121)
    decision = flow.logout(client.request("POST"))
    assert any(isinstance(e, SessionRevoked) for e in decision.events)
    assert flow.sessions_of("ada") == []


def test_session_registered_twice_keeps_its_first_key(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = logged_in(flow, clock)
    invitation = client.registration
    assert isinstance(client.register(flow), DeviceRegistered)
    (first,) = flow.sessions_of("ada")
    other = DbscClient(clock, jar=dict(client.jar), registration=invitation)
    decision = other.register(flow)
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.DEVICE_PROOF
    assert DeviceProofRejected(first.session_id, ProofFailure.ALREADY_BOUND) in decision.events
    (after,) = flow.sessions_of("ada")
    assert after.device_key == first.device_key
    clock.advance(121)
    assert isinstance(client.get(flow), Process)


def test_stolen_cookie_of_an_unbound_session_cannot_register_a_key(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    victim = logged_in(flow, clock)  # a browser without DBSC: never registers
    thief = DbscClient(clock, jar=dict(victim.jar))
    thief.session_id = flow.sessions_of("ada")[0].session_id
    # The thief can always get a refresh challenge with the cookie...
    asked = flow.refresh_device(thief.refresh_request())
    assert isinstance(asked, DeviceProofRequired)
    thief.receive_decision(asked)
    # ...but a refresh challenge never passes for a registration one.
    thief.registration = ("/auth/dbsc/register", thief.challenges[thief.session_id])
    decision = thief.register(flow)
    assert isinstance(decision, Unauthorized)
    assert DeviceProofRejected(thief.session_id, ProofFailure.CHALLENGE_INVALID) in decision.events
    assert flow.sessions_of("ada")[0].device_key is None
    clock.advance(121)
    assert isinstance(flow.decide(victim.request("GET")), Reissue)


def test_revoked_bound_session_refreshes_no_more(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(30)
    assert isinstance(client.refresh(flow), Reissue)  # the flow now knows the session's key
    assert client.session_id is not None
    assert flow.revoke_session(client.session_id)
    clock.advance(30)
    decision = flow.refresh_device(client.refresh_request())
    assert isinstance(decision, Unauthorized)
    assert decision.reason is UnauthorizedReason.SESSION_ENDED


def test_unbound_sessions_keep_the_rotating_refresh(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = logged_in(flow, clock)  # a browser without DBSC never registers
    clock.advance(121)
    decision = flow.decide(client.request("GET"))
    assert isinstance(decision, Reissue)
    (info,) = flow.sessions_of("ada")
    assert info.device_key is None


def test_registration_refusals(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = logged_in(flow, clock)
    assert client.registration is not None
    assert client.key is not None
    path, challenge = client.registration
    sid = flow.sessions_of("ada")[0].session_id

    def register(proof: str | None) -> Any:
        request = client.registration_request()
        return flow.register_device(
            type(request)(**{**_fields(request), "session_response": proof})
        )

    cases = {
        None: ProofFailure.MISSING,
        "not a jwt": ProofFailure.MISSING,
        sign_proof(client.key, {"jti": challenge}, with_jwk=False): ProofFailure.KEY,
        sign_proof(client.key, {"jti": challenge}, with_jwk=True, header={"typ": "JWT"}): (
            ProofFailure.MALFORMED
        ),
        sign_proof(client.key, {"jti": challenge}, with_jwk=True, header={"alg": "none"}): (
            ProofFailure.ALGORITHM
        ),
        sign_proof(client.key, {"jti": challenge + "x"}, with_jwk=True): (
            ProofFailure.CHALLENGE_INVALID
        ),
        sign_proof(client.key, {"jti": challenge, "aud": "https://evil.example/"}, with_jwk=True): (
            ProofFailure.AUDIENCE
        ),
    }
    for proof, reason in cases.items():
        decision = register(proof)
        assert isinstance(decision, Unauthorized), proof
        assert DeviceProofRejected(sid, reason) in decision.events, (proof, decision.events)
    # A challenge sealed for another session proves nothing for this one.
    other = logged_in(flow, clock)
    assert other.registration is not None
    foreign = sign_proof(client.key, {"jti": other.registration[1]}, with_jwk=True)
    assert DeviceProofRejected(sid, ProofFailure.CHALLENGE_INVALID) in register(foreign).events
    # Stale: the invitation is older than the window.
    clock.advance(121)
    assert (
        DeviceProofRejected(sid, ProofFailure.CHALLENGE_STALE)
        in register(sign_proof(client.key, {"jti": challenge}, with_jwk=True)).events
    )
    assert all(i.device_key is None for i in flow.sessions_of("ada"))
    assert path == "/auth/dbsc/register"


def test_refresh_for_another_session_id_is_refused(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    request = client.refresh_request()
    decision = flow.refresh_device(
        type(request)(**{**_fields(request), "session_id_header": "someone-else"})
    )
    assert isinstance(decision, Unauthorized)
    assert decision.set_cookies == ()


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError):
        DeviceBinding(algorithms=("none",))
    with pytest.raises(ConfigError):
        DeviceBinding(registration_path="relative")
    with pytest.raises(ConfigError):
        DeviceBinding(challenge_ttl=0)
    users = FakeUserDirectory()
    with pytest.raises(ConfigError, match="proof verifier"):
        Flow(
            KeyRing.generate(),
            MemoryStore(),
            users,
            config=FlowConfig(device_binding=DeviceBinding()),
        )
    plain = Flow(KeyRing.generate(), MemoryStore(), users)
    with pytest.raises(ConfigError):
        plain.refresh_device(DbscClient(FakeClock(T0)).request("POST"))


def test_registration_refuses_keys_that_are_not_p256() -> None:
    clock = FakeClock(T0)
    flow = make_flow(MemoryStore(), clock, algorithms=("ES256",))
    client = logged_in(flow, clock)
    assert client.registration is not None
    assert client.registration[0] == "/auth/dbsc/register"
    client.key = ec.generate_private_key(ec.SECP384R1())  # labelled ES256, a P-384 key
    decision = client.register(flow)
    assert isinstance(decision, Unauthorized)
    (info,) = flow.sessions_of("ada")
    assert DeviceProofRejected(info.session_id, ProofFailure.KEY) in decision.events
    assert info.device_key is None
