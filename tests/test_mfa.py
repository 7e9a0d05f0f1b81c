"""tokenflow.mfa: TOTP (RFC 6238 vectors, window, replay), recovery codes, enrolment,
malformed input, and the key ring's sealing of secrets at rest."""

from __future__ import annotations

import asyncio
import base64
import threading
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenflow import ConfigError, KeyRing
from tokenflow.mfa import (
    AsyncSecondFactors,
    MemorySecondFactorStore,
    RecoveryCodes,
    SecondFactors,
    TotpEnrolment,
)
from tokenflow.mfa._codes import (
    CodeKind,
    match_step,
    parse_code,
    recovery_hash,
    show_recovery_code,
    time_step,
    totp_at_step,
)
from tokenflow.ports import (
    SecondFactorAccepted,
    SecondFactorFailure,
    SecondFactorRefused,
    SecondFactorVerifier,
)
from tokenflow.testing.mfa import totp_code

T0 = 1_767_225_600.0  # a multiple of 30: the start of a time step

# -- RFC 6238 appendix B ---------------------------------------------------------

SEEDS = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
VECTORS = [
    (59, "SHA1", "94287082"),
    (59, "SHA256", "46119246"),
    (59, "SHA512", "90693936"),
    (1111111109, "SHA1", "07081804"),
    (1111111109, "SHA256", "68084774"),
    (1111111109, "SHA512", "25091201"),
    (1111111111, "SHA1", "14050471"),
    (1111111111, "SHA256", "67062674"),
    (1111111111, "SHA512", "99943326"),
    (1234567890, "SHA1", "89005924"),
    (1234567890, "SHA256", "91819424"),
    (1234567890, "SHA512", "93441116"),
    (2000000000, "SHA1", "69279037"),
    (2000000000, "SHA256", "90698825"),
    (2000000000, "SHA512", "38618901"),
    (20000000000, "SHA1", "65353130"),
    (20000000000, "SHA256", "77737706"),
    (20000000000, "SHA512", "47863826"),
]


@pytest.mark.parametrize(("t", "algorithm", "expected"), VECTORS)
def test_rfc6238_vectors(
    t: int, algorithm: Literal["SHA1", "SHA256", "SHA512"], expected: str
) -> None:
    seed = SEEDS[algorithm]
    step = time_step(t)
    assert totp_at_step(seed, step, digits=8, algorithm=algorithm) == expected
    # The verifying path finds the step, and only with the right code.
    assert match_step(seed, expected, now=t, window=0, digits=8, algorithm=algorithm) == step
    wrong = f"{(int(expected) + 1) % 10**8:08d}"
    assert match_step(seed, wrong, now=t, window=0, digits=8, algorithm=algorithm) is None


# -- the parser ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("123456", (CodeKind.TOTP, "123456")),
        (" 123 456 ", (CodeKind.TOTP, "123456")),
        ("123-456", (CodeKind.TOTP, "123456")),
        ("abcd-efgh-ijkl-mnop", (CodeKind.RECOVERY, "ABCDEFGHIJKLMNOP")),
        ("ABCD EFGH IJKL MNOP", (CodeKind.RECOVERY, "ABCDEFGHIJKLMNOP")),
        ("abcdefgh234567ab", (CodeKind.RECOVERY, "ABCDEFGH234567AB")),
    ],
)
def test_the_parser_accepts_what_people_type(typed: str, expected: tuple[CodeKind, str]) -> None:
    assert parse_code(typed) == expected


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "12345",
        "1234567",
        "12345a",
        "\uff11\uff12\uff13\uff14\uff15\uff16",  # full-width digits
        "\u0661\u0662\u0663\u0664\u0665\u0666",  # Arabic-Indic digits
        "12345\uff16",
        "abcd-efgh-ijkl-mno",
        "abcd-efgh-ijkl-mnop1",
        "abcd-efgh-ijkl-mno0",  # 0 is not base32
        "abcd-efgh-ijkl-mno8",
        "\uff41\uff42\uff43\uff44efghijklmnop",
        "1" * 100_000,
        "123456\x00",
        "12\n3456",
    ],
)
def test_the_parser_refuses_other_shapes(typed: str) -> None:
    assert parse_code(typed) is None


