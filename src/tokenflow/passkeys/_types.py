"""The passkey values and ports: configuration, a stored passkey, the repository, the ledger."""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol
from urllib.parse import urlsplit

from .._errors import ConfigError

_HOST: Final = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


@dataclass(frozen=True, slots=True)
class PasskeyConfig:
    """Where passkeys are valid, and how strictly they are checked.

    ``rp_id`` is the relying party id: your registrable domain or a host
    under it (``example.com``), lower case, no scheme or port. Passkeys are
    bound to it for good: changing it later orphans every registered passkey.
    ``origins`` are the exact origins your pages are served from
    (``https://example.com``, ``https://app.example.com``): each must be
    HTTPS on the rp id or a subdomain of it (``http://localhost`` is allowed
    for development). ``challenge_ttl`` is how long a ceremony may take, in
    seconds. ``user_verification`` is ``"preferred"`` (the authenticator
    verifies the user when it can; the result is recorded in ``amr``) or
    ``"required"``. ``max_response`` bounds the bytes of a browser response
    read before anything is parsed.
    """

    rp_id: str
    rp_name: str
    origins: tuple[str, ...]
    challenge_ttl: int = 300
    user_verification: Literal["preferred", "required"] = "preferred"
    max_response: int = 16384

    def __post_init__(self) -> None:
        if type(self.rp_id) is not str or not _HOST.fullmatch(self.rp_id):
            raise ConfigError(
                "PasskeyConfig.rp_id must be a lower-case host name such as 'example.com' "
                "(no scheme, port or path)"
            )
        if type(self.rp_name) is not str or not self.rp_name.strip():
            raise ConfigError("PasskeyConfig.rp_name must be a non-empty name shown to users")
        if isinstance(self.origins, str) or not self.origins:
            raise ConfigError("PasskeyConfig.origins must be a non-empty tuple of origins")
        object.__setattr__(self, "origins", tuple(self.origins))
        for origin in self.origins:
            _check_origin(origin, self.rp_id)
        if isinstance(self.challenge_ttl, bool) or not isinstance(self.challenge_ttl, int):
            raise ConfigError("PasskeyConfig.challenge_ttl must be a number of seconds")
        if not 30 <= self.challenge_ttl <= 600:
            raise ConfigError("PasskeyConfig.challenge_ttl must be between 30 and 600 seconds")
        if self.user_verification not in ("preferred", "required"):
            raise ConfigError("PasskeyConfig.user_verification must be 'preferred' or 'required'")
        if isinstance(self.max_response, bool) or not isinstance(self.max_response, int):
            raise ConfigError("PasskeyConfig.max_response must be a number of bytes")
        if not 1024 <= self.max_response <= 65536:
            raise ConfigError("PasskeyConfig.max_response must be between 1 KiB and 64 KiB")


def _check_origin(origin: object, rp_id: str) -> None:
    if type(origin) is not str:
        raise ConfigError("PasskeyConfig.origins must hold strings such as 'https://example.com'")
    parts = urlsplit(origin)
    host = parts.hostname or ""
    canonical = f"{parts.scheme}://{parts.netloc}"
    if (
        canonical != origin
        or parts.username is not None
        or host != parts.netloc.rsplit(":", 1)[0]
        or not (host == rp_id or host.endswith("." + rp_id))
        or not (parts.scheme == "https" or (parts.scheme == "http" and host == "localhost"))
    ):
        raise ConfigError(
            f"PasskeyConfig.origins: {origin!r} is not an origin on the rp id {rp_id!r}: "
            "write it as 'https://host[:port]' (lower case, no path), with the host the rp id "
            "or a subdomain of it (http only for localhost)"
        )


