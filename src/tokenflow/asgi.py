"""The ASGI middleware, at its documented import path.

The implementation lives in :mod:`tokenflow.web.asgi`; this module re-exports
its public names so that ``from tokenflow.asgi import TokenflowMiddleware``
keeps working.
"""

from .web.asgi import ASGIApp, Auth, Endpoints, TokenflowMiddleware, auth_of

__all__ = ["ASGIApp", "Auth", "Endpoints", "TokenflowMiddleware", "auth_of"]
