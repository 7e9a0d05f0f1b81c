"""``python -m tokenflow sessions ...`` and ``python -m tokenflow keys ...``.

Operator commands. Reading commands never write; destructive ones ask for a
confirmation on the terminal unless ``--yes`` is given, and refuse to run
without a terminal and without ``--yes``. Every failure an operator can cause
(a wrong URL, an unreachable server, another schema version, a bad key ring)
is one line on standard error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ._errors import ConfigError, InvalidToken, InvalidTokenReason
from ._keyring import KeyRing
from ._sessions import SessionInfo
from ._token import Purpose, TokenCodec
from .stores.admin import AdminError, SessionAdmin, SessionStats, open_admin

__all__ = ["add_keys_commands", "add_sessions_commands"]

EXIT_USAGE = 2


class CommandError(Exception):
    """A one-line failure of a command, printed as ``tokenflow <command>: <message>``."""


def _when(seconds: float) -> str:
    try:
        moment = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return repr(seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _device(info: SessionInfo) -> str:
    agent = info.metadata.get("user_agent") or info.metadata.get("user-agent")
    if agent:
        return agent
    return ", ".join(f"{key}={value}" for key, value in sorted(info.metadata.items())) or "-"


def _session_json(info: SessionInfo) -> dict[str, Any]:
    return {
        "session_id": info.session_id,
        "user_id": info.user_id,
        "created_at": info.created_at,
        "last_used_at": info.refreshed_at,
        "idle_expires_at": info.idle_expires_at,
        "absolute_expires_at": info.absolute_expires_at,
        "generation": info.generation,
        "metadata": dict(info.metadata),
        # Whether it is bound, not the key: a public key, but nobody's business here.
        "device_bound": info.device_key is not None,
    }


def _printable(text: str) -> str:
    """Store values are attacker-influenced (user agents): no terminal escapes."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _open(url: str) -> SessionAdmin:
    try:
        return open_admin(url)
    except AdminError as exc:
        raise CommandError(str(exc)) from None


def _with_admin(args: argparse.Namespace, body: Callable[[SessionAdmin], int]) -> int:
    admin = _open(args.store)
    try:
        return body(admin)
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    finally:
        admin.close()


def _list(args: argparse.Namespace) -> int:
    def body(admin: SessionAdmin) -> int:
        sessions = admin.sessions_of(args.user, now=time.time())
        if args.json:
            print(json.dumps([_session_json(info) for info in sessions], indent=2))
            return 0
        if not sessions:
            print(f"no live sessions of user {_printable(args.user)!r}")
            return 0
        print(f"{'SESSION':<24} {'CREATED':<20} {'LAST USE':<20} {'BOUND':<5} DEVICE")
        for info in sessions:
            print(
                f"{_printable(info.session_id):<24} {_when(info.created_at):<20} "
                f"{_when(info.refreshed_at):<20} {'yes' if info.device_key else 'no':<5} "
                f"{_printable(_device(info))}"
            )
        return 0

    return _with_admin(args, body)


def _stats_json(stats: SessionStats) -> dict[str, Any]:
    return {
        "live_sessions": stats.live_sessions,
        "users": stats.users,
        "top_users": [{"user_id": user, "sessions": count} for user, count in stats.top_users],
        "oldest": None if stats.oldest is None else _session_json(stats.oldest),
    }


def _stats(args: argparse.Namespace) -> int:
    def body(admin: SessionAdmin) -> int:
        stats = admin.stats(now=time.time(), top=args.top)
        if args.json:
            print(json.dumps(_stats_json(stats), indent=2))
            return 0
        print(f"live sessions: {stats.live_sessions}")
        print(f"users with a live session: {stats.users}")
        if stats.top_users:
            print(f"top {len(stats.top_users)} users by live sessions:")
            for user, count in stats.top_users:
                print(f"  {count:>8}  {_printable(user)}")
        if stats.oldest is not None:
            oldest = stats.oldest
            print(
                f"oldest: {_printable(oldest.session_id)} of user {_printable(oldest.user_id)!r}, "
                f"created {_when(oldest.created_at)}"
            )
        return 0

    return _with_admin(args, body)


