"""Token sealing and opening: tokenflow against two floors and other token libraries.

Every contender turns the same reference claims into a ``str`` token (seal)
and a token back into a verified claims ``dict`` (open). Two of them are not
libraries but floors, hand-written AES-256-GCM with nothing else around it:

* **floor**: what a careful engineer writes in ten lines with the standard
  library (``json``, ``base64``);
* **tuned floor**: the same with the fastest building blocks tokenflow itself
  uses (``orjson``, ``binascii`` plus ``bytes.translate``).

The floors have no key ids, no purpose binding, no subkeys, no strict
decoding and no expiry check, so they cost less than any real token format.
A third floor isolates what tokenflow's checks cost:

* **v1 floor**: token format v1 itself (key-id header, HKDF subkey, purpose in
  the associated data, the fill that keeps base64url canonical) with the tuned
  floor's building blocks and none of the checks: no claim types, nesting
  bound or NaN guard, no per-subkey seal count, no cookie budget, no layout or
  strict base64 checks, no expiry. Its tokens open with tokenflow and
  tokenflow's open with it, which the run checks before timing.

``seal_vs_tuned_floor`` / ``open_vs_tuned_floor`` compare designs;
``checks_seal_vs_v1_floor`` / ``checks_open_vs_v1_floor`` (tokenflow over the v1
floor) measure the price of the checks alone, the figure tokenflow's own code
controls.

The other libraries are encoded as their users would call them, each with its
own fresh key. Where a library takes a bytes payload (Fernet, JWE, PASETO), the
claims go through ``orjson`` as they do in tokenflow, so that the comparison
measures the token formats and their crypto rather than JSON codecs. PyJWT
HS256 only signs (anyone can read its claims); it is a speed reference, not an
equivalent, and the output says so.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import tokenflow
from tokenflow import KeyRing
from tokenflow.tokens import Purpose, TokenCodec

from ._harness import Call, Case, Report, Settings, Stats, format_table, measure

__all__ = ["CHECKS_GOAL", "GOAL", "reference_claims", "run"]

GROUP: Final = "tokens"
GOAL: Final = 1.15
"""tokenflow's seal and open medians may be at most this many times the tuned floor's."""
CHECKS_GOAL: Final = 1.25
"""tokenflow's seal and open medians may be at most this many times the v1 floor's."""
SKIPPED: Final = "skipped (not installed: pip install 'tokenflow[bench]')"

_NONCE_BYTES: Final = 12
_TO_URL: Final = bytes.maketrans(b"+/", b"-_")
_TO_STD: Final = bytes.maketrans(b"-_", b"+/")
# Padding to re-add, by the unpadded length modulo 4 (1 is never valid base64).
_PADDING: Final = (b"", b"===", b"==", b"=")

Claims = dict[str, Any]
_ACCESS: Final = Purpose.ACCESS
# A codec remembers the access tokens it opened, and this group opens one token over
# and over: as access tokens it would time that memory, not the codec. Refresh tokens
# take every step of an access token's first open (one AD byte differs) and are never
# remembered, so the codec is timed doing what the floors do, every call.
_REFRESH: Final = Purpose.REFRESH


def reference_claims(now: int) -> Claims:
    """The claim set every contender seals: a typical two-minute access token."""
    return {
        "sub": "user-12345",
        "sid": "3f2a9c0d1e",
        "iat": now,
        "exp": now + 120,
        "roles": ["admin", "editor"],
    }


@dataclass(frozen=True, slots=True)
class Contender:
    """One way to seal and open tokens.

    ``seal`` seals the reference claims; ``open_call(token)`` is the call that
    opens ``token``. Both are :class:`Call` objects, so the harness calls the
    library function itself wherever its signature already fits.
    """

    key: str
    """Name in the JSON report."""
    label: str
    """Name in the table: says what the format is built from."""
    seal: Call
    open_call: Callable[[str], Call]
    encrypts: bool = True
    """False for a contender whose claims are readable by anyone (PyJWT HS256)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """A contender whose library is not installed."""

    key: str
    label: str
    missing: str
    """The module that failed to import."""


Factory = Callable[[Claims, int], Contender]