@pytest.mark.parametrize("value", [None, 123456, b"123456", ["123456"], 1.5])
def test_the_parser_refuses_other_types(value: object) -> None:
    assert parse_code(value) is None


@given(st.text(max_size=200))
def test_the_parser_never_raises_and_its_output_is_normal(text: str) -> None:
    parsed = parse_code(text)
    if parsed is not None:
        kind, normal = parsed
        assert normal.isascii()
        assert parse_code(normal) == parsed  # normal forms are fixed points
        if kind is CodeKind.TOTP:
            assert len(normal) == 6
            assert all(c in "0123456789" for c in normal)
        else:
            assert len(normal) == 16
            assert all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in normal)


@given(st.binary(min_size=10, max_size=10), st.sampled_from(["", " ", "-", "  "]), st.booleans())
def test_a_shown_recovery_code_parses_back_however_it_is_typed(
    raw: bytes, separator: str, upper: bool
) -> None:
    normal = base64.b32encode(raw).decode()
    shown = show_recovery_code(normal)
    assert len(shown) == 19
    assert shown.count("-") == 3
    typed = shown.replace("-", separator)
    assert parse_code(typed.upper() if upper else typed) == (CodeKind.RECOVERY, normal)


def test_recovery_hashes_bind_the_user() -> None:
    assert recovery_hash("alice", "A" * 16) != recovery_hash("bob", "A" * 16)
    assert recovery_hash("ab", "C" * 16) != recovery_hash("a", "BC" + "C" * 14)


# -- the service -----------------------------------------------------------------


def _factors(store: MemorySecondFactorStore | None = None) -> SecondFactors:
    return SecondFactors(KeyRing.generate(), store or MemorySecondFactorStore(), issuer="Example")


def _enrolled(
    factors: SecondFactors, user: str = "alice", now: float = T0
) -> tuple[TotpEnrolment, RecoveryCodes]:
    enrolment = factors.begin_totp(user, account_name=f"{user}@example.com", now=now)
    codes = factors.confirm_totp(user, totp_code(enrolment.secret, now=now), now=now)
    assert isinstance(codes, RecoveryCodes)
    return enrolment, codes


def test_it_implements_the_verifier_port() -> None:
    factors: SecondFactorVerifier = _factors()
    assert factors.factors_of("nobody") == ()


def test_enrolment_shows_a_160_bit_secret_a_uri_and_a_qr_code() -> None:
    factors = _factors()
    enrolment = factors.begin_totp("alice", account_name="alice@example.com", now=T0)
    assert len(base64.b32decode(enrolment.secret)) == 20
    assert enrolment.uri.startswith("otpauth://totp/Example:alice%40example.com?")
    assert f"secret={enrolment.secret}" in enrolment.uri
    assert "issuer=Example" in enrolment.uri
    assert enrolment.qr_svg.startswith("<svg")
    assert enrolment.qr_svg.endswith("</svg>")
    assert "http" not in enrolment.qr_svg.replace("http://www.w3.org/2000/svg", "")
    assert enrolment.expires_at == T0 + 600
    assert enrolment.secret not in repr(enrolment)
    assert factors.factors_of("alice") == (), "a pending enrolment is not a factor"
    assert factors.verify_second_factor(
        "alice", totp_code(enrolment.secret, now=T0), now=T0
    ) == SecondFactorRefused(SecondFactorFailure.NOT_ENROLLED)


def test_two_enrolments_draw_different_secrets() -> None:
    factors = _factors()
    first = factors.begin_totp("alice", account_name="a", now=T0)
    second = factors.begin_totp("alice", account_name="a", now=T0)
    assert first.secret != second.secret
    # Only the latest pending enrolment confirms.
    assert factors.confirm_totp(
        "alice", totp_code(first.secret, now=T0), now=T0
    ) == SecondFactorRefused(SecondFactorFailure.WRONG)