@dataclass(frozen=True, slots=True)
class StoredPasskey:
    """A registered passkey, as the repository keeps it.

    ``credential_id`` and ``user_handle`` are raw bytes (the handle is the
    opaque random id the authenticator stores for the user: never the user
    id or an email). ``public_key`` is the COSE key. ``sign_count`` is the
    highest signature counter seen (0 for authenticators that do not
    count). ``backup_eligible`` says the passkey may be synced between
    devices, ``backed_up`` that it currently is. ``user_verified`` is
    whether the user was verified when it was registered.
    """

    credential_id: bytes
    user_id: str
    user_handle: bytes
    public_key: bytes = field(repr=False)
    sign_count: int
    name: str
    created_at: float
    transports: tuple[str, ...] = ()
    backup_eligible: bool = False
    backed_up: bool = False
    user_verified: bool = False
    aaguid: str = ""
    last_used_at: float | None = None


class RemoveOutcome(enum.Enum):
    """What :meth:`Passkeys.remove` did."""

    REMOVED = "removed"
    NOT_FOUND = "not_found"
    """No passkey of this user has that id (another user's included)."""
    LAST_SIGN_IN = "last_sign_in"
    """It is the user's last passkey and they have no other way to sign in."""


class RegistrationFailure(enum.Enum):
    """Why a passkey registration was refused."""

    MALFORMED = "malformed"
    CHALLENGE_INVALID = "challenge_invalid"
    CHALLENGE_EXPIRED = "challenge_expired"
    ATTESTATION = "attestation"
    """The ceremony's checks failed (rp id, origin, type, user presence, user verification)."""
    REPLAYED = "replayed"
    ALREADY_REGISTERED = "already_registered"


class PasskeyRepository(Protocol):
    """Where passkeys are kept. Contract (checked by
    :func:`tokenflow.testing.check_passkey_repository`):

    - ``add`` stores a new passkey; a credential id that exists (for any
      user) raises ``ValueError`` and changes nothing.
    - ``find`` returns the passkey with that credential id, or None.
    - ``passkeys_of`` lists one user's passkeys, oldest first.
    - ``user_handle_of`` is the handle of the user's passkeys, or None when
      they have none (a new random one is then drawn).
    - ``record_use`` is one atomic compare-and-set: it stores ``sign_count``,
      ``backed_up`` and ``now`` as the last use and returns True only if the
      new count is greater than the stored one, or both are 0 (an
      authenticator that does not count); otherwise (a counter that did not
      move forward, or an unknown id) it changes nothing and returns False.
      Two simultaneous uses with the same count: exactly one returns True.
    - ``rename`` and ``remove`` act only on the named user's own passkey and
      say whether there was one.

    Raise only on infrastructure failure.
    """

    def add(self, passkey: StoredPasskey) -> None:
        """Store a new passkey (ValueError if its credential id exists)."""
        ...

    def find(self, credential_id: bytes) -> StoredPasskey | None:
        """The passkey with this credential id, or None."""
        ...

    def passkeys_of(self, user_id: str) -> Sequence[StoredPasskey]:
        """The user's passkeys, oldest first."""
        ...

    def user_handle_of(self, user_id: str) -> bytes | None:
        """The user handle of the user's passkeys, or None."""
        ...

    def record_use(
        self, credential_id: bytes, sign_count: int, backed_up: bool, now: float
    ) -> bool:
        """Move the counter forward and record the use, atomically (see the contract)."""
        ...

    def rename(self, user_id: str, credential_id: bytes, name: str) -> bool:
        """Rename one of the user's passkeys; whether it existed."""
        ...

    def remove(self, user_id: str, credential_id: bytes) -> bool:
        """Remove one of the user's passkeys; whether it existed."""
        ...


class ChallengeLedger(Protocol):
    """The used-challenge records that make every challenge single-use. Contract
    (checked by :func:`tokenflow.testing.check_challenge_ledger`):

    ``use(key, expires_at, now)`` records ``key`` and returns True the first
    time it is called for that key; every later call before ``expires_at``
    returns False, from any process or server sharing the backend, however
    many arrive at once. Records may be forgotten after ``expires_at`` (the
    challenge itself has expired by then). Raise only on infrastructure failure.
    """

    def use(self, key: bytes, expires_at: float, now: float) -> bool:
        """Record a used challenge: True the first time only."""
        ...
