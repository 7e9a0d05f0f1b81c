"""The price of :class:`tokenflow.otel.OpenTelemetryObserver` on the flow's decisions.

Two flows over one key ring, one store and one user directory, one of them
observed, measured in the same interleaved rounds:

* **access**: ``flow.decide`` for a valid access token (the six-cookie header
  of the ``flow`` group), without an observer, with the observer on the
  API's no-op providers (the extra installed, no SDK configured), and with
  the observer on the SDK: a ``MeterProvider`` with a reader (counters
  aggregated in memory, as between two exports) and a ``TracerProvider``
  whose spans go through a ``SimpleSpanProcessor`` to an exporter that drops
  them. The access path calls no port, so it makes no span: its price is
  one counter increment.
* **refresh**: ``flow.decide`` rotating a refresh token on a
  :class:`~tokenflow.stores.MemoryStore` (each operation a checked rotation,
  as in the ``flow`` group), without and with the SDK observer: two port
  calls, so two histogram records and two spans, plus a decision and an
  event counted.

What an exporter then does with the data (OTLP over the network, batching)
runs in the SDK's own threads and is not measured here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tokenflow import ExternalTokenCredentials, Flow, KeyRing, Process, Reissue, Request
from tokenflow.observers import FlowObserver
from tokenflow.otel import DECISIONS, OpenTelemetryObserver
from tokenflow.stores import MemoryStore
from tokenflow.testing import FakeExternalTokenVerifier, FakeUserDirectory
from tokenflow.tokens import Purpose, TokenCodec

from ._harness import JSON, Call, Case, Report, Settings, Stats, format_table, measure
from .flow import OTHER_COOKIES, PROVIDER, ROLES, Refresher, World, access_request

__all__ = ["run"]

GROUP: Final = "otel"
SESSIONS: Final = 512
"""Sessions each refresh case cycles through."""


class _Dropped(SpanExporter):
    """Takes every span and keeps none: the SDK's cost without an exporter's I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _sdk_observer() -> tuple[OpenTelemetryObserver, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(_Dropped()))
    observer = OpenTelemetryObserver(
        meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider
    )
    return observer, reader


def _pair(set_cookie: str) -> str:
    return set_cookie.partition(";")[0]


def _worlds(now: float, observers: Mapping[str, FlowObserver | None]) -> dict[str, World]:
    """One world per observer: flows over shared ports, ``SESSIONS`` logins each."""
    users = FakeUserDirectory()
    idp = FakeExternalTokenVerifier(PROVIDER)
    keyring = KeyRing.generate()
    store = MemoryStore()
    worlds: dict[str, World] = {}
    for n, (name, observer) in enumerate(observers.items()):
        flow = Flow(keyring, store, users, external={PROVIDER: idp}, observer=observer)
        config = flow.config
        names = {
            Purpose.ACCESS: config.cookies.access_name,
            Purpose.REFRESH: config.cookies.refresh_name,
        }
        codec = TokenCodec(keyring, leeway=config.leeway, cookie_names=names)
        refresh_pairs: list[str] = []
        user_ids: list[str] = []
        access_pair = ""
        for i in range(SESSIONS):
            user_id = f"user-{n}-{i:04d}"
            users.add_user(user_id, ROLES)
            users.link(PROVIDER, f"subject-{n}-{i}", user_id)
            token = idp.issue(f"subject-{n}-{i}", expires_at=now + 3600)
            login = flow.login(
                Request("POST", credentials=ExternalTokenCredentials(PROVIDER, token)),
                now=now,
            )
            if type(login) is not Reissue:
                raise AssertionError(f"login {i} gave {login!r}")
            access_cookie, refresh_cookie = login.set_cookies
            if i == 0:
                access_pair = _pair(access_cookie)
            refresh_pairs.append(_pair(refresh_cookie))
            user_ids.append(user_id)
        header = "; ".join([*OTHER_COOKIES[:2], access_pair, *OTHER_COOKIES[2:], refresh_pairs[0]])
        access = access_pair.partition("=")[2]
        worlds[name] = World(flow, codec, now, access, access_pair, header, refresh_pairs, user_ids)
    return worlds


