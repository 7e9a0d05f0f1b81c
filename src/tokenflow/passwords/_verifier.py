"""argon2id password verification: the sync and async verifiers and their ports.

The rules, in the order a login meets them:

1. **Length cap.** A password longer than ``max_length`` code points (before
   or after normalisation) is a failed login. It is never hashed: the dummy
   hash is checked instead, with a short fixed password, so the answer takes
   the usual time and an attacker cannot make the server hash megabytes.
2. **Normalisation.** The password is put in Unicode NFKC form, so that the
   same password typed on another keyboard or input method (a full-width
   letter, a composed or decomposed accent, a ligature) gives the same hash.
3. **Lookup.** The host's :class:`PasswordLookup` maps the username to the
   user id and the stored hash.
4. **Equal timing.** An unknown user is checked against a dummy hash made at
   construction with the same parameters: "no such user" and "wrong
   password" cost one argon2id verification each and give the same answer
   (``None``), hence the same decision and event.
5. **Rehash.** After a successful login, a hash made with other parameters
   than the current ones, or in a :class:`~tokenflow.passwords.LegacyScheme`,
   is replaced: the new argon2id hash goes to the host's :class:`RehashSink`.
"""

from __future__ import annotations

import asyncio
import secrets
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

import argon2
import argon2.exceptions

from .._errors import ConfigError
from ._legacy import LegacyScheme

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "Argon2Parameters",
    "AsyncPasswordLookup",
    "AsyncPasswordVerifier",
    "AsyncRehashSink",
    "PasswordHasher",
    "PasswordLookup",
    "PasswordVerifier",
    "RehashSink",
]

DEFAULT_MAX_LENGTH: Final = 1024
"""Longest password accepted, in code points (before and after NFKC).

Far beyond any passphrase a person types, and small enough that checking the
longest one costs about what checking a short one does (argon2id first
digests the password with BLAKE2b, a few microseconds for 4 KiB).
"""

_ARGON2_PREFIX: Final = "$argon2"
_NOTHING: Final = "\x00"  # what a refused password is replaced with, for the dummy check


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """argon2id cost parameters.

    The defaults are the first configuration of OWASP's Password Storage
    Cheat Sheet: 19 MiB of memory (``memory_cost=19456`` KiB), 2 iterations,
    1 lane. One lane because a web server runs many logins side by side:
    more lanes make one hash faster without making an attacker's guess
    dearer. Raise ``memory_cost`` (or ``time_cost``) as far as your login
    latency allows; existing hashes are upgraded at their next login.
    ``hash_len`` and ``salt_len`` are in bytes.
    """

    time_cost: int = 2
    memory_cost: int = 19_456
    parallelism: int = 1
    hash_len: int = 32
    salt_len: int = 16

    def __post_init__(self) -> None:
        for name in ("time_cost", "memory_cost", "parallelism", "hash_len", "salt_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Argon2Parameters.{name} must be a positive whole number")
        if self.memory_cost < 8 * self.parallelism:
            raise ConfigError("Argon2Parameters.memory_cost must be at least 8 KiB per lane")
        if self.hash_len < 16 or self.salt_len < 16:
            raise ConfigError("Argon2Parameters.hash_len and salt_len must be at least 16 bytes")

    def describe(self) -> str:
        """The parameters as argon2's PHC strings spell them (``m=19456,t=2,p=1``)."""
        return f"argon2id m={self.memory_cost},t={self.time_cost},p={self.parallelism}"


@runtime_checkable
class PasswordLookup(Protocol):
    """The host's user table, as the password verifier needs it.

    ``find_password`` returns ``(user_id, stored_hash)`` for a username, or
    ``None`` for an unknown one (never raise for that: raise only when the
    table cannot be read). How usernames compare (case, normalisation) is
    the host's rule; whatever it is, every spelling that finds an account
    must answer that account's own stable ``user_id``: the login throttle
    counts failures per user id, so that no spelling gets guesses of its own.
    """

    def find_password(self, username: str) -> tuple[str, str] | None:
        """The user id and stored hash of ``username``, or ``None``."""
        ...


