"""Token format v1: sealing and opening access and refresh tokens.

The byte layout, associated data, key derivation and validation order are
specified in ``docs/token-format.md``; this module is the reference
implementation. In short::

    token  = base64url( 0x01 | kid_len | kid | salt[8] | nonce[12] | AES-256-GCM(subkey) )
    subkey = HKDF-SHA256-Expand(prk=key, info="tokenflow/v1 subkey" | salt, L=32)
    ad     = 0x01 | kid_len | kid | salt | purpose

Why subkeys: AES-GCM with random 96-bit nonces must stay near 2^32 messages
per key. A sealer draws a random 64-bit salt, derives a subkey from it, and
seals at most ``SUBKEY_SEAL_LIMIT`` (2^24) tokens under that subkey with
random nonces before drawing a new salt. Two tokens share a (subkey, nonce)
pair only if they share the salt and the nonce. With N tokens under one key
and at most m per subkey, the probability of any collision is at most::

    N*m / 2^97            (pairs under the same subkey)
  + N^2/2 * 2^-64 * 2^-96 (pairs whose independent salts and nonces both collide)

For N = 2^40 and m = 2^24 that is 2^-33 + 2^-81 < 2^-32. Subkeys are cached,
so the derivation is paid once per salt, not once per token.
"""

from __future__ import annotations

import enum
import hmac
import itertools
import math
import os
import threading
from binascii import Error as _Base64Error
from binascii import a2b_base64 as _a2b
from binascii import b2a_base64 as _b2a
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from orjson import JSONDecodeError
from orjson import dumps as _dumps
from orjson import loads as _loads

from ._errors import ConfigError, InvalidToken, InvalidTokenReason, TokenTooLarge
from ._keyring import KeyRing

__all__ = ["COOKIE_BUDGET", "Purpose", "TokenCodec"]

VERSION: Final = 1
SALT_BYTES: Final = 8
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SUBKEY_SEAL_LIMIT: Final = 1 << 24
"""Tokens sealed under one subkey before the sealer draws a new salt."""
COOKIE_BUDGET: Final = 4096
"""Bytes a browser is guaranteed to keep for one cookie's name plus value."""
MAX_TOKEN_CHARS: Final = COOKIE_BUDGET
_SUBKEY_INFO: Final = b"tokenflow/v1 subkey"
# Folded once here, not on every open: the version, kid-length and salt bytes
# around a kid, and the least that must follow the header (nonce, tag, and
# the two bytes of the shortest JSON object).
_FIXED_HEADER: Final = 2 + SALT_BYTES
_MIN_BODY: Final = NONCE_BYTES + TAG_BYTES + 2
_SUBKEY_CACHE_SIZE: Final = 1024
OPENED_CACHE_SIZE: Final = 2048
"""Access tokens a codec remembers having opened (see :meth:`TokenCodec.open`)."""
_Opened: TypeAlias = tuple[float, float, dict[str, Any] | bytes, tuple[str, ...] | None]
"""A remembered access token: exp plus the leeway, iat, and its claims as
:meth:`TokenCodec.open` copies them (a dict and the keys of its lists) or parses
them again (bytes, None)."""
_EXACT: Final = 2**53
"""Every int up to this magnitude is exactly a float."""
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
"""The immutable types orjson returns: the values a claim copy may share."""
_VERSION_BYTE: Final = bytes([VERSION])
# Spaces appended to the JSON so that the sealed bytes are a multiple of 3 long:
# the base64url text then has no padding and no partial final quantum, so each
# token has exactly one spelling (canonical by construction).
_FILL: Final = (b"", b"  ", b" ")
MAX_CLAIMS_DEPTH: Final = 32
"""Deepest nesting of objects and arrays in a claim set (the claim set itself is depth 1)."""


