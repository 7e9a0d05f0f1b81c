"""A real browser: headless Chromium registers and refreshes a device-bound session.

Opt-in (it starts a browser and waits on real time): set TOKENFLOW_CHROMIUM_TESTS=1. It
needs the machine's Chromium (``/usr/lib/chromium/chromium`` or ``chromium`` on PATH), which
runs DBSC with a software key behind two features. The server is the WSGI middleware over
HTTPS on 127.0.0.1 (benchmarks/_chromium.py, shared with the dbsc benchmark).
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("joserfc")

if os.environ.get("TOKENFLOW_CHROMIUM_TESTS", "") != "1":
    pytest.skip("set TOKENFLOW_CHROMIUM_TESTS=1 to run the Chromium test", allow_module_level=True)

from benchmarks._chromium import (
    CHROMIUM,
    POLLING_PAGE,
    SINGLE_FETCH_PAGE,
    Served,
    default_config,
    refresh_cycles,
    run_chromium,
    serve,
)

from tokenflow import DeviceBinding, FlowConfig

if CHROMIUM is None:
    pytest.skip("no Chromium on this machine", allow_module_level=True)

DEFAULT_CYCLES = 2
"""Refresh cycles watched at default timings (about 2 x 120 s of real time)."""


def test_chromium_registers_and_refreshes_with_its_key() -> None:
    config = FlowConfig(
        access_ttl=2, refresh_idle_ttl=300, device_binding=DeviceBinding(challenge_ttl=30)
    )
    with serve(config, SINGLE_FETCH_PAGE) as served:
        run_chromium(served, lambda s: ("GET", "/private", 200) in s.seen, 30)
    seen = served.seen
    assert ("POST", "/auth/dbsc/register", 200) in seen, seen
    assert ("POST", "/auth/dbsc/refresh", 200) in seen, seen
    assert ("GET", "/private", 200) in seen, seen
    (info,) = served.flow.sessions_of("ada")
    assert info.device_key is not None
    assert '"crv":"P-256"' in info.device_key
    assert info.generation >= 1  # refreshed with the proof, not with the bare cookie


def test_chromium_at_default_timings_refreshes_without_a_403() -> None:
    """access_ttl 120 s, challenge_ttl 60 s: the challenge Chromium cached with its
    last refresh still opens when the bound cookie has expired and a request comes
    (130 s later here), so no cycle costs a 403. Watches DEFAULT_CYCLES cycles: a
    bounded wait of about 5 minutes.

    Each cycle has two refreshes: the deferred one, then one more as soon as the
    deferred request is sent. Chromium 156 refreshes proactively whenever a request
    in scope finds the bound cookie within 120 s of its expiry, and a cookie that
    lives 120 s is always that close (docs/device-bound-sessions.md).
    """

    def done(s: Served) -> bool:
        return len(refresh_cycles(s)) > DEFAULT_CYCLES or (
            len(refresh_cycles(s)) == DEFAULT_CYCLES and s.timed[-1][1:] == ("GET", "/private", 200)
        )

    with serve(default_config(), POLLING_PAGE) as served:
        run_chromium(served, done, 120 * DEFAULT_CYCLES + 120)
    start = served.timed[0][0]
    timeline = [(round(at - start, 1), *rest) for at, *rest in served.timed]
    cycles = refresh_cycles(served)
    assert len(cycles) >= DEFAULT_CYCLES, timeline
    assert [cycle.count(403) for cycle in cycles] == [0] * len(cycles), timeline
    assert all(status == 200 for cycle in cycles for status in cycle), timeline
    # The cycles the run saw whole (the first is the refresh right after registering).
    assert all(len(cycle) == 2 for cycle in cycles[1:DEFAULT_CYCLES]), timeline
    (info,) = served.flow.sessions_of("ada")
    assert info.generation >= DEFAULT_CYCLES
    # Every protected request was answered; none was refused for want of the cookie.
    assert all(status == 200 for _m, path, status in served.seen if path == "/private"), timeline
