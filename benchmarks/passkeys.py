"""Passkeys: a whole passkey login against a whole argon2id password login; replays and clones.

Three figures:

* **passkey_login_vs_password_login**: the server's side of a whole passkey
  login (issue the login options with their challenge, then ``flow.login``
  with the assertion: verify the challenge, find the passkey, check the
  signature with py_webauthn, consume the challenge, move the counter,
  open a session and mint both cookies) over a whole password login
  (``flow.login`` with argon2id at the library's defaults), on the same
  SQLite store, interleaved in the same rounds. Assertions are signed by
  the software authenticator before timing (a client's cost, not the
  server's); if the pool runs out, the rest are signed in the timed call
  (reported), which only raises the passkey figure. Expected: at most 0.02.
* **passkey_assertion_replays_granted**: 1,000 logins (100 with ``--quick``),
  each assertion captured and sent again, once in turn and then by 8
  threads at once; grants counted (any Reissue). Goal: 0.
* **passkey_cloned_counter_granted**: 1,000 passkeys (100 with ``--quick``)
  each used twice, then a clone (same private key, its counter behind)
  tries to sign in. Goal: 0.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import Any, Final

from tokenflow import Flow, KeyRing, PasskeyCredentials, PasswordCredentials, Reissue, Request
from tokenflow.stores import SQLiteStore
from tokenflow.testing import FakeClock, FakeUserDirectory

from ._harness import Call, Case, Report, Settings, format_table, measure

__all__ = ["RATIO_GOAL", "run"]

GROUP: Final = "passkeys"
RATIO_GOAL: Final = 0.02
ORIGIN: Final = "https://app.example"
NOW: Final = 1_800_000_000.0
PASSWORD: Final = "correct horse battery staple"
ATTACK_RUNS: Final = 1000
ATTACK_RUNS_QUICK: Final = 100
PARALLEL: Final = 8
POOL: Final = 6000
POOL_QUICK: Final = 1500
"""Assertions signed before timing; past them, the rest are signed in the timed call."""


def _request(credentials: Any) -> Request:
    return Request(
        method="POST",
        credentials=credentials,
        origin=ORIGIN,
        host="app.example",
        sec_fetch_site="same-origin",
    )


def _world(path: str) -> tuple[Flow, Any, FakeClock]:
    from tokenflow.passkeys import PasskeyConfig, Passkeys
    from tokenflow.passkeys.sqlite import SQLiteChallengeLedger, SQLitePasskeyRepository
    from tokenflow.passwords import PasswordHasher, PasswordVerifier

    clock = FakeClock(NOW)
    keyring = KeyRing.generate()
    users = FakeUserDirectory()
    users.add_user("ada")
    stored = PasswordHasher().hash(PASSWORD)

    class _Table:
        def find_password(self, username: str) -> tuple[str, str] | None:
            return ("ada", stored) if username == "ada" else None

    passkeys = Passkeys(
        PasskeyConfig(rp_id="app.example", rp_name="App", origins=(ORIGIN,)),
        keyring,
        SQLitePasskeyRepository(path),
        SQLiteChallengeLedger(path),
        clock=clock,
    )
    flow = Flow(
        keyring,
        SQLiteStore(path),
        users,
        passwords=PasswordVerifier(_Table()),
        passkeys=passkeys,
        clock=clock,
    )
    return flow, passkeys, clock


def _enrol(passkeys: Any, user: str = "ada") -> Any:
    from tokenflow.testing.passkeys import SoftAuthenticator

    authenticator = SoftAuthenticator()
    options = passkeys.registration_options(user, "enrol", user_name=user, origin=ORIGIN)
    passkeys.verify_registration(user, "enrol", authenticator.create(options, ORIGIN))
    return authenticator


def _passkey_login(flow: Flow, passkeys: Any, authenticator: Any) -> object:
    options = passkeys.authentication_options(origin=ORIGIN)
    return flow.login(_request(PasskeyCredentials(authenticator.get(options, ORIGIN))))


class _Signed:
    """Assertions signed ahead, in counter order, so that the timed call is the
    server's work alone: the login options (challenge issued) and ``flow.login``."""

    def __init__(self, flow: Flow, passkeys: Any, authenticator: Any, size: int) -> None:
        self.flow, self.passkeys, self.authenticator = flow, passkeys, authenticator
        self.pool = [self._sign() for _ in range(size)]
        self.pool.reverse()
        self.signed_inline = 0

    def _sign(self) -> PasskeyCredentials:
        options = self.passkeys.authentication_options(origin=ORIGIN)
        return PasskeyCredentials(self.authenticator.get(options, ORIGIN))

    def login(self) -> object:
        # The options a browser asks for first: part of the server's work.
        self.passkeys.authentication_options(origin=ORIGIN)
        if self.pool:
            credentials = self.pool.pop()
        else:
            self.signed_inline += 1
            credentials = self._sign()
        return self.flow.login(_request(credentials))