def test_confirming_gives_ten_recovery_codes_and_a_factor() -> None:
    factors = _factors()
    _, codes = _enrolled(factors)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert parse_code(code) is not None
        assert parse_code(code)[0] is CodeKind.RECOVERY
        assert len(code) == 19
    assert "-" not in repr(codes)
    assert factors.factors_of("alice") == ("totp",)
    assert factors.recovery_codes_left("alice") == 10


def test_a_wrong_confirmation_leaves_the_enrolment_pending() -> None:
    factors = _factors()
    enrolment = factors.begin_totp("alice", account_name="a", now=T0)
    right = totp_code(enrolment.secret, now=T0)
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    assert factors.confirm_totp("alice", wrong, now=T0) == SecondFactorRefused(
        SecondFactorFailure.WRONG
    )
    assert factors.confirm_totp("alice", "12345", now=T0) == SecondFactorRefused(
        SecondFactorFailure.MALFORMED
    )
    assert factors.confirm_totp("alice", "abcd-efgh-ijkl-mnop", now=T0) == SecondFactorRefused(
        SecondFactorFailure.MALFORMED
    )
    assert isinstance(factors.confirm_totp("alice", right, now=T0 + 1), RecoveryCodes)


def test_a_pending_enrolment_expires_after_ten_minutes() -> None:
    factors = _factors()
    enrolment = factors.begin_totp("alice", account_name="a", now=T0)
    late = T0 + 600
    assert factors.confirm_totp(
        "alice", totp_code(enrolment.secret, now=late), now=late
    ) == SecondFactorRefused(SecondFactorFailure.NOT_ENROLLED)


def test_the_confirming_code_cannot_log_in() -> None:
    factors = _factors()
    enrolment, _ = _enrolled(factors)
    assert factors.verify_second_factor(
        "alice", totp_code(enrolment.secret, now=T0), now=T0
    ) == SecondFactorRefused(SecondFactorFailure.REPLAYED)


def test_a_code_logs_in_once() -> None:
    factors = _factors()
    enrolment, _ = _enrolled(factors)
    now = T0 + 60
    code = totp_code(enrolment.secret, now=now)
    assert factors.verify_second_factor("alice", code, now=now) == SecondFactorAccepted(
        "totp", ("otp",)
    )
    assert factors.verify_second_factor("alice", code, now=now) == SecondFactorRefused(
        SecondFactorFailure.REPLAYED
    )
    # A code of an earlier step, still inside the window, is refused too.
    earlier = totp_code(enrolment.secret, now=now - 30)
    assert factors.verify_second_factor("alice", earlier, now=now) == SecondFactorRefused(
        SecondFactorFailure.REPLAYED
    )


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-60, False), (-30, True), (0, True), (30, True), (60, False)]
)
def test_the_window_is_one_step_either_side(offset: int, accepted: bool) -> None:
    factors = _factors()
    enrolment, _ = _enrolled(factors)
    now = T0 + 300 + 15
    answer = factors.verify_second_factor(
        "alice", totp_code(enrolment.secret, now=now + offset), now=now
    )
    if accepted:
        assert answer == SecondFactorAccepted("totp", ("otp",))
    else:
        assert answer == SecondFactorRefused(SecondFactorFailure.WRONG)


def test_a_later_step_burns_the_earlier_ones() -> None:
    # A code from the next step (clock skew) is accepted; the current step's
    # code then is not: steps only move forward.
    factors = _factors()
    enrolment, _ = _enrolled(factors)
    now = T0 + 300
    ahead = totp_code(enrolment.secret, now=now + 30)
    assert isinstance(factors.verify_second_factor("alice", ahead, now=now), SecondFactorAccepted)
    current = totp_code(enrolment.secret, now=now)
    assert factors.verify_second_factor("alice", current, now=now) == SecondFactorRefused(
        SecondFactorFailure.REPLAYED
    )


