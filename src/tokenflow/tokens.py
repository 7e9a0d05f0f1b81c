"""The token codec on its own: seal and open access and refresh tokens.

:class:`tokenflow.Flow` does this for you; reach for this module to read a
token outside a flow (a worker, a test, an interop check) or to catch the
codec's errors. The format is in ``docs/token-format.md``.
"""

from ._errors import InvalidToken, TokenTooLarge
from ._token import COOKIE_BUDGET, Purpose, TokenCodec

__all__ = ["COOKIE_BUDGET", "InvalidToken", "Purpose", "TokenCodec", "TokenTooLarge"]