def _replays(flow: Flow, passkeys: Any, runs: int) -> int:
    granted = 0
    authenticator = _enrol(passkeys)
    for _ in range(runs):
        options = passkeys.authentication_options(origin=ORIGIN)
        captured = authenticator.get(options, ORIGIN)
        if not isinstance(flow.login(_request(PasskeyCredentials(captured))), Reissue):
            raise AssertionError("the genuine login failed")
        granted += isinstance(flow.login(_request(PasskeyCredentials(captured))), Reissue)
    # Several servers' worth of threads replaying one fresh assertion at once:
    # exactly one may win (the genuine use); every further grant is a replay.
    for _ in range(max(1, runs // 10)):
        options = passkeys.authentication_options(origin=ORIGIN)
        captured = authenticator.get(options, ORIGIN)
        granted += max(0, _race(flow, captured) - 1)
    return granted


def _race(flow: Flow, response: str) -> int:
    """``PARALLEL`` threads send one assertion at once; how many got a session."""
    barrier = threading.Barrier(PARALLEL)
    wins: list[bool] = []
    lock = threading.Lock()

    def replay() -> None:
        barrier.wait()
        won = isinstance(flow.login(_request(PasskeyCredentials(response))), Reissue)
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=replay) for _ in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(wins)


def _clones(flow: Flow, passkeys: Any, runs: int) -> int:
    granted = 0
    for _ in range(runs):
        authenticator = _enrol(passkeys)
        clone = authenticator.clone()
        for _ in range(2):
            if not isinstance(_passkey_login(flow, passkeys, authenticator), Reissue):
                raise AssertionError("the genuine login failed")
        granted += isinstance(_passkey_login(flow, passkeys, clone), Reissue)
    return granted


def run(settings: Settings, report: Report) -> None:
    """Measure the passkeys group and add it to ``report``."""
    with tempfile.TemporaryDirectory(prefix="tokenflow-passkeys-") as root:
        flow, passkeys, _clock = _world(os.path.join(root, "app.db"))
        authenticator = _enrol(passkeys)
        if not isinstance(_passkey_login(flow, passkeys, authenticator), Reissue):
            raise AssertionError("the passkey login case does not log in")
        password = _request(PasswordCredentials("ada", PASSWORD))
        if not isinstance(flow.login(password), Reissue):
            raise AssertionError("the password login case does not log in")
        signed = _Signed(flow, passkeys, authenticator, POOL_QUICK if settings.quick else POOL)
        cases = [
            Case("passkey_login", Call(signed.login)),
            Case("password_login", Call(flow.login, (password,))),
        ]
        stats = measure(GROUP, cases, settings)
        ratio = stats["passkey_login"].median / stats["password_login"].median
        runs = ATTACK_RUNS_QUICK if settings.quick else ATTACK_RUNS
        replays = _replays(flow, passkeys, runs)
        clones = _clones(flow, passkeys, runs)
    rows = [
        [
            label,
            f"{stats[key].median:,.1f}",
            f"{stats[key].minimum:,.1f}",
            f"{stats[key].noise_pct:.1f}",
        ]
        for key, label in (
            ("passkey_login", "login options + flow.login with a passkey"),
            ("password_login", "flow.login with an argon2id password"),
        )
    ]
    print(f"\n== {GROUP}: SQLite store, {settings.rounds} rounds ==")
    print(format_table(["case", "median us", "min us", "noise %"], rows, "lrrr"))
    if signed.signed_inline:
        print(f"  ({signed.signed_inline} passkey logins signed their assertion in the timed call)")
    print(
        f"passkey_login_vs_password_login = {ratio:.4f} "
        f"(expected <= {RATIO_GOAL}: {'PASS' if ratio <= RATIO_GOAL else 'MISS'})"
    )
    print(
        f"passkey_assertion_replays_granted = {replays} ({runs} replays in turn, "
        f"{max(1, runs // 10)} x {PARALLEL} at once; goal 0: {'PASS' if replays == 0 else 'MISS'})"
    )
    print(
        f"passkey_cloned_counter_granted = {clones} ({runs} clones; goal 0: "
        f"{'PASS' if clones == 0 else 'MISS'})"
    )
    for key in ("passkey_login", "password_login"):
        report.add_row(GROUP, key, dict(stats[key].as_json()))
    report.add_key("passkey_login_vs_password_login", ratio)
    report.add_key("passkey_assertion_replays_granted", replays)
    report.add_key("passkey_cloned_counter_granted", clones)
    report.add_libraries("webauthn", "argon2-cffi")
