"""The key ring: its string form, validation, rotation, secrecy, and the keygen CLI."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenflow import ConfigError, Key, KeyRing
from tokenflow.__main__ import main
from tokenflow.tokens import InvalidToken, Purpose, TokenCodec

SECRET_A = bytes(range(32))
SECRET_B = bytes(range(100, 132))
SECRET_C = bytes(range(200, 232))
KID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
NOW = 1_700_000_000


def b64(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode()


def secret_spellings(secret: bytes) -> list[str]:
    """Every way a secret could leak into text."""
    return [
        b64(secret),
        base64.b64encode(secret).decode().rstrip("="),
        secret.hex(),
        repr(secret),
        repr(secret)[2:-1],
        secret.decode("latin-1"),
    ]


def assert_no_secret(text: str, *secrets: bytes) -> None:
    for secret in secrets:
        for spelling in secret_spellings(secret):
            assert spelling not in text, f"secret leaked as {spelling!r} in {text!r}"


RING_TEXT = f"*alpha:{b64(SECRET_A)},beta:{b64(SECRET_B)}"


# -- parse and serialise -----------------------------------------------------------


def test_parse_reads_the_documented_form() -> None:
    ring = KeyRing.parse(RING_TEXT)
    assert ring.active == Key("alpha", SECRET_A)
    assert ring.get("beta") == Key("beta", SECRET_B)
    assert ring.get("gamma") is None
    assert len(ring) == 2
    assert "alpha" in ring
    assert "beta" in ring
    assert "gamma" not in ring
    assert [k.kid for k in ring] == ["alpha", "beta"]


def test_order_of_entries_carries_no_meaning_and_serialise_puts_active_first() -> None:
    ring = KeyRing.parse(f"beta:{b64(SECRET_B)},*alpha:{b64(SECRET_A)}")
    assert ring.active.kid == "alpha"
    assert ring.serialize() == RING_TEXT


def test_whitespace_around_entries_is_tolerated() -> None:
    ring = KeyRing.parse(f"  *alpha:{b64(SECRET_A)} ,\n beta:{b64(SECRET_B)}\n")
    assert ring.serialize() == RING_TEXT


@settings(deadline=None)
@given(
    keys=st.dictionaries(
        st.text(KID_CHARS, min_size=1, max_size=16),
        st.binary(min_size=32, max_size=32),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_parse_serialise_round_trip(keys: dict[str, bytes], data: st.DataObject) -> None:
    active = data.draw(st.sampled_from(sorted(keys)))
    ring = KeyRing(Key(active, keys[active]), [Key(k, s) for k, s in keys.items() if k != active])
    text = ring.serialize()
    again = KeyRing.parse(text)
    assert again.serialize() == text
    assert again.active == ring.active
    assert {k.kid: k.secret for k in again} == keys
    # The order of entries carries no meaning: the active key is marked, not placed.
    entries = text.split(",")
    shuffled = KeyRing.parse(",".join(data.draw(st.permutations(entries))))
    assert shuffled.active == ring.active
    assert set(shuffled.serialize().split(",")) == set(entries)


def test_key_entry_round_trips() -> None:
    key = Key("k1", SECRET_A)
    assert key.entry(active=True) == f"*k1:{b64(SECRET_A)}"
    assert key.entry(active=False) == f"k1:{b64(SECRET_A)}"
    assert KeyRing.parse(key.entry(active=True)).active == key


# -- errors ----------------------------------------------------------------------

# SECRET_A's last character carries 4 bits and 2 zero spare bits; the next
# alphabet character decodes to the same bytes with a spare bit set.
_NON_CANONICAL = b64(SECRET_A)[:-1] + chr(ord(b64(SECRET_A)[-1]) + 1)
_STANDARD_ALPHABET = base64.b64encode(b"\xfb" * 32).decode()[:43]  # '+' and '/'

BAD_RINGS: list[tuple[str, str, str]] = [
    # (case, ring text, a fragment the message must contain)
    ("empty", "", "empty"),
    ("blank", "  \n ", "empty"),
    ("short key", f"*k1:{b64(SECRET_A)[:-1]}", "43 base64url"),
    ("long key", f"*k1:{b64(SECRET_A)}A", "43 base64url"),
    ("24-byte key", f"*k1:{b64(SECRET_A[:24])}", "43 base64url"),
    ("padded key", f"*k1:{b64(SECRET_A)}=", "43 base64url"),
    ("standard alphabet", f"*k1:{_STANDARD_ALPHABET}", "base64url"),
    ("non-alphabet character", f"*k1:{b64(SECRET_A)[:-1]}!", "43 base64url"),
    ("non-canonical last character", f"*k1:{_NON_CANONICAL}", "not canonical"),
    ("duplicate id", f"*k1:{b64(SECRET_A)},k1:{b64(SECRET_B)}", "appears twice"),
    ("no active key", f"k1:{b64(SECRET_A)},k2:{b64(SECRET_B)}", "exactly one"),
    ("two active keys", f"*k1:{b64(SECRET_A)},*k2:{b64(SECRET_B)}", "exactly one"),
    ("entry without a colon", f"*{b64(SECRET_A)}", "'<key id>:<key>'"),
    ("trailing comma", f"*k1:{b64(SECRET_A)},", "entry 2"),
    ("empty key id", f"*:{b64(SECRET_A)}", "entry 1 has an invalid key id"),
    ("17-character key id", f"*{'k' * 17}:{b64(SECRET_A)}", "1 to 16 characters"),
    ("key id with a space", f"*k 1:{b64(SECRET_A)}", "1 to 16 characters"),
    ("non-ASCII key id", f"*k\u00e9:{b64(SECRET_A)}", "1 to 16 characters"),
    ("id and key swapped", f"*{b64(SECRET_A)}:k1", "invalid key id"),
    ("id and key swapped, retired", f"*k2:{b64(SECRET_B)},{b64(SECRET_A)}:k1", "entry 2"),
]


@pytest.mark.parametrize(
    ("ring", "fragment"), [c[1:] for c in BAD_RINGS], ids=[c[0] for c in BAD_RINGS]
)
def test_bad_ring_raises_config_error_with_help_and_no_secret(ring: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        KeyRing.parse(ring)
    message = str(caught.value)
    assert fragment in message
    assert_no_secret(message, SECRET_A, SECRET_B)
    assert_no_secret(repr(caught.value), SECRET_A, SECRET_B)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        KeyRing.parse("")


@pytest.mark.parametrize("value", [None, 42, b"*k1:xyz"])
def test_parse_of_a_non_string_raises_config_error(value: Any) -> None:
    with pytest.raises(ConfigError):
        KeyRing.parse(value)


@pytest.mark.parametrize(
    ("kid", "secret", "fragment"),
    [
        ("k1", SECRET_A[:31], "31 bytes"),
        ("k1", SECRET_A + b"\0", "33 bytes"),
        ("k1", b"", "0 bytes"),
        ("k1", bytearray(SECRET_A), "non-bytes"),
        ("k1", b64(SECRET_A), "non-bytes"),
        ("", SECRET_A, "1 to 16 characters"),
        ("x" * 17, SECRET_A, "17 characters"),
        ("a:b", SECRET_A, "1 to 16 characters"),
        (None, SECRET_A, "NoneType"),
        # Arguments swapped: the "key id" is the secret, and must not be echoed.
        (SECRET_A, "k1", "a bytes"),
        (b64(SECRET_A), b"k1", "43 characters"),
    ],
    ids=[
        "31 bytes",
        "33 bytes",
        "0 bytes",
        "bytearray",
        "base64 text",
        "empty id",
        "17-character id",
        "colon in id",
        "None id",
        "swapped: bytes id",
        "swapped: base64 id",
    ],
)
def test_bad_key_raises_config_error_without_the_secret(
    kid: Any, secret: Any, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Key(kid, secret)
    assert fragment in str(caught.value)
    assert_no_secret(str(caught.value), SECRET_A)
    if "bytes" in fragment and kid == "k1":
        assert "keygen" in str(caught.value)


def test_keyring_constructor_validates() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        KeyRing(Key("k1", SECRET_A), [Key("k1", SECRET_B)])
    with pytest.raises(ConfigError, match="appears twice"):
        KeyRing(Key("k1", SECRET_A), [Key("k1", SECRET_A)])
    with pytest.raises(ConfigError, match="Key objects, not str"):
        KeyRing(Key("k1", SECRET_A), [f"k2:{b64(SECRET_B)}"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="Key objects, not bytes"):
        KeyRing(SECRET_A)  # type: ignore[arg-type]


# -- secrecy -----------------------------------------------------------------------


def test_secrets_never_appear_in_repr_or_str() -> None:
    ring = KeyRing(Key("alpha", SECRET_A), [Key("beta", SECRET_B)])
    codec = TokenCodec(ring)
    for obj in (ring.active, ring.get("beta"), ring, codec):
        for text in (repr(obj), str(obj)):
            assert_no_secret(text, SECRET_A, SECRET_B)
    assert repr(ring) == "KeyRing(active='alpha', retired=['beta'])"
    assert "alpha" in repr(codec)
    assert "alpha" in repr(ring.active)


def test_generated_keys_are_fresh_and_well_formed() -> None:
    one, two = Key.generate(), Key.generate()
    assert one.secret != two.secret
    assert len(one.secret) == 32
    assert re.fullmatch(r"[a-z2-7]{6}", one.kid)
    assert Key.generate("mine").kid == "mine"
    ring = KeyRing.generate()
    assert len(ring) == 1
    assert KeyRing.parse(ring.serialize()).active == ring.active


# -- rotation ------------------------------------------------------------------------


def test_rotated_keeps_the_old_key_open_only() -> None:
    ring = KeyRing(Key("old", SECRET_A))
    new = Key("new", SECRET_B)
    rotated = ring.rotated(new)
    assert rotated.active == new
    assert rotated.get("old") == Key("old", SECRET_A)
    assert rotated.serialize() == f"*new:{b64(SECRET_B)},old:{b64(SECRET_A)}"
    assert ring.active.kid == "old", "rings are immutable"

    old_token = TokenCodec(ring).seal(Purpose.REFRESH, {"sub": "u", "iat": NOW, "exp": NOW + 1800})
    codec = TokenCodec(rotated)
    assert codec.open(Purpose.REFRESH, old_token, now=NOW)["sub"] == "u"


def test_rotated_without_argument_generates_a_key() -> None:
    ring = KeyRing(Key("old", SECRET_A))
    rotated = ring.rotated()
    assert rotated.active.kid != "old"
    assert len(rotated.active.secret) == 32
    assert rotated.get("old") == ring.active


def test_rotated_to_an_existing_id_fails() -> None:
    ring = KeyRing(Key("a", SECRET_A), [Key("b", SECRET_B)])
    with pytest.raises(ConfigError, match="appears twice"):
        ring.rotated(Key("b", SECRET_C))


def test_without_drops_a_retired_key() -> None:
    ring = KeyRing(Key("a", SECRET_A), [Key("b", SECRET_B), Key("c", SECRET_C)])
    smaller = ring.without("b")
    assert [k.kid for k in smaller] == ["a", "c"]
    assert smaller.active == ring.active
    assert len(ring) == 3, "rings are immutable"


def test_without_refuses_the_active_or_an_unknown_key() -> None:
    ring = KeyRing(Key("a", SECRET_A), [Key("b", SECRET_B)])
    with pytest.raises(ConfigError, match="rotate to a new key"):
        ring.without("a")
    with pytest.raises(ConfigError, match="not in the key ring"):
        ring.without("zz")


# -- the keygen command ------------------------------------------------------------------


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_prints_one_active_entry(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["keygen"], capsys)
    assert (code, err) == (0, "")
    assert out.endswith("\n")
    assert out.count("\n") == 1
    ring = KeyRing.parse(out.strip())
    assert len(ring) == 1
    assert re.fullmatch(r"\*[a-z2-7]{6}:[A-Za-z0-9_-]{43}", out.strip())
    # Two runs, two different keys.
    _, again, _ = run(["keygen"], capsys)
    assert KeyRing.parse(again).active.secret != ring.active.secret


def test_keygen_with_kid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["keygen", "--kid", "prod-2025"], capsys)
    assert code == 0
    assert KeyRing.parse(out).active.kid == "prod-2025"


def test_keygen_rotate(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["keygen", "--rotate", RING_TEXT, "--kid", "gamma"], capsys)
    assert (code, err) == (0, "")
    ring = KeyRing.parse(out)
    assert ring.active.kid == "gamma"
    assert ring.get("alpha") == Key("alpha", SECRET_A)
    assert ring.get("beta") == Key("beta", SECRET_B)
    assert out.startswith("*gamma:")


def test_keygen_rotate_with_a_random_kid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["keygen", "--rotate", RING_TEXT], capsys)
    assert code == 0
    ring = KeyRing.parse(out)
    assert len(ring) == 3
    assert ring.active.kid not in {"alpha", "beta"}


@pytest.mark.parametrize(
    "argv",
    [
        ["keygen", "--rotate", ""],
        ["keygen", "--rotate", f"alpha:{b64(SECRET_A)}"],
        ["keygen", "--rotate", f"*{b64(SECRET_A)}:alpha"],
        ["keygen", "--rotate", f"*alpha:{b64(SECRET_A)}", "--kid", "alpha"],
        ["keygen", "--rotate", f"*alpha:{b64(SECRET_A)}", "--kid", "bad kid!"],
    ],
    ids=["empty", "no active key", "swapped", "kid taken", "bad kid"],
)
def test_keygen_rotate_bad_ring_exits_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("tokenflow keygen: ")
    assert_no_secret(err, SECRET_A)


def test_keygen_bad_kid_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["keygen", "--kid", "bad kid!"], capsys)
    assert code == 2
    assert err.startswith("tokenflow keygen: ")


def test_keygen_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main(["keygen", "--bogus"])
    assert caught.value.code == 2
    capsys.readouterr()


# -- sealing bytes at rest (KeyRing.seal_bytes / open_bytes) -----------------------


def test_a_secret_sealed_for_one_user_does_not_open_for_another() -> None:
    keyring = KeyRing.generate()
    sealed = keyring.seal_bytes(b"seed", purpose="mfa/totp-secret", context=b"alice")
    assert keyring.open_bytes(sealed, purpose="mfa/totp-secret", context=b"alice") == b"seed"
    for purpose, context in (("mfa/totp-secret", b"bob"), ("other", b"alice")):
        with pytest.raises(InvalidToken):
            keyring.open_bytes(sealed, purpose=purpose, context=context)


def test_sealed_bytes_survive_rotation_and_refuse_tampering() -> None:
    keyring = KeyRing.generate()
    sealed = keyring.seal_bytes(b"seed", purpose="p", context=b"c")
    rotated = keyring.rotated()
    assert rotated.open_bytes(sealed, purpose="p", context=b"c") == b"seed"
    assert rotated.seal_bytes(b"seed", purpose="p", context=b"c") != sealed
    without = rotated.without(keyring.active.kid)
    with pytest.raises(InvalidToken):
        without.open_bytes(sealed, purpose="p", context=b"c")
    for index in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 1
        with pytest.raises(InvalidToken):
            keyring.open_bytes(bytes(tampered), purpose="p", context=b"c")
    for cut in (b"", sealed[:1], sealed[:20], sealed[:-1]):
        with pytest.raises(InvalidToken):
            keyring.open_bytes(cut, purpose="p", context=b"c")
    with pytest.raises(InvalidToken):
        keyring.open_bytes("text", purpose="p", context=b"c")  # type: ignore[arg-type]


def test_a_sealed_blob_is_never_a_token_and_misuse_raises() -> None:
    keyring = KeyRing.generate()
    codec = TokenCodec(keyring)
    token = codec.seal(
        Purpose.ACCESS, {"sub": "a", "iat": 1_767_225_600, "exp": 1_767_225_600 + 60}
    )
    with pytest.raises(InvalidToken):
        keyring.open_bytes(token.encode(), purpose="p")
    with pytest.raises(ValueError, match="purpose"):
        keyring.seal_bytes(b"x", purpose="")
    with pytest.raises(ValueError, match="purpose"):
        keyring.seal_bytes(b"x", purpose="Upper")
    with pytest.raises(TypeError):
        keyring.seal_bytes("x", purpose="p")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        keyring.seal_bytes(b"x", purpose="p", context="c")  # type: ignore[arg-type]