def _confirm(args: argparse.Namespace, question: str) -> bool:
    if args.yes:
        return True
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise CommandError("no terminal to confirm on; pass --yes to revoke without asking")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (EOFError, OSError):
        return False
    return answer.strip().lower() in ("y", "yes")


def _revoke(args: argparse.Namespace) -> int:
    admin = _open(args.store)
    try:
        if not _confirm(args, f"revoke session {_printable(args.session)!r} in {admin.name}?"):
            print("nothing revoked", file=sys.stderr)
            return 1
        existed = admin.revoke(args.session)
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    finally:
        admin.close()
    if args.json:
        print(json.dumps({"session_id": args.session, "revoked": existed}))
    else:
        print("revoked" if existed else "no such session (already ended or revoked)")
    return 0


def _revoke_user(args: argparse.Namespace) -> int:
    admin = _open(args.store)
    try:
        question = f"revoke every session of user {_printable(args.user)!r} in {admin.name}?"
        if not _confirm(args, question):
            print("nothing revoked", file=sys.stderr)
            return 1
        count = admin.revoke_user(args.user)
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    finally:
        admin.close()
    if args.json:
        print(json.dumps({"user_id": args.user, "revoked": count}))
    else:
        print(f"revoked {count} session{'s' * (count != 1)} of user {_printable(args.user)!r}")
    return 0


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError("give a number from 1 to 10000")
    return value


