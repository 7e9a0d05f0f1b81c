"""Password logins: equal timing for unknown users, and what a throttled guess costs.

All cases run through :class:`tokenflow.Flow` with the **default** argon2id
parameters (cheap parameters would make every ratio meaningless), measured
side by side in interleaved rounds:

* **unknown user**: a login for a username the lookup does not know; the
  verifier checks the dummy hash;
* **wrong password**: a known user, a wrong password: one real check.
  ``password_unknown_vs_wrong`` is the ratio of their medians; goal within
  [0.95, 1.05], so that timing does not tell which usernames exist;
* **throttled**: a login attempt for a username already over the throttle's
  limit (a :class:`~tokenflow.throttles.MemoryThrottle`): answered 429
  without any hash;
* **verification**: one full ``verify_password`` of the right password.
  ``throttled_vs_verify`` is throttled ÷ verification; goal at most 0.01, so
  that guessing against a throttled account costs the server nothing.

Hashes verified per second at the default parameters (one core) are printed
with the parameters.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping
from typing import Final

from tokenflow import (
    Flow,
    KeyRing,
    PasswordCredentials,
    Request,
    TooManyRequests,
    Unauthorized,
)
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeUserDirectory
from tokenflow.throttles import MemoryThrottle

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure

__all__ = ["run"]

GROUP: Final = "passwords"
PASSWORD: Final = "correct horse battery staple"
NOW: Final = 1_700_000_000.0
FULL_BATCH_MS: Final = 150.0
FULL_ROUNDS: Final = 31
"""A hash takes tens of milliseconds, so each batch holds one: more rounds
than other groups, for a median that separates a few percent."""


class _Users:
    def __init__(self, stored: str) -> None:
        self.stored = stored

    def find_password(self, username: str) -> tuple[str, str] | None:
        return ("ada", self.stored) if username == "ada" else None


def _login(username: str, password: str) -> Request:
    return Request(
        "POST",
        credentials=PasswordCredentials(username, password),
        sec_fetch_site="same-origin",
        client_address="192.0.2.10",
    )


def _ratio(numerator: Stats, denominator: Stats) -> float:
    return numerator.median / denominator.median


def _status(stats: Mapping[str, Stats]) -> str:
    equal = _ratio(stats["unknown_user"], stats["wrong_password"])
    return f"unknown/wrong so far {equal:.3f}"


def run(settings: Settings, report: Report) -> None:
    """Measure the passwords group and add it to ``report``."""
    # Imported here: the other groups run without the argon2 extra.
    from tokenflow.passwords import PasswordHasher, PasswordVerifier

    hasher = PasswordHasher()  # the defaults: the subject of every figure here
    users = _Users(hasher.hash(PASSWORD))
    verifier = PasswordVerifier(users, hasher=hasher)
    directory = FakeUserDirectory()
    directory.add_user("ada")
    flow = Flow(KeyRing.generate(), MemoryStore(), directory, passwords=verifier)
    throttle = MemoryThrottle()
    guarded = Flow(
        KeyRing.generate(), MemoryStore(), directory, passwords=verifier, throttle=throttle
    )

    unknown, wrong, throttled = _login("eve", "guess"), _login("ada", "guess"), _login("ada", "x")
    # Put "ada" far over the limit: every timed attempt is refused unverified.
    for _ in range(30):
        guarded.decide(wrong, now=NOW)
    # Prove each case does what its name says before timing it.
    for request in (unknown, wrong):
        if not isinstance(flow.decide(request, now=NOW), Unauthorized):
            raise AssertionError("a wrong login was not refused")
    if not isinstance(guarded.decide(throttled, now=NOW), TooManyRequests):
        raise AssertionError("the throttled case was not throttled")
    if verifier.verify_password("ada", PASSWORD) != "ada":
        raise AssertionError("the verification case does not verify")

    decide = functools.partial(flow.decide, now=NOW)
    decide_guarded = functools.partial(guarded.decide, now=NOW)
    cases = [
        Case("unknown_user", Call(decide, (unknown,))),
        Case("wrong_password", Call(decide, (wrong,))),
        Case("throttled", Call(decide_guarded, (throttled,))),
        Case("verify", Call(verifier.verify_password, ("ada", PASSWORD))),
    ]
    rounds = settings.rounds if settings.quick else max(settings.rounds, FULL_ROUNDS)
    tuned = Settings(
        rounds=rounds,
        # A few hashes per batch in a full run smooth out scheduler noise.
        batch_ms=settings.batch_ms if settings.quick else max(settings.batch_ms, FULL_BATCH_MS),
        seed=settings.seed,
        quick=settings.quick,
        progress=settings.progress,
    )
    stats = measure(GROUP, cases, tuned, status=_status)

    equal = _ratio(stats["unknown_user"], stats["wrong_password"])
    # The same ratio taken round by round (the two batches of a round ran
    # back to back), then its median: drifts that span rounds cancel out.
    paired = sorted(
        u / w
        for u, w in zip(
            stats["unknown_user"].samples_us, stats["wrong_password"].samples_us, strict=True
        )
    )
    paired_median = statistics.median(paired)
    cheap = _ratio(stats["throttled"], stats["verify"])
    per_second = 1_000_000 / stats["verify"].median
    params = hasher.parameters
    labels = {
        "unknown_user": "login through Flow, unknown user (dummy hash)",
        "wrong_password": "login through Flow, known user, wrong password",
        "throttled": "login through Flow, throttled (429, no hash)",
        "verify": "PasswordVerifier.verify_password, right password",
    }
    rows = [
        [
            labels[key],
            f"{stats[key].median:,.1f}",
            f"{stats[key].minimum:,.1f}",
            f"{stats[key].noise_pct:.1f}",
        ]
        for key in labels
    ]
    print(f"\n== {GROUP}: {params.describe()}, {rounds} rounds ==")
    print(format_table(["case", "median us", "min us", "noise %"], rows, "lrrr"))
    in_band = 0.95 <= equal <= 1.05
    print(
        f"password_unknown_vs_wrong = {equal:.4f} (goal within [0.95, 1.05]: "
        f"{'PASS' if in_band else 'MISS'})"
    )
    quartiles = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
    print(
        f"  paired by round: median {paired_median:.4f}, "
        f"quartiles {quartiles[0]:.4f} to {quartiles[2]:.4f}"
    )
    print(
        f"throttled_vs_verify = {cheap:.6f} (goal <= 0.01: {'PASS' if cheap <= 0.01 else 'MISS'})"
    )
    print(f"hashes verified per second, one core, {params.describe()}: {per_second:,.1f}")

    for key, label in labels.items():
        row: dict[str, JSON] = {"label": label, **stats[key].as_json()}
        report.add_row(GROUP, key, row)
    report.add_detail(
        GROUP,
        "argon2_parameters",
        {
            "type": "argon2id",
            "memory_cost_kib": params.memory_cost,
            "time_cost": params.time_cost,
            "parallelism": params.parallelism,
            "hash_len": params.hash_len,
            "salt_len": params.salt_len,
        },
    )
    report.add_detail(
        GROUP, "goals", {"unknown_vs_wrong": [0.95, 1.05], "throttled_vs_verify": 0.01}
    )
    report.add_libraries("argon2-cffi")
    report.add_key("password_unknown_vs_wrong", round(equal, 4))
    report.add_key("password_unknown_vs_wrong_paired", round(paired_median, 4))
    report.add_key("throttled_vs_verify", round(cheap, 6))
    report.add_key("password_hashes_verified_per_second", round(per_second, 2))
    report.add_key("password_hash_parameters", params.describe())
