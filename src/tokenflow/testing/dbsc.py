"""A device-bound-session (DBSC) client that follows the protocol as Chrome speaks it.

:class:`DbscClient` is a :class:`~tokenflow.testing.Browser` with a P-256 key
(made with ``cryptography``, which the ``dbsc`` extra installs; pass an RSA
key to speak RS256). It reads
``Secure-Session-Registration`` and ``Secure-Session-Challenge`` from the
decisions it is shown, signs ``dbsc+jwt`` proofs (ES256 or RS256, the key in the
``jwk`` header at registration only, the challenge as ``jti``, no ``aud`` and
no ``iat``, as Chrome sends them) and refreshes the bound cookie when it has
run out, retrying once on a 403 with the challenge it carried::

    client = DbscClient(clock)
    client.receive(flow.login(client.request("POST", credentials=...)))
    client.register(flow)            # binds the session to client's key
    clock.advance(121)               # the bound (access) cookie expires
    client.get(flow)                 # refreshes with a proof, then serves

The sans-IO half (:meth:`registration_request`, :meth:`refresh_request`,
:meth:`receive`) works with an async flow too. :meth:`without_key` is the
thief: the same cookies, no key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .._base64url import b64url_encode
from .._model import (
    Decision,
    DeviceProofRequired,
    DeviceRegistered,
    Process,
    Reissue,
    Request,
)
from .browser import Browser

__all__ = ["DbscClient", "DeviceKey", "public_jwk", "sign_proof"]

DeviceKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""A device's private key: P-256 (ES256) or RSA (RS256)."""

_REGISTRATION = re.compile(r'\(([A-Za-z0-9 ]*)\);path="([^"]*)";challenge="([^"]*)"')
_CHALLENGE = re.compile(r'"([^"]*)";id="([^"]*)"')


class _Flow(Protocol):
    def decide(self, request: Request, *, now: float | None = None) -> Decision: ...
    def register_device(self, request: Request, *, now: float | None = None) -> Decision: ...
    def refresh_device(self, request: Request, *, now: float | None = None) -> Decision: ...


_b64 = b64url_encode


_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def public_jwk(key: DeviceKey) -> dict[str, str]:
    """The public JWK of a device key (P-256 or RSA; other curves for negative tests)."""
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_numbers()
        return {"e": _b64_int(public.e), "kty": "RSA", "n": _b64_int(public.n)}
    numbers = key.public_key().public_numbers()
    size = (key.curve.key_size + 7) // 8
    return {
        "crv": _CURVES[key.curve.name],
        "kty": "EC",
        "x": _b64(numbers.x.to_bytes(size, "big")),
        "y": _b64(numbers.y.to_bytes(size, "big")),
    }


