"""The HTTP edge: tokenflow in front of ASGI and WSGI applications.

* :mod:`tokenflow.web.asgi`: the ASGI middleware (also importable as :mod:`tokenflow.asgi`);
* :mod:`tokenflow.web.wsgi`: the WSGI middleware (also importable as :mod:`tokenflow.wsgi`);
* ``tokenflow.web._shared``: what both share, sans-IO: the built-in endpoints
  (login, logout, sessions, device-bound sessions) as a generator of
  operations, and the mapping of a decision to a response or a pass-through.

Requests are read by :meth:`tokenflow.Request.from_asgi` and friends (the
parsing lives in the core, ``tokenflow._http``); decisions come from the
flow's public methods (:meth:`~tokenflow.Flow.begin`,
:meth:`~tokenflow.Flow.finish`, :meth:`~tokenflow.Flow.login`...). No web
framework is imported anywhere in this package.

Also here, for hosts that read requests themselves: :class:`TrustedProxies`
and :class:`ForwardedHeaders` (which proxy headers to believe),
:func:`parse_cookie_header`, and :class:`PendingDecision`, what
:meth:`~tokenflow.Flow.begin` returns when a decision needs its ports.
"""

from .._cookies import parse_cookie_header
from .._drivers import PendingDecision
from .._http import ForwardedHeaders, TrustedProxies
from ._shared import Auth, Endpoints, Required, Requirements

__all__ = [
    "Auth",
    "Endpoints",
    "ForwardedHeaders",
    "PendingDecision",
    "Required",
    "Requirements",
    "TrustedProxies",
    "parse_cookie_header",
]
