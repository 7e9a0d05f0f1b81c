"""Run tokenflow's benchmarks: ``python -m benchmarks [--quick] [--json FILE]``.

Results go to stdout, progress to stderr. A missed performance goal is
reported, never turned into a failing exit status: this is a measurement, and
CI decides what to do with it (from the ``--json`` file).

To add a group, write a module with ``run(settings, report)`` that measures
through :func:`benchmarks._harness.measure` and fills in the report, then
list it in :data:`GROUPS`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from . import dbsc, flow, oidc, passwords, scale, stores, tokens, web
from ._harness import DEFAULT_BATCH_MS, DEFAULT_ROUNDS, Report, Settings


@dataclass(frozen=True, slots=True)
class Group:
    """A benchmark group: a name for ``--only`` and the function that runs it."""

    name: str
    summary: str
    run: Callable[[Settings, Report], None]


GROUPS: Final[tuple[Group, ...]] = (
    Group("tokens", "token sealing and opening against floors and other libraries", tokens.run),
    Group(
        "stores",
        "Redis and PostgreSQL rotation: latency, throughput, races, round trips",
        stores.run,
    ),
    Group(
        "flow",
        "access and refresh decisions against token opening; memory; Cookie headers",
        flow.run,
    ),
    Group(
        "scale", "access and refresh decisions as the store fills: 10^3 to 10^5 sessions", scale.run
    ),
    Group("oidc", "ID-token verification against joserfc, a kid storm, a whole login", oidc.run),
    Group(
        "passwords",
        "argon2id logins: unknown user vs wrong password; throttled attempt vs a verification",
        passwords.run,
    ),
    Group(
        "web",
        "ASGI middleware against decide, and under uvicorn + wrk against a bare endpoint",
        web.run,
    ),
    Group(
        "dbsc",
        "device-bound refresh with an ES256 proof against a plain refresh; theft run",
        dbsc.run,
    ),
    Group(
        "passkeys",
        "a whole passkey login against an argon2id password login; replays and clones refused",
        lambda settings, report: _passkeys_group().run(settings, report),
    ),
    Group(
        "mfa",
        "TOTP replays, 50 parallel guesses and step-up bypasses through the flow; timings",
        lambda settings, report: _mfa_group().run(settings, report),
    ),
    Group(
        "otel",
        "access and refresh decisions with the OpenTelemetry observer against none",
        lambda settings, report: _otel_group().run(settings, report),
    ),
)


def _passkeys_group() -> Any:
    # Imported when the group runs: the other groups need no passkeys extra.
    from . import passkeys

    return passkeys


def _mfa_group() -> Any:
    # Imported when the group runs: the other groups need no mfa extra (pyotp).
    from . import mfa

    return mfa


def _otel_group() -> Any:
    # Imported when the group runs: the other groups need no OpenTelemetry SDK.
    from . import otel

    return otel


QUICK_ROUNDS: Final = 3
QUICK_BATCH_MS: Final = 2.0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark tokenflow. Run from the repository root.",
        epilog="groups: " + "; ".join(f"{g.name}: {g.summary}" for g in GROUPS),
    )
    parser.add_argument(
        "--rounds",
        type=_positive_int,
        help=f"interleaved timing rounds (default {DEFAULT_ROUNDS}, or {QUICK_ROUNDS} "
        "with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few rounds of short batches: checks that everything runs, in seconds",
    )
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write results as JSON")
    parser.add_argument(
        "--only",
        metavar="GROUP",
        action="append",
        choices=[g.name for g in GROUPS],
        help="run only this group (repeatable; default: all)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the per-round shuffle (default 0, so runs are comparable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``; returns the exit status."""
    args = _parser().parse_args(argv)
    default_rounds = QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS
    settings = Settings(
        rounds=args.rounds if args.rounds is not None else default_rounds,
        batch_ms=QUICK_BATCH_MS if args.quick else DEFAULT_BATCH_MS,
        seed=args.seed,
        quick=args.quick,
    )
    if sys.gettrace() is not None:
        settings.log("warning: a tracer (debugger, coverage) is active; timings are inflated")
    report = Report(settings)
    started = time.time()
    clock = time.perf_counter()
    for group in GROUPS:
        if args.only is None or group.name in args.only:
            group.run(settings, report)
    duration = time.perf_counter() - clock
    settings.log(f"done in {duration:.1f} s")
    if args.json is not None:
        data = report.as_json(started=started, duration_s=duration)
        try:
            args.json.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            print(f"python -m benchmarks: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
        settings.log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
