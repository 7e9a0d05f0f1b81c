"""tokenflow.passwords: argon2id encoding, equal work for unknown users, rehash, NFKC, caps.

Unit tests use cheap argon2 parameters (8 KiB, 1 pass) except where the
default parameters are the subject.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

argon2 = pytest.importorskip("argon2")
from argon2.low_level import ARGON2_VERSION, Type, core, ffi, hash_secret_raw  # noqa: E402

from tokenflow import (  # noqa: E402
    AsyncFlow,
    ConfigError,
    Flow,
    KeyRing,
    PasswordCredentials,
    Reissue,
    Request,
    Unauthorized,
    Unavailable,
)
from tokenflow.events import LoginFailed, LoginFailedReason  # noqa: E402
from tokenflow.passwords import (  # noqa: E402
    Argon2Parameters,
    AsyncPasswordVerifier,
    PasswordHasher,
    PasswordVerifier,
    Pbkdf2Sha256,
)
from tokenflow.stores import AsyncMemoryStore, MemoryStore  # noqa: E402
from tokenflow.testing import AsyncFakeUserDirectory, FakeClock, FakeUserDirectory  # noqa: E402

CHEAP = Argon2Parameters(time_cost=1, memory_cost=8, parallelism=1)
WEAKER = Argon2Parameters(time_cost=1, memory_cost=8, parallelism=1, hash_len=16)
STRONGER = Argon2Parameters(time_cost=2, memory_cost=16, parallelism=1)
PASSWORD = "correct horse battery staple"


class Users:
    """A user table: lookup and sink in one, counting calls."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str]] = {}
        self.stored: list[tuple[str, str]] = []

    def find_password(self, username: str) -> tuple[str, str] | None:
        return self.rows.get(username)

    def store_hash(self, user_id: str, new_hash: str) -> None:
        self.stored.append((user_id, new_hash))
        for name, (uid, _) in list(self.rows.items()):
            if uid == user_id:
                self.rows[name] = (uid, new_hash)


class AsyncUsers:
    def __init__(self, users: Users) -> None:
        self.users = users

    async def find_password(self, username: str) -> tuple[str, str] | None:
        return self.users.find_password(username)

    async def store_hash(self, user_id: str, new_hash: str) -> None:
        self.users.store_hash(user_id, new_hash)


