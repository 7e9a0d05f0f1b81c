"""OpenTelemetry metrics and traces for a flow (extra ``otel``: ``pip install 'tokenflow[otel]'``).

::

    from tokenflow.otel import OpenTelemetryObserver

    flow = AsyncFlow(keyring, store, users, observer=OpenTelemetryObserver())

:class:`OpenTelemetryObserver` is a :class:`~tokenflow.observers.FlowObserver`: it
counts every decision and every security event, times every port call, and
records each port call as a span. It uses the ``opentelemetry-api`` package
only; the application installs and configures an SDK (exporters, readers,
sampling) as it does for every other library. Without one, the API's no-op
meter and tracer make it cost next to nothing.

What it emits (instrumentation scope ``tokenflow``; docs/operations.md has
the full table and what to alert on):

- ``tokenflow.decisions`` (observable counter, ``{decision}``):
  ``tokenflow.operation``, ``tokenflow.decision``, ``tokenflow.status``; on a
  401 ``tokenflow.reason``, on a 503 ``tokenflow.port.name`` and ``error.type``.
- ``tokenflow.security_events`` (observable counter, ``{event}``):
  ``tokenflow.event`` and, where the event has them, ``tokenflow.reason``,
  ``tokenflow.token.purpose``, ``tokenflow.login.method``,
  ``tokenflow.refresh.grace``, ``tokenflow.port.name``, ``error.type``.
- ``tokenflow.port.failures`` (observable counter, ``{failure}``):
  ``tokenflow.port.name``, ``tokenflow.port.method``, ``error.type``.
- ``tokenflow.port.duration`` (histogram, ``s``): ``tokenflow.port.name``,
  ``tokenflow.port.method``, and ``error.type`` when the call failed.
- a span ``tokenflow <port>.<method>`` (kind internal) per port call, with
  the histogram's attributes, and status ERROR when the call failed.

Every attribute value comes from a closed set written in tokenflow's code or
configuration: enum values, decision and event kinds, HTTP statuses, port and
method names, exception class names, and the login method (``"password"`` or
the name a provider's verifier is registered under). None is ever taken
from the request or from a value a client chose: no token, cookie, password,
username, origin, user id or session id, so no attribute can leak a secret
or name a person, and no client can grow a metric's cardinality. (A login
naming an unknown provider is counted without its method: that name is the
client's.) The :class:`~tokenflow.Request` the flow passes along is never read.

Spans are made from the :class:`~tokenflow.observers.PortCall` after the call returns,
with its start and end times, as children of whatever span is current (the
HTTP server's span under an instrumented server). Spans a database driver's
own instrumentation makes during the call are therefore siblings of the
tokenflow span, not its children.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as _missing:  # pragma: no cover - checked in a subprocess without the extra
    raise ImportError(
        "tokenflow.otel needs the opentelemetry-api package: pip install 'tokenflow[otel]'"
    ) from _missing

from . import ConfigError, Decision, Request, Unauthorized, Unavailable, __version__
from .events import (
    Event,
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    LoginThrottled,
    PortFailed,
    Refreshed,
    TokenRejected,
)
from .observers import FlowOperation, PortCall

__all__ = [
    "DECISIONS",
    "PORT_DURATION",
    "PORT_DURATION_BUCKETS",
    "PORT_FAILURES",
    "SCOPE",
    "SECURITY_EVENTS",
    "OpenTelemetryObserver",
]

SCOPE: Final = "tokenflow"
"""The instrumentation scope's name (the meter's and the tracer's)."""
DECISIONS: Final = "tokenflow.decisions"
"""Counter of decisions, by operation, kind and HTTP status."""
SECURITY_EVENTS: Final = "tokenflow.security_events"
"""Counter of the security events decisions carry, by kind and reason."""
PORT_FAILURES: Final = "tokenflow.port.failures"
"""Counter of port calls that raised (or timed out), by port, method and exception class."""
PORT_DURATION: Final = "tokenflow.port.duration"
"""Histogram of port call durations in seconds, by port and method."""
PORT_DURATION_BUCKETS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Bucket bounds (seconds) advised for :data:`PORT_DURATION`: a store answers
in 0.1 to 10 ms, an identity provider or an argon2id check in tens to hundreds."""

_Attributes: TypeAlias = Mapping[str, "str | int | bool"]

_CACHE_LIMIT: Final = 4096
"""Port-call attribute sets kept ready. Every value comes from a closed set, so
the real number is small; the bound only caps memory should that ever change."""

_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")

_OPERATION: Final = "tokenflow.operation"
_DECISION: Final = "tokenflow.decision"
_STATUS: Final = "tokenflow.status"
_REASON: Final = "tokenflow.reason"
_PORT: Final = "tokenflow.port.name"
_METHOD: Final = "tokenflow.port.method"
_EVENT: Final = "tokenflow.event"
_PURPOSE: Final = "tokenflow.token.purpose"
_LOGIN_METHOD: Final = "tokenflow.login.method"
_GRACE: Final = "tokenflow.refresh.grace"
_ERROR_TYPE: Final = "error.type"


def _kind(cls: type) -> str:
    """``TooManyRequests`` -> ``too_many_requests``: the kind's attribute value."""
    return _CAMEL.sub("_", cls.__name__).lower()


