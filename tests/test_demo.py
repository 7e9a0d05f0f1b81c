"""``python -m tokenflow demo`` tells the whole story, on a real SQLite file."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokenflow import Decision, LoggedOut, Process, Reissue, TooManyRequests, Unauthorized
from tokenflow.__main__ import main
from tokenflow._demo import run_demo
from tokenflow.events import (
    LoggedIn,
    LoginFailed,
    LoginThrottled,
    Refreshed,
    RefreshEnded,
    RefreshEndedReason,
    ReuseDetected,
    ReuseDetectedReason,
    SessionRevoked,
    SessionRevokedReason,
)

PASSWORD = "correct horse battery staple"
HAS_OIDC = importlib.util.find_spec("joserfc") is not None and (
    importlib.util.find_spec("httpx") is not None
)
needs_oidc = pytest.mark.skipif(not HAS_OIDC, reason="needs the oidc extra")
ACCESS = "__Host-tf_access"
REFRESH = "__Host-tf_refresh"
GUESSER_FROM = 13 if HAS_OIDC else 12
"""Where step 12, the password guesser, starts in the list of decisions."""


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Decision], list[str], Path]:
    path = tmp_path_factory.mktemp("demo") / "sessions.sqlite3"
    lines: list[str] = []
    decisions = run_demo(str(path), out=lines.append)
    return list(decisions), lines, path


def test_the_decisions_follow_the_story(story: tuple[list[Decision], list[str], Path]) -> None:
    decisions, _, _ = story
    summary = [
        type(d).__name__ if not isinstance(d, Unauthorized) else d.reason.name for d in decisions
    ]
    assert summary[:GUESSER_FROM] == [
        "Reissue",  # 1. password login
        "Process",  # 2. access token valid
        "Reissue",  # 3. silent refresh
        "Reissue",  # 4. second tab, inside the grace window
        "REFRESH_REUSED",  # 5. thief replays generation 0
        "SESSION_ENDED",  # 6. the laptop's session is gone too
        "Reissue",  # 7. log in again
        "LoggedOut",  # 8. logout
        "Reissue",  # 9. laptop
        "Reissue",  #    and phone
        "SESSION_ENDED",  # 10. after "revoke all": laptop
        "SESSION_ENDED",  #     and phone
    ] + (["Reissue"] if HAS_OIDC else [])  # 11. sign in with Google on a tablet


def test_login_refresh_grace_and_reuse(story: tuple[list[Decision], list[str], Path]) -> None:
    decisions, _, _ = story
    login, processed, rotated, grace, stolen, gone = decisions[:6]
    assert isinstance(login, Reissue)
    first = login.session_id
    assert login.events == (LoggedIn("alice", first, "password"),)
    assert login.claims["roles"] == ["editor"]
    assert isinstance(processed, Process)
    assert processed.session_id == first
    assert processed.events == ()
    assert isinstance(rotated, Reissue)
    assert rotated.events == (Refreshed("alice", first, 1, False),)
    assert isinstance(grace, Reissue)
    assert grace.events == (Refreshed("alice", first, 1, True),)
    assert isinstance(stolen, Unauthorized)
    assert stolen.events == (
        ReuseDetected("alice", first, ReuseDetectedReason.PREDECESSOR_AFTER_GRACE),
        SessionRevoked("alice", first, SessionRevokedReason.REUSE),
    )
    assert isinstance(gone, Unauthorized)
    assert gone.events == (RefreshEnded("alice", first, RefreshEndedReason.REVOKED),)


def test_logout_and_revoke_all(story: tuple[list[Decision], list[str], Path]) -> None:
    decisions, lines, _ = story
    relogin, logout, laptop, phone, laptop_after, phone_after = decisions[6:12]
    assert isinstance(relogin, Reissue)
    assert isinstance(decisions[0], Reissue)
    assert relogin.session_id != decisions[0].session_id
    assert isinstance(logout, LoggedOut)
    assert logout.status == 200
    assert [c.split(";")[:2] for c in logout.set_cookies] == [
        [f"{ACCESS}=", " Max-Age=0"],
        [f"{REFRESH}=", " Max-Age=0"],
    ]
    assert logout.events == (
        SessionRevoked("alice", relogin.session_id, SessionRevokedReason.LOGOUT),
    )
    assert isinstance(laptop, Reissue)
    assert isinstance(phone, Reissue)
    assert laptop.session_id != phone.session_id
    for after, session in ((laptop_after, laptop), (phone_after, phone)):
        assert isinstance(after, Unauthorized)
        assert after.events == (
            RefreshEnded("alice", session.session_id, RefreshEndedReason.REVOKED),
        )
    told = [line.strip() for line in lines]
    assert "live sessions of alice: 2" in told
    assert "── 10. revoke all: 2 sessions revoked" in told
    assert "live sessions of alice: 0" in told
    assert told.index("live sessions of alice: 2") < told.index(
        "── 10. revoke all: 2 sessions revoked"
    )


@needs_oidc
def test_sign_in_with_google_against_a_local_fake(
    story: tuple[list[Decision], list[str], Path],
) -> None:
    decisions, lines, _ = story
    google = decisions[12]
    assert isinstance(google, Reissue)
    assert google.events == (LoggedIn("alice", google.session_id, "google"),)
    assert google.claims["roles"] == ["editor"]
    assert google.session_id not in {d.session_id for d in decisions[:12] if isinstance(d, Reissue)}
    told = [line.strip() for line in lines]
    title = "── 11. sign in with Google on a tablet: an ID token from a local fake provider"
    assert told.index(title) > told.index("live sessions of alice: 0")
    assert "eyJ" not in "\n".join(lines)  # the ID token itself is never printed


GUESSER_STEPS = 12


def test_a_password_guesser_is_slowed_down(
    story: tuple[list[Decision], list[str], Path],
) -> None:
    """Step 12: 429s with growing Retry-After, nothing verified; the owner gets in after."""
    decisions, lines, _ = story
    guesser = decisions[GUESSER_FROM:]
    assert len(guesser) == GUESSER_STEPS
    kinds = [type(d).__name__ for d in guesser]
    assert kinds == (
        ["Unauthorized"] * 5
        + ["TooManyRequests"] * 2
        + ["Unauthorized", "TooManyRequests"] * 2
        + ["Reissue"]
    )
    waits = [d.retry_after for d in guesser if isinstance(d, TooManyRequests)]
    assert waits == [1, 1, 2, 4]  # the delay doubles with each failure
    for decision in guesser:
        if isinstance(decision, TooManyRequests):
            assert decision.status == 429
            assert decision.set_cookies == ()
            (event,) = decision.events
            assert isinstance(event, LoginThrottled)
            assert event.retry_after == decision.retry_after
        elif isinstance(decision, Unauthorized):
            assert [type(e) for e in decision.events] == [LoginFailed]
    owner = guesser[-1]
    assert isinstance(owner, Reissue)
    assert owner.events == (LoggedIn("alice", owner.session_id, "password"),)
    told = [line.strip() for line in lines]
    assert any(line.startswith("── 12. a guesser") for line in told)


def test_the_narration_hides_secrets(story: tuple[list[Decision], list[str], Path]) -> None:
    decisions, lines, path = story
    text = "\n".join(lines)
    assert lines[0] == f"tokenflow demo: session store {path}"
    assert PASSWORD not in text
    assert text.count("Set-Cookie: ") == sum(len(d.set_cookies) for d in decisions)
    for decision in decisions:
        for set_cookie in decision.set_cookies:
            value = set_cookie.partition(";")[0].partition("=")[2]
            if value:
                assert value not in text  # tokens are shortened, never printed whole
                assert f"({len(value)} chars)" in text
    assert path.exists()  # the given file is kept


def test_the_default_temporary_store_is_removed_afterwards() -> None:
    lines: list[str] = []
    decisions = run_demo(out=lines.append)
    assert len(decisions) == GUESSER_FROM + GUESSER_STEPS
    store = lines[0].removeprefix("tokenflow demo: session store ")
    assert store.endswith("sessions.sqlite3")
    assert not os.path.exists(os.path.dirname(store))


def test_cli_demo_exits_zero(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "── 1. password login" in out
    assert "ReuseDetected" in out
    assert "live sessions of alice: 0" in out
    assert "LoginThrottled" in out

    db = tmp_path / "cli.sqlite3"
    assert main(["demo", "--db", str(db)]) == 0
    assert db.exists()
    assert f"session store {db}" in capsys.readouterr().out


def test_python_dash_m_tokenflow_demo_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tokenflow", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "revoke all: 2 sessions revoked" in done.stdout


def test_cli_rejects_an_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["nonsense"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def _step(lines: list[str], title: str) -> list[str]:
    """The lines a step printed, from its title to the next blank line."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"\n── {title}"))
    told = []
    for line in lines[start + 1 :]:
        if line.startswith("\n"):
            break
        told.append(line.strip())
    return told


