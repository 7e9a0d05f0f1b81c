"""The clock and the identity-port fakes of tokenflow.testing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import tokenflow.testing
import tokenflow.testing.fakes
from tokenflow import ConfigError, Identity
from tokenflow.ports import (
    AsyncExternalTokenVerifier,
    AsyncPasswordVerifier,
    AsyncUserDirectory,
    ExternalIdentity,
    ExternalTokenVerifier,
    PasswordVerifier,
    UserDirectory,
)
from tokenflow.testing import (
    AsyncFakeExternalTokenVerifier,
    AsyncFakePasswordVerifier,
    AsyncFakeUserDirectory,
    FakeClock,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeUserDirectory,
)

T0 = 1_700_000_000.0

# The fakes satisfy the ports' Protocols (checked by mypy on these lines).
_PORTS: list[Any] = [
    FakeUserDirectory(),
    FakePasswordVerifier(),
    FakeExternalTokenVerifier(),
]
_users: UserDirectory = FakeUserDirectory()
_passwords: PasswordVerifier = FakePasswordVerifier()
_tokens: ExternalTokenVerifier = FakeExternalTokenVerifier()
_async_users: AsyncUserDirectory = AsyncFakeUserDirectory()
_async_passwords: AsyncPasswordVerifier = AsyncFakePasswordVerifier()
_async_tokens: AsyncExternalTokenVerifier = AsyncFakeExternalTokenVerifier()


# ------------------------------------------------------------------ FakeClock


def test_the_clock_stands_still_until_advanced() -> None:
    clock = FakeClock(T0)
    assert clock() == clock() == T0
    assert clock.advance(1.5) == T0 + 1.5
    assert clock() == T0 + 1.5
    assert clock.advance(0) == T0 + 1.5
    assert repr(clock) == f"FakeClock({T0 + 1.5!r})"


def test_the_default_clock_starts_at_a_realistic_time() -> None:
    assert FakeClock()() > 1.6e9


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_the_clock_only_moves_forward(seconds: float) -> None:
    clock = FakeClock(T0)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(seconds)
    assert clock() == T0


def test_a_clock_cannot_start_at_infinity() -> None:
    with pytest.raises(ValueError, match="finite"):
        FakeClock(float("inf"))


def test_the_clock_is_thread_safe() -> None:
    clock = FakeClock(0.0)

    def tick() -> None:
        for _ in range(2000):
            clock.advance(1.0)

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock() == 16_000.0


# ------------------------------------------------------------------ FakeUserDirectory


def test_users_load_with_their_claims() -> None:
    users = FakeUserDirectory()
    claims: dict[str, Any] = {"roles": ["editor"]}
    identity = users.add_user("alice", claims)
    assert identity == Identity("alice", {"roles": ["editor"]})
    assert users.load_user("alice") == identity
    claims["tenant"] = "acme"  # the directory kept a copy
    assert users.load_user("alice") == identity
    assert users.load_user("nobody") is None


def test_claims_can_change() -> None:
    users = FakeUserDirectory()
    users.add_user("alice", {"roles": ["editor"]})
    users.set_claims("alice", {"roles": ["admin"]})
    loaded = users.load_user("alice")
    assert loaded is not None
    assert loaded.claims == {"roles": ["admin"]}
    with pytest.raises(KeyError):
        users.set_claims("nobody", {})


def test_reserved_claims_are_refused() -> None:
    with pytest.raises(ConfigError, match="sub"):
        FakeUserDirectory().add_user("alice", {"sub": "someone else"})


def test_disabled_and_deleted_users_do_not_load() -> None:
    users = FakeUserDirectory()
    users.add_user("alice")
    users.disable("alice")
    assert users.load_user("alice") is None
    users.enable("alice")
    assert users.load_user("alice") == Identity("alice")
    users.delete("alice")
    assert users.load_user("alice") is None
    for change in (users.disable, users.enable, users.delete):
        with pytest.raises(KeyError):
            change("alice")


def test_external_identities_map_to_linked_users() -> None:
    users = FakeUserDirectory()
    users.add_user("alice")
    users.link("google", "g-123", "alice")
    assert users.link_external(ExternalIdentity("google", "g-123")) == "alice"
    # Same subject, another provider: a different identity.
    assert users.link_external(ExternalIdentity("okta", "g-123")) is None
    assert users.link_external(ExternalIdentity("google", "g-999")) is None
    users.disable("alice")
    assert users.link_external(ExternalIdentity("google", "g-123")) is None
    users.enable("alice")
    users.delete("alice")
    assert users.link_external(ExternalIdentity("google", "g-123")) is None
    with pytest.raises(KeyError):
        users.link("google", "g-123", "alice")


def test_sign_up_creates_a_user_but_never_takes_over_one() -> None:
    users = FakeUserDirectory(allow_signup=True)
    new = users.link_external(ExternalIdentity("google", "g-1", {"email": "a@example.com"}))
    assert new == "google:g-1"
    assert users.load_user("google:g-1") == Identity("google:g-1")
    assert users.link_external(ExternalIdentity("google", "g-1")) == "google:g-1"
    # A local user who happens to have the id sign-up would pick is not merged.
    users.add_user("google:g-2")
    assert users.link_external(ExternalIdentity("google", "g-2")) is None


def test_an_unavailable_directory_raises() -> None:
    users = FakeUserDirectory()
    users.add_user("alice")
    users.unavailable = True
    with pytest.raises(ConnectionError):
        users.load_user("alice")
    with pytest.raises(ConnectionError):
        users.link_external(ExternalIdentity("google", "g-1"))
    users.unavailable = False
    assert users.load_user("alice") == Identity("alice")


@pytest.mark.asyncio
async def test_the_async_directory_shares_the_sync_one() -> None:
    users = FakeUserDirectory()
    async_users = AsyncFakeUserDirectory(users)
    users.add_user("alice")
    users.link("google", "g-1", "alice")
    assert await async_users.load_user("alice") == Identity("alice")
    assert await async_users.link_external(ExternalIdentity("google", "g-1")) == "alice"
    async_users.sync.disable("alice")
    assert await async_users.load_user("alice") is None
    assert repr(async_users).startswith("AsyncFakeUserDirectory(")


# ------------------------------------------------------------------ FakePasswordVerifier


def test_passwords_verify_to_the_user_id() -> None:
    passwords = FakePasswordVerifier({"alice": "correct horse"})
    passwords.set_password("bob@example.com", "battery staple", user_id="bob")
    assert passwords.verify_password("alice", "correct horse") == "alice"
    assert passwords.verify_password("bob@example.com", "battery staple") == "bob"
    assert passwords.verify_password("alice", "correct horse ") is None
    assert passwords.verify_password("alice", "battery staple") is None
    assert passwords.verify_password("bob", "battery staple") is None
    passwords.remove("alice")
    passwords.remove("never existed")
    assert passwords.verify_password("alice", "correct horse") is None


def test_passwords_are_stored_as_salted_hashes_only() -> None:
    passwords = FakePasswordVerifier()
    passwords.set_password("alice", "same password")
    passwords.set_password("bob", "same password")
    alice, bob = passwords._records["alice"], passwords._records["bob"]
    for record in (alice, bob):
        assert b"same password" not in record.salt + record.digest
        assert "same password" not in repr(record)
    assert alice.salt != bob.salt
    assert alice.digest != bob.digest  # salted: equal passwords, different hashes
    assert "same password" not in repr(passwords)


def test_unknown_users_cost_one_hash_like_wrong_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    passwords = FakePasswordVerifier({"alice": "secret"})
    calls: list[bytes] = []
    original = tokenflow.testing.fakes._hash_password

    def counting(password: str, salt: bytes) -> bytes:
        calls.append(salt)
        return original(password, salt)

    monkeypatch.setattr(tokenflow.testing.fakes, "_hash_password", counting)
    assert passwords.verify_password("alice", "wrong") is None
    assert passwords.verify_password("mallory", "wrong") is None
    assert passwords.verify_password("alice", "secret") == "alice"
    assert len(calls) == 3  # one hash per attempt, known user or not


def test_odd_passwords_are_wrong_passwords_not_errors() -> None:
    passwords = FakePasswordVerifier({"alice": "secret"})
    for odd in ("\ud800", "\x00", "", "é" * 1000):
        assert passwords.verify_password("alice", odd) is None
        assert passwords.verify_password(odd, odd) is None
    passwords.set_password("alice", "\ud800 surrogate")
    assert passwords.verify_password("alice", "\ud800 surrogate") == "alice"


def test_an_unavailable_verifier_raises() -> None:
    passwords = FakePasswordVerifier({"alice": "secret"})
    passwords.unavailable = True
    with pytest.raises(ConnectionError):
        passwords.verify_password("alice", "secret")


@pytest.mark.asyncio
async def test_the_async_verifier_shares_the_sync_one() -> None:
    async_passwords = AsyncFakePasswordVerifier()
    async_passwords.sync.set_password("alice", "secret")
    assert await async_passwords.verify_password("alice", "secret") == "alice"
    assert await async_passwords.verify_password("alice", "nope") is None


# ------------------------------------------------------------------ FakeExternalTokenVerifier


def test_issued_tokens_verify_until_they_expire() -> None:
    google = FakeExternalTokenVerifier("google")
    token = google.issue("g-1", expires_at=T0 + 60, claims={"email": "a@example.com"})
    identity = google.verify_token(token, now=T0)
    assert identity is not None
    assert identity.provider == "google"
    assert identity.subject == "g-1"
    assert identity.claims == {"email": "a@example.com", "sub": "g-1", "exp": T0 + 60}
    assert google.verify_token(token, now=T0 + 59.999) == identity
    assert google.verify_token(token, now=T0 + 60) is None  # expiry is exclusive
    assert google.issue("g-1", expires_at=T0 + 60) != token  # every token is new


def test_unknown_and_revoked_tokens_do_not_verify() -> None:
    idp = FakeExternalTokenVerifier()
    assert idp.provider == "fake-idp"
    assert idp.verify_token("", now=T0) is None
    assert idp.verify_token("not-a-token", now=T0) is None
    token = idp.issue("s", expires_at=T0 + 60)
    idp.revoke(token)
    idp.revoke(token)
    assert idp.verify_token(token, now=T0) is None


def test_a_chosen_token_string_can_be_registered() -> None:
    idp = FakeExternalTokenVerifier("okta")
    identity = idp.register("eyJ.not-really.a-jwt", "u-7", expires_at=T0 + 1)
    assert idp.verify_token("eyJ.not-really.a-jwt", now=T0) == identity
    assert identity == ExternalIdentity("okta", "u-7", {"sub": "u-7", "exp": T0 + 1})
    with pytest.raises(TypeError):
        identity.claims["sub"] = "someone else"  # type: ignore[index]


def test_an_unavailable_token_verifier_raises() -> None:
    idp = FakeExternalTokenVerifier()
    token = idp.issue("s", expires_at=T0 + 60)
    idp.unavailable = True
    with pytest.raises(ConnectionError):
        idp.verify_token(token, now=T0)


@pytest.mark.asyncio
async def test_the_async_token_verifier_shares_the_sync_one() -> None:
    async_idp = AsyncFakeExternalTokenVerifier(FakeExternalTokenVerifier("apple"))
    token = async_idp.sync.issue("a-1", expires_at=T0 + 60)
    identity = await async_idp.verify_token(token, now=T0)
    assert identity is not None
    assert identity.provider == "apple"
    assert await async_idp.verify_token(token, now=T0 + 61) is None


def test_reprs_hold_no_secrets() -> None:
    idp = FakeExternalTokenVerifier()
    token = idp.issue("s", expires_at=T0 + 60)
    passwords = FakePasswordVerifier({"alice": "hunter2"})
    for fake in (*_PORTS, idp, passwords):
        assert token not in repr(fake)
        assert "hunter2" not in repr(fake)
