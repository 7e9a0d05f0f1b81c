"""OpenTelemetry metrics and traces for a flow (extra ``otel``: ``pip install 'tokenflow[otel]'``).

::

    from tokenflow.otel import OpenTelemetryObserver

    flow = AsyncFlow(keyring, store, users, observer=OpenTelemetryObserver())

:class:`OpenTelemetryObserver` is a :class:`~tokenflow.FlowObserver`: it
counts every decision and every security event, times every port call, and
records each port call as a span. It uses the ``opentelemetry-api`` package
only; the application installs and configures an SDK (exporters, readers,
sampling) as it does for every other library. Without one, the API's no-op
meter and tracer make it cost next to nothing.

What it emits (instrumentation scope ``tokenflow``):

=============================  =============  ===================================================
instrument                     unit           attributes
=============================  =============  ===================================================
``tokenflow.decisions``        ``{decision}`` ``tokenflow.operation``, ``tokenflow.decision``,
(counter)                                     ``tokenflow.status``; ``tokenflow.reason`` on 401,
                                              ``tokenflow.port.name`` and ``error.type`` on 503
``tokenflow.security_events``  ``{event}``    ``tokenflow.event``; ``tokenflow.reason``,
(counter)                                     ``tokenflow.token.purpose``,
                                              ``tokenflow.login.method``,
                                              ``tokenflow.refresh.grace``,
                                              ``tokenflow.port.name``, ``error.type`` where
                                              the event has them
``tokenflow.port.failures``    ``{failure}``  ``tokenflow.port.name``, ``tokenflow.port.method``,
(counter)                                     ``error.type``
``tokenflow.port.duration``    ``s``          ``tokenflow.port.name``, ``tokenflow.port.method``;
(histogram)                                   ``error.type`` when the call failed
span ``tokenflow <port>.<method>`` (internal)  the port call's attributes; status ERROR on failure
=============================  =============  ===================================================

Every attribute value comes from a closed set written in tokenflow's code or
configuration: enum values, decision and event kinds, HTTP statuses, port and
method names, exception class names, and the login method (``"password"`` or
the name a provider's verifier is registered under). None is ever taken
from the request or from a value a client chose: no token, cookie, password,
username, origin, user id or session id, so no attribute can leak a secret
or name a person, and no client can grow a metric's cardinality. (A login
naming an unknown provider is counted without its method: that name is the
client's.) The :class:`~tokenflow.Request` the flow passes along is never read.

Spans are made from the :class:`~tokenflow.PortCall` after the call returns,
with its start and end times, as children of whatever span is current (the
HTTP server's span under an instrumented server). Spans a database driver's
own instrumentation makes during the call are therefore siblings of the
tokenflow span, not its children.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Final, TypeAlias

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - checked in a subprocess without the extra
    raise ImportError(
        "tokenflow.otel needs the opentelemetry-api package: pip install 'tokenflow[otel]'"
    ) from exc

from . import (
    ConfigError,
    Decision,
    Event,
    FlowOperation,
    LoggedIn,
    LoginFailed,
    LoginFailedReason,
    LoginThrottled,
    PortCall,
    PortFailed,
    Process,
    Refreshed,
    Request,
    TokenRejected,
    Unauthorized,
    Unavailable,
    __version__,
)

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
"""Attribute sets kept ready, per kind. Every value comes from a closed set, so
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


class OpenTelemetryObserver:
    """A :class:`~tokenflow.FlowObserver` that reports to OpenTelemetry (see the module doc).

    ``meter_provider`` and ``tracer_provider`` default to the global ones
    (``opentelemetry.metrics.set_meter_provider`` and
    ``opentelemetry.trace.set_tracer_provider``). To keep metrics but make no
    spans, pass ``tracer_provider=opentelemetry.trace.NoOpTracerProvider()``.
    Give it to a flow as ``observer=``; with an observer of your own as well,
    combine them with :func:`tokenflow.combine_observers`. One instance may
    serve any number of flows, sync and async, on any thread.
    """

    __slots__ = (
        "_decision_attributes",
        "_decisions",
        "_duration",
        "_event_attributes",
        "_events",
        "_failures",
        "_port_attributes",
        "_process",
        "_tracer",
    )

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
        self._decisions = meter.create_counter(
            DECISIONS, unit="{decision}", description="Decisions taken by tokenflow flows."
        )
        self._events = meter.create_counter(
            SECURITY_EVENTS,
            unit="{event}",
            description="Security events carried by tokenflow decisions.",
        )
        self._failures = meter.create_counter(
            PORT_FAILURES,
            unit="{failure}",
            description="Calls of a tokenflow flow to its ports that raised or timed out.",
        )
        self._duration = meter.create_histogram(
            PORT_DURATION,
            unit="s",
            description="Duration of the calls of a tokenflow flow to its ports.",
            explicit_bucket_boundaries_advisory=list(PORT_DURATION_BUCKETS),
        )
        self._decision_attributes: dict[object, _Attributes] = {}
        self._event_attributes: dict[object, _Attributes] = {}
        self._port_attributes: dict[object, _Attributes] = {}
        # The access path's decision, ready: the one counted most often.
        self._process: _Attributes = self._decision_attributes_of(FlowOperation.DECIDE, Process)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    @staticmethod
    def _decision_attributes_of(
        operation: FlowOperation, kind: type, extra: Mapping[str, str] | None = None
    ) -> _Attributes:
        status = getattr(kind, "status", None)
        attributes: dict[str, str | int | bool] = {
            _OPERATION: operation.value,
            _DECISION: _kind(kind),
        }
        if type(status) is int:
            attributes[_STATUS] = status
        if extra:
            attributes.update(extra)
        return attributes

    def on_decision(self, operation: FlowOperation, request: Request, decision: Decision) -> None:
        """Count the decision and each of its security events. ``request`` is not read."""
        kind = type(decision)
        if kind is Process and operation is FlowOperation.DECIDE:
            self._decisions.add(1, self._process)
        else:
            self._decisions.add(1, self._attributes_of_decision(operation, decision))
        for event in decision.events:
            key = _event_key(event)
            attributes = self._event_attributes.get(key)
            if attributes is None:
                attributes = _cached(self._event_attributes, key, _event_attributes(event))
            self._events.add(1, attributes)

    def _attributes_of_decision(self, operation: FlowOperation, decision: Decision) -> _Attributes:
        kind = type(decision)
        key: object
        extra: dict[str, str] = {}
        if type(decision) is Unauthorized:
            key = (operation, kind, decision.reason)
            extra[_REASON] = decision.reason.value
        elif type(decision) is Unavailable:
            key = (operation, kind, decision.port, type(decision.error))
            extra[_PORT] = decision.port
            extra[_ERROR_TYPE] = type(decision.error).__name__
        else:
            key = (operation, kind)
        attributes = self._decision_attributes.get(key)
        if attributes is None:
            attributes = _cached(
                self._decision_attributes,
                key,
                self._decision_attributes_of(operation, kind, extra),
            )
        return attributes

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
            self._failures.add(1, attributes)
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
