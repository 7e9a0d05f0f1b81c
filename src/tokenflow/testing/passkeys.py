"""A software WebAuthn authenticator, for tests and benchmarks of passkey flows.

:class:`SoftAuthenticator` answers the JSON options of
:class:`tokenflow.passkeys.Passkeys` the way a browser and a platform
authenticator would (``none`` attestation, ES256, a discoverable credential),
so a whole passkey registration and login runs without a browser. It can
also misbehave on purpose: report a counter of your choice (a clone), skip
user verification, or be copied (:meth:`SoftAuthenticator.clone`).

The conformance kit for passkey backends is here too:
:func:`check_passkey_repository` and :func:`check_challenge_ledger` raise
:class:`AssertionError` with an explanation on the first breach of the
:class:`~tokenflow.passkeys.PasskeyRepository` or
:class:`~tokenflow.passkeys.ChallengeLedger` contract.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

if TYPE_CHECKING:
    from ..passkeys import ChallengeLedger, PasskeyRepository, StoredPasskey

__all__ = ["SoftAuthenticator", "check_challenge_ledger", "check_passkey_repository"]

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


# -- the conformance kit -----------------------------------------------------------

_T0 = 1_000_000_000.25
"""Logical time, decades from any real clock: a backend must judge by ``now`` alone."""


def _passkey(user_id: str, created_at: float, **changes: Any) -> StoredPasskey:
    from ..passkeys import StoredPasskey

    base = StoredPasskey(
        credential_id=os.urandom(16),
        user_id=user_id,
        user_handle=os.urandom(32),
        public_key=os.urandom(77),
        sign_count=0,
        name="Laptop",
        created_at=created_at,
        transports=("hybrid", "internal"),
        backup_eligible=True,
        backed_up=False,
        user_verified=True,
        aaguid="00000000-0000-0000-0000-000000000000",
    )
    return replace(base, **changes)


def _race(threads: int, call: Callable[[], bool]) -> list[bool]:
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        answer = call()
        with lock:
            results.append(answer)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert len(results) == threads, "a call hung for 60 s"
    return results


def check_passkey_repository(
    make_repository: Callable[[], PasskeyRepository], *, threads: int = 16
) -> None:
    """Check a :class:`~tokenflow.passkeys.PasskeyRepository` against its contract.

    Raises :class:`AssertionError` on the first breach. It checks: every
    field round-trips exactly (bytes as bytes, transports in order, the
    flags, ``last_used_at`` None until a use); a duplicate credential id
    raises ``ValueError`` and leaves the first passkey whole; ``passkeys_of``
    lists only that user's, oldest first; ``user_handle_of``; the counter
    rule of ``record_use`` (forward only; 0 and 0 allowed; equal or lower
    refused and nothing changed; unknown id False); ``threads`` simultaneous
    uses with one count: exactly one succeeds; ``rename`` and ``remove`` of
    another user's passkey refused.
    """
    repo = make_repository()
    alice, bob = f"alice-{os.urandom(4).hex()}", f"bob-{os.urandom(4).hex()}"
    first = _passkey(alice, _T0, sign_count=5)
    second = _passkey(alice, _T0 + 10, transports=(), backup_eligible=False, name="Key")
    other = _passkey(bob, _T0 + 5)
    assert repo.find(first.credential_id) is None, "find of an unknown id must be None"
    assert repo.user_handle_of(alice) is None, "a user with no passkey has no handle"
    repo.add(second)
    repo.add(first)
    repo.add(other)
    assert repo.find(first.credential_id) == first, "a passkey must round-trip exactly"
    assert repo.find(second.credential_id) == second, "empty transports must round-trip"
    try:
        repo.add(replace(other, user_id=alice))
    except ValueError:
        pass
    else:
        raise AssertionError("adding an existing credential id must raise ValueError")
    assert repo.find(other.credential_id) == other, "a refused add must change nothing"
    listed = [p.credential_id for p in repo.passkeys_of(alice)]
    assert listed == [first.credential_id, second.credential_id], (
        "passkeys_of must list exactly the user's passkeys, oldest first"
    )
    assert repo.user_handle_of(alice) in (first.user_handle, second.user_handle)
    # The counter rule.
    assert not repo.record_use(first.credential_id, 5, True, _T0 + 1), "an equal count moved"
    assert not repo.record_use(first.credential_id, 4, True, _T0 + 1), "a lower count moved"
    assert repo.find(first.credential_id) == first, "a refused use must change nothing"
    assert repo.record_use(first.credential_id, 6, True, _T0 + 2), "a higher count refused"
    used = repo.find(first.credential_id)
    assert used is not None
    assert (used.sign_count, used.backed_up, used.last_used_at) == (6, True, _T0 + 2), (
        "record_use must store the count, the backup state and the time"
    )
    assert repo.record_use(second.credential_id, 0, False, _T0 + 3), "0 after 0 must pass"
    assert repo.record_use(second.credential_id, 0, False, _T0 + 4), "0 after 0 must pass again"
    assert not repo.record_use(os.urandom(16), 9, False, _T0), "an unknown id must be False"
    wins = _race(threads, lambda: repo.record_use(first.credential_id, 7, True, _T0 + 5))
    assert wins.count(True) == 1, (
        f"{wins.count(True)} of {threads} simultaneous uses with one count succeeded; "
        "record_use must be one atomic compare-and-set"
    )
    # Only the owner renames and removes.
    assert not repo.rename(bob, first.credential_id, "x"), "renamed another user's passkey"
    assert repo.rename(alice, first.credential_id, "Phone")
    renamed = repo.find(first.credential_id)
    assert renamed is not None
    assert renamed.name == "Phone"
    assert not repo.remove(bob, first.credential_id), "removed another user's passkey"
    assert repo.remove(alice, first.credential_id)
    assert repo.find(first.credential_id) is None
    assert not repo.remove(alice, first.credential_id), "a second remove must be False"


def check_challenge_ledger(
    make_ledger: Callable[[], ChallengeLedger], *, threads: int = 16
) -> None:
    """Check a :class:`~tokenflow.passkeys.ChallengeLedger` against its contract.

    Raises :class:`AssertionError` on the first breach. It checks: the first
    use of a key is True and every later one before it expires is False;
    keys are independent; ``threads`` simultaneous uses of one key (each on
    a ledger from ``make_ledger``, as separate servers would have): exactly
    one is True. (Records may be forgotten once expired: not checked.)
    """
    ledger = make_ledger()
    key, other = os.urandom(32), os.urandom(32)
    assert ledger.use(key, _T0 + 300, _T0), "the first use must be True"
    assert not ledger.use(key, _T0 + 300, _T0 + 1), "a second use must be False"
    assert not ledger.use(key, _T0 + 300, _T0 + 299), "a use before the expiry must be False"
    assert ledger.use(other, _T0 + 300, _T0 + 1), "keys must be independent"
    ledgers = [make_ledger() for _ in range(threads)]
    raced = os.urandom(32)
    index = iter(range(threads))
    lock = threading.Lock()

    def use() -> bool:
        with lock:
            mine = ledgers[next(index)]
        return mine.use(raced, _T0 + 300, _T0)

    wins = _race(threads, use)
    assert wins.count(True) == 1, (
        f"{wins.count(True)} of {threads} simultaneous uses of one challenge succeeded; "
        "use must be one atomic insert-if-absent shared by every server"
    )
