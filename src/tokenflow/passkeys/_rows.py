"""One row layout for the SQL repositories: a stored passkey to and from a tuple."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from ._types import StoredPasskey

COLUMNS: Final = (
    "credential_id, user_id, user_handle, public_key, sign_count, name, created_at, "
    "transports, backup_eligible, backed_up, user_verified, aaguid, last_used_at"
)


def to_row(p: StoredPasskey) -> tuple[Any, ...]:
    """The values of a passkey, in the order of :data:`COLUMNS`."""
    return (
        p.credential_id,
        p.user_id,
        p.user_handle,
        p.public_key,
        p.sign_count,
        p.name,
        p.created_at,
        " ".join(p.transports),
        bool(p.backup_eligible),
        bool(p.backed_up),
        bool(p.user_verified),
        p.aaguid,
        p.last_used_at,
    )


def from_row(row: Sequence[Any]) -> StoredPasskey:
    """A passkey from a row in the order of :data:`COLUMNS`."""
    return StoredPasskey(
        credential_id=bytes(row[0]),
        user_id=row[1],
        user_handle=bytes(row[2]),
        public_key=bytes(row[3]),
        sign_count=int(row[4]),
        name=row[5],
        created_at=float(row[6]),
        transports=tuple(str(row[7]).split()) if row[7] else (),
        backup_eligible=bool(row[8]),
        backed_up=bool(row[9]),
        user_verified=bool(row[10]),
        aaguid=row[11],
        last_used_at=None if row[12] is None else float(row[12]),
    )


FORWARD: Final = "(%(count)s > sign_count OR (%(count)s = 0 AND sign_count = 0))"
"""The counter rule in SQL: strictly forward, or both 0."""
