"""Test helpers for tokenflow and for code built on it.

- :class:`FakeClock`: time that moves only when told to.
- The **session store conformance kit**: :func:`check_session_store` and
  :func:`check_async_session_store`. Adapter authors call one of them from
  their own test suite with a factory for their store; it raises
  :class:`AssertionError` with an explanation on the first breach of the
  :class:`~tokenflow.ports.SessionStore` contract.
- The **login throttle conformance kit**: :func:`check_login_throttle` and
  :func:`check_async_login_throttle`, for :class:`~tokenflow.ports.LoginThrottle`
  backends.
- Fakes of the identity ports: :class:`FakeUserDirectory`,
  :class:`FakePasswordVerifier`, :class:`FakeExternalTokenVerifier`, and their
  async faces (``AsyncFake...``), for tests and demos.
- :class:`Browser`: a cookie jar that applies ``Set-Cookie`` values and builds
  requests, to drive whole flows as a browser would.
- The **flow race harness**: :func:`run_refresh_race` and
  :func:`run_refresh_race_async` race many tabs refreshing one session, with
  dropped responses and out-of-order Set-Cookie, against your configuration;
  :class:`RaceReport` tallies them.
- The **store race trial**: :func:`run_rotation_race` and
  :func:`run_rotation_race_async` race many callers rotating one session
  straight through the store port, with exact counts in a
  :class:`RotationRaceReport` (for tests and benchmarks).
- :mod:`tokenflow.testing.dbsc` (import it by name; it needs ``cryptography``):
  :class:`~tokenflow.testing.dbsc.DbscClient`, a browser with a P-256 device
  key that registers and refreshes device-bound sessions as Chrome does.
- **Fault injection**: :class:`FaultyStore` / :class:`AsyncFaultyStore` make a
  store fail before commit, after commit, or hang (:class:`Fault`).
- **Call recording**: :class:`RecordingStore` / :class:`AsyncRecordingStore`
  record every store call with its arguments and result
  (:class:`RecordedCall`), for tests to assert on.

The kit needs Hypothesis (``pip install 'tokenflow[testing]'``). It is
imported only when a check runs, so the clock and the fakes work without it.
"""

from .browser import Browser
from .clock import FakeClock
from .fakes import (
    AsyncFakeExternalTokenVerifier,
    AsyncFakePasswordVerifier,
    AsyncFakeSecondFactors,
    AsyncFakeUserDirectory,
    FakeExternalTokenVerifier,
    FakePasswordVerifier,
    FakeSecondFactors,
    FakeUserDirectory,
)
from .faults import AsyncFaultyStore, Fault, FaultyStore, InjectedFault
from .races import RaceReport, run_refresh_race, run_refresh_race_async
from .recording import AsyncRecordingStore, RecordedCall, RecordingStore
from .store_kit import check_async_session_store, check_session_store
from .store_races import RotationRaceReport, run_rotation_race, run_rotation_race_async
from .throttle_kit import check_async_login_throttle, check_login_throttle

__all__ = [
    "AsyncFakeExternalTokenVerifier",
    "AsyncFakePasswordVerifier",
    "AsyncFakeSecondFactors",
    "AsyncFakeUserDirectory",
    "AsyncFaultyStore",
    "AsyncRecordingStore",
    "Browser",
    "FakeClock",
    "FakeExternalTokenVerifier",
    "FakePasswordVerifier",
    "FakeSecondFactors",
    "FakeUserDirectory",
    "Fault",
    "FaultyStore",
    "InjectedFault",
    "RaceReport",
    "RecordedCall",
    "RecordingStore",
    "RotationRaceReport",
    "check_async_login_throttle",
    "check_async_session_store",
    "check_login_throttle",
    "check_session_store",
    "run_refresh_race",
    "run_refresh_race_async",
    "run_rotation_race",
    "run_rotation_race_async",
]