class SpyHasher:
    """Wraps argon2-cffi's hasher to record every verification (hash, password length)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.verified: list[tuple[str, int]] = []
        self.hashed: list[int] = []

    def verify(self, stored: str, password: bytes) -> bool:
        self.verified.append((stored, len(password)))
        result: bool = self.inner.verify(stored, password)
        return result

    def hash(self, password: bytes, *, salt: bytes | None = None) -> str:
        self.hashed.append(len(password))
        result: str = self.inner.hash(password, salt=salt)
        return result

    def check_needs_rehash(self, stored: str) -> bool:
        result: bool = self.inner.check_needs_rehash(stored)
        return result


def spy(hasher: PasswordHasher) -> SpyHasher:
    wrapped = SpyHasher(hasher._hasher)
    object.__setattr__(hasher, "_hasher", wrapped)
    return wrapped


@pytest.fixture
def users() -> Users:
    return Users()


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(CHEAP, legacy=[Pbkdf2Sha256()])


# --------------------------------------------------------------------------- known answers


def test_argon2id_core_matches_rfc_9106_vector() -> None:
    """RFC 9106 section 5.3: the library computes argon2id as the standard says."""
    buffers = [ffi.new("uint8_t[]", bytes([b]) * n) for b, n in ((1, 32), (2, 16), (3, 8), (4, 12))]
    out = ffi.new("uint8_t[]", 32)
    context = ffi.new(
        "argon2_context *",
        {
            "version": ARGON2_VERSION,
            "out": out,
            "outlen": 32,
            "pwd": buffers[0],
            "pwdlen": 32,
            "salt": buffers[1],
            "saltlen": 16,
            "secret": buffers[2],
            "secretlen": 8,
            "ad": buffers[3],
            "adlen": 12,
            "t_cost": 3,
            "m_cost": 32,
            "lanes": 4,
            "threads": 4,
            "allocate_cbk": ffi.NULL,
            "free_cbk": ffi.NULL,
            "flags": 0,
        },
    )
    assert core(context, Type.ID.value) == 0
    assert bytes(ffi.buffer(out, 32)).hex() == (
        "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
    )


def test_phc_encoding_known_answer() -> None:
    """A fixed salt and parameters give the known PHC string, field by field."""
    hasher = PasswordHasher(Argon2Parameters(time_cost=2, memory_cost=64, parallelism=1))
    salt = b"somesaltsomesalt"
    encoded = hasher._hash("password", salt=salt)
    assert encoded == (
        "$argon2id$v=19$m=64,t=2,p=1$c29tZXNhbHRzb21lc2FsdA"
        "$Gpj7qOY5RCXJvcMzqcdQqvgR3wcPX7SleI4c9NtXk6E"
    )
    raw = hash_secret_raw(b"password", salt, 2, 64, 1, 32, Type.ID)
    b64 = base64.b64encode
    assert encoded.split("$")[4:] == [
        b64(salt).decode().rstrip("="),
        b64(raw).decode().rstrip("="),
    ]


def test_nfkc_forms_hash_identically() -> None:
    hasher = PasswordHasher(CHEAP)
    salt = b"\x00" * 16
    composed = hasher._hash("\uff23af\u00e9 \ufb01x", salt=salt)  # full-width C, é, fi
    assert composed == hasher._hash("Cafe\u0301 fix", salt=salt)
    assert composed != hasher._hash("Cafe fix", salt=salt)


# --------------------------------------------------------------------------- parameters


def test_default_parameters_meet_owasp_minimum() -> None:
    """OWASP: argon2id, at least 19 MiB, 2 iterations, 1 lane (or an equivalent trade)."""
    params = Argon2Parameters()
    assert params.memory_cost >= 19_456
    assert params.time_cost >= 2
    assert params.parallelism >= 1
    encoded = PasswordHasher().hash(PASSWORD)
    assert encoded.startswith(
        f"$argon2id$v=19$m={params.memory_cost},t={params.time_cost},p={params.parallelism}$"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"time_cost": 0},
        {"memory_cost": 7},
        {"parallelism": 0},
        {"hash_len": 8},
        {"salt_len": 8},
        {"time_cost": True},
        {"memory_cost": 19456.0},
    ],
)
def test_bad_parameters_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Argon2Parameters(**kwargs)


def test_config_errors(users: Users) -> None:
    with pytest.raises(ConfigError):
        PasswordHasher(CHEAP, max_length=4)
    with pytest.raises(ConfigError):
        PasswordHasher(CHEAP, legacy=[object()])  # type: ignore[list-item]
    with pytest.raises(ConfigError):
        PasswordVerifier(object(), parameters=CHEAP)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PasswordVerifier(users, sink=object(), parameters=CHEAP)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PasswordVerifier(users, hasher=PasswordHasher(CHEAP), parameters=CHEAP)


# --------------------------------------------------------------------------- verification


def test_right_wrong_and_unknown(users: Users, hasher: PasswordHasher) -> None:
    users.rows["ada"] = ("u1", hasher.hash(PASSWORD))
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    assert verifier.verify_password("ada", PASSWORD) == "u1"
    assert verifier.verify_password("ada", PASSWORD + "!") is None
    assert verifier.verify_password("bob", PASSWORD) is None
    assert users.stored == []  # current parameters: nothing to upgrade


def test_unknown_user_costs_one_verification_with_the_same_parameters(
    users: Users, hasher: PasswordHasher
) -> None:
    """The timing rule, checked as work done: one argon2id check of the same cost."""
    users.rows["ada"] = ("u1", hasher.hash(PASSWORD))
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    recorder = spy(hasher)
    assert verifier.verify_password("ada", "wrong guess") is None
    assert verifier.verify_password("nobody", "wrong guess") is None
    (known, _), (unknown, _) = recorder.verified
    assert known != unknown  # the dummy, not a real user's hash
    params = [h.split("$")[3] for h in (known, unknown)]
    assert params[0] == params[1] == "m=8,t=1,p=1"
    assert recorder.hashed == []


def test_giant_password_is_a_failed_login_never_a_giant_hash(
    users: Users, hasher: PasswordHasher
) -> None:
    users.rows["ada"] = ("u1", hasher.hash(PASSWORD))
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    recorder = spy(hasher)
    giant = PASSWORD * 10_000
    assert verifier.verify_password("ada", giant) is None
    # NFKC can lengthen a string: a password under the cap that expands past it fails too.
    expanding = "\ufdfa" * (hasher.max_length // 2)  # each becomes 18 code points
    assert len(unicodedata.normalize("NFKC", expanding)) > hasher.max_length
    assert verifier.verify_password("ada", expanding) is None
    assert verifier.verify_password("ada", "") is None
    # Each failure still cost one verification, each of a tiny input.
    assert len(recorder.verified) == 3
    assert all(length <= 4 for _, length in recorder.verified)
    with pytest.raises(ValueError, match="at most 1024") as info:
        hasher.hash(giant)
    assert PASSWORD not in str(info.value)


def test_longest_accepted_password_logs_in(users: Users, hasher: PasswordHasher) -> None:
    longest = "x" * hasher.max_length
    users.rows["ada"] = ("u1", hasher.hash(longest))
    assert PasswordVerifier(users, hasher=hasher).verify_password("ada", longest) == "u1"


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]))
def test_nfkc_equivalents_log_in(form: str) -> None:
    users = Users()
    hasher = PasswordHasher(CHEAP)
    original = "\uff30\u00e4ssw\u00f6rd \ufb01ne \u2460"
    users.rows["ada"] = ("u1", hasher.hash(original))
    verifier = PasswordVerifier(users, hasher=hasher)
    assert verifier.verify_password("ada", unicodedata.normalize(form, original)) == "u1"


# --------------------------------------------------------------------------- rehash


def test_weaker_parameters_are_upgraded_once(users: Users) -> None:
    old = PasswordHasher(WEAKER)
    users.rows["ada"] = ("u1", old.hash(PASSWORD))
    current = PasswordHasher(STRONGER)
    verifier = PasswordVerifier(users, sink=users, hasher=current)
    assert verifier.verify_password("ada", PASSWORD) == "u1"
    ((user_id, new_hash),) = users.stored
    assert user_id == "u1"
    assert "$m=16,t=2,p=1$" in new_hash
    assert not current.needs_rehash(new_hash)
    assert verifier.verify_password("ada", PASSWORD) == "u1"
    assert len(users.stored) == 1  # already current: no second upgrade


def test_argon2i_and_argon2d_hashes_are_upgraded_to_argon2id(users: Users) -> None:
    from argon2.low_level import hash_secret

    hasher = PasswordHasher(CHEAP)
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    for number, kind in enumerate((Type.I, Type.D)):
        old = hash_secret(PASSWORD.encode(), b"0123456789abcdef", 1, 8, 1, 32, kind).decode()
        users.rows[f"user{number}"] = (f"u{number}", old)
        assert verifier.verify_password(f"user{number}", PASSWORD) == f"u{number}"
        assert users.stored[-1][1].startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert len(users.stored) == 2


def test_rehash_request_keeps_the_password_out_of_repr(users: Users) -> None:
    hasher = PasswordHasher(CHEAP, legacy=[Pbkdf2Sha256()])
    checked = hasher.check(PASSWORD, ("u1", Pbkdf2Sha256.encode(PASSWORD, "s", 5)))
    assert checked.user_id == "u1"
    assert PASSWORD not in repr(checked)


def test_no_rehash_on_failure_or_without_sink(users: Users) -> None:
    users.rows["ada"] = ("u1", PasswordHasher(WEAKER).hash(PASSWORD))
    current = PasswordHasher(STRONGER)
    verifier = PasswordVerifier(users, sink=users, hasher=current)
    assert verifier.verify_password("ada", "wrong") is None
    assert users.stored == []
    recorder = spy(current)
    assert PasswordVerifier(users, hasher=current).verify_password("ada", PASSWORD) == "u1"
    assert recorder.hashed == []  # no sink: no hash computed for nothing


def test_legacy_pbkdf2_hash_is_migrated(users: Users, hasher: PasswordHasher) -> None:
    users.rows["ada"] = ("u1", Pbkdf2Sha256.encode(PASSWORD, "seasalt", 1000))
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    assert verifier.verify_password("ada", "wrong") is None
    assert users.stored == []
    assert verifier.verify_password("ada", PASSWORD) == "u1"
    ((_, new_hash),) = users.stored
    assert new_hash.startswith("$argon2id$")
    assert verifier.verify_password("ada", PASSWORD) == "u1"  # now on argon2id
    assert len(users.stored) == 1


def test_legacy_hash_made_from_unnormalised_text_migrates_to_nfkc(users: Users) -> None:
    """Legacy systems hashed the text as typed; the new hash accepts every NFKC equivalent."""
    hasher = PasswordHasher(CHEAP, legacy=[Pbkdf2Sha256()])
    typed = "Cafe\u0301"
    users.rows["ada"] = ("u1", Pbkdf2Sha256.encode(typed, "s", 10))
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    assert verifier.verify_password("ada", typed) == "u1"
    assert verifier.verify_password("ada", "Café") == "u1"


def test_pbkdf2_sha256_known_answer() -> None:
    """RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1, 64)."""
    digest = bytes.fromhex(
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
    )
    stored = "pbkdf2_sha256$1$salt$" + base64.b64encode(digest).decode()
    scheme = Pbkdf2Sha256()
    assert scheme.identifies(stored)
    assert scheme.verify("passwd", stored)
    assert not scheme.verify("passwd!", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "pbkdf2_sha256$",
        "pbkdf2_sha256$x$salt$AAAA",
        "pbkdf2_sha256$0$salt$AAAA",
        "pbkdf2_sha256$99999999999$salt$AAAA",
        "pbkdf2_sha256$1$$AAAA",
        "pbkdf2_sha256$1$salt$not base64!",
        "pbkdf2_sha256$1$salt$",
        "pbkdf2_sha256$1$salt$AAAA$extra",
        "pbkdf2_sha256$\u0661$salt$AAAA",  # a non-ASCII digit
    ],
)
def test_malformed_pbkdf2_hash_is_a_plain_no(stored: str) -> None:
    assert Pbkdf2Sha256().verify("passwd", stored) is False


def test_unknown_scheme_or_malformed_row_is_a_port_failure(users: Users) -> None:
    """A user table fault is the host's problem: Unavailable, and no secret in the error."""
    hasher = PasswordHasher(CHEAP)
    verifier = PasswordVerifier(users, hasher=hasher)
    users.rows["md5"] = ("u1", "md5$deadbeef$" + PASSWORD)
    users.rows["broken"] = ("u2", "$argon2id$v=19$m=8,t=1,p=1$garbage")
    users.rows["shape"] = ("u3",)  # type: ignore[assignment]
    for name in ("md5", "broken", "shape"):
        with pytest.raises(ValueError, match=r"stored .*hash|find_password") as info:
            verifier.verify_password(name, PASSWORD)
        assert PASSWORD not in str(info.value)
        assert "deadbeef" not in str(info.value)
        assert "garbage" not in str(info.value)
    flow = Flow(KeyRing.generate(), MemoryStore(), FakeUserDirectory(), passwords=verifier)
    decision = flow.decide(
        Request("POST", credentials=PasswordCredentials("md5", PASSWORD), sec_fetch_site="none")
    )
    assert isinstance(decision, Unavailable)
    assert PASSWORD not in repr(decision)