def _cached(cache: dict[object, _Attributes], key: object, attributes: _Attributes) -> _Attributes:
    if len(cache) < _CACHE_LIMIT:
        cache[key] = attributes
    return attributes


def _event_attributes(event: Event) -> dict[str, str | int | bool]:
    """The attributes of one security event: its kind and its non-identifying fields.

    Written field by field on purpose: an event's ``user_id``, ``session_id``,
    ``username``, ``origin`` and cookie ``name`` never leave it.
    """
    attributes: dict[str, str | int | bool] = {_EVENT: _kind(type(event))}
    reason = getattr(event, "reason", None)
    if isinstance(reason, enum.Enum) and isinstance(reason.value, str):
        attributes[_REASON] = reason.value
    if type(event) is TokenRejected:
        attributes[_PURPOSE] = event.purpose.name.lower()
    elif type(event) is Refreshed:
        attributes[_GRACE] = event.grace
    elif type(event) is PortFailed:
        attributes[_PORT] = event.port
        attributes[_ERROR_TYPE] = type(event.error).__name__
    elif type(event) is LoggedIn or type(event) is LoginThrottled:
        attributes[_LOGIN_METHOD] = event.method
    elif type(event) is LoginFailed and event.reason is not LoginFailedReason.UNKNOWN_PROVIDER:
        # With UNKNOWN_PROVIDER the method is the provider name the client sent.
        attributes[_LOGIN_METHOD] = event.method
    return attributes


def _decision_attributes(operation: FlowOperation, decision: Decision) -> _Attributes:
    """The attributes of one decision: the operation, its kind and status, and on a
    401 its reason, on a 503 the failed port and the exception's class."""
    attributes: dict[str, str | int | bool] = {
        _OPERATION: operation.value,
        _DECISION: _kind(type(decision)),
        _STATUS: decision.status,
    }
    if type(decision) is Unauthorized:
        attributes[_REASON] = decision.reason.value
    elif type(decision) is Unavailable:
        attributes[_PORT] = decision.port
        attributes[_ERROR_TYPE] = type(decision.error).__name__
    return attributes


def _event_key(event: Event) -> object:
    """What decides an event's attributes (see :func:`_event_attributes`), hashable."""
    if type(event) is TokenRejected:
        return (TokenRejected, event.reason, event.purpose)
    if type(event) is Refreshed:
        return (Refreshed, event.grace)
    if type(event) is PortFailed:
        return (PortFailed, event.port, type(event.error))
    if type(event) is LoggedIn or type(event) is LoginThrottled:
        return (type(event), event.method)
    if type(event) is LoginFailed:
        unknown = event.reason is LoginFailedReason.UNKNOWN_PROVIDER
        return (LoginFailed, event.reason, None if unknown else event.method)
    reason = getattr(event, "reason", None)
    return (type(event), reason if isinstance(reason, enum.Enum) else None)