# -- always present ------------------------------------------------------------


def _tokenflow(claims: Claims, now: int) -> Contender:
    codec = TokenCodec(KeyRing.generate())
    open_token = codec.open

    # ``now`` is keyword-only. Passed through Call's kwargs it would cost a
    # fresh dict on every call (``fn(*args, **kwargs)``), a price no floor
    # pays; a closure's keyword call site costs no dict. Every contender is
    # thus called the same way: one callable, positional arguments only.
    def open_(token: str) -> Claims:
        return open_token(_REFRESH, token, now=now)

    return Contender(
        "tokenflow",
        "tokenflow v1 (AES-256-GCM, HKDF subkeys)",
        Call(codec.seal, (_REFRESH, claims)),
        lambda token: Call(open_, (token,)),
    )


def _v1_floor(claims: Claims, now: int) -> Contender:
    ring = KeyRing.generate()
    secret, kid = ring.active.secret, ring.active.kid.encode()
    # Subkeys by header (version, kid length, kid, salt), each with its AES-GCM
    # object and the associated data of an access token: what any v1 reader keeps.
    subkeys: dict[bytes, tuple[AESGCM, bytes]] = {}

    def learn(header: bytes) -> None:
        # HKDF-SHA256-Expand, one block (docs/token-format.md).
        info = b"tokenflow/v1 subkey" + header[-8:] + b"\x01"
        subkeys[header] = (AESGCM(hmac.digest(secret, info, "sha256")), header + _ACCESS.value)

    header = b"\x01" + bytes([len(kid)]) + kid + os.urandom(8)
    learn(header)
    aead, ad = subkeys[header]
    overhead = len(header) + _NONCE_BYTES + 16
    fill = (b"", b"  ", b" ")
    urandom = os.urandom
    dumps, loads = orjson.dumps, orjson.loads
    b2a, a2b = binascii.b2a_base64, binascii.a2b_base64

    def seal(claims: Claims) -> str:
        plain = dumps(claims)
        plain += fill[(overhead + len(plain)) % 3]
        nonce = urandom(_NONCE_BYTES)
        raw = header + nonce + aead.encrypt(nonce, plain, ad)
        return b2a(raw, newline=False).translate(_TO_URL).decode()

    def open_(token: str) -> Claims:
        raw = a2b(token.encode().translate(_TO_STD))
        end = raw[1] + 10
        key, associated = subkeys[raw[:end]]
        opened: Claims = loads(
            key.decrypt(raw[end : end + _NONCE_BYTES], raw[end + _NONCE_BYTES :], associated)
        )
        return opened

    # The same format, or the ratio would mean nothing: each side opens the other's token.
    codec = TokenCodec(ring)
    theirs = codec.seal(_ACCESS, claims)
    raw = a2b(theirs.encode().translate(_TO_STD))
    learn(raw[: raw[1] + 10])
    if open_(theirs) != claims or codec.open(_ACCESS, seal(claims), now=now) != claims:
        raise AssertionError("v1 floor and tokenflow do not open each other's tokens")
    return Contender(
        "v1_floor",
        "v1 floor (format v1 without checks)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
    )


def _floor(claims: Claims, now: int) -> Contender:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    urandom = os.urandom
    # json.dumps rebuilds an encoder on every call once separators are given;
    # an encoder built once, like the AESGCM object, keeps the floor honest.
    encode = json.JSONEncoder(separators=(",", ":")).encode

    def seal(claims: Claims) -> str:
        nonce = urandom(_NONCE_BYTES)
        sealed = aead.encrypt(nonce, encode(claims).encode(), None)
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def open_(token: str) -> Claims:
        raw = base64.urlsafe_b64decode(token)
        opened: Claims = json.loads(aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None))
        return opened

    return Contender(
        "floor",
        "floor (AES-256-GCM, json, base64)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
    )