# --------------------------------------------------------------------------- through the flow


def _flow(users: Users, hasher: PasswordHasher) -> tuple[Flow, FakeUserDirectory]:
    directory = FakeUserDirectory()
    directory.add_user("u1")
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    return Flow(KeyRing.generate(), MemoryStore(), directory, passwords=verifier), directory


def _login(username: str, password: str) -> Request:
    return Request(
        "POST", credentials=PasswordCredentials(username, password), sec_fetch_site="same-origin"
    )


def test_unknown_and_wrong_give_the_same_decision_and_event(
    users: Users, hasher: PasswordHasher
) -> None:
    users.rows["ada"] = ("u1", hasher.hash(PASSWORD))
    flow, _ = _flow(users, hasher)
    assert isinstance(flow.decide(_login("ada", PASSWORD)), Reissue)
    wrong = flow.decide(_login("ada", "guess"))
    unknown = flow.decide(_login("eve", "guess"))
    assert isinstance(wrong, Unauthorized)
    assert isinstance(unknown, Unauthorized)
    assert wrong.reason == unknown.reason
    assert [type(e) for e in wrong.events] == [type(e) for e in unknown.events] == [LoginFailed]
    assert isinstance(wrong.events[0], LoginFailed)
    assert isinstance(unknown.events[0], LoginFailed)
    assert wrong.events[0].reason is unknown.events[0].reason is LoginFailedReason.BAD_PASSWORD


