"""The JavaScript reader of token format v1 (``interop/js``) against tokenflow.

All run with the machine's ``node``:

- every known-answer vector in ``tests/vectors/`` agrees in JavaScript
  (``interop/js/check-vectors.mjs``), and the reader's own unit tests pass;
- tokens sealed by :class:`tokenflow.tokens.TokenCodec` from random claims open in
  JavaScript to identical claims (integers and floats kept apart), and every
  tampered, truncated, mis-purposed, foreign or untimely variant is refused
  with the reason tokenflow gives; so is any text posing as a token;
- plaintexts sealed straight from the specification, most of them bad claims
  (NaN, 1e400, lone surrogates, duplicate members, stray bytes...), get the
  same answer from both: each rule on its own, then random mixtures;
- the time checks agree at the edges of 64-bit integers, where a double
  cannot hold every integer.

One node process serves a whole test run: each example sends it one batch of
cases as a JSON line and reads one line of results back.

Without ``node`` on PATH the module is skipped, unless TOKENFLOW_REQUIRE_NODE=1
(CI) makes that a failure. TOKENFLOW_INTEROP_EXAMPLES sets the number of
examples per property (default 40).
"""

from __future__ import annotations

import base64
import functools
import importlib
import itertools
import json
import math
import os
import pathlib
import selectors
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tokenflow import Key, KeyRing
from tokenflow.tokens import InvalidToken, Purpose, TokenCodec, TokenTooLarge

ROOT = pathlib.Path(__file__).resolve().parent.parent
JS = ROOT / "interop" / "js"
VECTORS = ROOT / "tests" / "vectors"
if str(VECTORS) not in sys.path:
    sys.path.insert(0, str(VECTORS))
spec_v1: Any = importlib.import_module("spec_v1")

REQUIRE_ENV = "TOKENFLOW_REQUIRE_NODE"
EXAMPLES = int(os.environ.get("TOKENFLOW_INTEROP_EXAMPLES", "40"))
PURPOSES = {"access": Purpose.ACCESS, "refresh": Purpose.REFRESH}
NOW = 1_700_000_000
REPLY_TIMEOUT = 60.0

Outcome = tuple[str, Any]


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, or a skip (a failure under TOKENFLOW_REQUIRE_NODE=1)."""
    found = shutil.which("node")
    if found is None:
        message = (
            "node is not on PATH, so the JavaScript reader in interop/js is not checked; "
            f"install Node.js 20 or later, or set {REQUIRE_ENV}=1 to make this a failure"
        )
        if os.environ.get(REQUIRE_ENV, "") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - a fixed command: node and a script of this repository
        args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


# -- the vectors and the unit tests ------------------------------------------------


def _count(name: str) -> int:
    vectors = json.loads((VECTORS / name).read_text(encoding="utf-8"))["vectors"]
    assert vectors
    return len(vectors)


def test_every_vector_agrees_in_javascript(node: str) -> None:
    done = _run(node, str(JS / "check-vectors.mjs"))
    opened, sealed, invalid = _count("open.json"), _count("seal.json"), _count("invalid.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""
    assert done.stdout == (
        f"open: {opened}/{opened} agree, seal: {sealed}/{sealed} byte-identical, "
        f"invalid: {invalid}/{invalid} refused with the same reason\n"
    )


def test_the_javascript_unit_tests_pass(node: str) -> None:
    done = _run(node, "--test", str(JS / "tokenflow-v1.test.mjs"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout
    assert "# pass 0" not in done.stdout


# -- one node process for the random checks -------------------------------------------


class NodeReader:
    """``interop/js/open-lines.mjs`` in a child process: a batch of cases in, results out."""

    def __init__(self, node: str, stderr: IO[bytes]) -> None:
        self._process = subprocess.Popen(  # noqa: S603 - node and a script of this repository
            [node, str(JS / "open-lines.mjs")],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._stdin = self._process.stdin
        self._stdout = self._process.stdout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)

    def open(self, cases: list[dict[str, Any]]) -> list[Outcome]:
        """What JavaScript says for each case: ("claims", dict) or ("reason", str)."""
        request = {
            "cases": [
                {**case, "now": case["now"] if math.isfinite(case["now"]) else str(case["now"])}
                for case in cases
            ]
        }
        # ensure_ascii: a lone surrogate in a token travels as a \u escape.
        self._stdin.write(json.dumps(request).encode("ascii") + b"\n")
        self._stdin.flush()
        if not self._selector.select(REPLY_TIMEOUT):
            raise AssertionError(f"node gave no answer within {REPLY_TIMEOUT} seconds")
        line = self._stdout.readline()
        assert line, f"node exited with status {self._process.wait()}"
        results = json.loads(line)["results"]
        assert len(results) == len(cases)
        return [next(iter(result.items())) for result in results]

    def close(self) -> None:
        """End the child process (closing its input ends its loop) and wait for it."""
        self._selector.close()
        self._stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if node hangs
            self._process.kill()
            self._process.wait()
        self._stdout.close()


@pytest.fixture(scope="module")
def js(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeReader]:
    """One node process for the whole module."""
    log = tmp_path_factory.mktemp("node") / "stderr.txt"
    with log.open("wb") as stderr:
        reader = NodeReader(node, stderr)
        try:
            yield reader
        finally:
            reader.close()
    assert log.read_text(encoding="utf-8", errors="replace") == ""


@functools.lru_cache(maxsize=256)
def _codec(ring: str, leeway: int) -> TokenCodec:
    return TokenCodec(KeyRing.parse(ring), leeway=leeway)


def _python(case: dict[str, Any]) -> Outcome:
    """What tokenflow says for a case."""
    codec = _codec(case["ring"], case["leeway"])
    try:
        return ("claims", codec.open(PURPOSES[case["purpose"]], case["token"], now=case["now"]))
    except InvalidToken as exc:
        return ("reason", exc.reason.value)


def _same(a: object, b: object) -> bool:
    """Equal JSON values of the same types: 1, 1.0 and True differ, so do 0.0 and -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _agree(js: NodeReader, cases: list[dict[str, Any]]) -> list[Outcome]:
    """Assert that JavaScript and tokenflow answer every case alike; return the answers."""
    ours = [_python(case) for case in cases]
    theirs = js.open(cases)
    for case, mine, other in zip(cases, ours, theirs, strict=True):
        agreed = mine[0] == other[0] and _same(mine[1], other[1])
        assert agreed, f"tokenflow: {mine!r}, JavaScript: {other!r}, for {case!r}"
    return ours


