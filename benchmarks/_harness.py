"""The measuring machinery every benchmark group shares.

Method, and why:

* **Interleaved rounds.** Contenders are not timed one after the other (a
  thermal or frequency change, or a neighbour process waking up, would then
  land on one contender only). Instead, each round times one batch of every
  case, in a freshly shuffled order, so slow drifts spread over all cases.
* **Batches of calibrated size.** A single operation takes about a microsecond,
  far too short to time on its own. Each case is calibrated once to ``n``
  operations per batch (about ``Settings.batch_ms``), and the same ``n`` is
  reused every round, so that every sample of a case measures the same work.
* **Medians, with the spread shown.** The median over rounds is the figure of
  record; it shrugs off a round that a context switch spoilt. The minimum and
  a noise figure, the interquartile range as a percentage of the median, say
  how far the median can be trusted: two contenders whose medians differ by
  less than their noise are not told apart by this run.
* **No collector in the timed region.** A cyclic garbage collection that
  happens to start inside one batch would charge another library's garbage to
  that case. The collector runs between batches and is off during them.

Groups describe what to time as :class:`Case` objects, call :func:`measure`,
and put their figures in the :class:`Report`; ``benchmarks/__main__.py`` turns
the report into JSON.
"""

from __future__ import annotations

import gc
import importlib.metadata
import itertools
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, TypeAlias

__all__ = [
    "DEFAULT_BATCH_MS",
    "DEFAULT_ROUNDS",
    "JSON",
    "Call",
    "Case",
    "Report",
    "Settings",
    "Stats",
    "calibrate",
    "format_table",
    "library_versions",
    "measure",
]

JSON: TypeAlias = "bool | int | float | str | Sequence[JSON] | Mapping[str, JSON] | None"
"""A value that :func:`json.dumps` writes as is."""

DEFAULT_ROUNDS = 15
"""Rounds of a full run: enough for a stable median and meaningful quartiles."""
DEFAULT_BATCH_MS = 20.0
"""Batch length of a full run: long against timer resolution, short against drift."""

_MAX_BATCH_OPS = 10_000_000
"""Calibration stops growing a batch here, so a near-free case still finishes."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How hard to measure: shared by every group of one run."""

    rounds: int = DEFAULT_ROUNDS
    """Timed rounds; every case gets one batch per round."""
    batch_ms: float = DEFAULT_BATCH_MS
    """Target wall time of one batch, in milliseconds."""
    seed: int = 0
    """Seed of the shuffle that orders the cases within each round."""
    quick: bool = False
    """Smoke-test mode: few rounds, short batches, figures not worth quoting."""
    # Looked up when the settings are made, not at import, so that a test's
    # captured stderr (pytest's capsys) receives the progress lines.
    progress: IO[str] = field(default_factory=lambda: sys.stderr, repr=False, compare=False)
    """Where progress lines go (stderr, so that stdout holds only results)."""

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be at least 1, not {self.rounds}")
        if not self.batch_ms > 0:
            raise ValueError(f"batch_ms must be positive, not {self.batch_ms}")

    @property
    def batch_ns(self) -> int:
        """Target wall time of one batch, in nanoseconds."""
        return max(1, round(self.batch_ms * 1_000_000))

    def log(self, message: str) -> None:
        """Write one progress line, flushed at once so the user sees it live."""
        print(message, file=self.progress, flush=True)

    def as_json(self) -> dict[str, JSON]:
        """The settings, for the JSON report."""
        return {
            "rounds": self.rounds,
            "batch_ms": self.batch_ms,
            "seed": self.seed,
            "quick": self.quick,
        }


@dataclass(frozen=True, slots=True)
class Call:
    """A function and its arguments: one operation to repeat.

    The batch loop calls ``fn(*args, **kwargs)`` directly. A bound method such
    as ``codec.open`` with ``args=(Purpose.ACCESS, token)`` and
    ``kwargs={"now": now}`` is therefore timed exactly as an application calls
    it (``now`` is keyword-only throughout tokenflow), with no wrapper frame.
    """

    fn: Callable[..., object]
    args: tuple[object, ...] = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)

    def __call__(self) -> object:
        return self.fn(*self.args, **self.kwargs)


