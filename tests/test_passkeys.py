"""Passkeys: the ceremonies, the flow's passkey login, single-use challenges, clones, backends."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenflow import (
    ConfigError,
    Flow,
    KeyRing,
    PasskeyCredentials,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
)
from tokenflow.events import (
    AuthenticatorCloned,
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    PasskeyReplayed,
)
from tokenflow.passkeys import (
    MemoryChallengeLedger,
    MemoryPasskeyRepository,
    PasskeyConfig,
    Passkeys,
    RegistrationFailure,
    RemoveOutcome,
)
from tokenflow.passkeys.sqlite import SQLiteChallengeLedger, SQLitePasskeyRepository
from tokenflow.ports import PasskeyFailure, PasskeyLogin, PasskeyRefused
from tokenflow.stores import MemoryStore
from tokenflow.testing import Browser, FakeClock, FakeUserDirectory
from tokenflow.testing.passkeys import (
    SoftAuthenticator,
    check_challenge_ledger,
    check_passkey_repository,
)

ORIGIN = "https://example.com"
T0 = 1_800_000_000.0


def config(**changes: Any) -> PasskeyConfig:
    return PasskeyConfig(
        **{"rp_id": "example.com", "rp_name": "Example", "origins": (ORIGIN,), **changes}
    )


class World:
    """A flow with passkeys on memory backends, a clock, and one signed-up user."""

    def __init__(self, **config_changes: Any) -> None:
        self.clock = FakeClock(T0)
        self.keyring = KeyRing.generate()
        self.repository = MemoryPasskeyRepository()
        self.ledger = MemoryChallengeLedger()
        self.passkeys = Passkeys(
            config(**config_changes),
            self.keyring,
            self.repository,
            self.ledger,
            clock=self.clock,
        )
        self.users = FakeUserDirectory()
        self.users.add_user("alice")
        self.flow = Flow(
            self.keyring, MemoryStore(), self.users, passkeys=self.passkeys, clock=self.clock
        )

    def register(self, authenticator: SoftAuthenticator, session: str = "s1") -> Any:
        options = self.passkeys.registration_options(
            "alice", session, user_name="alice@example.com", origin=ORIGIN
        )
        return self.passkeys.verify_registration(
            "alice", session, authenticator.create(options, ORIGIN)
        )

    def assertion(self, authenticator: SoftAuthenticator, **kwargs: Any) -> str:
        options = self.passkeys.authentication_options(origin=ORIGIN)
        return authenticator.get(options, ORIGIN, **kwargs)

    def login(self, response: str) -> Any:
        request = Request(
            method="POST",
            credentials=PasskeyCredentials(response),
            origin=ORIGIN,
            host="example.com",
            sec_fetch_site="same-origin",
        )
        return self.flow.login(request)


@pytest.fixture
def world() -> World:
    return World()


def test_register_then_login_records_amr_and_survives_rotation(world: World) -> None:
    authenticator = SoftAuthenticator()
    stored = world.register(authenticator)
    assert not isinstance(stored, RegistrationFailure)
    assert stored.user_handle != b"alice"
    assert b"alice" not in stored.user_handle
    assert stored.user_verified
    decision = world.login(world.assertion(authenticator))
    assert isinstance(decision, Reissue)
    assert decision.user_id == "alice"
    assert decision.claims["amr"] == ["hwk", "user"]
    assert any(isinstance(e, LoggedIn) and e.method == "passkey" for e in decision.events)
    # The refresh token carries the amr to the next access token.
    browser = Browser(world.clock)
    browser.receive(decision.set_cookies)
    world.clock.advance(world.flow.config.access_ttl + 1)
    refreshed = world.flow.decide(browser.request())
    assert isinstance(refreshed, Reissue)
    assert refreshed.claims["amr"] == ["hwk", "user"]


def test_synced_passkey_without_uv_is_swk_only(world: World) -> None:
    authenticator = SoftAuthenticator(synced=True)
    stored = world.register(authenticator)
    assert not isinstance(stored, RegistrationFailure)
    assert stored.backup_eligible
    assert stored.backed_up
    decision = world.login(world.assertion(authenticator, uv=False))
    assert isinstance(decision, Reissue)
    assert decision.claims["amr"] == ["swk"]


def test_password_login_says_pwd() -> None:
    from tokenflow import PasswordCredentials
    from tokenflow.testing import FakePasswordVerifier

    users = FakeUserDirectory()
    users.add_user("bob")
    passwords = FakePasswordVerifier({"bob": "pw"})
    flow = Flow(KeyRing.generate(), MemoryStore(), users, passwords=passwords)
    decision = flow.login(Request(method="POST", credentials=PasswordCredentials("bob", "pw")))
    assert isinstance(decision, Reissue)
    assert decision.claims["amr"] == ["pwd"]


def test_replayed_assertion_is_refused_with_an_event(world: World) -> None:
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    response = world.assertion(authenticator)
    assert isinstance(world.login(response), Reissue)
    again = world.login(response)
    assert isinstance(again, Unauthorized)
    assert any(isinstance(e, PasskeyReplayed) and e.user_id == "alice" for e in again.events)
    assert any(
        isinstance(e, LoginFailed) and e.reason is LoginFailedReason.PASSKEY_REPLAYED
        for e in again.events
    )


def test_parallel_replays_grant_exactly_one(world: World) -> None:
    authenticator = SoftAuthenticator(counter=None)  # a counter cannot stop the replay
    world.register(authenticator)
    response = world.assertion(authenticator)
    barrier = threading.Barrier(12)
    results: list[Any] = []

    def go() -> None:
        barrier.wait()
        results.append(world.login(response))

    threads = [threading.Thread(target=go) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, Reissue) for r in results) == 1


def test_cloned_authenticator_is_refused_with_an_event(world: World) -> None:
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    clone = authenticator.clone()
    assert isinstance(world.login(world.assertion(authenticator)), Reissue)
    assert isinstance(world.login(world.assertion(authenticator)), Reissue)
    refused = world.login(world.assertion(clone))  # the clone's counter is behind
    assert isinstance(refused, Unauthorized)
    cloned = [e for e in refused.events if isinstance(e, AuthenticatorCloned)]
    assert cloned
    assert (cloned[0].user_id, cloned[0].stored, cloned[0].presented) == ("alice", 3, 2)


def test_counter_that_is_always_zero_is_not_a_clone(world: World) -> None:
    authenticator = SoftAuthenticator(counter=None)
    world.register(authenticator)
    for _ in range(3):
        assert isinstance(world.login(world.assertion(authenticator)), Reissue)


def test_challenge_is_bound_to_its_purpose(world: World) -> None:
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    # A registration challenge signed as a login: refused.
    options = world.passkeys.registration_options("alice", "s1", user_name="a", origin=ORIGIN)
    refused = world.passkeys.verify_assertion(authenticator.get(options, ORIGIN), now=T0)
    assert isinstance(refused, PasskeyRefused)
    assert refused.reason is PasskeyFailure.CHALLENGE_INVALID


def test_registration_is_bound_to_the_session(world: World) -> None:
    authenticator = SoftAuthenticator()
    options = world.passkeys.registration_options("alice", "s1", user_name="a", origin=ORIGIN)
    response = authenticator.create(options, ORIGIN)
    assert world.passkeys.verify_registration("alice", "s2", response) is (
        RegistrationFailure.CHALLENGE_INVALID
    )
    assert not isinstance(world.passkeys.verify_registration("alice", "s1", response), Enum_)
    assert world.passkeys.verify_registration("alice", "s1", response) is (
        RegistrationFailure.REPLAYED
    )


Enum_ = RegistrationFailure


def test_other_origin_and_expired_challenge_refused(world: World) -> None:
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    options = world.passkeys.authentication_options(origin=ORIGIN)
    evil = authenticator.get(options, "https://evil.example")
    assert world.passkeys.verify_assertion(evil, now=T0).reason is (  # type: ignore[union-attr]
        PasskeyFailure.CHALLENGE_INVALID
    )
    late = world.passkeys.verify_assertion(
        authenticator.get(options, ORIGIN), now=T0 + world.passkeys.config.challenge_ttl
    )
    assert isinstance(late, PasskeyRefused)
    assert late.reason is PasskeyFailure.CHALLENGE_EXPIRED


def test_forged_signature_and_foreign_key_refused(world: World) -> None:
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    impostor = SoftAuthenticator(credential_id=authenticator.credential_id)
    impostor.user_handle = authenticator.user_handle
    refused = world.login(world.assertion(impostor))
    assert isinstance(refused, Unauthorized)
    assert any(
        isinstance(e, LoginFailed) and e.reason is LoginFailedReason.BAD_PASSKEY
        for e in refused.events
    )
    # The genuine authenticator still works: the impostor burned no challenge of its.
    assert isinstance(world.login(world.assertion(authenticator)), Reissue)


def test_user_verification_required() -> None:
    world = World(user_verification="required")
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    refused = world.passkeys.verify_assertion(world.assertion(authenticator, uv=False), now=T0)
    assert isinstance(refused, PasskeyRefused)
    assert refused.reason is PasskeyFailure.USER_VERIFICATION


def test_cross_origin_passkey_login_is_forbidden(world: World) -> None:
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    request = Request(
        method="POST",
        credentials=PasskeyCredentials(world.assertion(authenticator)),
        origin="https://evil.example",
        host="example.com",
        sec_fetch_site="cross-site",
    )
    assert world.flow.login(request).status == 403


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.hex())))
def test_any_text_is_a_refusal_never_a_traceback(text: str) -> None:
    decision = _FUZZ.login(text)
    assert isinstance(decision, Unauthorized)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mangled_assertions_are_refused(data: st.DataObject) -> None:
    response = json.loads(_FUZZ.assertion(_FUZZ_AUTH))
    path = data.draw(st.sampled_from(["id", "rawId", "type", "response"]))
    if path == "response":
        field = data.draw(
            st.sampled_from(["clientDataJSON", "authenticatorData", "signature", "userHandle"])
        )
        response["response"][field] = data.draw(
            st.one_of(st.none(), st.integers(), st.text(max_size=60), st.lists(st.integers()))
        )
        if field == "userHandle" and response["response"][field] in (None, ""):
            # No user handle is a valid assertion (a passkey named by its id).
            return
    else:
        response[path] = data.draw(st.one_of(st.none(), st.integers(), st.text(max_size=60)))
    assert isinstance(_FUZZ.login(json.dumps(response)), Unauthorized)


_FUZZ = World()
_FUZZ_AUTH = SoftAuthenticator(counter=None)
_FUZZ.register(_FUZZ_AUTH)


def test_remove_refuses_the_last_way_to_sign_in(world: World) -> None:
    authenticator = SoftAuthenticator()
    stored = world.register(authenticator)
    assert not isinstance(stored, RegistrationFailure)
    from webauthn.helpers import bytes_to_base64url

    named = bytes_to_base64url(stored.credential_id)
    assert world.passkeys.remove("mallory", named) is RemoveOutcome.NOT_FOUND
    assert world.passkeys.remove("alice", named) is RemoveOutcome.LAST_SIGN_IN
    assert world.passkeys.rename("alice", named, "  Work laptop\x00 ")
    assert world.passkeys.passkeys_of("alice")[0].name == "Work laptop"
    second = world.register(SoftAuthenticator(), "s2")
    assert not isinstance(second, RegistrationFailure)
    assert second.user_handle == stored.user_handle  # one handle per user
    assert world.passkeys.remove("alice", named) is RemoveOutcome.REMOVED
    assert isinstance(world.login(world.assertion(authenticator)), Unauthorized)


def test_registration_excludes_existing_passkeys(world: World) -> None:
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    options = json.loads(
        world.passkeys.registration_options("alice", "s9", user_name="a", origin=ORIGIN)
    )
    assert [c["id"] for c in options["excludeCredentials"]] == [
        json.loads(authenticator.get(world.passkeys.authentication_options(origin=ORIGIN), ORIGIN))[
            "id"
        ]
    ]
    assert options["authenticatorSelection"]["residentKey"] == "preferred"
    assert options["authenticatorSelection"]["userVerification"] == "preferred"
    assert options["rp"]["id"] == "example.com"


@pytest.mark.parametrize(
    "changes",
    [
        {"rp_id": "https://example.com"},
        {"rp_id": "Example.com"},
        {"origins": ("https://evil.com",)},
        {"origins": ("http://example.com",)},
        {"origins": ("https://example.com/",)},
        {"origins": ()},
        {"origins": "https://example.com"},
        {"challenge_ttl": 5},
        {"user_verification": "discouraged"},
    ],
)
def test_misconfiguration_raises(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        config(**changes)


def test_localhost_over_http_is_allowed() -> None:
    assert PasskeyConfig("localhost", "Dev", ("http://localhost:8000",)).origins


# -- the conformance kit on every backend ----------------------------------------------


def test_kit_memory() -> None:
    check_passkey_repository(MemoryPasskeyRepository)
    ledger = MemoryChallengeLedger()
    check_challenge_ledger(lambda: ledger)


def test_kit_sqlite(tmp_path: Any) -> None:
    path = tmp_path / "pk.db"
    check_passkey_repository(lambda: SQLitePasskeyRepository(path))
    check_challenge_ledger(lambda: SQLiteChallengeLedger(path))


@pytest.fixture
def pg_tables(
    postgres_conninfo: str, unique_name: Callable[[str], str]
) -> Iterator[tuple[str, str]]:
    import psycopg
    from psycopg import sql

    tables = (unique_name("pkr"), unique_name("pkc"))
    yield tables
    with psycopg.connect(postgres_conninfo, autocommit=True) as conn:
        for table in tables:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def test_kit_postgres(postgres_conninfo: str, pg_tables: tuple[str, str]) -> None:
    from psycopg_pool import ConnectionPool

    from tokenflow.passkeys.postgres import PostgresChallengeLedger, PostgresPasskeyRepository

    with ConnectionPool(postgres_conninfo, kwargs={"autocommit": True}, max_size=20) as pool:
        check_passkey_repository(lambda: PostgresPasskeyRepository(pool, table=pg_tables[0]))
        check_challenge_ledger(lambda: PostgresChallengeLedger(pool, table=pg_tables[1]))


def test_kit_redis(redis_client: Any, redis_prefix: str) -> None:
    from tokenflow.passkeys.redis import RedisChallengeLedger

    check_challenge_ledger(lambda: RedisChallengeLedger(redis_client, prefix=redis_prefix + "pk:"))


def test_kit_catches_a_ledger_that_forgets() -> None:
    class Forgetful:
        def use(self, key: bytes, expires_at: float, now: float) -> bool:
            return True

    with pytest.raises(AssertionError, match="second use"):
        check_challenge_ledger(Forgetful)


def test_kit_catches_a_repository_whose_counter_goes_back() -> None:
    class Lenient(MemoryPasskeyRepository):
        def record_use(
            self, credential_id: bytes, sign_count: int, backed_up: bool, now: float
        ) -> bool:
            passkey = self.find(credential_id)
            return passkey is not None

    with pytest.raises(AssertionError, match="count moved"):
        check_passkey_repository(Lenient)


@pytest.mark.parametrize(
    "answer",
    [
        "alice",
        None,
        PasskeyLogin("alice", "id", 5, True),  # type: ignore[arg-type]
        PasskeyLogin("alice", "id", ("x" * 40,), True),
        PasskeyLogin("", "id", ("hwk",), True),
        PasskeyRefused("replayed"),  # type: ignore[arg-type]
    ],
)
def test_a_verifier_answering_nonsense_is_a_port_failure(answer: object) -> None:
    class Broken:
        def verify_assertion(self, response: str, *, now: float) -> object:
            return answer

    users = FakeUserDirectory()
    users.add_user("alice")
    flow = Flow(KeyRing.generate(), MemoryStore(), users, passkeys=Broken())  # type: ignore[arg-type]
    decision = flow.login(Request(method="POST", credentials=PasskeyCredentials("{}")))
    assert isinstance(decision, Unavailable)
    assert decision.port == "passkeys"
    assert not decision.set_cookies


def test_a_challenge_is_bound_to_the_origin_that_asked_for_it() -> None:
    other = "https://app.example.com"
    world = World(origins=(ORIGIN, other))
    authenticator = SoftAuthenticator()
    world.register(authenticator)
    options = world.passkeys.authentication_options(origin=ORIGIN)
    # Signed as if on the other configured origin: the challenge was not issued there.
    moved = world.passkeys.verify_assertion(authenticator.get(options, other), now=T0)
    assert isinstance(moved, PasskeyRefused)
    assert moved.reason is PasskeyFailure.CHALLENGE_INVALID
    here = world.passkeys.verify_assertion(authenticator.get(options, ORIGIN), now=T0)
    assert not isinstance(here, PasskeyRefused)


def test_sqlite_ledger_purges_only_expired_records(tmp_path: Any) -> None:
    ledger = SQLiteChallengeLedger(tmp_path / "ledger.db")
    assert ledger.use(b"a" * 32, T0 + 10, T0)
    assert ledger.use(b"b" * 32, T0 + 100, T0)
    assert ledger.purge(T0 + 50) == 1
    assert not ledger.use(b"b" * 32, T0 + 100, T0 + 60)


def test_postgres_ledger_purges_only_expired_records(
    postgres_conninfo: str, pg_tables: tuple[str, str]
) -> None:
    from tokenflow.passkeys.postgres import PostgresChallengeLedger

    ledger = PostgresChallengeLedger(postgres_conninfo, table=pg_tables[1])
    try:
        assert ledger.use(b"a" * 32, T0 + 10, T0)
        assert ledger.use(b"b" * 32, T0 + 100, T0)
        assert ledger.purge(T0 + 50) == 1
        assert not ledger.use(b"b" * 32, T0 + 100, T0 + 60)
    finally:
        ledger.close()