def sign_proof(
    key: DeviceKey,
    payload: dict[str, Any],
    *,
    with_jwk: bool,
    header: dict[str, Any] | None = None,
) -> str:
    """A compact ``dbsc+jwt`` over ``payload``: ES256 (raw r||s, as JWS wants) for a
    P-256 key, RS256 (PKCS#1 v1.5, SHA-256) for an RSA key.

    ``header`` overrides header members (for tests of malformed proofs).
    """
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    head: dict[str, Any] = {"alg": "RS256" if rsa_key else "ES256", "typ": "dbsc+jwt"}
    if with_jwk:
        head["jwk"] = public_jwk(key)
    head.update(header or {})
    signing_input = (
        _b64(json.dumps(head, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(payload, separators=(",", ":")).encode())
    )
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64(signature)
    der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    size = (key.curve.key_size + 7) // 8
    return signing_input + "." + _b64(r.to_bytes(size, "big") + s.to_bytes(size, "big"))


@dataclass
class DbscClient(Browser):
    """A browser with a device key that registers and refreshes DBSC sessions.

    ``key`` is the device's private key, P-256 (ES256) or RSA (RS256)
    (``None``: a client without a key, which sends no proofs). State read
    from responses: the pending registration, the bound session's id and
    instructions, the cached challenge per session id.
    """

    key: DeviceKey | None = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    registration: tuple[str, str] | None = None
    """``(path, challenge)`` from the last ``Secure-Session-Registration``."""
    session_id: str | None = None
    instructions: dict[str, Any] | None = None
    challenges: dict[str, str] = field(default_factory=dict)
    proofs_sent: list[str] = field(default_factory=list, repr=False)
    forbidden: int = 0
    """How many refresh answers were 403 (a proof asked for again)."""

    # -- reading responses ------------------------------------------------------

    def receive_headers(self, headers: Iterable[tuple[str, str]]) -> None:
        """Apply DBSC response headers (registration invitations, challenges)."""
        for name, value in headers:
            lowered = name.lower()
            if lowered == "secure-session-registration":
                match = _REGISTRATION.fullmatch(value)
                if match and self._algorithm() in match.group(1).split():
                    self.registration = (match.group(2), match.group(3))
            elif lowered == "secure-session-challenge":
                for member in value.split(","):
                    found = _CHALLENGE.fullmatch(member.strip())
                    if found:
                        self.challenges[found.group(2)] = found.group(1)

    def receive_decision(self, decision: Decision) -> None:
        """Apply a decision as a browser applies the response: cookies, headers, body."""
        self.receive(decision.set_cookies)
        if isinstance(decision, (Reissue, DeviceRegistered, DeviceProofRequired)):
            self.receive_headers(decision.headers)
        if isinstance(decision, DeviceRegistered):
            body = json.loads(decision.body)
            self.instructions = body
            self.session_id = body["session_identifier"]
            self.registration = None

    def _algorithm(self) -> str:
        return "RS256" if isinstance(self.key, rsa.RSAPrivateKey) else "ES256"

    # -- building requests ------------------------------------------------------

    def registration_request(self) -> Request:
        """The POST a browser sends to register: a proof carrying the public key."""
        if self.registration is None or self.key is None:
            raise RuntimeError("no registration to answer (or no key)")
        proof = sign_proof(self.key, {"jti": self.registration[1]}, with_jwk=True)
        self.proofs_sent.append(proof)
        return self._post(session_response=proof)

    def refresh_request(self) -> Request:
        """The POST a browser sends to refresh: the session id, and a proof over
        the cached challenge if it has one (and a key)."""
        if self.session_id is None:
            raise RuntimeError("not registered")
        proof = None
        challenge = self.challenges.get(self.session_id)
        if challenge is not None and self.key is not None:
            proof = sign_proof(self.key, {"jti": challenge}, with_jwk=False)
            self.proofs_sent.append(proof)
        return self._post(session_response=proof, session_id_header=self.session_id)

    def _post(
        self, *, session_response: str | None = None, session_id_header: str | None = None
    ) -> Request:
        return Request(
            method="POST",
            cookie_header=self.cookie_header(),
            sec_fetch_site="same-origin",
            origin=self.origin,
            host=self.host,
            session_response=session_response,
            session_id_header=session_id_header,
        )

    def bound_cookie_missing(self) -> bool:
        """Whether the bound cookie is gone (expired), so a refresh is due."""
        if self.instructions is None:
            return False
        names = [c["name"] for c in self.instructions["credentials"]]
        return any(name not in self.cookies() for name in names)

    # -- driving a sync flow ----------------------------------------------------

    def register(self, flow: _Flow) -> Decision:
        """Register with the pending invitation; the decision."""
        decision = flow.register_device(self.registration_request())
        self.receive_decision(decision)
        return decision

    def refresh(self, flow: _Flow) -> Decision:
        """Refresh the bound cookie; on a 403 retry once with the challenge it carried."""
        decision = flow.refresh_device(self.refresh_request())
        self.receive_decision(decision)
        if isinstance(decision, DeviceProofRequired):
            self.forbidden += 1
            decision = flow.refresh_device(self.refresh_request())
            self.receive_decision(decision)
        if decision.status >= 400 and decision.status != 403:
            # A browser ends its DBSC session on any other 4xx.
            self.session_id = None
            self.instructions = None
        return decision

    def get(self, flow: _Flow, *, now: float | None = None) -> Decision:
        """An in-scope GET: refreshes first if the bound cookie is missing."""
        if self.session_id is not None and self.bound_cookie_missing():
            self.refresh(flow)
        decision = flow.decide(self.request("GET"), now=now)
        if not isinstance(decision, Process):
            self.receive_decision(decision)
        return decision

    def without_key(self) -> DbscClient:
        """Another machine holding a copy of this client's cookies, but not its key."""
        return DbscClient(
            self.clock, self.host, self.origin, dict(self.jar), key=None, session_id=self.session_id
        )

    def with_other_key(self) -> DbscClient:
        """A copy of the cookies and DBSC state with a key of its own (a forger's)."""
        return DbscClient(
            self.clock,
            self.host,
            self.origin,
            dict(self.jar),
            session_id=self.session_id,
            instructions=self.instructions,
            challenges=dict(self.challenges),
        )
