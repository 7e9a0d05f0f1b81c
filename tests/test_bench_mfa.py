"""The ``mfa`` benchmark group: its JSON has the issue's goal keys, and its counts
come from the flow (a broken store or a lax throttle shows up in them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyotp")
pytest.importorskip("argon2")

from benchmarks import __main__ as bench
from benchmarks import mfa

from tokenflow import FlowConfig, ThrottlePolicy, ThrottleRule
from tokenflow.mfa import MemorySecondFactorStore
from tokenflow.stores import MemoryStore
from tokenflow.throttles import MemoryThrottle

GOAL_KEYS = ("totp_replays_granted", "totp_guesses_granted_over_limit", "stepup_bypasses")


@pytest.fixture
def memory_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The group on the memory backend alone: the test needs no server."""
    monkeypatch.setattr(mfa, "BACKENDS", ("memory",))
    monkeypatch.setattr(mfa, "TIMED_BACKENDS", ("memory",))


def test_the_json_has_the_goal_keys_and_the_timed_ratios(
    memory_only: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.json"
    assert bench.main(["--only", "mfa", "--quick", "--json", str(out)]) == 0
    run: dict[str, Any] = json.loads(out.read_text())
    for key in GOAL_KEYS:
        assert run[key] == 0, key
    group = run["groups"]["mfa"]
    assert group["goal"] == dict.fromkeys(GOAL_KEYS, 0)
    assert group["counts"] == dict.fromkeys(GOAL_KEYS, 0)
    assert group["throttle_limit"] == ThrottlePolicy().username.free
    row = group["rows"]["memory"]
    assert set(row["guess_races"]) == {"threads/login", "threads/step_up", "async/login"} | {
        "async/step_up"
    }
    for race in row["guess_races"].values():
        assert race["guesses"] == mfa.PARALLEL_GUESSES
        assert race["reached_verifier"] == group["throttle_limit"]
        assert race["right_code_sent_after"] >= group["throttle_limit"]
    assert all(t["attempts"] > 0 for t in row["replays"].values())
    assert row["stepup_bypass_rows"] == len(mfa._rows())
    timings = group["rows"]["memory/timings"]
    assert timings["second_step_vs_password_login"] > 0
    assert timings["step_up_vs_password_login"] > 0
    printed = capsys.readouterr().out
    for key in GOAL_KEYS:
        assert f"{key} = 0  (goal 0: PASS" in printed


def test_the_report_shows_the_counts_beside_their_goals(memory_only: None, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks import report

    out = tmp_path / "run.json"
    assert bench.main(["--only", "mfa", "--quick", "--json", str(out)]) == 0
    assert report.main([str(out), "--out", str(tmp_path / "docs" / "benchmarks")]) == 0
    text = (tmp_path / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "## Group `mfa`" in text
    assert "| totp replays granted | 0 | ≤ 0 | met |" in text
    assert "| stepup bypasses | 0 | ≤ 0 | met |" in text
    assert "second step vs password login" in text


class _ReplayingStore(MemorySecondFactorStore):
    """A broken store: every time step is accepted again."""

    def use_step(self, user_id: str, step: int) -> bool:
        super().use_step(user_id, step)
        return True


def test_a_store_that_accepts_a_step_twice_is_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = mfa._Backend("memory", str(tmp_path), "test")
    monkeypatch.setattr(
        backend, "sync", lambda: (MemoryStore(), MemoryThrottle(), _ReplayingStore())
    )
    tallies = mfa._replays(mfa._world(backend), 1)
    assert sum(t.granted for t in tallies.values()) >= len(tallies)


def test_a_throttle_looser_than_the_limit_is_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    lax = ThrottlePolicy(second_factor=ThrottleRule(1000, 1.0, 300.0))
    monkeypatch.setattr(mfa, "CONFIG", FlowConfig(second_factor_ttl=3600, throttle=lax))
    backend = mfa._Backend("memory", str(tmp_path), "test")
    for via in ("login", "step_up"):
        race = mfa._guess_race(mfa._world(backend), via, 0)
        assert race["granted_over_limit"] == 1
        assert race["reached_verifier"] == mfa.PARALLEL_GUESSES


def test_the_bypass_table_counts_a_served_row(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A row the flow serves is counted: here a requirement the table's own
    ``Requirement`` stripped, as a flow ignoring requirements would behave."""
    backend = mfa._Backend("memory", str(tmp_path), "test")
    monkeypatch.setattr(mfa, "AAL2", mfa.Requirement())
    result = mfa._bypasses(mfa._world(backend))
    assert result["bypasses"] > 0
    assert "aal1 access token to an aal2 route" in result["served"]
