"""Command line: ``python -m tokenflow keygen | demo | web-demo | hash-password | sessions | keys``.

Misuse (bad arguments, no terminal, an unreachable server) ends with one
line on standard error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._cli_admin import EXIT_USAGE, CommandError, add_keys_commands, add_sessions_commands
from ._errors import ConfigError
from ._keyring import Key, KeyRing


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _keygen(args: argparse.Namespace) -> int:
    if args.rotate is not None:
        # "-" reads the ring from standard input, which keeps it out of the
        # process list and the shell history.
        if args.rotate == "-" and sys.stdin.isatty():
            raise CommandError("--rotate - reads the ring from standard input: pipe it in")
        text = sys.stdin.read().strip() if args.rotate == "-" else args.rotate
        try:
            ring = KeyRing.parse(text)
            print(ring.rotated(Key.generate(args.kid)).serialize())
        except ConfigError as exc:
            print(f"tokenflow keygen: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        print(Key.generate(args.kid).entry(active=True))
    except ConfigError as exc:
        print(f"tokenflow keygen: {exc}", file=sys.stderr)
        return 2
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    try:
        run_demo(args.db)
    except (ConfigError, OSError, sqlite3.Error) as exc:
        raise CommandError(f"cannot run on the session store {args.db}: {exc}") from None
    return 0


def _hash_password(args: argparse.Namespace) -> int:
    try:
        from .passwords import Argon2Parameters, PasswordHasher
    except ImportError:
        print(
            "tokenflow hash-password: argon2-cffi is missing; "
            "install it with: pip install 'tokenflow[argon2]'",
            file=sys.stderr,
        )
        return 2
    if args.stdin:
        # One line; only the line ending is removed (spaces may be part of it).
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    else:
        import getpass

        if not sys.stdin.isatty():
            # getpass would fall back to reading the pipe with a warning, or
            # fail on its end; piped input is what --stdin is for.
            raise CommandError(
                "standard input is not a terminal; to pipe the password in, use --stdin"
            )
        try:
            password = getpass.getpass("Password: ")
            again = getpass.getpass("Again: ")
        except EOFError:
            raise CommandError("no password given (end of input)") from None
        if again != password:
            print("tokenflow hash-password: the passwords differ", file=sys.stderr)
            return 2
    try:
        defaults = Argon2Parameters()
        parameters = Argon2Parameters(
            time_cost=args.time_cost or defaults.time_cost,
            memory_cost=args.memory_cost or defaults.memory_cost,
            parallelism=args.parallelism or defaults.parallelism,
        )
        print(PasswordHasher(parameters).hash(password))
    except (ConfigError, ValueError) as exc:
        # Neither message carries the password.
        print(f"tokenflow hash-password: {exc}", file=sys.stderr)
        return 2
    return 0


def _web_demo(args: argparse.Namespace) -> int:
    from ._webdemo import DEFAULT_PORT, run_web_demo

    port = DEFAULT_PORT if args.port is None else args.port
    return run_web_demo(port, args.attacker_port, args.db)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tokenflow`` and the ``tokenflow`` script."""
    parser = _Parser(prog="python -m tokenflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser(
        "keygen",
        help="print a new active key-ring entry (or a rotated ring with --rotate)",
        description=(
            "Print a new key-ring entry, marked active, for TOKENFLOW_KEYS. With --rotate, "
            "print the given ring with a new active key and the old active key retired."
        ),
    )
    keygen.add_argument("--kid", help="key id (default: 6 random characters)")
    keygen.add_argument(
        "--rotate",
        metavar="RING",
        help="an existing key ring to rotate; '-' reads it from standard input",
    )
    keygen.set_defaults(run=_keygen)
    demo = commands.add_parser(
        "demo",
        help=(
            "walk through login, silent refresh, a second tab, a stolen refresh token, "
            "logout, revoke all, a Google sign-in and a throttled guesser, on SQLite"
        ),
        description=(
            "Tell the whole flow as a story, on a fake clock (no waiting) and a SQLite file: "
            "a password login (a new session, two cookies), a request on the access token "
            "alone, a silent refresh (the refresh token rotates), a second tab inside the "
            "grace window, a stolen old refresh token (reuse detected, the session revoked), "
            "logout, two devices and revoke all (their sessions end as revoked), a Google "
            "sign-in against a local fake provider (with the oidc extra), and a password "
            "guesser slowed down by the login throttle (429). Each step says what happened, "
            "then the decision, its Set-Cookie headers (values shortened) and its events."
        ),
    )
    demo.add_argument("--db", help="SQLite file to use (default: a temporary file)")
    demo.set_defaults(run=_demo)
    hashing = commands.add_parser(
        "hash-password",
        help="print an argon2id hash of a password, for seeding a user table",
        description=(
            "Read a password without echoing it (or one line from standard input with "
            "--stdin) and print its argon2id hash, NFKC-normalised as tokenflow.passwords "
            "verifies it. Defaults: OWASP's minimum parameters."
        ),
    )
    hashing.add_argument("--stdin", action="store_true", help="read the password from stdin")
    hashing.add_argument("--memory-cost", type=_positive, metavar="KIB", help="memory in KiB")
    hashing.add_argument("--time-cost", type=_positive, metavar="N", help="iterations")
    hashing.add_argument("--parallelism", type=_positive, metavar="N", help="lanes")
    hashing.set_defaults(run=_hash_password)
    web_demo = commands.add_parser(
        "web-demo",
        help="serve the flow in your browser on 127.0.0.1 (needs: pip install 'tokenflow[demo]')",
        description=(
            "Serve a page on http://127.0.0.1:PORT/ that logs in, shows the cookies and a live "
            "log of every decision, lets the access token expire (10 s), replays a stolen "
            "refresh token, and tries a cross-origin form from a second local origin. Runs on "
            "uvicorn: pip install 'tokenflow[demo]'."
        ),
    )
    web_demo.add_argument(
        "--port",
        type=_port,
        help="port of the demo site (default: 8765, beside mkdocs serve's 8000)",
    )
    web_demo.add_argument(
        "--attacker-port",
        type=_port,
        default=0,
        help="port of the attacker page, another origin (default: any free port)",
    )
    web_demo.add_argument("--db", help="SQLite file to use (default: a temporary file)")
    web_demo.set_defaults(run=_web_demo)
    add_sessions_commands(commands)
    add_keys_commands(commands)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except CommandError as exc:
        print(f"tokenflow {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"tokenflow {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