def _ratio(numerator: Stats, denominator: Stats) -> float:
    return numerator.median / denominator.median


def _status(stats: Mapping[str, Stats]) -> str:
    return (
        f"access otel {_ratio(stats['access_otel'], stats['access']):.2f}x, "
        f"refresh otel {_ratio(stats['refresh_otel'], stats['refresh']):.2f}x"
    )


def run(settings: Settings, report: Report) -> None:
    """Benchmark the observer's price; print the table and fill in ``report``."""
    now = float(int(time.time()))
    observer, reader = _sdk_observer()
    noop = OpenTelemetryObserver(
        meter_provider=metrics.NoOpMeterProvider(), tracer_provider=trace.NoOpTracerProvider()
    )
    settings.log(f"{GROUP}: logging {3 * SESSIONS} sessions in")
    worlds = _worlds(now, {"plain": None, "noop": noop, "otel": observer})
    requests = {name: access_request(world.access_header) for name, world in worlds.items()}
    for name, world in worlds.items():
        first = world.flow.decide(requests[name], now=now)
        if type(first) is not Process:
            raise AssertionError(f"the {name} access request gave {first!r}, not Process")
    refreshers = {name: Refresher(worlds[name]) for name in ("plain", "otel")}

    def decide(name: str) -> Call:
        return Call(worlds[name].flow.decide, (requests[name],), {"now": now})

    cases = [
        Case("access", decide("plain")),
        Case("access_noop", decide("noop")),
        Case("access_otel", decide("otel")),
        Case("refresh", Call(refreshers["plain"])),
        Case("refresh_otel", Call(refreshers["otel"])),
    ]
    stats = measure(GROUP, cases, settings, status=_status)
    counted = _decisions_counted(reader)
    expected = refreshers["otel"].count
    if counted < expected:
        raise AssertionError(f"the observer counted {counted} decisions, fewer than {expected}")

    labels = {
        "access": "flow.decide, valid access, no observer",
        "access_noop": "  with OpenTelemetryObserver, API no-op providers",
        "access_otel": "  with OpenTelemetryObserver, SDK",
        "refresh": "flow.decide, refresh rotated, no observer",
        "refresh_otel": "  with OpenTelemetryObserver, SDK (2 spans)",
    }
    bases = {"access_noop": "access", "access_otel": "access", "refresh_otel": "refresh"}
    rows = []
    for key, label in labels.items():
        base = bases.get(key)
        ratio = _ratio(stats[key], stats[base]) if base else 1.0
        extra = stats[key].median - stats[base].median if base else 0.0
        rows.append(
            [
                label,
                f"{stats[key].median:.2f}",
                f"{ratio:.2f}x" if base else "",
                f"+{extra:.2f}" if base else "",
                f"{stats[key].noise_pct:.1f}%",
            ]
        )
        row: dict[str, JSON] = {"label": label.strip(), **stats[key].as_json()}
        if base:
            row["vs_" + base] = round(ratio, 4)
        report.add_row(GROUP, key, row)
    print(
        f"\nOpenTelemetry observer: median of {settings.rounds} interleaved rounds, "
        "µs per operation (ratio and added µs against the same case without an observer)"
    )
    if settings.quick:
        print("QUICK MODE: few rounds and short batches; do not quote these figures.")
    print(format_table(["case", "µs", "ratio", "added µs", "noise"], rows, "lrrrl"))
    for key, (case, base) in {
        "otel_access_vs_plain": ("access_otel", "access"),
        "otel_access_noop_vs_plain": ("access_noop", "access"),
        "otel_refresh_vs_plain": ("refresh_otel", "refresh"),
    }.items():
        report.add_key(key, round(_ratio(stats[case], stats[base]), 4))
    report.add_libraries("opentelemetry-api", "opentelemetry-sdk")


def _decisions_counted(reader: InMemoryMetricReader) -> int:
    """How many decisions the SDK observer counted: proof that it was really recording."""
    data = reader.get_metrics_data()
    total = 0
    if data is None:
        return total
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == DECISIONS:
                    total += sum(int(p.value) for p in metric.data.data_points)
    return total
