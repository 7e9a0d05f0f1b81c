"""Device-bound sessions (DBSC): settings, sealed challenges and the header syntax.

This module is part of the core: it does no I/O and knows no JOSE library.
Proof signatures are verified by a :class:`~tokenflow.ports.DeviceProofVerifier`
(:mod:`tokenflow.dbsc` has one); the decisions live in :mod:`tokenflow._flow`.

**Challenges need no store.** A challenge is ``<time>.<kid>.<mac>``: the
milliseconds since the epoch at which it was issued, the id of the key-ring
key that sealed it and ``HMAC-SHA256(subkey, label || purpose || session id
|| token || time)``, where the subkey is derived from that ring key with
HKDF-SHA256 under a label of its own (it is never the key that seals tokens)
and ``token`` is the verifier (SHA-256) of the one refresh token the
challenge is for: the token the browser will present with its proof, which
names one generation of the session. A proof is therefore good with that
refresh token only: with the token before it or after it, or another
session's, its challenge does not open. The purpose keeps registration
challenges (only sent in a login answer) and refresh challenges (sent to
anyone holding a session's refresh cookie) apart: neither passes for the
other. Any server holding the ring can check any challenge, and rotating the
ring keeps older challenges valid while their key is in it.

A challenge is accepted for a bounded window after it was issued (the flow
passes ``access_ttl + challenge_ttl`` for refresh challenges, so the one a
browser cached with its bound cookie still opens when that cookie expires);
a stale one is answered with a fresh challenge.
"""

from __future__ import annotations

import enum
import functools
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from ._base64url import b64url_decode, b64url_encode
from ._errors import ConfigError
from ._keyring import KeyRing

__all__ = [
    "DeviceBinding",
    "DeviceProof",
    "ProofFailure",
    "parse_session_id_header",
    "parse_session_response_header",
]

SUPPORTED_ALGORITHMS: Final = frozenset({"ES256", "RS256"})
"""The signature algorithms a device key may use (DBSC's ``none`` binds nothing)."""

_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_SUBKEY_INFO: Final = b"tokenflow/v1 dbsc challenge key"
_MAC_LABEL: Final = b"tokenflow/v1 dbsc challenge\x00"
_MAX_TIME_DIGITS: Final = 15
_TOKEN_CHARS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."
"""What a proof may hold: base64url and dots."""
_SESSION_ID_CHARS: Final = _TOKEN_CHARS + b"~"
_MAX_PROOF_CHARS: Final = 8192
_MAX_SESSION_ID_CHARS: Final = 128