def test_nothing_of_a_password_in_reprs_events_or_errors(
    users: Users, hasher: PasswordHasher
) -> None:
    secret = "Sup3r-Secret-Passphrase"
    users.rows["ada"] = ("u1", hasher.hash(secret))
    flow, _ = _flow(users, hasher)
    verifier = PasswordVerifier(users, sink=users, hasher=hasher)
    texts = [repr(verifier), repr(hasher), repr(Pbkdf2Sha256())]
    for attempt in (secret, secret + "x", secret * 500):
        request = _login("ada", attempt)
        decision = flow.decide(request)
        texts += [repr(request), repr(decision), *map(repr, decision.events), str(decision)]
    for bad in ("", secret * 500):
        with pytest.raises(ValueError, match="non-empty str") as info:
            hasher.hash(bad)
        texts.append(str(info.value))
    for text in texts:
        assert secret not in text
        assert "Secret" not in text
        assert users.rows["ada"][1] not in text  # nor the stored hash


# --------------------------------------------------------------------------- async


@pytest.mark.asyncio
async def test_async_verifier_matches_sync(users: Users) -> None:
    hasher = PasswordHasher(STRONGER, legacy=[Pbkdf2Sha256()])
    users.rows["ada"] = ("u1", PasswordHasher(WEAKER).hash(PASSWORD))
    users.rows["old"] = ("u2", Pbkdf2Sha256.encode(PASSWORD, "salt", 10))
    verifier = AsyncPasswordVerifier(AsyncUsers(users), sink=AsyncUsers(users), hasher=hasher)
    assert await verifier.verify_password("ada", PASSWORD) == "u1"
    assert await verifier.verify_password("old", PASSWORD) == "u2"
    assert await verifier.verify_password("ada", "wrong") is None
    assert await verifier.verify_password("nobody", PASSWORD) is None
    assert [uid for uid, _ in users.stored] == ["u1", "u2"]
    assert "AsyncPasswordVerifier" in repr(verifier)