@runtime_checkable
class AsyncPasswordLookup(Protocol):
    """The async variant of :class:`PasswordLookup`."""

    async def find_password(self, username: str) -> tuple[str, str] | None:
        """The user id and stored hash of ``username``, or ``None``."""
        ...


@runtime_checkable
class RehashSink(Protocol):
    """Receives upgraded hashes: store ``new_hash`` as the user's password hash.

    Called after a successful login whose stored hash used weaker (or just
    different) parameters, or a legacy scheme. If it raises, the exception
    reaches the flow, which answers Unavailable (503): the login is not
    completed with a hash the host failed to save.
    """

    def store_hash(self, user_id: str, new_hash: str) -> None:
        """Replace the user's stored hash with ``new_hash``."""
        ...


@runtime_checkable
class AsyncRehashSink(Protocol):
    """The async variant of :class:`RehashSink`."""

    async def store_hash(self, user_id: str, new_hash: str) -> None:
        """Replace the user's stored hash with ``new_hash``."""
        ...


@dataclass(frozen=True, slots=True)
class _Checked:
    """What a verification found: the user id on success, and, when the stored
    hash must be replaced, the normalised password to hash (kept out of repr)."""

    user_id: str | None
    rehash_from: str | None = field(default=None, repr=False)


class PasswordHasher:
    """argon2id hashing with tokenflow's rules: NFKC, a length cap, legacy schemes.

    The CPU-bound half of the verifiers, usable on its own to seed a user
    table (``python -m tokenflow hash-password`` uses it). Building one
    computes the dummy hash, so it costs one hash: build it once at start-up.
    """

    __slots__ = ("_dummy", "_hasher", "_legacy", "max_length", "parameters")

    def __init__(
        self,
        parameters: Argon2Parameters | None = None,
        *,
        legacy: Sequence[LegacyScheme] = (),
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        parameters = Argon2Parameters() if parameters is None else parameters
        if not isinstance(parameters, Argon2Parameters):
            raise ConfigError("parameters must be an Argon2Parameters")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ConfigError("max_length must be a whole number of at least 8 code points")
        for scheme in legacy:
            if not isinstance(scheme, LegacyScheme):
                raise ConfigError(
                    f"{type(scheme).__name__} is not a LegacyScheme "
                    "(it needs name, identifies() and verify())"
                )
        self.parameters: Argon2Parameters = parameters
        self.max_length: int = max_length
        self._legacy = tuple(legacy)
        self._hasher = argon2.PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_cost,
            parallelism=parameters.parallelism,
            hash_len=parameters.hash_len,
            salt_len=parameters.salt_len,
            type=argon2.Type.ID,
        )
        # A hash of a random secret nobody knows, with the current parameters:
        # unknown users are checked against it, at the cost of a real check.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(32))

    def __repr__(self) -> str:
        schemes = ", ".join(s.name for s in self._legacy)
        legacy = f", legacy=[{schemes}]" if schemes else ""
        return f"PasswordHasher({self.parameters.describe()}, max_length={self.max_length}{legacy})"

    def normalize(self, password: str) -> str | None:
        """The password in NFKC form, or ``None`` if it is empty, too long or not a str."""
        if type(password) is not str or not password or len(password) > self.max_length:
            return None
        normalized = unicodedata.normalize("NFKC", password)
        return normalized if len(normalized) <= self.max_length else None

    def hash(self, password: str) -> str:
        """A new argon2id hash (PHC string) of the NFKC form of ``password``.

        Raises :class:`ValueError` for an empty or over-long password (the
        message never contains the password).
        """
        return self._hash(password)

    def _hash(self, password: str, *, salt: bytes | None = None) -> str:
        normalized = self.normalize(password)
        if normalized is None:
            raise ValueError(
                f"a password must be a non-empty str of at most {self.max_length} characters"
            )
        return self._hasher.hash(normalized.encode("utf-8", "surrogatepass"), salt=salt)

    def needs_rehash(self, stored_hash: str) -> bool:
        """True if ``stored_hash`` is not argon2id with exactly the current parameters."""
        if not stored_hash.startswith(_ARGON2_PREFIX):
            return True
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except (argon2.exceptions.InvalidHashError, ValueError):
            return True

    def dummy_check(self) -> None:
        """One verification against the dummy hash: what an unknown user costs."""
        self._verify_argon2(self._dummy, _NOTHING)

    def _verify_argon2(self, stored_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored_hash, password.encode("utf-8", "surrogatepass"))
        except argon2.exceptions.VerifyMismatchError:
            return False

    def check(self, password: str, found: object) -> _Checked:
        """Verify ``password`` against what the lookup returned (``None``: unknown user).

        Always costs one verification. Raises :class:`ValueError` when the
        lookup's answer is malformed or the stored hash is in no scheme this
        hasher knows: a fault of the user table, which the flow reports as
        Unavailable. No message carries a password or a hash.
        """
        normalized = self.normalize(password)
        if found is None or normalized is None:
            self.dummy_check()
            return _Checked(None)
        if (
            not isinstance(found, tuple)
            or len(found) != 2
            or type(found[0]) is not str
            or not found[0]
            or type(found[1]) is not str
        ):
            self.dummy_check()
            raise ValueError("find_password must return (user_id, stored_hash) or None")
        user_id, stored_hash = found
        if stored_hash.startswith(_ARGON2_PREFIX):
            try:
                ok = self._verify_argon2(stored_hash, normalized)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                raise ValueError("the stored argon2 hash of this user is malformed") from None
            if not ok:
                return _Checked(None)
            if self.needs_rehash(stored_hash):
                return _Checked(user_id, normalized)
            return _Checked(user_id)
        for scheme in self._legacy:
            if scheme.identifies(stored_hash):
                # Legacy systems hashed the text as typed: checked un-normalised.
                if scheme.verify(password, stored_hash):
                    return _Checked(user_id, normalized)
                return _Checked(None)
        self.dummy_check()
        raise ValueError(
            "the stored hash of this user is in no scheme this verifier knows; "
            "declare its LegacyScheme"
        )

    def rehash(self, checked: _Checked) -> str | None:
        """The replacement hash a successful check asked for, or ``None``."""
        if checked.user_id is None or checked.rehash_from is None:
            return None
        return self._hasher.hash(checked.rehash_from.encode("utf-8", "surrogatepass"))