def add_sessions_commands(commands: Any) -> None:
    """Add ``sessions list | revoke | revoke-user | stats`` to the CLI's subparsers."""
    sessions = commands.add_parser(
        "sessions",
        help="list, count and revoke sessions in a store named by URL",
        description=(
            "Inspect and revoke sessions in a store named by URL: sqlite:///relative/path, "
            "sqlite:////absolute/path, redis://host:6379/0?prefix=tokenflow, "
            "redis+cluster://host:7000, postgresql://user@host/db?table=tokenflow_sessions. "
            "list and stats only read; revoke and revoke-user ask first unless --yes."
        ),
    )
    actions = sessions.add_subparsers(dest="action", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--store", required=True, metavar="URL", help="the session store")
        parser.add_argument("--json", action="store_true", help="print JSON")

    listing = actions.add_parser("list", help="a user's live sessions (read-only)")
    common(listing)
    listing.add_argument("--user", required=True, metavar="ID", help="the user id")
    listing.set_defaults(run=_list)
    revoke = actions.add_parser("revoke", help="end one session")
    common(revoke)
    revoke.add_argument("session", metavar="SESSION", help="the session id (see list)")
    revoke.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    revoke.set_defaults(run=_revoke)
    revoke_user = actions.add_parser("revoke-user", help="end every session of a user")
    common(revoke_user)
    revoke_user.add_argument("user", metavar="ID", help="the user id")
    revoke_user.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    revoke_user.set_defaults(run=_revoke_user)
    stats = actions.add_parser("stats", help="live sessions, top users, oldest (read-only)")
    common(stats)
    stats.add_argument("--top", type=_top, default=10, metavar="N", help="users to rank (10)")
    stats.set_defaults(run=_stats)


# -- keys ---------------------------------------------------------------------------


def _read_ring(args: argparse.Namespace) -> KeyRing:
    if args.ring_file is not None:
        try:
            with open(args.ring_file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise CommandError(f"cannot read {args.ring_file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CommandError(f"{args.ring_file} is not UTF-8 text") from None
        source = args.ring_file
    else:
        text = os.environ.get(args.ring_env, "")
        if not text.strip():
            raise CommandError(
                f"the environment variable {args.ring_env} holds no key ring; "
                "set it, or name a file with --ring-file"
            )
        source = f"${args.ring_env}"
    try:
        return KeyRing.parse(text.strip())
    except ConfigError as exc:
        # KeyRing's messages name key ids and positions, never key material.
        raise CommandError(f"{source}: {exc}") from None


def _read_token(source: str) -> str:
    try:
        if source == "-":
            if sys.stdin.isatty():
                raise CommandError("--token - reads the token from standard input: pipe it in")
            text = sys.stdin.readline()
        else:
            with open(source, encoding="utf-8") as handle:
                text = handle.readline()
    except OSError as exc:
        raise CommandError(f"cannot read {source}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{source} is not UTF-8 text") from None
    token = text.strip()
    if not token:
        raise CommandError("no token given (an empty line)")
    return token


_STATES = {
    InvalidTokenReason.EXPIRED: "expired",
    InvalidTokenReason.NOT_YET_VALID: "not yet valid (issued in the future: check clocks)",
    InvalidTokenReason.BAD_CLAIMS: "authentic, but its claims are not a valid claim set",
}


def _opening(ring: KeyRing, token: str, now: float) -> tuple[str, Purpose, str] | None:
    """``(key id, purpose, state)`` of the key and purpose whose tag verifies, or None.

    Each key is tried in a ring of its own, so the answer names the key that
    authenticated the token, not only the id its header claims.
    """
    for key in ring:
        codec = TokenCodec(KeyRing(key))
        for purpose in (Purpose.ACCESS, Purpose.REFRESH):
            try:
                codec.open(purpose, token, now=now)
            except InvalidToken as exc:
                state = _STATES.get(exc.reason)
                if state is None:
                    continue  # the tag did not verify under this key and purpose
                return key.kid, purpose, state
            return key.kid, purpose, "valid"
    return None


def _keys_check(args: argparse.Namespace) -> int:
    ring = _read_ring(args)
    kids = [key.kid for key in ring]
    report: dict[str, Any] = {"keys": kids, "active": ring.active.kid}
    if args.token is not None:
        token = _read_token(args.token)
        found = _opening(ring, token, time.time())
        report["token"] = (
            {"opens": False}
            if found is None
            else {
                "opens": found[2] == "valid",
                "key": found[0],
                "purpose": found[1].name.lower(),
                "state": found[2],
            }
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"keys: {', '.join(kids)}")
        print(f"active: {ring.active.kid} (seals new tokens; the others only open)")
        if "token" in report:
            if found is None:
                print("token: does not open under any key of this ring")
            else:
                kid, purpose, state = found
                print(f"token: {purpose.name.lower()} token sealed under key {kid}: {state}")
    if args.token is not None and not report["token"]["opens"]:
        return 1
    return 0


def add_keys_commands(commands: Any) -> None:
    """Add ``keys check`` to the CLI's subparsers."""
    keys = commands.add_parser(
        "keys",
        help="check a key ring, and which key a token opens under",
        description=(
            "Inspect a key ring (from $TOKENFLOW_KEYS by default) without printing key "
            "material: its key ids, the active one, and optionally whether a token opens "
            "and under which key. Generate and rotate keys with: python -m tokenflow keygen."
        ),
    )
    actions = keys.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "check",
        help="list key ids and the active key; test a token",
        description=(
            "Print the ring's key ids and its active key. With --token, say whether the token "
            "opens, under which key and as which kind (access or refresh); its claims are never "
            "printed. Exit status: 0, or 1 when the token does not open."
        ),
    )
    check.add_argument(
        "--ring-env",
        default="TOKENFLOW_KEYS",
        metavar="NAME",
        help="environment variable holding the ring (default: TOKENFLOW_KEYS)",
    )
    check.add_argument("--ring-file", metavar="PATH", help="read the ring from a file instead")
    check.add_argument(
        "--token",
        metavar="SOURCE",
        help="'-' reads a token from standard input, else a file holding it "
        "(never on the command line, where the process list shows it)",
    )
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(run=_keys_check)