class GatedHasher:
    """A hasher whose check, after hashing for real, waits until the event loop ticked 5 times.

    If the verifier hashed on the loop, the ticker could not run and the gate
    would time out: the test fails instead of hanging.
    """

    def __init__(self, inner: PasswordHasher, gate: threading.Event) -> None:
        self.inner = inner
        self.gate = gate
        self.thread: threading.Thread | None = None

    def check(self, password: str, found: object) -> Any:
        self.thread = threading.current_thread()
        result = self.inner.check(password, found)
        assert self.gate.wait(timeout=10), "the event loop did not tick while hashing"
        return result

    def rehash(self, checked: Any) -> str | None:
        return self.inner.rehash(checked)


@pytest.mark.asyncio
async def test_event_loop_keeps_ticking_while_hashing(users: Users) -> None:
    inner = PasswordHasher()  # the default parameters: a real, full-cost hash
    users.rows["ada"] = ("u1", inner.hash(PASSWORD))
    gate = threading.Event()
    verifier = AsyncPasswordVerifier(AsyncUsers(users), hasher=inner)
    gated = GatedHasher(inner, gate)
    verifier.hasher = gated  # type: ignore[assignment]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1
            if ticks == 5:
                gate.set()

    task = asyncio.create_task(ticker())
    try:
        assert await verifier.verify_password("ada", PASSWORD) == "u1"
    finally:
        task.cancel()
    assert ticks >= 5
    assert gated.thread is not threading.main_thread()