def test_each_step_says_what_happened_in_the_words_of_the_docs(
    story: tuple[list[Decision], list[str], Path],
) -> None:
    _, lines, _ = story
    login = _step(lines, "1. password login")
    assert login[0] == "logged in (password): a new session, 2 cookies set"
    assert login[1].startswith("decision: Reissue 200 user=alice")
    refresh = _step(lines, "3. silent refresh")
    assert refresh[0].startswith("silent refresh: the refresh token rotated")
    assert _step(lines, "4. a second tab")[0].startswith("refresh inside the grace window")
    reused = _step(lines, "5. stolen old refresh token")
    assert reused[0] == "an old refresh token came back: reuse detected, the whole session revoked"
    assert "event: SessionRevoked user_id=alice" in "\n".join(reused)
    gone = _step(lines, "6. the laptop's session is gone too")
    assert gone[0] == "the session was revoked (logout, revoke, reuse): log in again"
    assert gone[-1].startswith("event: RefreshEnded user_id=alice")
    assert gone[-1].endswith("reason=revoked")
    assert _step(lines, "8. logout")[0] == "logged out: the session revoked, both cookies cleared"
    text = "\n".join(lines)
    assert "reason=unknown" not in text
    assert "<" not in text  # events are shown as words, not as enum reprs
    assert "too many failed logins: retry after 1 s (no password was checked)" in text


def test_every_reason_has_words() -> None:
    from tokenflow import Unauthorized
    from tokenflow._narrate import meaning
    from tokenflow.events import UnauthorizedReason

    for reason in UnauthorizedReason:
        assert meaning(Unauthorized(reason))
    for ended in RefreshEndedReason:
        decision = Unauthorized(
            UnauthorizedReason.SESSION_ENDED, (), (RefreshEnded("u", "s", ended),)
        )
        assert ended.value in meaning(decision)


def test_demo_help_says_what_it_shows(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    for shown in ("silent refresh", "stolen refresh token", "revoke all", "throttled guesser"):
        assert shown in listed
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    described = " ".join(capsys.readouterr().out.split())
    for shown in (
        "a password login (a new session, two cookies)",
        "a silent refresh (the refresh token rotates)",
        "a second tab inside the grace window",
        "reuse detected, the session revoked",
        "their sessions end as revoked",
        "a Google sign-in",
        "login throttle (429)",
    ):
        assert shown in described