def test_recovery_codes_work_once_each_in_any_spelling() -> None:
    factors = _factors()
    _, codes = _enrolled(factors)
    first, second = list(codes)[:2]
    assert factors.verify_second_factor("alice", first, now=T0) == SecondFactorAccepted(
        "recovery", ("otp",), recovery_codes_left=9
    )
    assert factors.verify_second_factor("alice", first, now=T0) == SecondFactorRefused(
        SecondFactorFailure.WRONG
    )
    typed = second.replace("-", " ").upper()
    assert factors.verify_second_factor("alice", typed, now=T0) == SecondFactorAccepted(
        "recovery", ("otp",), recovery_codes_left=8
    )
    assert factors.verify_second_factor(
        "alice", "aaaa-bbbb-cccc-dddd", now=T0
    ) == SecondFactorRefused(SecondFactorFailure.WRONG)


def test_recovery_codes_of_one_user_do_not_open_another() -> None:
    factors = _factors()
    _, alices = _enrolled(factors, "alice")
    _enrolled(factors, "bob")
    assert factors.verify_second_factor("bob", next(iter(alices)), now=T0) == SecondFactorRefused(
        SecondFactorFailure.WRONG
    )


def test_regenerating_replaces_every_code() -> None:
    factors = _factors()
    _, old = _enrolled(factors)
    new = factors.regenerate_recovery_codes("alice")
    assert isinstance(new, RecoveryCodes)
    assert len(new) == 10
    assert not set(old) & set(new)
    assert factors.verify_second_factor("alice", next(iter(old)), now=T0) == SecondFactorRefused(
        SecondFactorFailure.WRONG
    )
    assert isinstance(
        factors.verify_second_factor("alice", next(iter(new)), now=T0), SecondFactorAccepted
    )
    assert factors.regenerate_recovery_codes("nobody") == SecondFactorRefused(
        SecondFactorFailure.NOT_ENROLLED
    )


def test_re_enrolment_replaces_the_factor_only_when_confirmed() -> None:
    factors = _factors()
    old, old_codes = _enrolled(factors)
    new = factors.begin_totp("alice", account_name="a", now=T0 + 90)
    # Until confirmed, the old secret still logs in and the new one does not.
    assert isinstance(
        factors.verify_second_factor("alice", totp_code(old.secret, now=T0 + 90), now=T0 + 90),
        SecondFactorAccepted,
    )
    now = T0 + 150
    assert isinstance(
        factors.confirm_totp("alice", totp_code(new.secret, now=now), now=now), RecoveryCodes
    )
    later = T0 + 210
    assert factors.verify_second_factor(
        "alice", totp_code(old.secret, now=later), now=later
    ) == SecondFactorRefused(SecondFactorFailure.WRONG)
    assert isinstance(
        factors.verify_second_factor("alice", totp_code(new.secret, now=later), now=later),
        SecondFactorAccepted,
    )
    assert factors.verify_second_factor("alice", next(iter(old_codes)), now=later) == (
        SecondFactorRefused(SecondFactorFailure.WRONG)
    )


def test_remove_forgets_everything() -> None:
    factors = _factors()
    _enrolled(factors)
    assert factors.remove("alice")
    assert factors.factors_of("alice") == ()
    assert factors.recovery_codes_left("alice") == 0
    assert not factors.remove("alice")


MALFORMED = [
    "",
    "12345",
    "1234567",
    "12345a",
    "\uff11\uff12\uff13\uff14\uff15\uff16",
    "\u0663" * 6,
    "x" * 10_000_000,
    "1" * 1_000_000,
    "abcd-efgh-ijkl-mno0",
    "\udcff" * 6,
    None,
    123456,
    b"123456",
]


