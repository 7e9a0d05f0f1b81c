"""Watching a flow: an observer sees every decision and every port call.

Pass one as ``Flow(..., observer=...)``; :func:`combine_observers` gives a
flow more than one. :mod:`tokenflow.otel` is an observer for OpenTelemetry.
See ``docs/flow.md`` for when each method is called and what it may do.
"""

from ._drivers import FlowObserver, FlowOperation, PortCall, combine_observers

__all__ = ["FlowObserver", "FlowOperation", "PortCall", "combine_observers"]