@pytest.mark.asyncio
async def test_async_flow_login(users: Users, hasher: PasswordHasher) -> None:
    users.rows["ada"] = ("u1", hasher.hash(PASSWORD))
    directory = AsyncFakeUserDirectory()
    directory.sync.add_user("u1")
    flow = AsyncFlow(
        KeyRing.generate(),
        AsyncMemoryStore(),
        directory,
        passwords=AsyncPasswordVerifier(AsyncUsers(users), hasher=hasher),
        clock=FakeClock(),
    )
    assert isinstance(await flow.decide(_login("ada", PASSWORD)), Reissue)
    assert isinstance(await flow.decide(_login("eve", PASSWORD)), Unauthorized)


# --------------------------------------------------------------------------- command line


def test_hash_password_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    from tokenflow.__main__ import main

    monkeypatch.setattr("sys.stdin", io.StringIO(" spaced \ufb01 \n"))
    assert main(["hash-password", "--stdin", "--memory-cost", "8", "--time-cost", "1"]) == 0
    out, err = capsys.readouterr()
    encoded = out.strip()
    assert encoded.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert err == ""
    hasher = PasswordHasher(CHEAP)
    users = Users()
    users.rows["ada"] = ("u1", encoded)
    verifier = PasswordVerifier(users, hasher=hasher)
    assert verifier.verify_password("ada", " spaced fi ") == "u1"  # NFKC, spaces kept
    assert verifier.verify_password("ada", "spaced fi") is None


class _Terminal(io.StringIO):
    """Standard input that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_hash_password_default_parameters_without_echo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    from tokenflow.__main__ import main

    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return PASSWORD

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    monkeypatch.setattr("sys.stdin", _Terminal(""))  # prompting needs a terminal
    assert main(["hash-password"]) == 0
    out, _ = capsys.readouterr()
    defaults = Argon2Parameters()
    assert out.startswith(f"$argon2id$v=19$m={defaults.memory_cost},t={defaults.time_cost},")
    assert PASSWORD not in out
    assert len(prompts) == 2  # asked twice, to catch a typo


@pytest.mark.parametrize(
    ("answers", "stdin", "args"),
    [
        (["one", "two"], "", []),
        ([], "\n", ["--stdin"]),
        ([], "x" * 2000 + "\n", ["--stdin"]),
        ([], "ok\n", ["--stdin", "--memory-cost", "1"]),
    ],
)
def test_hash_password_refusals(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answers: list[str],
    stdin: str,
    args: list[str],
) -> None:
    import getpass

    from tokenflow.__main__ import main

    replies = iter(answers)
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(replies))
    monkeypatch.setattr("sys.stdin", _Terminal(stdin))
    assert main(["hash-password", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("tokenflow hash-password: ")
    if answers:
        assert err == "tokenflow hash-password: the passwords differ\n"
    assert "xxxx" not in err
    assert "one" not in err