@pytest.mark.parametrize("code", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_codes_are_a_refusal_never_an_exception(code: object) -> None:
    factors = _factors()
    _enrolled(factors)
    assert factors.verify_second_factor("alice", code, now=T0 + 60) == SecondFactorRefused(  # type: ignore[arg-type]
        SecondFactorFailure.MALFORMED
    )
    # Malformed input is decided before any store read: even an unknown user.
    assert factors.verify_second_factor("nobody", code, now=T0) == SecondFactorRefused(  # type: ignore[arg-type]
        SecondFactorFailure.MALFORMED
    )


@given(st.text(max_size=80))
def test_any_text_gets_an_answer(code: str) -> None:
    answer = FUZZ_FACTORS.verify_second_factor("alice", code, now=T0 + 3600)
    assert isinstance(answer, SecondFactorAccepted | SecondFactorRefused)


FUZZ_FACTORS = _factors()
_enrolled(FUZZ_FACTORS)


def _race(factors: SecondFactors, code: str, now: float, threads: int = 50) -> list[object]:
    barrier = threading.Barrier(threads)
    answers: list[object] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        answer = factors.verify_second_factor("alice", code, now=now)
        with lock:
            answers.append(answer)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert len(answers) == threads
    return answers


def test_fifty_threads_racing_one_totp_code_get_one_acceptance() -> None:
    factors = _factors()
    enrolment, _ = _enrolled(factors)
    now = T0 + 120
    answers = _race(factors, totp_code(enrolment.secret, now=now), now)
    assert answers.count(SecondFactorAccepted("totp", ("otp",))) == 1
    assert answers.count(SecondFactorRefused(SecondFactorFailure.REPLAYED)) == 49


def test_fifty_threads_racing_one_recovery_code_get_one_acceptance() -> None:
    factors = _factors()
    _, codes = _enrolled(factors)
    answers = _race(factors, next(iter(codes)), T0)
    assert answers.count(SecondFactorAccepted("recovery", ("otp",), recovery_codes_left=9)) == 1
    assert answers.count(SecondFactorRefused(SecondFactorFailure.WRONG)) == 49


def test_async_face() -> None:
    sync = _factors()
    factors = AsyncSecondFactors(sync)

    async def main() -> None:
        enrolment = await factors.begin_totp("alice", account_name="a", now=T0)
        codes = await factors.confirm_totp("alice", totp_code(enrolment.secret, now=T0), now=T0)
        assert isinstance(codes, RecoveryCodes)
        assert await factors.factors_of("alice") == ("totp",)
        now = T0 + 30
        accepted = await factors.verify_second_factor(
            "alice", totp_code(enrolment.secret, now=now), now=now
        )
        assert accepted == SecondFactorAccepted("totp", ("otp",))
        assert await factors.recovery_codes_left("alice") == 10
        assert isinstance(await factors.regenerate_recovery_codes("alice"), RecoveryCodes)
        assert await factors.remove("alice")

    asyncio.run(main())
    with pytest.raises(ConfigError):
        AsyncSecondFactors(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"issuer": ""},
        {"issuer": "a:b"},
        {"issuer": "x", "pending_ttl": 10},
        {"issuer": "x", "pending_ttl": True},
    ],
)
def test_configuration_is_checked(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SecondFactors(KeyRing.generate(), MemorySecondFactorStore(), **kwargs)  # type: ignore[arg-type]


def test_account_names_and_user_ids_are_checked() -> None:
    factors = _factors()
    with pytest.raises(ValueError, match="account_name"):
        factors.begin_totp("alice", account_name="a:b", now=T0)
    with pytest.raises(ValueError, match="user id"):
        factors.factors_of("")


# -- sealing at rest -------------------------------------------------------------


def test_a_secret_whose_key_was_removed_is_an_infrastructure_failure() -> None:
    keyring = KeyRing.generate()
    store = MemorySecondFactorStore()
    enrolment, _ = _enrolled(SecondFactors(keyring, store, issuer="Example"))
    rotated = keyring.rotated()
    later = SecondFactors(rotated.without(keyring.active.kid), store, issuer="Example")
    with pytest.raises(RuntimeError, match="does not open") as caught:
        later.verify_second_factor("alice", totp_code(enrolment.secret, now=T0 + 60), now=T0 + 60)
    assert enrolment.secret not in str(caught.value)