@dataclass(frozen=True, slots=True)
class Case:
    """One timed operation with a unique label (``contender/operation`` by convention).

    ``prepare``, if given, is called with the batch size before every batch
    (calibration probes included), outside the timed region: it readies the
    inputs that ``n`` calls will consume, work that belongs to the other party
    (a client signing the proofs a server verifies, say) and must not be timed.
    """

    label: str
    call: Call
    prepare: Callable[[int], object] | None = None


@dataclass(frozen=True, slots=True)
class Stats:
    """The per-operation times of one case, one sample per round, in microseconds."""

    batch_ops: int
    """Operations per batch, fixed by calibration."""
    samples_us: tuple[float, ...]

    @property
    def median(self) -> float:
        """The figure of record."""
        return statistics.median(self.samples_us)

    @property
    def minimum(self) -> float:
        """The fastest round: what the code costs when nothing else interferes."""
        return min(self.samples_us)

    @property
    def quartiles(self) -> tuple[float, float]:
        """The 25th and 75th percentiles (both the one sample, for a single round)."""
        if len(self.samples_us) < 2:
            return self.samples_us[0], self.samples_us[0]
        p25, _, p75 = statistics.quantiles(self.samples_us, n=4, method="inclusive")
        return p25, p75

    @property
    def noise_pct(self) -> float:
        """Interquartile range over median, in percent: the run-to-run wobble."""
        p25, p75 = self.quartiles
        return 100.0 * (p75 - p25) / self.median

    def as_json(self) -> dict[str, JSON]:
        """The figures, rounded to a tenth of a nanosecond, plus the raw samples."""
        p25, p75 = self.quartiles
        return {
            "median_us": round(self.median, 4),
            "min_us": round(self.minimum, 4),
            "p25_us": round(p25, 4),
            "p75_us": round(p75, 4),
            "noise_pct": round(self.noise_pct, 2),
            "batch_ops": self.batch_ops,
            "rounds": len(self.samples_us),
            "samples_us": [round(s, 4) for s in self.samples_us],
        }


def _time_batch(call: Call, n: int) -> int:
    """Nanoseconds to run ``call`` ``n`` times, with the cyclic collector off."""
    fn, args, kwargs = call.fn, call.args, dict(call.kwargs)
    loop = itertools.repeat(None, n)
    collector_was_on = gc.isenabled()
    gc.disable()
    try:
        if kwargs:
            start = time.perf_counter_ns()
            for _ in loop:
                fn(*args, **kwargs)
        else:
            start = time.perf_counter_ns()
            for _ in loop:
                fn(*args)
        return time.perf_counter_ns() - start
    finally:
        if collector_was_on:
            gc.enable()


