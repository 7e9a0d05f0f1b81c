"""A software WebAuthn authenticator, for tests and benchmarks of passkey flows.

:class:`SoftAuthenticator` answers the JSON options of
:class:`tokenflow.passkeys.Passkeys` the way a browser and a platform
authenticator would (``none`` attestation, ES256, a discoverable credential),
so a whole passkey registration and login runs without a browser. It can
also misbehave on purpose: report a counter of your choice (a clone), skip
user verification, or be copied (:meth:`SoftAuthenticator.clone`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SoftAuthenticator"]

_UP, _UV, _BE, _BS, _AT = 0x01, 0x04, 0x08, 0x10, 0x40


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftAuthenticator:
    """One ES256 passkey held in memory. ``counter`` is its signature counter
    (None: an authenticator that always reports 0); ``synced`` makes it a
    backup-eligible (and backed-up) passkey."""

    counter: int | None = 0
    synced: bool = False
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()), repr=False
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(16))
    user_handle: bytes | None = None
    rp_id: str | None = None

    def clone(self) -> SoftAuthenticator:
        """A copy holding the same private key and the same counter (a cloned device)."""
        return SoftAuthenticator(
            self.counter, self.synced, self.key, self.credential_id, self.user_handle, self.rp_id
        )

    def _flags(self, uv: bool, attested: bool) -> int:
        flags = _UP | (_UV if uv else 0) | (_AT if attested else 0)
        return flags | (_BE | _BS if self.synced else 0)

    def _count(self) -> bytes:
        if self.counter is None:
            return b"\0\0\0\0"
        self.counter += 1
        return self.counter.to_bytes(4, "big")

    def _client_data(self, kind: str, challenge: str, origin: str) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False}
        return json.dumps(data, separators=(",", ":")).encode()

    def create(self, options: str | dict[str, Any], origin: str, *, uv: bool = True) -> str:
        """The JSON ``navigator.credentials.create()`` would give for these options."""
        opts = json.loads(options) if isinstance(options, str) else options
        self.rp_id = opts["rp"]["id"]
        self.user_handle = _unb64(opts["user"]["id"])
        numbers = self.key.public_key().public_numbers()
        cose = cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )
        auth_data = (
            hashlib.sha256(str(self.rp_id).encode()).digest()
            + bytes((self._flags(uv, attested=True),))
            + self._count()
            + bytes(16)
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + cose
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        client_data = self._client_data("webauthn.create", opts["challenge"], origin)
        return json.dumps(
            {
                "id": _b64(self.credential_id),
                "rawId": _b64(self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": _b64(client_data),
                    "attestationObject": _b64(attestation),
                    "transports": ["internal"],
                },
                "clientExtensionResults": {},
            }
        )

    def get(
        self,
        options: str | dict[str, Any],
        origin: str,
        *,
        uv: bool = True,
        counter: int | None = None,
    ) -> str:
        """The JSON ``navigator.credentials.get()`` would give for these options.

        ``counter`` forces the reported signature count (a cloned device).
        """
        opts = json.loads(options) if isinstance(options, str) else options
        rp_id = opts.get("rpId", self.rp_id)
        count = counter.to_bytes(4, "big") if counter is not None else self._count()
        auth_data = (
            hashlib.sha256(str(rp_id).encode()).digest()
            + bytes((self._flags(uv, attested=False),))
            + count
        )
        client_data = self._client_data("webauthn.get", opts["challenge"], origin)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return json.dumps(
            {
                "id": _b64(self.credential_id),
                "rawId": _b64(self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": _b64(client_data),
                    "authenticatorData": _b64(auth_data),
                    "signature": _b64(signature),
                    "userHandle": _b64(self.user_handle) if self.user_handle else None,
                },
                "clientExtensionResults": {},
            }
        )