def _tuned_floor(claims: Claims, now: int) -> Contender:
    aead = AESGCM(AESGCM.generate_key(bit_length=256))
    urandom = os.urandom
    dumps, loads = orjson.dumps, orjson.loads
    b2a, a2b = binascii.b2a_base64, binascii.a2b_base64

    def seal(claims: Claims) -> str:
        nonce = urandom(_NONCE_BYTES)
        raw = nonce + aead.encrypt(nonce, dumps(claims), None)
        return b2a(raw, newline=False).translate(_TO_URL).rstrip(b"=").decode()

    def open_(token: str) -> Claims:
        raw = a2b(token.encode().translate(_TO_STD) + _PADDING[len(token) & 3])
        opened: Claims = loads(aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None))
        return opened

    return Contender(
        "tuned_floor",
        "tuned floor (AES-256-GCM, orjson, binascii)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
    )


# -- optional competitors --------------------------------------------------------
#
# Each factory imports its library itself, so that a missing one raises
# ImportError here and becomes a skipped row instead of a crash. A small closure
# adapts each library to "claims in, str out" and "str in, dict out"; it adds
# one Python call (tens of nanoseconds) to figures of several microseconds.


def _fernet(claims: Claims, now: int) -> Contender:
    from cryptography.fernet import Fernet

    fernet = Fernet(Fernet.generate_key())
    dumps, loads = orjson.dumps, orjson.loads

    def seal(claims: Claims) -> str:
        # Fernet stamps the token with its own clock reading.
        return fernet.encrypt(dumps(claims)).decode()

    def open_(token: str) -> Claims:
        opened: Claims = loads(fernet.decrypt(token, ttl=None))
        return opened

    return Contender(
        "fernet",
        "Fernet (AES-128-CBC + HMAC-SHA256)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
    )


def _pyjwt(claims: Claims, now: int) -> Contender:
    import jwt

    secret = os.urandom(32)
    algorithms = ["HS256"]

    def seal(claims: Claims) -> str:
        return jwt.encode(claims, secret, algorithm="HS256")

    def open_(token: str) -> Claims:
        # PyJWT checks exp against the wall clock; the leeway keeps a run of
        # many rounds from outliving the two-minute reference token. It does
        # not change the work done: exp is still parsed and compared.
        return jwt.decode(token, secret, algorithms=algorithms, leeway=3600)

    return Contender(
        "pyjwt_hs256",
        "PyJWT HS256 (SIGNED ONLY, not encrypted)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
        encrypts=False,
    )


def _joserfc(claims: Claims, now: int) -> Contender:
    from joserfc import jwe
    from joserfc.jwk import OctKey

    key = OctKey.import_key(os.urandom(32))
    protected = {"alg": "dir", "enc": "A256GCM"}
    dumps, loads = orjson.dumps, orjson.loads

    def seal(claims: Claims) -> str:
        return jwe.encrypt_compact(protected, dumps(claims), key)

    def open_(token: str) -> Claims:
        # A decrypted token always has its plaintext; the Optional is for the builder.
        opened: Claims = loads(cast(bytes, jwe.decrypt_compact(token, key).plaintext))
        return opened

    return Contender(
        "joserfc_jwe",
        "joserfc JWE compact (dir + A256GCM)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
    )


def _jwcrypto(claims: Claims, now: int) -> Contender:
    from jwcrypto import jwe, jwk  # type: ignore[import-untyped]

    raw_key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    key = jwk.JWK(kty="oct", k=raw_key)
    protected = '{"alg":"dir","enc":"A256GCM"}'
    dumps, loads = orjson.dumps, orjson.loads

    def seal(claims: Claims) -> str:
        token = jwe.JWE(dumps(claims), protected=protected)
        token.add_recipient(key)
        text: str = token.serialize(compact=True)
        return text

    def open_(token: str) -> Claims:
        parsed = jwe.JWE()
        parsed.deserialize(token, key=key)
        opened: Claims = loads(parsed.payload)
        return opened

    return Contender(
        "jwcrypto_jwe",
        "jwcrypto JWE compact (dir + A256GCM)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
    )


