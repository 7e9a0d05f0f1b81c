"""The conformance kit for second-factor stores, and TOTP codes for tests.

:func:`check_second_factor_store` raises :class:`AssertionError` with an
explanation on the first breach of the :class:`~tokenflow.mfa.SecondFactorStore`
contract; run it against your own backend as the tests run it against
tokenflow's four. :func:`totp_code` computes the code an authenticator app
would show for a secret, so a test can enrol and log in without a phone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyotp

if TYPE_CHECKING:
    from ..mfa import SecondFactorStore

__all__ = ["check_second_factor_store", "totp_code"]

_T0 = 1_767_225_600.0


def totp_code(secret: str, *, now: float) -> str:
    """The six-digit code an authenticator app shows at ``now`` for a base32 ``secret``."""
    return pyotp.TOTP(secret).at(now)


def _race(threads: int, call: Callable[[int], Any]) -> list[Any]:
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        barrier.wait()
        try:
            answer = call(index)
        except BaseException as exc:  # handed to the caller below
            answer = exc
        with lock:
            results.append(answer)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len(results) == threads, "a call hung for 60 s"
    for answer in results:
        if isinstance(answer, BaseException):
            raise answer
    return results


def _hashes(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


def check_second_factor_store(
    make_store: Callable[[], SecondFactorStore], *, threads: int = 50
) -> None:
    """Check a :class:`~tokenflow.mfa.SecondFactorStore` against its contract.

    Raises :class:`AssertionError` on the first breach. It checks: pending
    enrolments (replaced by a new one, gone at their expiry, confirmed only
    with the exact sealed bytes and only once); a confirmed secret
    round-trips byte for byte; the step rule (forward only, equal or lower
    refused, unknown user refused); recovery codes (each used once, the count
    left, another user's refused, replacement swaps all, only for an enrolled
    user); ``remove``; and ``threads`` simultaneous uses of one step, one
    recovery code and one confirmation, each on a store from ``make_store``
    as separate servers would have: exactly one succeeds.
    """
    store = make_store()
    alice, bob = f"alice-{os.urandom(4).hex()}", f"bob-{os.urandom(4).hex()}"
    sealed, newer = os.urandom(60), os.urandom(60)
    assert store.totp_of(alice) is None, "a new user has no secret"
    assert store.pending_of(alice, now=_T0) is None, "a new user has no pending enrolment"
    assert not store.use_step(alice, 5), "a user without a secret must not use a step"
    assert store.use_recovery_code(alice, os.urandom(32)) is None, "an unknown code was accepted"
    assert not store.replace_recovery_codes(alice, _hashes(2)), (
        "recovery codes need a confirmed secret"
    )
    store.begin(alice, sealed, _T0 + 600)
    assert store.pending_of(alice, now=_T0) == sealed, "a pending secret must round-trip"
    assert store.pending_of(alice, now=_T0 + 600) is None, "a pending enrolment must expire"
    assert store.pending_of(bob, now=_T0) is None, "pending enrolments are per user"
    store.begin(alice, newer, _T0 + 600)
    assert store.pending_of(alice, now=_T0) == newer, "a new enrolment must replace the pending one"
    assert not store.confirm(alice, sealed, 10, _hashes(10)), "confirmed a replaced enrolment"
    assert store.totp_of(alice) is None, "a refused confirm must change nothing"
    codes = _hashes(10)
    assert store.confirm(alice, newer, 10, codes), "the pending enrolment must confirm"
    assert store.totp_of(alice) == newer, "the confirmed secret must round-trip byte for byte"
    assert store.pending_of(alice, now=_T0) is None, "a confirmed enrolment is no longer pending"
    assert not store.confirm(alice, newer, 11, _hashes(10)), "an enrolment confirmed twice"
    # The step rule.
    assert not store.use_step(alice, 10), "the confirming step must count as used"
    assert not store.use_step(alice, 9), "an older step was accepted"
    assert store.use_step(alice, 11), "a later step was refused"
    assert not store.use_step(alice, 11), "a step was accepted twice"
    assert not store.use_step(bob, 12), "another user's secret was used"
    # Recovery codes.
    assert store.recovery_codes_left(alice) == 10, "confirm must store the ten code hashes"
    assert store.use_recovery_code(bob, codes[0]) is None, "another user's code was accepted"
    assert store.use_recovery_code(alice, codes[0]) == 9, "a code must be used, 9 left"
    assert store.use_recovery_code(alice, codes[0]) is None, "a code was accepted twice"
    fresh = _hashes(10)
    assert store.replace_recovery_codes(alice, fresh), "an enrolled user's codes must be replaced"
    assert store.recovery_codes_left(alice) == 10, "replacement must leave exactly the new codes"
    assert store.use_recovery_code(alice, codes[1]) is None, "an old code survived replacement"
    assert store.use_recovery_code(alice, fresh[0]) == 9, "a new code must be usable"
    # A second enrolment replaces the first only when confirmed.
    store.begin(alice, sealed, _T0 + 600)
    assert store.totp_of(alice) == newer, "beginning an enrolment must keep the confirmed one"
    assert store.confirm(alice, sealed, 3, codes), "a second enrolment must confirm"
    assert store.totp_of(alice) == sealed, "a confirmed enrolment must replace the earlier one"
    assert store.use_step(alice, 4), "the new secret starts from its confirming step"
    assert store.recovery_codes_left(alice) == 10, "confirming must replace the recovery codes"
    assert store.use_recovery_code(alice, fresh[1]) is None, "a replaced code was accepted"
    # Removal.
    assert store.remove(alice), "remove must report what it removed"
    assert store.totp_of(alice) is None, "remove must forget the secret"
    assert store.recovery_codes_left(alice) == 0, "remove must forget the recovery codes"
    assert not store.remove(alice), "a second remove has nothing to remove"
    store.begin(bob, sealed, _T0 + 600)
    assert store.remove(bob), "a pending enrolment counts for remove"
    assert store.pending_of(bob, now=_T0) is None, "remove must forget a pending enrolment"
    _check_races(make_store, threads)


def _check_races(make_store: Callable[[], SecondFactorStore], threads: int) -> None:
    stores = [make_store() for _ in range(threads)]
    user = f"racer-{os.urandom(4).hex()}"
    sealed = os.urandom(60)
    stores[0].begin(user, sealed, _T0 + 600)
    codes = _hashes(10)
    confirmed = _race(threads, lambda i: stores[i].confirm(user, sealed, 100, codes))
    assert confirmed.count(True) == 1, (
        f"{confirmed.count(True)} of {threads} simultaneous confirmations succeeded; "
        "confirm must be atomic"
    )
    wins = _race(threads, lambda i: stores[i].use_step(user, 101))
    assert wins.count(True) == 1, (
        f"{wins.count(True)} of {threads} simultaneous uses of one time step succeeded; "
        "use_step must be one atomic compare-and-set"
    )
    used = _race(threads, lambda i: stores[i].use_recovery_code(user, codes[0]))
    accepted = [n for n in used if n is not None]
    assert accepted == [9], (
        f"{len(accepted)} of {threads} simultaneous uses of one recovery code succeeded "
        f"({accepted}); use_recovery_code must delete atomically"
    )
    # Different codes at once: each is accepted, none is lost.
    spread = _race(9, lambda i: stores[i % threads].use_recovery_code(user, codes[1 + i]))
    assert None not in spread, "simultaneous uses of different codes must each succeed"
    assert stores[0].recovery_codes_left(user) == 0, "every code was used: none may be left"
    stores[0].remove(user)
