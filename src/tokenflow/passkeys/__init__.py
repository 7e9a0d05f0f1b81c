"""Passkeys (WebAuthn) as a credential of the flow: registration, login, and the user's list.

Needs the ``passkeys`` extra (``pip install 'tokenflow[passkeys]'``): the
ceremonies are verified by the ``webauthn`` package (py_webauthn), never by
hand. Build a :class:`Passkeys` and hand it to the flow::

    passkeys = Passkeys(
        PasskeyConfig(rp_id="example.com", rp_name="Example", origins=("https://example.com",)),
        keyring, SQLitePasskeyRepository("app.db"), SQLiteChallengeLedger("app.db"),
    )
    flow = Flow(keyring, store, users, passkeys=passkeys)

A passkey login is then a login like any other:
``flow.login(Request(..., credentials=PasskeyCredentials(response_json)))``.
See docs/passkeys.md.
"""

from __future__ import annotations

try:
    from ._service import AsyncPasskeys, Passkeys
except ModuleNotFoundError as _missing:  # pragma: no cover - exercised without the extra
    if _missing.name != "webauthn":
        raise
    raise ImportError(
        "tokenflow.passkeys needs the passkeys extra: pip install 'tokenflow[passkeys]'"
    ) from _missing
from ._types import (
    ChallengeLedger,
    PasskeyConfig,
    PasskeyRepository,
    RegistrationFailure,
    RemoveOutcome,
    StoredPasskey,
)
from .memory import MemoryChallengeLedger, MemoryPasskeyRepository

__all__ = [
    "AsyncPasskeys",
    "ChallengeLedger",
    "MemoryChallengeLedger",
    "MemoryPasskeyRepository",
    "PasskeyConfig",
    "PasskeyRepository",
    "Passkeys",
    "RegistrationFailure",
    "RemoveOutcome",
    "StoredPasskey",
    "browser_helper",
]


def browser_helper() -> bytes:
    """The browser helper script, ``tokenflow-passkeys.js`` (serve it as ``text/javascript``).

    It defines ``window.tokenflowPasskeys`` with ``register()``, ``signIn()``,
    ``autofill()`` and ``assertion()``, which talk to the middleware's passkey
    endpoints; see docs/passkeys.md.
    """
    from importlib import resources

    return resources.files(__name__).joinpath("tokenflow-passkeys.js").read_bytes()