def _pyseto(claims: Claims, now: int) -> Contender:
    import pyseto

    key = pyseto.Key.new(version=4, purpose="local", key=os.urandom(32))
    dumps, loads = orjson.dumps, orjson.loads

    def seal(claims: Claims) -> str:
        return pyseto.encode(key, dumps(claims)).decode()

    def open_(token: str) -> Claims:
        # Decoded without a deserializer: pyseto would otherwise insist on
        # PASETO's ISO-8601 exp, which the shared integer claims do not use.
        # Without a deserializer the payload is bytes; the union type does not know.
        opened: Claims = loads(cast(bytes, pyseto.decode(key, token).payload))
        return opened

    return Contender(
        "paseto_v4_local",
        "pyseto PASETO v4.local (XChaCha20 + BLAKE2b)",
        Call(seal, (claims,)),
        lambda token: Call(open_, (token,)),
    )


CORE: Final[tuple[Factory, ...]] = (_tokenflow, _v1_floor, _floor, _tuned_floor)
OPTIONAL: Final[tuple[tuple[str, str, Factory], ...]] = (
    ("fernet", "Fernet", _fernet),
    ("pyjwt_hs256", "PyJWT HS256", _pyjwt),
    ("joserfc_jwe", "joserfc JWE", _joserfc),
    ("jwcrypto_jwe", "jwcrypto JWE", _jwcrypto),
    ("paseto_v4_local", "pyseto v4.local", _pyseto),
)
LIBRARIES: Final = ("tokenflow", "cryptography", "orjson", "PyJWT", "joserfc", "jwcrypto", "pyseto")


def _contenders(claims: Claims, now: int) -> tuple[list[Contender], list[Skipped]]:
    contenders = [factory(claims, now) for factory in CORE]
    skipped = []
    for key, label, factory in OPTIONAL:
        try:
            contenders.append(factory(claims, now))
        except ImportError as exc:
            skipped.append(Skipped(key, label, exc.name or str(exc)))
    return contenders, skipped


