"""tokenflow's metrics and traces, printed by the OpenTelemetry SDK's console exporters.

Run it (the ``otel`` extra and the SDK)::

    pip install 'tokenflow[otel]' opentelemetry-sdk
    python examples/otel_console.py

A flow with :class:`tokenflow.otel.OpenTelemetryObserver`, combined with an
observer of the application's own that logs security events, goes through a
login, a few page loads, a refresh, a replayed refresh token (reuse
detection) and a store outage. Each span prints as it ends; the metrics
print once, at the end (``shutdown`` flushes the reader). In production,
swap the console exporters for OTLP ones (``opentelemetry-exporter-otlp``)
and give the reader a longer interval.
"""

from __future__ import annotations

import logging

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from tokenflow import Decision, Flow, FlowConfig, KeyRing, PasswordCredentials, Request
from tokenflow.observers import FlowOperation, PortCall, combine_observers
from tokenflow.otel import OpenTelemetryObserver
from tokenflow.stores import MemoryStore

# Stand-ins for your user database, your password hashes and a failing store.
from tokenflow.testing import (
    FakeClock,
    FakePasswordVerifier,
    FakeUserDirectory,
    Fault,
    FaultyStore,
)

log = logging.getLogger("app.security")


class SecurityLog:
    """The application's own observer: one log line per security event."""

    def on_decision(self, operation: FlowOperation, request: Request, decision: Decision) -> None:
        for event in decision.events:
            log.info("%s: %s", operation.value, type(event).__name__)

    def on_port_call(self, call: PortCall) -> None:
        if call.failed:
            log.warning("the %s port failed (%s)", call.port, call.error_type)


def main() -> None:
    """Run the walk-through and print what OpenTelemetry exports."""
    logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
    resource = Resource.create({"service.name": "tokenflow-example"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=60_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    telemetry = OpenTelemetryObserver(
        meter_provider=meter_provider, tracer_provider=tracer_provider
    )

    users = FakeUserDirectory()
    users.add_user("alice")
    passwords = FakePasswordVerifier()
    passwords.set_password("alice", "wonderland-passphrase", user_id="alice")
    clock = FakeClock()
    store = FaultyStore(MemoryStore())
    flow = Flow(
        KeyRing.generate(),
        store,
        users,
        passwords=passwords,
        clock=clock,
        observer=combine_observers(SecurityLog(), telemetry),
    )
    cookies: dict[str, str] = {}

    def send(method: str, credentials: PasswordCredentials | None = None) -> Decision:
        header = "; ".join(f"{name}={value}" for name, value in cookies.items()) or None
        request = Request(
            method, cookie_header=header, sec_fetch_site="same-origin", credentials=credentials
        )
        answer = flow.decide(request) if credentials is None else flow.login(request)
        for line in answer.set_cookies:
            name, _, value = line.partition(";")[0].partition("=")
            cookies[name] = value
        return answer

    send("POST", PasswordCredentials("alice", "wonderland-passphrase"))
    for _ in range(3):
        send("GET")
    replayed = dict(cookies)
    config = FlowConfig()
    clock.advance(config.access_ttl + config.leeway + 1)
    send("GET")  # the access token expired: the refresh token rotates
    clock.advance(config.grace_seconds + 1)
    cookies.clear()
    cookies.update(replayed)
    send("GET")  # the replaced refresh token comes back: reuse, the session is revoked
    send("POST", PasswordCredentials("alice", "wonderland-passphrase"))
    store.arm(Fault.BEFORE_COMMIT, ["rotate"])
    clock.advance(config.access_ttl + config.leeway + 1)
    send("GET")  # the store is down: 503, nothing minted, nothing cleared

    meter_provider.shutdown()
    tracer_provider.shutdown()


if __name__ == "__main__":
    main()