def _note(outcomes: list[Outcome]) -> None:
    """Tell hypothesis's statistics how the first case ended (--hypothesis-show-statistics)."""
    kind, outcome = outcomes[0]
    event(f"first case: {'opened' if kind == 'claims' else outcome}")


# -- strategies -------------------------------------------------------------------------

# orjson refuses lone surrogates when sealing, so text claims never hold one.
_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.integers(-(2**53) - 2, 2**53 + 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
# At most a few levels: far inside the 32 the format allows.
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=10,
)
_times = st.integers(0, 4_000_000_000) | st.integers(-(2**63), 2**64 - 1)


@st.composite
def _claims(draw: st.DrawFn) -> dict[str, Any]:
    iat = draw(_times)
    exp = min(max(iat + draw(st.integers(-10, 10**6)), -(2**63)), 2**64 - 1)
    claims: dict[str, Any] = {"sub": draw(_text), "iat": iat, "exp": exp}
    extra = draw(st.dictionaries(_text.filter(lambda k: k not in claims), _json, max_size=4))
    # The order of members is the caller's: put the extra ones first sometimes.
    return {**extra, **claims} if draw(st.booleans()) else {**claims, **extra}


_kids = st.from_regex(r"[A-Za-z0-9_-]{1,16}", fullmatch=True)
_keys = st.builds(Key, _kids, st.binary(min_size=32, max_size=32))


@st.composite
def _rings(draw: st.DrawFn) -> KeyRing:
    active = draw(_keys)
    retired = draw(st.lists(_keys.filter(lambda k: k.kid != active.kid), max_size=2))
    assume(len({k.kid for k in retired}) == len(retired))
    return KeyRing(active, retired)


_clock_skew = st.floats(-400, 400) | st.integers(-400, 400).map(float)
_odd_clocks = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 2.0**64, -(2.0**63)])
_token_chars = st.sampled_from([*"AQgw-_+/= .\n\u00e9\uff11\U0001f511", "\ud800"])