def calibrate(call: Call, target_ns: int, prepare: Callable[[int], object] | None = None) -> int:
    """Operations per batch so that one batch of ``call`` takes about ``target_ns``.

    Batches grow until one takes a fifth of the target, long enough that timer
    resolution and a slow first call (imports, caches) no longer skew the
    per-operation estimate, and the target is then extrapolated from it. The
    probing doubles as the warm-up. ``prepare`` is :attr:`Case.prepare`.
    """
    probe_ns = max(1, target_ns // 5)
    n = 1
    while True:
        if prepare is not None:
            prepare(n)
        gc.collect()
        elapsed = _time_batch(call, n)
        if elapsed >= probe_ns or n >= _MAX_BATCH_OPS:
            break
        # Leap while far below the probe length, then creep, so that a case of
        # a few hundred nanoseconds is sized in a handful of probes.
        n *= 10 if elapsed * 20 < probe_ns else 2
    return min(_MAX_BATCH_OPS, max(1, math.ceil(n * target_ns / max(elapsed, 1))))


def measure(
    group: str,
    cases: Sequence[Case],
    settings: Settings,
    *,
    status: Callable[[Mapping[str, Stats]], str] | None = None,
) -> dict[str, Stats]:
    """Time every case in interleaved, shuffled rounds; return its stats by label.

    ``status``, if given, turns the stats so far into a short text appended
    to each round's progress line (a running headline figure, say).
    """
    labels = [case.label for case in cases]
    if len(set(labels)) != len(labels):
        raise ValueError(f"case labels must be unique: {labels}")
    settings.log(f"{group}: calibrating {len(cases)} cases to ~{settings.batch_ms:g} ms batches")
    batch_ops = {
        case.label: calibrate(case.call, settings.batch_ns, case.prepare) for case in cases
    }
    samples: dict[str, list[float]] = {label: [] for label in labels}
    order = list(cases)
    shuffler = random.Random(settings.seed)
    started = time.perf_counter()
    for round_number in range(1, settings.rounds + 1):
        shuffler.shuffle(order)
        for case in order:
            n = batch_ops[case.label]
            if case.prepare is not None:
                case.prepare(n)
            # Collect here, outside the timed region, so that each batch starts
            # with the garbage of the previous one already gone.
            gc.collect()
            samples[case.label].append(_time_batch(case.call, n) / n / 1000)
        line = (
            f"{group}: round {round_number}/{settings.rounds}"
            f"  ({time.perf_counter() - started:.1f} s)"
        )
        if status is not None:
            line += "  " + status(_stats(batch_ops, samples))
        settings.log(line)
    return _stats(batch_ops, samples)


def _stats(batch_ops: Mapping[str, int], samples: Mapping[str, list[float]]) -> dict[str, Stats]:
    return {label: Stats(batch_ops[label], tuple(times)) for label, times in samples.items()}


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A plain-text table; ``align`` holds one ``l`` or ``r`` per column.

    A row shorter than the header (a skipped contender with its reason, say)
    prints its last cell unpadded, running across the remaining columns.
    """
    if len(align) != len(headers):
        raise ValueError("align needs one character per column")
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) == len(headers):
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if i == len(cells) - 1 and len(cells) < len(headers):
                parts.append(cell)
            elif align[i] == "r":
                parts.append(cell.rjust(widths[i]))
            else:
                parts.append(cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def library_versions(*distributions: str) -> dict[str, JSON]:
    """Installed versions of ``distributions`` (``None`` for one that is missing)."""
    versions: dict[str, JSON] = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str | None:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo is not.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for text in cpuinfo:
                if text.startswith("model name"):
                    return text.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def _environment() -> dict[str, JSON]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    # The load average when the run starts: a busy machine explains a noisy run.
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "load_average_1m": load,
        "tracing": sys.gettrace() is not None,
    }


class Report:
    """What a run found: each group's section, shared top-level keys, the environment.

    A group adds rows (one per contender) to its own section and may publish
    headline figures as top-level keys, which tools read without knowing the
    group's layout. Top-level keys are first come, first served: a second
    group reusing a name is a programming error and raises.
    """

    _RESERVED = frozenset({"schema", "environment", "settings", "run", "groups"})

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.environment: dict[str, JSON] = _environment()
        self.libraries: dict[str, JSON] = {}
        self.details: dict[str, dict[str, JSON]] = {}
        self.rows: dict[str, dict[str, JSON]] = {}
        self.keys: dict[str, JSON] = {}

    def add_detail(self, group: str, key: str, value: JSON) -> None:
        """Record a group-wide fact (its inputs, its goal) in the group's section."""
        details = self.details.setdefault(group, {})
        if key == "rows" or key in details:
            raise ValueError(f"{group}: detail {key!r} is already taken")
        details[key] = value

    def add_row(self, group: str, name: str, row: Mapping[str, JSON]) -> None:
        """Record one contender's figures under ``group``."""
        rows = self.rows.setdefault(group, {})
        if name in rows:
            raise ValueError(f"{group}: row {name!r} added twice")
        rows[name] = dict(row)

    def add_key(self, key: str, value: JSON) -> None:
        """Publish a top-level key (a headline figure)."""
        if key in self._RESERVED or key in self.keys:
            raise ValueError(f"top-level key {key!r} is already taken")
        self.keys[key] = value

    def add_libraries(self, *distributions: str) -> None:
        """Record the installed versions of the libraries a group measured."""
        self.libraries.update(library_versions(*distributions))

    def as_json(self, *, started: float, duration_s: float) -> dict[str, JSON]:
        """The whole report as one JSON object."""
        return {
            "schema": 1,
            "run": {
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "duration_s": round(duration_s, 2),
            },
            "environment": {**self.environment, "libraries": self.libraries},
            "settings": self.settings.as_json(),
            "groups": {
                group: {**self.details.get(group, {}), "rows": self.rows.get(group, {})}
                for group in {**self.details, **self.rows}
            },
            **self.keys,
        }