def _hasher_of(
    hasher: PasswordHasher | None,
    parameters: Argon2Parameters | None,
    legacy: Sequence[LegacyScheme],
    max_length: int,
) -> PasswordHasher:
    if hasher is None:
        return PasswordHasher(parameters, legacy=legacy, max_length=max_length)
    if not isinstance(hasher, PasswordHasher):
        raise ConfigError("hasher must be a tokenflow.passwords.PasswordHasher")
    if parameters is not None or legacy or max_length != DEFAULT_MAX_LENGTH:
        raise ConfigError("pass either hasher or parameters/legacy/max_length, not both")
    return hasher


def _account_of(found: object) -> str | None:
    """The account a lookup's answer names: its user id (``None``: no account)."""
    if found is None:
        return None
    if (
        not isinstance(found, tuple)
        or len(found) != 2
        or type(found[0]) is not str
        or not found[0]
        or type(found[1]) is not str
    ):
        raise ValueError("find_password must return (user_id, stored_hash) or None")
    return found[0]


def _require(port: object, name: str, method: str, what: str) -> None:
    if not callable(getattr(port, method, None)):
        raise ConfigError(f"{name} must have a {method}() method ({what})")


class PasswordVerifier:
    """A :class:`~tokenflow.ports.PasswordVerifier` on argon2id.

    ``Flow(..., passwords=PasswordVerifier(lookup, sink=sink))``. ``lookup``
    finds users' stored hashes; ``sink`` (optional) receives upgraded hashes:
    without one, nothing is ever rehashed. ``parameters`` default to OWASP's
    minimum (:class:`Argon2Parameters`); ``legacy`` lists the hash schemes
    being migrated away from. Pass a prepared ``hasher`` instead to share one
    (and its dummy hash) between a sync and an async verifier.
    """

    def __init__(
        self,
        lookup: PasswordLookup,
        *,
        sink: RehashSink | None = None,
        parameters: Argon2Parameters | None = None,
        legacy: Sequence[LegacyScheme] = (),
        max_length: int = DEFAULT_MAX_LENGTH,
        hasher: PasswordHasher | None = None,
    ) -> None:
        _require(lookup, "lookup", "find_password", "username -> (user_id, stored_hash) | None")
        if sink is not None:
            _require(sink, "sink", "store_hash", "(user_id, new_hash) -> None")
        self.hasher: PasswordHasher = _hasher_of(hasher, parameters, legacy, max_length)
        self._lookup = lookup
        self._sink = sink

    def __repr__(self) -> str:
        return f"PasswordVerifier({self.hasher!r}, rehash={'on' if self._sink else 'off'})"

    def account_key(self, username: str) -> str | None:
        """The account ``username`` names under the lookup's rules (its user id), or ``None``.

        The flow counts failed logins under it, before any hash is computed:
        one lookup, the same for known and unknown usernames.
        """
        return _account_of(self._lookup.find_password(username))

    def verify_password(self, username: str, password: str) -> str | None:
        """The user id if the password is right, else ``None``; upgrades the hash if due."""
        found = self._lookup.find_password(username)
        checked = self.hasher.check(password, found)
        if self._sink is not None and checked.user_id is not None:
            new_hash = self.hasher.rehash(checked)
            if new_hash is not None:
                self._sink.store_hash(checked.user_id, new_hash)
        return checked.user_id