def _flip(token: str, index: int, bit: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[index % len(raw)] ^= 1 << bit
    return base64.urlsafe_b64encode(bytes(raw)).decode()


# -- tokens sealed by tokenflow -------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ring=_rings(),
    claims=_claims(),
    purpose=st.sampled_from(sorted(PURPOSES)),
    leeway=st.integers(0, 300),
    skew=_clock_skew,
    odd_clock=_odd_clocks,
    flip=st.tuples(st.integers(0, 4095), st.integers(0, 7)),
    swap=st.tuples(st.integers(0, 4095), _token_chars),
    cut=st.integers(0, 4095),
    impostor=st.binary(min_size=32, max_size=32),
)
def test_tokens_sealed_by_tokenflow_open_alike_in_javascript(
    js: NodeReader,
    ring: KeyRing,
    claims: dict[str, Any],
    purpose: str,
    leeway: int,
    skew: float,
    odd_clock: float,
    flip: tuple[int, int],
    swap: tuple[int, str],
    cut: int,
    impostor: bytes,
) -> None:
    text = ring.serialize()
    try:
        token = _codec(text, leeway).seal(PURPOSES[purpose], claims)
    except TokenTooLarge:
        assume(False)
    # Mostly inside the validity window, so that most tokens open.
    now = float(claims["iat"]) + skew
    other_purpose = "refresh" if purpose == "access" else "access"
    kid = ring.active.kid
    at = swap[0] % len(token)
    case = {"ring": text, "purpose": purpose, "token": token, "now": now, "leeway": leeway}
    cases = [
        case,
        {**case, "now": odd_clock},
        {**case, "purpose": other_purpose},
        {**case, "token": _flip(token, *flip)},
        {**case, "token": token[:at] + swap[1] + token[at + 1 :]},
        {**case, "token": token[: cut % len(token)]},
        {**case, "ring": KeyRing(Key(kid, impostor)).serialize()},
        {**case, "ring": KeyRing(Key(kid + "x" if len(kid) < 16 else "x", impostor)).serialize()},
    ]
    outcomes = _agree(js, cases)
    _note(outcomes)
    if outcomes[0][0] == "claims":
        assert _same(outcomes[0][1], json.loads(json.dumps(claims)))


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    ring=_rings(),
    text=st.text(max_size=64)
    | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=64),
    raw_tail=st.binary(max_size=90),
    kid_length=st.integers(0, 20),
)
def test_any_text_is_refused_alike(
    js: NodeReader, ring: KeyRing, text: str, raw_tail: bytes, kid_length: int
) -> None:
    kid = ring.active.kid.encode()
    # Version 1 with a key id the ring knows (and a length byte that may lie), then noise.
    forged = bytes([1, kid_length]) + kid + raw_tail
    forged = forged[: len(forged) - len(forged) % 3]
    base = {"ring": ring.serialize(), "purpose": "access", "now": float(NOW), "leeway": 5}
    cases = [
        {**base, "token": text},
        {**base, "token": text[: len(text) - len(text) % 4]},
        {**base, "token": base64.urlsafe_b64encode(forged).decode()},
    ]
    outcomes = _agree(js, cases)
    _note(outcomes)
    assert all(kind == "reason" for kind, _ in outcomes)


# -- plaintexts sealed from the specification ---------------------------------------------

_MEMBERS = [
    b'"sub":"u"',
    b'"sub":"\\ud83d\\udd11 \xc3\xa9"',
    b'"sub":"\\ud800"',
    b'"sub":"\\udc00x"',
    b'"sub":"\\ud83d\\u0041"',
    b'"sub":12345',
    b'"sub":null',
    b'"iat":1700000000',
    b'"iat":-0',
    b'"iat":1700000000.0',
    b'"iat":true',
    b'"exp":1700000120',
    b'"exp":17e8',
    b'"exp":1700000120.5',
    b'"exp":18446744073709551615',
    b'"exp":18446744073709551616',
    b'"exp":"1700000120"',
    b'"x":NaN',
    b'"x":Infinity',
    b'"x":-Infinity',
    b'"x":1e400',
    b'"x":-1e400',
    b'"x":1e-400',
    b'"x":1.7976931348623159e308',
    b'"x":' + b"9" * 400,
    b'"x":-9223372036854775809',
    b'"x":9007199254740993',
    b'"x":-0.0',
    b'"x":0.1',
    b'"x":01',
    b'"x":1.',
    b'"x":.5',
    b'"x":+1',
    b'"x":[1,[2,{"y":null}],[]]',
    b'"x":{"a":{"b":{}}}',
    b'"x":"\\u0000\\b\\f\\n\\r\\t\\/\\"\\\\"',
    b'"x":"\\x41"',
    b'"x":"\x01"',
    b'"x":"\x7f\xe2\x80\xa8"',
    b'"x":"\xff"',
    b'"x":"\xed\xa0\x80"',
    b'"x":"\xc0\xaf"',
    b'"__proto__":{"sub":"admin"}',
    b'"":[true,false]',
    b'"x":tru',
]
_SEPARATORS = [b",", b" , ", b",\n\t", b"\r\n,"]
_STRAY = [b"", b" ", b"\t", b"\n", b"\r", b"\x0c", b"\x0b", b"\x00", b"\xef\xbb\xbf", b"\xc2\xa0"]
_STRAY += [b",", b"}", b"]", b"[", b"{", b'"', b"x", b"{}", b"\xff"]