@dataclass(frozen=True, slots=True)
class DeviceBinding:
    """Turns device-bound sessions (DBSC) on; goes in :attr:`FlowConfig.device_binding`.

    - ``registration_path``: where browsers post their registration proof
      (sent in the ``Secure-Session-Registration`` header after a login).
    - ``refresh_path``: where browsers refresh the bound (access) cookie.
    - ``algorithms``: what device keys may sign with, offered in the header
      (``ES256``, ``RS256``; never ``none``).
    - ``challenge_ttl``: seconds of slack on a challenge's life (default
      60 s). A refresh challenge is accepted for ``access_ttl + challenge_ttl``
      seconds after it was issued: the browser keeps the challenge of its last
      refresh until its bound cookie expires, ``access_ttl`` later, and signs
      it then. A registration challenge, answered right after the login, is
      accepted for ``2 x challenge_ttl`` seconds.
    - ``revoke_on_bare_refresh``: revoke a bound session when its refresh
      cookie comes back without a proof (default ``False``: refuse it, report
      the event, keep the session, so a thief cannot log the user out).
    - ``exclude_paths``: path prefixes outside the bound scope (static files).
    """

    registration_path: str = "/auth/dbsc/register"
    refresh_path: str = "/auth/dbsc/refresh"
    algorithms: tuple[str, ...] = ("ES256", "RS256")
    challenge_ttl: int = 60
    revoke_on_bare_refresh: bool = False
    exclude_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("registration_path", "refresh_path"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _PATH.fullmatch(value) or '"' in value:
                raise ConfigError(f"{name} must be an absolute URL path such as '/auth/dbsc'")
        if self.registration_path == self.refresh_path:
            raise ConfigError("registration_path and refresh_path must differ")
        algorithms = self.algorithms
        if isinstance(algorithms, str) or not algorithms:
            raise ConfigError("algorithms must be a non-empty list such as ('ES256',)")
        refused = sorted(a for a in algorithms if a not in SUPPORTED_ALGORITHMS)
        if refused:
            raise ConfigError(
                f"algorithms {refused} are not allowed for device keys; use ES256 and/or RS256"
            )
        object.__setattr__(self, "algorithms", tuple(dict.fromkeys(algorithms)))
        ttl = self.challenge_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 5 <= ttl <= 3600:
            raise ConfigError(f"challenge_ttl must be whole seconds from 5 to 3600, not {ttl!r}")
        if not isinstance(self.revoke_on_bare_refresh, bool):
            raise ConfigError("revoke_on_bare_refresh must be a bool")
        if isinstance(self.exclude_paths, str) or not all(
            isinstance(p, str) and _PATH.fullmatch(p) for p in self.exclude_paths
        ):
            raise ConfigError("exclude_paths must be a list of absolute URL paths")
        object.__setattr__(self, "exclude_paths", tuple(self.exclude_paths))

    @property
    def window(self) -> int:
        """Seconds after issue during which a registration challenge is accepted."""
        return 2 * self.challenge_ttl

    def refresh_window(self, access_ttl: int) -> int:
        """Seconds after issue during which a refresh challenge is accepted.

        The browser signs the challenge of its last refresh when the bound
        cookie it came with expires, ``access_ttl`` seconds later.
        """
        return access_ttl + self.challenge_ttl


class ProofFailure(enum.Enum):
    """Why a device proof or registration was refused (for events; never tell the client)."""

    MISSING = "missing"
    """No ``Secure-Session-Response`` header, or one that does not parse."""
    MALFORMED = "malformed"
    """Not a compact ``dbsc+jwt`` JWS with the fields the protocol requires."""
    ALGORITHM = "algorithm"
    """``alg`` not offered (``none`` never is), or not the key's type."""
    KEY = "key"
    """No usable ``jwk`` at registration, or a ``jwk`` on a refresh proof."""
    SIGNATURE = "signature"
    """The signature does not verify with the key (another device's key)."""
    AUDIENCE = "audience"
    """An ``aud`` claim that is not this endpoint's URL."""
    CHALLENGE_INVALID = "challenge_invalid"
    """``jti`` is not a challenge this server issued for this session and the
    refresh token presented with it (another generation's, say)."""
    CHALLENGE_STALE = "challenge_stale"
    """``jti`` is a genuine challenge, but older than the accepted window, or
    (on a repeat of the rotation that already took place) older than that
    rotation: a replayed proof."""
    WRONG_SESSION = "wrong_session"
    """``Sec-Secure-Session-Id`` names another session than the refresh cookie."""
    NOT_BOUND = "not_bound"
    """A refresh proof for a session that has no device key (or is over)."""
    ALREADY_BOUND = "already_bound"
    """A registration for a session already bound to another key: the first key stays."""


@dataclass(frozen=True, slots=True)
class DeviceProof:
    """A ``dbsc+jwt`` whose signature verified.

    ``key`` is the public key it verified with, as canonical JWK JSON (the
    RFC 7638 members, sorted, no spaces): what a store keeps. ``challenge``
    is the ``jti`` claim; ``audience`` the optional ``aud`` claim.
    """

    key: str
    challenge: str = field(repr=False)
    audience: str | None = None


class ChallengeVerdict(enum.Enum):
    """What :func:`open_challenge` found."""

    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


class OpenedChallenge(NamedTuple):
    """A verdict, and when a genuine challenge was issued (seconds; 0.0 if not genuine)."""

    verdict: ChallengeVerdict
    issued: float


@functools.lru_cache(maxsize=64)
def _subkey(secret: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of a ring key, one 32-byte block, with this module's info.

    Cached per ring key (a ring holds a handful): the derivation is two HMACs
    that every challenge would otherwise repeat.
    """
    prk = hmac.digest(b"\x00" * 32, secret, "sha256")
    return hmac.digest(prk, _SUBKEY_INFO + b"\x01", "sha256")


_PURPOSES: Final = {"register": b"register\x00", "refresh": b"refresh\x00"}


@functools.lru_cache(maxsize=64)
def _mac_state(secret: bytes, purpose: str) -> hmac.HMAC:
    """HMAC-SHA256 under a ring key's challenge subkey, already fed the label
    and the purpose.

    Cached per ring key and purpose; each challenge copies it (the standard
    library's ``HMAC.copy``), so the key is not set up again for every MAC.
    The cached object itself is never updated.
    """
    return hmac.new(_subkey(secret), _MAC_LABEL + _PURPOSES[purpose], "sha256")


def _mac(secret: bytes, purpose: str, session_id: str, token: bytes, issued: str) -> bytes:
    """HMAC-SHA256(subkey, label || purpose || session id || 0 || token || time)."""
    if len(token) != 32:
        raise ValueError("token must be a refresh token's 32-byte verifier")
    mac = _mac_state(secret, purpose).copy()
    mac.update(session_id.encode("utf-8", "surrogatepass") + b"\x00" + token + issued.encode())
    return mac.digest()


def seal_challenge(
    keyring: KeyRing, session_id: str, token: bytes, now: float, *, purpose: str = "refresh"
) -> str:
    """A challenge for ``session_id`` and one of its refresh tokens, issued at ``now``.

    ``token`` is the verifier of the refresh token the browser will present
    with its proof (one generation of the session). ``purpose`` is
    ``"register"`` (only ever sent in a login answer) or ``"refresh"``: one
    never passes for the other, so a refresh cookie alone, which can always
    obtain a refresh challenge, can never register a key.
    """
    key = keyring.active
    issued = str(int(now * 1000))
    return (
        f"{issued}.{key.kid}.{b64url_encode(_mac(key.secret, purpose, session_id, token, issued))}"
    )


_INVALID: Final = OpenedChallenge(ChallengeVerdict.INVALID, 0.0)


def open_challenge(
    keyring: KeyRing,
    session_id: str,
    token: bytes,
    challenge: object,
    now: float,
    *,
    window: int,
    leeway: int,
    purpose: str = "refresh",
) -> OpenedChallenge:
    """Whether ``challenge`` was sealed for ``session_id`` and the refresh token
    whose verifier is ``token``, within ``window`` seconds of ``now``.

    The MAC is checked (in constant time) before the time is trusted.
    """
    if type(challenge) is not str or len(challenge) > 100:
        return _INVALID
    parts = challenge.split(".")
    if len(parts) != 3:
        return _INVALID
    issued, kid, mac_text = parts
    if (
        not issued.isascii()
        or not issued.isdigit()
        or len(issued) > _MAX_TIME_DIGITS
        or (issued != "0" and issued.startswith("0"))
        or len(mac_text) != 43
    ):
        return _INVALID
    key = keyring.get(kid)
    if key is None:
        return _INVALID
    mac = b64url_decode(mac_text)
    if mac is None:
        return _INVALID
    expected = _mac(key.secret, purpose, session_id, token, issued)
    if not hmac.compare_digest(mac, expected):
        return _INVALID
    issued_at = int(issued) / 1000
    age = now - issued_at
    # A challenge from slightly in the future: another server's clock runs ahead.
    if -leeway <= age <= window:
        return OpenedChallenge(ChallengeVerdict.VALID, issued_at)
    return OpenedChallenge(ChallengeVerdict.STALE, issued_at)


def _unquote(value: object, allowed: bytes, limit: int) -> str | None:
    """The value of an sf-string header, quoted or bare, parameters dropped; None if malformed."""
    if type(value) is not str:
        return None
    text = value.strip(" \t")
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            return None
        inner, rest = text[1:end], text[end + 1 :].strip(" \t")
        if rest and not rest.startswith(";"):
            return None
    else:
        inner = text.split(";", 1)[0].strip(" \t")
    if (
        not inner
        or len(inner) > limit
        or not inner.isascii()
        # Deleting every allowed byte leaves nothing: one C pass, a third of a regex's.
        or inner.encode("ascii").translate(None, allowed)
    ):
        return None
    return inner


def parse_session_response_header(value: object) -> str | None:
    """The proof JWT in a ``Secure-Session-Response`` header, or None.

    Chrome sends it bare; the specification describes an sf-string. Both are
    accepted: one pair of surrounding quotes is removed and any ``;param``
    tail is dropped. The result only holds base64url characters and dots.
    """
    return _unquote(value, _TOKEN_CHARS, _MAX_PROOF_CHARS)


def parse_session_id_header(value: object) -> str | None:
    """The session id in a ``Sec-Secure-Session-Id`` header (quoted or bare), or None."""
    return _unquote(value, _SESSION_ID_CHARS, _MAX_SESSION_ID_CHARS)


def registration_header(binding: DeviceBinding, challenge: str) -> str:
    """The ``Secure-Session-Registration`` header value that invites a browser to register."""
    return (
        f'({" ".join(binding.algorithms)});path="{binding.registration_path}"'
        f';challenge="{challenge}"'
    )


def challenge_header(challenge: str, session_id: str) -> str:
    """The ``Secure-Session-Challenge`` header value for one session."""
    return f'"{challenge}";id="{session_id}"'


def session_instructions(
    binding: DeviceBinding, session_id: str, cookie_name: str, attributes: str
) -> Mapping[str, Any]:
    """The JSON session instructions a registration answers with."""
    rules = [{"type": "exclude", "domain": "*", "path": p} for p in binding.exclude_paths]
    scope: dict[str, Any] = {"include_site": False}
    if rules:
        scope["scope_specification"] = rules
    return {
        "session_identifier": session_id,
        "refresh_url": binding.refresh_path,
        "scope": scope,
        "credentials": [{"type": "cookie", "name": cookie_name, "attributes": attributes}],
    }


def instructions_json(instructions: Mapping[str, Any]) -> bytes:
    """The instructions as the response body."""
    return json.dumps(instructions, separators=(",", ":"), sort_keys=True).encode()