class AsyncPasswordVerifier:
    """A :class:`~tokenflow.ports.AsyncPasswordVerifier` on argon2id.

    The same rules as :class:`PasswordVerifier`. Hashing runs in a worker
    thread (:func:`asyncio.to_thread`; argon2-cffi releases the GIL while it
    hashes), so the event loop keeps serving other requests during a login.
    """

    def __init__(
        self,
        lookup: AsyncPasswordLookup,
        *,
        sink: AsyncRehashSink | None = None,
        parameters: Argon2Parameters | None = None,
        legacy: Sequence[LegacyScheme] = (),
        max_length: int = DEFAULT_MAX_LENGTH,
        hasher: PasswordHasher | None = None,
    ) -> None:
        _require(lookup, "lookup", "find_password", "username -> (user_id, stored_hash) | None")
        if sink is not None:
            _require(sink, "sink", "store_hash", "(user_id, new_hash) -> None")
        self.hasher: PasswordHasher = _hasher_of(hasher, parameters, legacy, max_length)
        self._lookup = lookup
        self._sink = sink

    def __repr__(self) -> str:
        return f"AsyncPasswordVerifier({self.hasher!r}, rehash={'on' if self._sink else 'off'})"

    async def account_key(self, username: str) -> str | None:
        """The account ``username`` names under the lookup's rules (its user id), or ``None``."""
        return _account_of(await self._lookup.find_password(username))

    async def verify_password(self, username: str, password: str) -> str | None:
        """The user id if the password is right, else ``None``; upgrades the hash if due."""
        found = await self._lookup.find_password(username)
        checked = await asyncio.to_thread(self.hasher.check, password, found)
        if self._sink is not None and checked.user_id is not None:
            new_hash = await asyncio.to_thread(self.hasher.rehash, checked)
            if new_hash is not None:
                await self._sink.store_hash(checked.user_id, new_hash)
        return checked.user_id
