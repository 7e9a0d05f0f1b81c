"""The WSGI middleware, at its documented import path.

The implementation lives in :mod:`tokenflow.web.wsgi`; this module re-exports
its public names so that ``from tokenflow.wsgi import TokenflowMiddleware``
keeps working.
"""

from .web.wsgi import Auth, Endpoints, TokenflowMiddleware, WSGIApp, auth_of

__all__ = ["Auth", "Endpoints", "TokenflowMiddleware", "WSGIApp", "auth_of"]