def _check(contender: Contender, claims: Claims) -> str:
    """Round-trip once and prove that open verifies; return the token to time opening.

    A contender whose open did not authenticate would win for the wrong
    reason, so a token with one character changed must fail to open.
    """
    token = contender.seal()
    if not isinstance(token, str):
        raise TypeError(f"{contender.key}: seal returned {type(token).__name__}, not str")
    if contender.open_call(token)() != claims:
        raise AssertionError(f"{contender.key}: the round trip changed the claims")
    # A letter or digit from the middle on carries six payload bits: never
    # padding, and never a separator whose loss would fail before verifying.
    middle = next(i for i in range(len(token) // 2, len(token)) if token[i].isalnum())
    forged = token[:middle] + ("B" if token[middle] == "A" else "A") + token[middle + 1 :]
    try:
        contender.open_call(forged)()
    except Exception:  # noqa: S110 - any refusal will do; each library has its own error type
        pass
    else:
        raise AssertionError(f"{contender.key}: opened a token with a changed character")
    return token


def _ratio(numerator: Stats, denominator: Stats) -> float:
    return numerator.median / denominator.median


def _status(stats: Mapping[str, Stats]) -> str:
    seal = _ratio(stats["tokenflow/seal"], stats["tuned_floor/seal"])
    open_ = _ratio(stats["tokenflow/open"], stats["tuned_floor/open"])
    checks_seal = _ratio(stats["tokenflow/seal"], stats["v1_floor/seal"])
    checks_open = _ratio(stats["tokenflow/open"], stats["v1_floor/open"])
    return (
        f"tokenflow vs tuned floor so far: seal {seal:.3f}x, open {open_:.3f}x; "
        f"vs v1 floor: seal {checks_seal:.3f}x, open {checks_open:.3f}x"
    )


def run(settings: Settings, report: Report) -> None:
    """Benchmark sealing and opening; print the table and fill in ``report``."""
    # One clock reading for the whole run: claims and every open use it.
    now = int(time.time())
    claims = reference_claims(now)
    contenders, skipped = _contenders(claims, now)
    tokens = {c.key: _check(c, claims) for c in contenders}
    cases = []
    for c in contenders:
        cases.append(Case(f"{c.key}/seal", c.seal))
        cases.append(Case(f"{c.key}/open", c.open_call(tokens[c.key])))
    stats = measure(GROUP, cases, settings, status=_status)

    floor_seal, floor_open = stats["floor/seal"], stats["floor/open"]
    tuned_seal, tuned_open = stats["tuned_floor/seal"], stats["tuned_floor/open"]
    rows: list[list[str]] = []
    for c in contenders:
        seal, open_ = stats[f"{c.key}/seal"], stats[f"{c.key}/open"]
        ratios = {
            "seal_vs_floor": _ratio(seal, floor_seal),
            "open_vs_floor": _ratio(open_, floor_open),
            "seal_vs_tuned_floor": _ratio(seal, tuned_seal),
            "open_vs_tuned_floor": _ratio(open_, tuned_open),
        }
        rows.append(
            [
                c.label,
                f"{seal.median:.2f}",
                f"{open_.median:.2f}",
                *(f"{r:.2f}x" for r in ratios.values()),
                str(len(tokens[c.key])),
                f"{seal.noise_pct:.1f}% / {open_.noise_pct:.1f}%",
            ]
        )
        report.add_row(
            GROUP,
            c.key,
            {
                "label": c.label,
                "encrypts": c.encrypts,
                "token_length": len(tokens[c.key]),
                "seal": seal.as_json(),
                "open": open_.as_json(),
                **{name: round(r, 4) for name, r in ratios.items()},
            },
        )
    for s in skipped:
        rows.append([s.label, SKIPPED])
        report.add_row(GROUP, s.key, {"label": s.label, "skipped": SKIPPED, "missing": s.missing})

    seal_ratio = _ratio(stats["tokenflow/seal"], tuned_seal)
    open_ratio = _ratio(stats["tokenflow/open"], tuned_open)
    checks = {
        "checks_seal_vs_v1_floor": _ratio(stats["tokenflow/seal"], stats["v1_floor/seal"]),
        "checks_open_vs_v1_floor": _ratio(stats["tokenflow/open"], stats["v1_floor/open"]),
    }
    _print_results(settings, rows, seal_ratio, open_ratio, checks, skipped)

    report.add_libraries(*LIBRARIES)
    # Says which checkout was measured: a stale installed copy would mislead.
    report.environment["tokenflow_imported_from"] = os.path.dirname(tokenflow.__file__)
    report.add_detail(GROUP, "claims", claims)
    report.add_detail(
        GROUP, "goal", {"max_ratio_to_tuned_floor": GOAL, "max_ratio_to_v1_floor": CHECKS_GOAL}
    )
    report.add_key("seal_vs_tuned_floor", round(seal_ratio, 4))
    report.add_key("open_vs_tuned_floor", round(open_ratio, 4))
    for name, ratio in checks.items():
        report.add_key(name, round(ratio, 4))
    report.add_key("reference_token_length", len(tokens["tokenflow"]))


def _print_results(
    settings: Settings,
    rows: list[list[str]],
    seal_ratio: float,
    open_ratio: float,
    checks: Mapping[str, float],
    skipped: list[Skipped],
) -> None:
    headers = [
        "contender",
        "seal µs",
        "open µs",
        "seal/floor",
        "open/floor",
        "seal/tuned",
        "open/tuned",
        "chars",
        "noise seal/open",
    ]
    print(
        f"\nTokens: median of {settings.rounds} interleaved rounds, µs per operation "
        "(ratios: contender median / floor median)"
    )
    if settings.quick:
        print("QUICK MODE: few rounds and short batches; do not quote these figures.")
    print(format_table(headers, rows, "lrrrrrrrr"))
    print()
    if not any(s.key == "pyjwt_hs256" for s in skipped):
        print(
            "PyJWT HS256 only signs: its claims are readable by anyone who holds the token. "
            "It is a speed reference, not an equivalent of an encrypted token."
        )
    print("Noise is the interquartile range over the median: medians closer than it are a tie.")
    for name, ratio in (("seal_vs_tuned_floor", seal_ratio), ("open_vs_tuned_floor", open_ratio)):
        verdict = "PASS" if ratio <= GOAL else "MISS"
        print(f"{name} = {ratio:.3f}  (goal <= {GOAL}: {verdict})")
    for name, ratio in checks.items():
        verdict = "PASS" if ratio <= CHECKS_GOAL else "MISS"
        print(f"{name} = {ratio:.3f}  (goal <= {CHECKS_GOAL}: {verdict})")