class _Tally:
    """Counts per attribute set, kept here and read by the SDK when it collects.

    Counting in a dict under a lock costs a fraction of a microsecond, where
    a synchronous counter's ``add`` costs the SDK's attribute checks and
    hashing on every decision. The counters are observable ones instead:
    the SDK asks for the totals at each collection (every export interval),
    and derives deltas itself if its exporter wants them.
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[object, list[Any]] = {}
        self._lock = threading.Lock()

    def add(self, key: object, attributes: Callable[..., _Attributes], *args: Any) -> None:
        """Count one under ``key``; ``attributes(*args)`` builds its attribute set the first time.

        Keys come from closed sets (see the module doc), so the dict stays small.
        """
        with self._lock:
            entry = self._counts.get(key)
            if entry is not None:
                entry[1] += 1
                return
        built = attributes(*args)
        with self._lock:
            entry = self._counts.setdefault(key, [built, 0])
            entry[1] += 1

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        """The totals so far, one observation per attribute set."""
        with self._lock:
            totals = [(attributes, count) for attributes, count in self._counts.values()]
        return [Observation(count, attributes) for attributes, count in totals]


class OpenTelemetryObserver:
    """A :class:`~tokenflow.observers.FlowObserver` reporting to OpenTelemetry (see the module doc).

    ``meter_provider`` and ``tracer_provider`` default to the global ones
    (``opentelemetry.metrics.set_meter_provider`` and
    ``opentelemetry.trace.set_tracer_provider``). To keep metrics but make no
    spans, pass ``tracer_provider=opentelemetry.trace.NoOpTracerProvider()``.
    Give it to a flow as ``observer=``; with an observer of your own as well,
    combine them with :func:`tokenflow.observers.combine_observers`. One instance may
    serve any number of flows, sync and async, on any thread.

    The three counters are observable counters: their totals are kept in
    the observer and read by the SDK at each collection, so a decision
    costs no call into the SDK. Port calls are recorded as they happen (a
    histogram record and a span each).
    """

    __slots__ = ("_decisions", "_duration", "_events", "_failures", "_port_attributes", "_tracer")

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if meter_provider is not None and not callable(getattr(meter_provider, "get_meter", None)):
            raise ConfigError("meter_provider must be an OpenTelemetry MeterProvider")
        if tracer_provider is not None and not callable(
            getattr(tracer_provider, "get_tracer", None)
        ):
            raise ConfigError("tracer_provider must be an OpenTelemetry TracerProvider")
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        self._decisions = _Tally()
        self._events = _Tally()
        self._failures = _Tally()
        meter.create_observable_counter(
            DECISIONS,
            [self._decisions.observe],
            unit="{decision}",
            description="Decisions taken by tokenflow flows.",
        )
        meter.create_observable_counter(
            SECURITY_EVENTS,
            [self._events.observe],
            unit="{event}",
            description="Security events carried by tokenflow decisions.",
        )
        meter.create_observable_counter(
            PORT_FAILURES,
            [self._failures.observe],
            unit="{failure}",
            description="Calls of a tokenflow flow to its ports that raised or timed out.",
        )
        self._duration = meter.create_histogram(
            PORT_DURATION,
            unit="s",
            description="Duration of the calls of a tokenflow flow to its ports.",
            explicit_bucket_boundaries_advisory=list(PORT_DURATION_BUCKETS),
        )
        self._port_attributes: dict[object, _Attributes] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def on_decision(self, operation: FlowOperation, request: Request, decision: Decision) -> None:
        """Count the decision and each of its security events. ``request`` is not read."""
        kind = type(decision)
        key: tuple[object, ...]
        if type(decision) is Unauthorized:
            key = (operation, kind, decision.reason)
        elif type(decision) is Unavailable:
            key = (operation, kind, decision.port, type(decision.error))
        else:
            key = (operation, kind)
        self._decisions.add(key, _decision_attributes, operation, decision)
        for event in decision.events:
            self._events.add(_event_key(event), _event_attributes, event)

    def on_port_call(self, call: PortCall) -> None:
        """Time the call, count it if it failed, and record it as a span."""
        key = (call.port, call.method, call.error_type)
        attributes = self._port_attributes.get(key)
        if attributes is None:
            built: dict[str, str | int | bool] = {_PORT: call.port, _METHOD: call.method}
            if call.failed:
                built[_ERROR_TYPE] = call.error_type or "_OTHER"
            attributes = _cached(self._port_attributes, key, built)
        self._duration.record(call.duration, attributes)
        if call.failed:
            self._failures.add(key, dict, attributes)
        span = self._tracer.start_span(
            f"tokenflow {call.port}.{call.method}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=call.start_ns,
        )
        if call.failed:
            # The class name only: an exception's message may hold a query's values.
            span.set_status(Status(StatusCode.ERROR, call.error_type))
        span.end(end_time=call.end_ns)
