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

from cryptography.hazmat.primitives.asymmetric import ec

from conftest import drop_redis_keys
from tokenflow import (
    ConfigError,
    DeviceBinding,
    DeviceProofRequired,
    DeviceRegistered,
    Flow,
    FlowConfig,
    KeyRing,
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
    UnauthorizedReason,
)
from tokenflow.stores import MemoryStore
from tokenflow.stores.sqlite import SQLiteStore
from tokenflow.testing import FakeClock, FakePasswordVerifier, FakeUserDirectory
from tokenflow.testing.dbsc import DbscClient, sign_proof

T0 = 1_700_000_000.0
LOGIN = PasswordCredentials("ada", "correct horse")


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
    # Smuggling the forger's key in a jwk header is refused before any signature check.
    challenge = client.challenges[client.session_id or ""]
    assert forger.key is not None
    smuggled = sign_proof(forger.key, {"jti": challenge}, with_jwk=True)
    request = forger.refresh_request()
    request = type(request)(**{**_fields(request), "session_response": smuggled})
    rejected = flow.refresh_device(request)
    assert isinstance(rejected, Unauthorized)
    assert DeviceProofRejected(client.session_id or "", ProofFailure.KEY) in rejected.events
    assert isinstance(client.get(flow), Process)


def _fields(request: Any) -> dict[str, Any]:
    return {name: getattr(request, name) for name in request.__dataclass_fields__}


def test_replayed_proof_with_its_rotated_cookie_fails(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(100)
    captured = client.refresh_request()  # proof + the refresh cookie of this moment
    first = flow.refresh_device(captured)
    assert isinstance(first, Reissue)
    # Inside the grace window a replay gets the very same successor, nothing new.
    clock.advance(1)
    again = flow.refresh_device(captured)
    assert isinstance(again, Reissue)
    assert [i.generation for i in flow.sessions_of("ada")] == [1]
    # After it, the rotated-away cookie is a reuse: refused, whatever the proof.
    clock.advance(10)
    replay = flow.refresh_device(captured)
    assert isinstance(replay, Unauthorized)
    assert replay.reason is UnauthorizedReason.REFRESH_REUSED


def test_stale_proof_fails_and_the_owner_recovers(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    clock.advance(100)
    captured = client.refresh_request()
    assert isinstance(flow.refresh_device(captured), Reissue)
    client.receive_decision(flow.refresh_device(client.refresh_request()))
    # The captured proof with the current cookie, once its challenge is stale: 403, no grant.
    clock.advance(121)  # past 2 x challenge_ttl (60 s) since the captured challenge
    current = client.refresh_request()
    stale = type(current)(**{**_fields(current), "session_response": captured.session_response})
    decision = flow.refresh_device(stale)
    assert isinstance(decision, DeviceProofRequired)
    assert DeviceProofRejected(client.session_id or "", ProofFailure.CHALLENGE_STALE) in (
        decision.events
    )
    # The owner's client retries with the fresh challenge and carries on.
    assert isinstance(client.get(flow), Process)
    assert len(flow.sessions_of("ada")) == 1


def test_challenge_race_older_challenge_inside_the_window(store: Any) -> None:
    clock = FakeClock(T0)
    flow = make_flow(store, clock)
    client = bound(flow, clock)
    older = client.challenges[client.session_id or ""]
    clock.advance(121)
    assert isinstance(client.refresh(flow), Reissue)  # a newer challenge is now cached
    assert client.challenges[client.session_id or ""] != older
    clock.advance(30)
    client.challenges[client.session_id or ""] = older  # the late response of a race
    # 151 s old: past the window of 120 s, so the browser is asked again (403) and recovers.
    assert isinstance(client.refresh(flow), Reissue)
    recent = client.challenges[client.session_id or ""]
    clock.advance(50)
    assert isinstance(client.refresh(flow), Reissue)
    client.challenges[client.session_id or ""] = recent  # 50 s old: inside the window
    answer = flow.refresh_device(client.refresh_request())
    assert isinstance(answer, Reissue)


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