def _within_depth(claims: object) -> bool:
    """True if no object or array in ``claims`` lies deeper than MAX_CLAIMS_DEPTH.

    Claims nested hundreds of levels deep would make every ``repr`` of a
    decision carrying them, and any host code that walks them recursively,
    raise RecursionError. Iterative, so the check itself cannot. The hot paths
    call it only when the JSON text holds more opening brackets than the limit
    (see ``_DEEP_MIN_BYTES``), which no usual claim set does.
    """
    stack: list[tuple[object, int]] = [(claims, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CLAIMS_DEPTH:
            return False
        if type(value) is dict:
            stack.extend((v, depth + 1) for v in value.values() if type(v) in _CONTAINERS)
        elif type(value) is list:
            stack.extend((v, depth + 1) for v in value if type(v) in _CONTAINERS)
    return True


_CONTAINERS: Final = (dict, list)
_DEEP_MIN_BYTES: Final = len('{"sub":"","iat":0,"exp":0,"":}') + 2 * MAX_CLAIMS_DEPTH
"""The shortest JSON text of a claim set nested deeper than MAX_CLAIMS_DEPTH,
94 bytes plus the length of its ``sub``: ``{"sub":"","iat":0,"exp":0,"":[[...]]}``
with 32 arrays. The checks run once ``sub``, ``iat`` and ``exp`` are known
present and typed; each level below the claim set costs at least its two
brackets; each character of ``sub`` at least one byte; whitespace, escapes,
duplicate members, longer keys or numbers only add. A shorter text, ours or
another sealer's, is shallow without a scan: a typical access token is."""
# Nesting deeper than MAX_CLAIMS_DEPTH needs more opening brackets than that in
# the JSON text, so a text with fewer is shallow without a walk. Counted as the
# bytes two ``replace(b"[", b"")``-style deletions remove: bytes.replace takes
# positional arguments through the fast calling convention and skips the copy
# when there is nothing to delete, where bytes.count parses an argument tuple
# (about 1,500 instructions a call) and translate(None, ...) first fills a
# 256-entry table. Brackets inside strings only ever raise the count, sending a
# shallow claim set to the exact walk, never a deep one past it.


def _all_finite(claims: object) -> bool:
    """False if any float in ``claims`` is NaN or infinite (iterative, like _within_depth)."""
    stack: list[object] = [claims]
    while stack:
        value = stack.pop()
        if type(value) is float:
            if value != value or value in (math.inf, -math.inf):
                return False
        elif type(value) is dict:
            stack.extend(value.values())
        elif type(value) in (list, tuple):
            stack.extend(value)  # type: ignore[arg-type]
    return True


class Purpose(enum.Enum):
    """What a token is for. Bound into the associated data: one never opens as the other."""

    ACCESS = b"A"
    REFRESH = b"R"
    PARTIAL_LOGIN = b"P"
    """A login waiting for its second factor (the partial-login cookie): it names a
    user whose first factor was verified, and never opens as a session."""


_ACCESS: Final = Purpose.ACCESS
_REFRESH: Final = Purpose.REFRESH
_PARTIAL: Final = Purpose.PARTIAL_LOGIN


# base64url -> standard alphabet; '+', '/' and '=' map to '*', which the strict
# decoder rejects, so only the url-safe alphabet without padding gets through.
_TO_STD: Final = bytes.maketrans(b"-_+/=", b"+/***")
_TO_URL: Final = bytes.maketrans(b"+/", b"-_")


def derive_subkey(key: bytes, salt: bytes) -> bytes:
    """HKDF-SHA256-Expand with the 256-bit key as PRK, one output block."""
    return hmac.digest(key, _SUBKEY_INFO + salt + b"\x01", "sha256")


class _Subkey:
    """A derived subkey with its AEAD object and both associated-data strings."""

    __slots__ = (
        "ad_access",
        "ad_partial",
        "ad_refresh",
        "aead",
        "fill",
        "overhead",
        "prefix",
        "room",
        "sealed",
    )

    def __init__(self, key: bytes, header: bytes, salt: bytes) -> None:
        self.aead = AESGCM(derive_subkey(key, salt))
        self.prefix = header
        self.overhead = len(header) + NONCE_BYTES + TAG_BYTES
        self.ad_access = header + Purpose.ACCESS.value
        self.ad_refresh = header + Purpose.REFRESH.value
        self.ad_partial = header + Purpose.PARTIAL_LOGIN.value
        # The spaces to append, indexed by the JSON's length modulo 3.
        self.fill = tuple(_FILL[(self.overhead + r) % 3] for r in range(3))
        # Longest JSON a sealer may take before the cookie check (set by the codec).
        self.room = 0
        # next(count) is atomic, so concurrent sealers never undercount.
        self.sealed = itertools.count()


class TokenCodec:
    """Seals claim sets into v1 tokens and opens them again.

    ``leeway`` (seconds) absorbs clock skew between servers: a token opens
    while ``now < exp + leeway`` and is refused if ``iat > now + leeway``.
    ``cookie_names`` gives the cookie each purpose travels in, so that a token
    whose cookie would exceed the 4096-byte budget is refused when sealed
    (:class:`TokenTooLarge`) instead of being dropped by the browser.

    A codec is safe to share between threads. It holds key material: it has no
    useful ``repr`` beyond the key ids.
    """

    __slots__ = (
        "_cache",
        "_keyring",
        "_leeway",
        "_lock",
        "_max_raw",
        "_names",
        "_opened",
        "_random",
        "_sealer",
    )

    def __init__(
        self,
        keyring: KeyRing,
        *,
        leeway: int = 5,
        cookie_names: Mapping[Purpose, str] | None = None,
    ) -> None:
        if not isinstance(keyring, KeyRing):
            raise ConfigError("TokenCodec needs a KeyRing; parse one with KeyRing.parse(...)")
        if isinstance(leeway, bool) or not isinstance(leeway, int) or not 0 <= leeway <= 300:
            raise ConfigError(f"leeway must be whole seconds between 0 and 300, not {leeway!r}")
        names = {
            Purpose.ACCESS: "__Host-tf_access",
            Purpose.REFRESH: "__Host-tf_refresh",
            Purpose.PARTIAL_LOGIN: "__Host-tf-2fa",
        }
        names.update(cookie_names or {})
        self._keyring = keyring
        self._leeway = leeway
        self._names = names
        # Raw bytes that fit every purpose's cookie; longer tokens take the exact check.
        longest_name = max(len(n.encode()) for n in names.values())
        self._max_raw = (COOKIE_BUDGET - longest_name - 1) // 4 * 3
        # The randomness source: os.urandom. Only the known-answer vector seam replaces it.
        self._random: Callable[[int], bytes] = os.urandom
        self._cache: dict[bytes, _Subkey] = {}
        # Access tokens this codec opened, by their exact text: (exp, iat, claims
        # to copy, the keys of their lists) or, for claims nested deeper, (exp,
        # iat, plaintext to parse again, None). See open().
        self._opened: dict[str, _Opened] = {}
        self._lock = threading.Lock()
        self._sealer = self._new_sealer(self._random(SALT_BYTES))
        self._cache_subkey(self._sealer)

    @property
    def keyring(self) -> KeyRing:
        """The key ring this codec seals and opens with."""
        return self._keyring

    @property
    def leeway(self) -> int:
        """Allowed clock skew, in seconds."""
        return self._leeway

    def cookie_name(self, purpose: Purpose) -> str:
        """The name of the cookie that carries tokens of ``purpose``."""
        return self._names[purpose]

    def __repr__(self) -> str:
        return f"TokenCodec(keyring={self._keyring!r}, leeway={self._leeway})"

    # -- sealing -------------------------------------------------------------

    def _new_sealer(self, salt: bytes) -> _Subkey:
        key = self._keyring.active
        kid = key.kid.encode()
        sealer = _Subkey(key.secret, _VERSION_BYTE + bytes([len(kid)]) + kid + salt, salt)
        # The sealed bytes are overhead + JSON rounded up to a multiple of 3, and
        # _max_raw is a multiple of 3: they fit exactly when overhead + JSON does.
        sealer.room = self._max_raw - sealer.overhead
        return sealer

    def seal(self, purpose: Purpose, claims: Mapping[str, Any]) -> str:
        """Seal ``claims`` under the active key and return the token text.

        ``claims`` must hold ``sub`` (a string) and ``iat`` and ``exp`` (whole
        seconds since the epoch); any other JSON-serialisable members travel
        too. A ``Mapping`` that is not exactly a ``dict`` is copied into one
        first. Raises :class:`TokenTooLarge` if the cookie would not fit and
        :class:`ValueError` or :class:`TypeError` for claims that break the format.
        """
        # The hot path of every login and refresh: one pass, no helper frames,
        # module-level names bound once (see the imports).
        sub = self._sealer
        if next(sub.sealed) >= SUBKEY_SEAL_LIMIT:
            sub = self._rekey()
        if type(claims) is not dict:
            # An exact dict from here on, so that the checks below read the very
            # members orjson serializes: a dict subclass's __getitem__ or
            # __missing__ (a defaultdict's) could answer otherwise than its storage.
            claims = dict(claims)
        try:
            # Subscripts, not .get(): a dict subscript is one specialised
            # instruction, a method call is three. A missing member raises KeyError.
            untyped = (
                type(claims["exp"]) is not int
                or type(claims["iat"]) is not int
                or type(subject := claims["sub"]) is not str
            )
        except KeyError:
            untyped = True
        if untyped:
            raise ValueError("claims need 'sub' (str), 'iat' (int) and 'exp' (int)")
        plain = _dumps(claims)
        size = len(plain)
        if (
            size >= _DEEP_MIN_BYTES + len(subject)
            and size - len(plain.replace(b"[", b"").replace(b"{", b"")) > MAX_CLAIMS_DEPTH
            and not _within_depth(claims)
        ):
            raise ValueError(f"claims nest objects or arrays deeper than {MAX_CLAIMS_DEPTH} levels")
        # orjson writes NaN and infinities as null, which would change the claims
        # silently: the rare claim set with a null in it gets the exact check.
        # partition, not find or "in": it takes its one argument without the
        # tuple parsing of find (or the raised and cleared TypeError of "in"),
        # and returns the claims' own bytes when there is no null.
        if plain.partition(b"null")[1] and not _all_finite(claims):
            raise ValueError("claims hold NaN or an infinity, which JSON cannot carry")
        fill = sub.fill[size % 3]
        if fill:
            plain += fill
        if size > sub.room:
            self._refuse_oversized(purpose, sub.overhead + len(plain))
        nonce = self._random(NONCE_BYTES)
        raw = (
            sub.prefix
            + nonce
            + sub.aead.encrypt(
                nonce,
                plain,
                sub.ad_access
                if purpose is _ACCESS
                else sub.ad_refresh
                if purpose is _REFRESH
                else sub.ad_partial,
            )
        )
        return _b2a(raw, newline=False).translate(_TO_URL).decode()

    def _refuse_oversized(self, purpose: Purpose, raw_length: int) -> None:
        name = self._names[purpose]
        size = len(name.encode()) + 1 + raw_length // 3 * 4
        if size > COOKIE_BUDGET:
            raise TokenTooLarge(name, size, COOKIE_BUDGET)

    def _rekey(self) -> _Subkey:
        # Under the lock only one racing thread draws a new salt; the others
        # find the fresh sealer and take a count from it like any other seal.
        with self._lock:
            sealer = self._sealer
            if next(sealer.sealed) < SUBKEY_SEAL_LIMIT:
                return sealer
            sealer = self._new_sealer(self._random(SALT_BYTES))
            # The seal that triggered the rekey is the new subkey's first: count
            # it, or the subkey would carry SUBKEY_SEAL_LIMIT + 1 tokens.
            next(sealer.sealed)
            self._sealer = sealer
        # Outside the lock: _cache_subkey takes it, and threading.Lock is not reentrant.
        self._cache_subkey(sealer)
        return sealer

    # -- opening -------------------------------------------------------------

    def open(self, purpose: Purpose, token: str, *, now: float) -> dict[str, Any]:
        """Open ``token`` sealed for ``purpose`` and return its claims.

        ``now`` is the current time in seconds since the epoch, passed in by
        the caller. Every failure raises :class:`InvalidToken`; its ``reason``
        says which check failed, its message never does.
        """
        # The spec's validation order: shape, encoding, version, layout, key id, tag,
        # claims, time. Everything after the tag check runs on authenticated
        # bytes only. Inlined on purpose: this is every request's hot path.
        if type(token) is not str or (size := len(token)) & 3 or size > MAX_TOKEN_CHARS:
            raise InvalidToken(InvalidTokenReason.MALFORMED)
        if purpose is _ACCESS and (seen := self._opened.get(token)) is not None:
            # A browser sends the same access token on every request of its
            # lifetime. The text is the whole input of everything below but
            # the time checks: equal text, equal bytes, equal verdict. So the
            # tag, the claims and their checks are not redone; the time is,
            # as below, on every open. Only tokens that passed every check
            # are remembered (a forger cannot fill this cache), only access
            # tokens (the purpose is bound into the tag, so a refresh open
            # never looks here), and only by this codec, whose key ring
            # cannot change. The lookup hashes the text with the process's
            # secret hash key: a near miss costs the same as any miss.
            deadline, known_iat, known, lists = seen
            leeway = self._leeway
            try:
                expired = not now < deadline
                early = not known_iat <= now + leeway
            except TypeError:
                raise ValueError(
                    f"now must be seconds since the epoch, not {type(now).__name__}"
                ) from None
            if expired:
                raise InvalidToken(InvalidTokenReason.EXPIRED)
            if early:
                raise InvalidToken(InvalidTokenReason.NOT_YET_VALID)
            # Each caller gets its own claims, nested ones included: whatever
            # one request does to them never reaches the next. Usual claims
            # hold scalars (immutable, shared) and lists of scalars (copied):
            # a copy of the dict and of each list is a whole new claim set
            # (an open took 6,000 instructions so, 11,000 parsing the plaintext
            # again, which is what claims nested any deeper still get).
            if lists is None:
                return _loads(known)  # type: ignore[arg-type, no-any-return]
            fresh: dict[str, Any] = known.copy()  # type: ignore[union-attr]
            for key in lists:
                fresh[key] = fresh[key].copy()
            return fresh
        try:
            # encode() without an argument takes CPython's UTF-8 fast path. It is
            # as strict as "ascii" here: a non-ASCII character becomes bytes of
            # 0x80 and above, which the strict decoder refuses like any other
            # byte outside the alphabet, and a lone surrogate does not encode.
            raw = _a2b(token.encode().translate(_TO_STD), strict_mode=True)
        except (UnicodeEncodeError, _Base64Error):
            raise InvalidToken(InvalidTokenReason.MALFORMED) from None
        try:
            end = raw[1] + _FIXED_HEADER
            # Cache keys are whole headers, version byte included: a hit is a
            # version 1 token under a known key and salt. A miss, or a hit on a
            # token too short for a nonce, a tag and a claim set, goes through
            # the spec's checks in order (version, length, key id), so the
            # reason never depends on what the cache holds, and AES-GCM never
            # sees a nonce shorter than 12 bytes.
            try:
                sub = self._cache[raw[:end]]
            except KeyError:
                sub = None
            if sub is None or len(raw) < end + _MIN_BODY:
                plain = self._open_uncached(purpose, raw, end)
            else:
                plain = sub.aead.decrypt(
                    raw[end : end + NONCE_BYTES],
                    raw[end + NONCE_BYTES :],
                    # Anything but a Purpose gets an associated data no token has:
                    # a wrong argument fails closed instead of opening the other kind.
                    sub.ad_access
                    if purpose is _ACCESS
                    else sub.ad_refresh
                    if purpose is _REFRESH
                    else sub.ad_partial
                    if purpose is _PARTIAL
                    else b"",
                )
        except InvalidTag:
            raise InvalidToken(InvalidTokenReason.TAG_MISMATCH) from None
        except (IndexError, ValueError):
            # An empty token (no version byte); ValueError is defensive only.
            raise InvalidToken(InvalidTokenReason.MALFORMED) from None
        # The sealer guarantees the member types; a claim set that breaks them
        # can only come from a leaked key or a faulty implementation, and fails
        # closed here (a float or boolean exp must not open, nor a missing sub).
        try:
            # orjson refuses NaN and Infinity, invalid UTF-8 and lone surrogates
            # itself: no number that the sealer refuses can come back in.
            claims: dict[str, Any] = _loads(plain)
            # No "is it a dict" test: orjson returns only dicts, lists, strings,
            # numbers, booleans and None, and all but a dict refuse a string
            # subscript with TypeError (a dict without the member: KeyError).
            # Claims that get past these lines are a dict, as annotated.
            exp = claims["exp"]
            iat = claims["iat"]
            typed = type(exp) is int and type(iat) is int and type(subject := claims["sub"]) is str
        except (JSONDecodeError, KeyError, TypeError):
            typed = False
        # The depth bound holds for tokens this codec sealed, but the spec makes
        # an opener refuse a deep claim set from any sealer (tests/vectors/
        # invalid.json): the typical access token is too short to need the scan.
        if not typed or (
            (size := len(plain)) >= _DEEP_MIN_BYTES + len(subject)
            and size - len(plain.replace(b"[", b"").replace(b"{", b"")) > MAX_CLAIMS_DEPTH
            and not _within_depth(claims)
        ):
            raise InvalidToken(InvalidTokenReason.BAD_CLAIMS)
        # Written so that a NaN ``now`` fails both tests: every comparison with
        # NaN is false, so the token is refused (as expired).
        try:
            valid = now < exp + self._leeway and iat <= now + self._leeway
        except TypeError:
            # The caller's clock, not the token, is wrong: say so, as a ValueError.
            raise ValueError(
                f"now must be seconds since the epoch, not {type(now).__name__}"
            ) from None
        if valid:
            if purpose is _ACCESS:
                opened = self._opened
                if len(opened) >= OPENED_CACHE_SIZE:
                    # Whole, not one by one: atomic under concurrent opens, and a
                    # full cache of live tokens refills from the next requests.
                    opened.clear()
                opened[token] = _remembered(claims, plain, exp + self._leeway, iat)
            return claims
        if not now < exp + self._leeway:
            raise InvalidToken(InvalidTokenReason.EXPIRED)
        raise InvalidToken(InvalidTokenReason.NOT_YET_VALID)

    def _open_uncached(self, purpose: Purpose, raw: bytes, end: int) -> bytes:
        """Decrypt a token whose header is not cached; cache its subkey once the tag verifies."""
        sub = self._subkey_for(raw, end)
        plain = sub.aead.decrypt(
            raw[end : end + NONCE_BYTES],
            raw[end + NONCE_BYTES :],
            sub.ad_access
            if purpose is _ACCESS
            else sub.ad_refresh
            if purpose is _REFRESH
            else sub.ad_partial
            if purpose is _PARTIAL
            else b"",
        )
        # Cached only once a tag verified under it: forged salts can cost a
        # derivation each, but never evict live subkeys.
        self._cache_subkey(sub)
        return plain

    def _subkey_for(self, raw: bytes, end: int) -> _Subkey:
        """A new subkey for a header not in the cache, after the spec's layout checks."""
        if raw[0] != VERSION:
            raise InvalidToken(InvalidTokenReason.UNSUPPORTED_VERSION)
        if len(raw) < end + _MIN_BODY:
            raise InvalidToken(InvalidTokenReason.MALFORMED)
        kid_len = raw[1]
        if not 1 <= kid_len <= 16:
            raise InvalidToken(InvalidTokenReason.MALFORMED)
        try:
            key = self._keyring.get(raw[2 : 2 + kid_len].decode("ascii"))
        except UnicodeDecodeError:
            key = None
        if key is None:
            raise InvalidToken(InvalidTokenReason.UNKNOWN_KEY)
        return _Subkey(key.secret, raw[:end], raw[end - SALT_BYTES : end])

    def _cache_subkey(self, sub: _Subkey) -> None:
        with self._lock:
            if len(self._cache) >= _SUBKEY_CACHE_SIZE:
                # Evict the oldest entry. Live salts are few (one per sealing
                # process per 2^24 tokens), so churn only comes from forged salts.
                del self._cache[next(iter(self._cache))]
            self._cache[sub.prefix] = sub


def _remembered(claims: dict[str, Any], plain: bytes, deadline: int, iat: int) -> _Opened:
    """What the codec keeps of an access token it opened (see ``_opened``).

    The times are kept as floats when they are exactly floats (any time this
    side of the year 285 million): a float clock's comparison with an int of
    more than 30 bits takes CPython's slow path, with a float its fastest.

    Claims whose values are scalars or lists of scalars are kept as a private
    copy (never the caller's dict, which the caller may change): a copy of it,
    and of each of its lists, is all the next caller needs. Anything nested
    deeper keeps the plaintext, parsed again on every open.
    """
    until, since = (float(t) if -_EXACT <= t <= _EXACT else t for t in (deadline, iat))
    lists: list[str] = []
    for key, value in claims.items():
        kind = type(value)
        if kind is list:
            if not all(type(item) in _SCALARS for item in value):
                return until, since, plain, None
            lists.append(key)
        elif kind not in _SCALARS:
            return until, since, plain, None
    own = claims.copy()
    for key in lists:
        own[key] = own[key].copy()
    return until, since, own, tuple(lists)


def _codec_with_fixed_randomness(codec: TokenCodec, randomness: bytes) -> TokenCodec:
    """Make ``codec`` draw its salts and nonces from ``randomness``, in order.

    The seam behind ``tests/vectors/``: known-answer vectors need a chosen salt
    and nonce. Deliberately private and never re-exported; a codec fed fixed
    randomness repeats nonces and must never seal a real token.
    """
    stream = iter(randomness)

    def draw(n: int) -> bytes:
        out = bytes(next(stream) for _ in range(n))
        if len(out) != n:  # pragma: no cover - bytes(generator) stops early only on exhaustion
            raise ValueError("fixed randomness exhausted")
        return out

    codec._random = draw
    codec._sealer = codec._new_sealer(draw(SALT_BYTES))
    codec._cache_subkey(codec._sealer)
    return codec
