"""Scale: what a decision costs as the session store fills up.

The access path touches no store, so its cost cannot depend on how many
sessions exist; a refresh looks one session up by id and rewrites it, which
a store should do in (near) constant time however many sessions it holds.
This group checks both, on the two stores that need no server:

* **access decision** (the ``flow`` group's six-cookie request) on a flow
  whose store holds N sessions;
* **refresh decision** on a :class:`~tokenflow.stores.MemoryStore` and on a
  :class:`~tokenflow.stores.SQLiteStore` (a file in a temporary directory)
  holding N sessions. As in the ``flow`` group, each refresh presents a
  session's current token and is checked to be a real rotation.

All cases run in the same interleaved rounds as ``codec.open`` of the access
token, and every figure is a ratio to that median. Each store holds
``LIVE_SESSIONS`` sessions logged in through the flow (the ones the refresh
case cycles through) and N minus that many more written straight into the
store, all alive for the whole run.
"""

from __future__ import annotations

import gc
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import Final

from tokenflow.ports import SessionStore
from tokenflow.stores import MemoryStore, NewSession, SessionInfo, SQLiteStore
from tokenflow.tokens import Purpose

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure
from .flow import Refresher, World, _check_rotations, access_request, build_world

__all__ = ["COUNTS", "LIVE_SESSIONS", "QUICK_COUNTS", "run"]

GROUP: Final = "scale"
COUNTS: Final = (1_000, 10_000, 100_000)
"""Sessions in the store, for a full run."""
QUICK_COUNTS: Final = (300, 1_000)
LIVE_SESSIONS: Final = 256
"""Sessions logged in through the flow; the refresh case cycles through them."""

_IDLE: Final = 1800.0
_ABSOLUTE: Final = 12 * 3600.0


def _fill(store: SessionStore, count: int, now: float) -> None:
    """Add ``count`` live sessions of other users straight into ``store``."""
    for i in range(count):
        info = SessionInfo(
            session_id=secrets.token_urlsafe(16),
            user_id=f"filler-{i:06d}",
            created_at=now,
            refreshed_at=now,
            idle_expires_at=now + _IDLE,
            absolute_expires_at=now + _ABSOLUTE,
        )
        store.create(NewSession(info, secrets.token_bytes(32)))


def _world(store: SessionStore, sessions: int, now: float) -> World:
    live = min(sessions, LIVE_SESSIONS)
    world = build_world(now, live, store)
    _fill(store, sessions - live, now)
    return world


def _ratio(numerator: Stats, denominator: Stats) -> float:
    return numerator.median / denominator.median


def run(settings: Settings, report: Report) -> None:
    """Benchmark decisions against store size; print the table and fill in ``report``."""
    now = float(int(time.time()))
    counts = QUICK_COUNTS if settings.quick else COUNTS
    stores: dict[str, Callable[[str], SessionStore]] = {
        "MemoryStore": lambda _: MemoryStore(),
        "SQLiteStore": lambda where: SQLiteStore(os.path.join(where, "sessions.sqlite3")),
    }
    with tempfile.TemporaryDirectory(prefix="tokenflow-bench-scale-") as tmp:
        cases: list[Case] = []
        refreshers: dict[str, tuple[World, Refresher]] = {}
        opened: list[SessionStore] = []
        codec_case: Case | None = None
        for count in counts:
            for name, make in stores.items():
                where = os.path.join(tmp, f"{name}-{count}")
                os.mkdir(where)
                settings.log(f"{GROUP}: filling a {name} with {count:,} sessions")
                store = make(where)
                opened.append(store)
                world = _world(store, count, now)
                refresher = Refresher(world)
                refreshers[f"{name}/{count}"] = (world, refresher)
                cases.append(Case(f"refresh/{name}/{count}", Call(refresher)))
                if name == "MemoryStore":
                    request = access_request(world.access_header)
                    cases.append(
                        Case(f"access/{count}", Call(world.flow.decide, (request,), {"now": now}))
                    )
                    if codec_case is None:
                        codec_case = Case(
                            "open",
                            Call(world.codec.open, (Purpose.ACCESS, world.access), {"now": now}),
                        )
        assert codec_case is not None
        # The stores now hold hundreds of thousands of objects, which the
        # collector run before every batch would walk, evicting the CPU caches
        # and charging the next batch for it. Frozen, they are skipped, as a
        # long-running server's old generation mostly is.
        gc.collect()
        gc.freeze()
        try:
            stats = measure(GROUP, [codec_case, *cases], settings)
        finally:
            gc.unfreeze()
        rotations = sum(_check_rotations(w, r) for w, r in refreshers.values())
        settings.log(f"{GROUP}: checked: all {rotations:,} timed refreshes were rotations")
        for store in opened:
            if isinstance(store, SQLiteStore):
                store.close()

    open_ = stats["open"]
    report.add_row(GROUP, "open", {"label": "codec.open (access token)", **open_.as_json()})
    rows: list[list[str]] = []
    for count in counts:
        access = stats[f"access/{count}"]
        report.add_row(
            GROUP,
            f"access/{count}",
            {
                "label": f"access decision, {count:,} sessions",
                "store": "no store call",
                "sessions": count,
                "access_decision": access.as_json(),
                "access_decision_vs_open": round(_ratio(access, open_), 4),
            },
        )
        rows.append(_line("access decision (no store call)", count, access, open_))
        for name in stores:
            refresh = stats[f"refresh/{name}/{count}"]
            report.add_row(
                GROUP,
                f"{name}/{count}",
                {
                    "label": f"refresh decision on {name}, {count:,} sessions",
                    "store": name,
                    "sessions": count,
                    "refresh_decision": refresh.as_json(),
                    "refresh_decision_vs_open": round(_ratio(refresh, open_), 4),
                },
            )
            rows.append(_line(f"refresh decision on {name}", count, refresh, open_))
    details: dict[str, JSON] = {"counts": list(counts), "live_sessions": LIVE_SESSIONS}
    report.add_detail(GROUP, "setup", details)
    report.add_detail(GROUP, "refresh_rotations_checked", rotations)

    print(
        f"\nScale: median of {settings.rounds} interleaved rounds, µs per decision "
        "(ratio: case median / codec.open median)"
    )
    if settings.quick:
        print("QUICK MODE: few rounds and short batches; do not quote these figures.")
    print(format_table(["case", "sessions", "µs", "vs open", "noise"], rows, "lrrrr"))


def _line(label: str, count: int, stats: Stats, open_: Stats) -> list[str]:
    return [
        label,
        f"{count:,}",
        f"{stats.median:.2f}",
        f"{_ratio(stats, open_):.2f}x",
        f"{stats.noise_pct:.1f}%",
    ]
