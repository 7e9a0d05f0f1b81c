"""tokenflow._base64url: one accepted spelling per value, and no exception for any input."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenflow._base64url import b64url_decode, b64url_encode


def _reference(text: str) -> bytes | None:
    """The standard library's reading, kept only when re-encoding gives ``text`` back."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return None
    return raw if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text else None


@pytest.mark.parametrize(
    ("text", "raw"),
    [("", b""), ("AA", b"\x00"), ("AAE", b"\x00\x01"), ("_-8", b"\xff\xef"), ("Zm9vYg", b"foob")],
)
def test_canonical_values_decode(text: str, raw: bytes) -> None:
    assert b64url_decode(text) == raw
    assert b64url_encode(raw) == text


@pytest.mark.parametrize(
    "text",
    [
        "AA==",  # padded
        "AAE=",
        "A",  # a length of 1 mod 4 encodes no byte count
        "AAAAA",
        "AB",  # spare bits set: "AA" is the one spelling of b"\0"
        "AAF",  # "AAE" is the one spelling of b"\0\1"
        "+/8",  # the standard alphabet
        "AA/A",
        "AA A",  # whitespace, which the standard library would skip
        "AA\nA",
        "AA.A",
        "AAé",  # not ASCII
        "\x00\x00",
    ],
)
def test_every_other_spelling_is_refused(text: str) -> None:
    assert b64url_decode(text) is None


@pytest.mark.parametrize("value", [None, b"AA", 12, ["AA"]])
def test_non_text_is_refused(value: object) -> None:
    assert b64url_decode(value) is None


@given(st.binary(max_size=80))
def test_round_trip(raw: bytes) -> None:
    assert b64url_decode(b64url_encode(raw)) == raw


@given(st.text(alphabet="AQEgw09-_+/= .\né", max_size=12))
def test_agrees_with_the_standard_library_read_strictly(text: str) -> None:
    assert b64url_decode(text) == _reference(text)
