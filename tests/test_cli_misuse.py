"""Every CLI command answers misuse with one line on stderr and a non-zero exit.

Run as real processes with standard input piped (no terminal), as a script
or a CI job would run them: a traceback anywhere fails the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _cli(*argv: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tokenflow", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def _one_line_failure(code: int, out: str, err: str, *expected: str) -> None:
    assert code != 0
    assert "Traceback" not in out + err
    message = err or out  # the web demo reports on its own output stream
    assert message.count("\n") == 1, message
    for words in expected:
        assert words in message


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ((), ["the following arguments are required: command", "--help"]),
        (("frobnicate",), ["invalid choice: 'frobnicate'"]),
        (("keygen", "--kid", "no spaces"), ["tokenflow keygen:", "key id"]),
        (("keygen", "--bogus"), ["unrecognized arguments: --bogus"]),
        (("demo", "--db", "/nonexistent-dir/x.sqlite3"), ["tokenflow demo:", "does not exist"]),
        (("web-demo", "--port", "99999"), ["99999 is not a port number"]),
        (("web-demo", "--port", "eighty"), ["'eighty' is not a port number"]),
        (("hash-password", "--time-cost", "0", "--stdin"), ["0 is not a positive number"]),
        (("sessions",), ["required: action"]),
        (("sessions", "list", "--store", "sqlite:///x.db"), ["required: --user"]),
        (("sessions", "stats", "--store", "ftp://host"), ["unknown store URL scheme ftp://"]),
        (("sessions", "stats", "--store", "redis://127.0.0.1:1/0"), ["cannot reach"]),
        (("sessions", "stats", "--store", "redis+cluster://127.0.0.1:1"), ["cannot reach"]),
        (("sessions", "stats", "--store", "postgresql://u:pw@127.0.0.1:1/db"), ["u:***@"]),
        (("sessions", "stats", "--store", "sqlite:///x.db", "--top", "0"), ["from 1 to 10000"]),
        (("keys",), ["required: action"]),
        (("keys", "check", "--ring-env", "TOKENFLOW_TEST_NO_SUCH_VAR"), ["holds no key ring"]),
    ],
)
def test_bad_arguments_and_unreachable_servers(argv: tuple[str, ...], expected: list[str]) -> None:
    code, out, err = _cli(*argv)
    _one_line_failure(code, out, err, *expected)
    assert "pw@" not in err


def test_hash_password_piped_without_stdin_says_to_use_it() -> None:
    code, out, err = _cli("hash-password", stdin="hunter2 hunter2\n")
    _one_line_failure(code, out, err, "use --stdin")
    assert out == ""
    assert "hunter2" not in err


def test_hash_password_with_stdin_still_works() -> None:
    code, out, err = _cli("hash-password", "--stdin", "--memory-cost", "8", stdin="pw\n")
    assert (code, err) == (0, "")
    assert out.startswith("$argon2id$")


def test_keygen_rotate_with_an_empty_ring() -> None:
    code, out, err = _cli("keygen", "--rotate", "-", stdin="")
    _one_line_failure(code, out, err, "tokenflow keygen:", "empty")


def test_web_demo_on_a_busy_port(busy_port: int) -> None:
    code, out, err = _cli("web-demo", "--port", str(busy_port))
    _one_line_failure(code, out, err, f"cannot listen on 127.0.0.1:{busy_port}")


def test_sessions_revoke_without_terminal_or_yes(tmp_path: Path) -> None:
    from tokenflow.stores import SQLiteStore

    SQLiteStore(tmp_path / "s.sqlite3").close()
    code, out, err = _cli(
        "sessions", "revoke-user", "--store", f"sqlite:///{tmp_path}/s.sqlite3", "ada", stdin="y\n"
    )
    _one_line_failure(code, out, err, "no terminal to confirm on; pass --yes")


def test_keys_check_with_a_bad_ring_never_echoes_it() -> None:
    ring = "*k1:" + "A" * 10
    code, out, err = _cli("keys", "check", env={"TOKENFLOW_KEYS": ring})
    _one_line_failure(code, out, err, "tokenflow keys: $TOKENFLOW_KEYS:")
    assert "A" * 10 not in err
