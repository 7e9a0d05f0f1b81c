"""The flow with the real tokenflow.mfa.SecondFactors (TOTP over pyotp, the
memory store): enrolment, the two-step login with a code computed from the
secret shown, replay refused, a recovery code once, step-up."""

from __future__ import annotations

import pytest

pytest.importorskip("pyotp")

from tokenflow import (
    Flow,
    KeyRing,
    PasswordCredentials,
    Reissue,
    SecondFactorCredentials,
    SecondFactorRequired,
    Unauthorized,
)
from tokenflow.events import LoginFailed, LoginFailedReason, SecondFactorVerified
from tokenflow.mfa import MemorySecondFactorStore, RecoveryCodes, SecondFactors
from tokenflow.stores import MemoryStore
from tokenflow.testing import Browser, FakeClock, FakePasswordVerifier, FakeUserDirectory
from tokenflow.testing.mfa import totp_code
from tokenflow.throttles import MemoryThrottle

ALICE = PasswordCredentials("alice", "correct horse battery staple")


def test_the_real_second_factors_drive_the_two_step_login_and_step_up() -> None:
    clock = FakeClock()
    keyring = KeyRing.generate()
    users = FakeUserDirectory()
    users.add_user("alice")
    factors = SecondFactors(keyring, MemorySecondFactorStore(), issuer="Example")
    flow = Flow(
        keyring,
        MemoryStore(),
        users,
        passwords=FakePasswordVerifier({ALICE.username: ALICE.password}),
        throttle=MemoryThrottle(),
        second_factors=factors,
        clock=clock,
    )
    # One factor while not enrolled.
    browser = Browser(clock)
    first = flow.login(browser.request("POST", credentials=ALICE))
    assert isinstance(first, Reissue)
    assert first.aal == 1
    browser.receive(first.set_cookies)
    enrolment = factors.begin_totp("alice", account_name="alice", now=clock())
    codes = factors.confirm_totp("alice", totp_code(enrolment.secret, now=clock()), now=clock())
    assert isinstance(codes, RecoveryCodes)
    # Step-up on the same session with the next time step's code.
    clock.advance(30)
    code = SecondFactorCredentials(totp_code(enrolment.secret, now=clock()))
    stepped = flow.step_up(browser.request("POST", credentials=code))
    assert isinstance(stepped, Reissue)
    assert stepped.session_id == first.session_id
    assert stepped.aal == 2
    # A new browser: two steps; the code just used is refused (same time step).
    other = Browser(clock)
    challenge = flow.login(other.request("POST", credentials=ALICE))
    assert isinstance(challenge, SecondFactorRequired)
    assert challenge.methods == ("totp",)
    other.receive(challenge.set_cookies)
    replayed = flow.login(other.request("POST", credentials=code))
    assert isinstance(replayed, Unauthorized)
    assert LoginFailed(LoginFailedReason.SECOND_FACTOR_REPLAYED, "password") in replayed.events
    recovery = SecondFactorCredentials(codes.codes[0])
    login = flow.login(other.request("POST", credentials=recovery))
    assert isinstance(login, Reissue)
    assert (login.aal, login.amr) == (2, ("pwd", "otp"))
    assert SecondFactorVerified("alice", "recovery", 9) in login.events
