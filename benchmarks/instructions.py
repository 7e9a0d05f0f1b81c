"""Instructions per seal and per open, counted by callgrind: ``python -m benchmarks.instructions``.

Wall-clock ratios on a loaded machine are noise; instruction counts are not.
Each contender of the ``tokens`` group that matters for its goals (tokenflow,
the v1 floor, the tuned floor) runs its seal or its open ``SMALL`` and then
``LARGE`` times, each in its own process under ``valgrind --tool=callgrind``;
the difference over ``LARGE - SMALL`` calls is the cost of one call, free of
start-up and imports. Prints a table and, with ``--json FILE``, writes the
counts and the ratios (``checks_seal_vs_v1_floor`` and the others, the same
names as the ``tokens`` group's wall-clock keys).

It takes a few minutes (twelve processes under valgrind) and needs valgrind on
PATH; without it, it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Final

from . import tokens

CONTENDERS: Final = ("tokenflow", "v1_floor", "tuned_floor")
OPERATIONS: Final = ("seal", "open")
SMALL: Final = 2_000
LARGE: Final = 12_000
_COLLECTED: Final = re.compile(r"Collected : (\d+)")


def _child(contender: str, operation: str, calls: int) -> None:
    """Run one contender's operation ``calls`` times (inside valgrind)."""
    now = int(time.time())
    claims = tokens.reference_claims(now)
    factories = {factory(claims, now).key: factory for factory in tokens.CORE}
    chosen = factories[contender](claims, now)
    # _check round-trips once, refuses a forged token, and hands back the token to open.
    call = chosen.seal if operation == "seal" else chosen.open_call(tokens._check(chosen, claims))
    fn, args = call.fn, call.args
    for _ in range(calls):
        fn(*args)


def _count(contender: str, operation: str, calls: int) -> int:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        contender,
        operation,
        str(calls),
    ]
    # A fixed command line (valgrind, this interpreter, this module), no shell.
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    """Count, print, and optionally write ``--json``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the counts as JSON")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        contender, operation, calls = options.child
        _child(contender, operation, int(calls))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not on PATH: no instruction counts", file=sys.stderr)
        return 2
    per_call: dict[str, dict[str, int]] = {}
    for contender in CONTENDERS:
        for operation in OPERATIONS:
            small = _count(contender, operation, SMALL)
            large = _count(contender, operation, LARGE)
            per_call.setdefault(contender, {})[operation] = round((large - small) / (LARGE - SMALL))
            print(f"{contender}/{operation}: {per_call[contender][operation]:,}", file=sys.stderr)
    ratios = {
        f"{operation}_vs_tuned_floor": per_call["tokenflow"][operation]
        / per_call["tuned_floor"][operation]
        for operation in OPERATIONS
    }
    ratios.update(
        {
            f"checks_{operation}_vs_v1_floor": per_call["tokenflow"][operation]
            / per_call["v1_floor"][operation]
            for operation in OPERATIONS
        }
    )
    print("instructions per call (callgrind):")
    for contender, counts in per_call.items():
        print(f"  {contender:12} seal {counts['seal']:>8,}  open {counts['open']:>8,}")
    for name, ratio in ratios.items():
        goal = tokens.GOAL if name.endswith("tuned_floor") else tokens.CHECKS_GOAL
        verdict = "PASS" if ratio <= goal else "MISS"
        print(f"{name} = {ratio:.3f}  (goal <= {goal}: {verdict})")
    if options.json:
        result = {
            "instructions_per_call": per_call,
            **{name: round(r, 4) for name, r in ratios.items()},
        }
        options.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