@st.composite
def _plaintexts(draw: st.DrawFn) -> bytes:
    members = draw(st.lists(st.sampled_from(_MEMBERS), max_size=3))
    separator = draw(st.sampled_from(_SEPARATORS))
    if draw(st.booleans()):  # usually a well-formed claim set, plus other members
        members = [*_BASE, *members]
        members = draw(st.permutations(members))
    body = b"{" + separator.join(members) + b"}"
    text = draw(st.sampled_from([body] * 6 + [b"[" + body + b"]", b'"' + body + b'"']))
    if draw(st.integers(0, 3)) == 0:  # a stray byte string before and after
        text = draw(st.sampled_from(_STRAY)) + text + draw(st.sampled_from(_STRAY))
    if draw(st.integers(0, 3)) == 0:  # one anywhere
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(_STRAY)) + text[at:]
    # Nesting stays within 32 levels (this counts every bracket, so it is an upper
    # bound); the deeper ones are covered by the JavaScript unit tests.
    assume(text.count(b"[") + text.count(b"{") <= 32)
    return text


_BASE = [b'"sub":"u"', b'"iat":1700000000', b'"exp":1700000120']


def _seal_plaintext(ring: KeyRing, plaintext: bytes, purpose: str = "access") -> str:
    key = ring.active
    return str(
        spec_v1.seal_plaintext(
            key.secret,
            key.kid,
            purpose,
            spec_v1.fill(plaintext, key.kid),
            os.urandom(spec_v1.SALT_BYTES),
            os.urandom(spec_v1.NONCE_BYTES),
        )
    )


def test_every_claims_rule_is_read_alike(js: NodeReader) -> None:
    ring = KeyRing.generate()
    base = b",".join(_BASE)
    plaintexts = []
    for member in _MEMBERS:
        # After the required claims, and before them: a repeated name's last occurrence wins.
        plaintexts += [b"{" + base + b"," + member + b"}", b"{" + member + b"," + base + b"}"]
    for stray in _STRAY:
        plaintexts += [
            stray + b"{" + base + b"}",
            b"{" + base + b"}" + stray,
            b"{" + stray + base + b"}",
            b"{" + base + stray + b"}",
            b'{"sub":"u' + stray + b'",' + b",".join(_BASE[1:]) + b"}",
        ]
    case = {"ring": ring.serialize(), "purpose": "access", "now": float(NOW), "leeway": 5}
    outcomes = _agree(js, [{**case, "token": _seal_plaintext(ring, p)} for p in plaintexts])
    kinds = {outcome if kind == "reason" else kind for kind, outcome in outcomes}
    assert kinds == {"claims", "bad_claims"}


_EDGES = [0, 2**53 - 1, 2**53 + 1, 2**60 + 1, 2**63 - 1, 2**63 + 1, 2**64 - 1, -(2**63)]


def test_time_checks_agree_at_the_edges_of_64_bit_integers(js: NodeReader) -> None:
    ring = KeyRing.generate()
    text = ring.serialize()
    cases = []
    for edge, leeway in itertools.product(_EDGES, (0, 5)):
        for iat, exp in ((edge, 2**64 - 1), (-(2**63), edge)):
            claims = {"sub": "u", "iat": iat, "exp": exp}
            case = {"ring": text, "purpose": "access", "leeway": leeway}
            case["token"] = _codec(text, leeway).seal(Purpose.ACCESS, claims)
            for at in (edge, edge + leeway, edge - leeway):
                # The doubles nearest to an integer that a double may not hold exactly.
                nearest = (float(at), math.nextafter(at, math.inf), math.nextafter(at, -math.inf))
                cases += [{**case, "now": now} for now in nearest]
    outcomes = _agree(js, cases)
    kinds = {outcome if kind == "reason" else kind for kind, outcome in outcomes}
    assert kinds == {"claims", "expired", "not_yet_valid"}


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(ring=_rings(), plaintext=_plaintexts(), purpose=st.sampled_from(sorted(PURPOSES)))
def test_claims_are_read_alike(
    js: NodeReader, ring: KeyRing, plaintext: bytes, purpose: str
) -> None:
    token = _seal_plaintext(ring, plaintext, purpose)
    case = {"ring": ring.serialize(), "purpose": purpose, "token": token, "now": float(NOW)}
    _note(_agree(js, [{**case, "leeway": 5}]))
