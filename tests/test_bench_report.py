"""``python -m benchmarks.report``: a benchmark run's JSON in, the site's page and SVG charts out.

Needs matplotlib (the ``docs`` extra): skipped without it, unless
``TOKENFLOW_REQUIRE_DOCS=1`` makes that an error.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

try:
    import matplotlib  # noqa: F401
except ImportError:
    if os.environ.get("TOKENFLOW_REQUIRE_DOCS") == "1":
        raise
    pytest.skip(
        "matplotlib is missing: pip install -e '.[docs]' "
        "(TOKENFLOW_REQUIRE_DOCS=1 makes this an error)",
        allow_module_level=True,
    )

from benchmarks import report  # noqa: E402 - after the skip

X = report.TIMES


def stats(median: float, spread: float = 0.05) -> dict[str, Any]:
    """Harness figures for a case whose rounds sit around ``median`` µs."""
    low, high = median * (1 - spread), median * (1 + spread)
    return {
        "median_us": median,
        "min_us": low,
        "p25_us": low,
        "p75_us": high,
        "noise_pct": round(200 * spread, 2),
        "batch_ops": 1000,
        "rounds": 3,
        "samples_us": [low, median, high],
    }


def synthetic_run(*, quick: bool = False) -> dict[str, Any]:
    """A small run with every known group, one unknown group and a skipped contender."""
    return {
        "schema": 1,
        "run": {"started": "2030-01-02T03:04:05Z", "duration_s": 12.5},
        "environment": {
            "python": "3.12.1",
            "implementation": "CPython",
            "platform": "Linux-test",
            "cpu_model": "Test CPU 9000",
            "cpu_count": 8,
            "cpu_usable": 4,
            "load_average_1m": 0.25,
            "tracing": False,
            "libraries": {"tokenflow": "0.1.0", "cryptography": "46.0.1", "jwcrypto": None},
        },
        "settings": {"rounds": 15, "batch_ms": 20.0, "seed": 0, "quick": quick},
        "groups": {
            "tokens": {
                "goal": {"max_ratio_to_tuned_floor": 1.15},
                "rows": {
                    "tokenflow": {
                        "label": "tokenflow v1 (AES-256-GCM, HKDF subkeys)",
                        "encrypts": True,
                        "token_length": 192,
                        "seal": stats(2.2),
                        "open": stats(2.4),
                        "seal_vs_floor": 0.5,
                        "open_vs_floor": 0.55,
                        "seal_vs_tuned_floor": 1.1,
                        "open_vs_tuned_floor": 1.0909,
                    },
                    "tuned_floor": {
                        "label": "tuned floor (AES-256-GCM, orjson, binascii)",
                        "encrypts": True,
                        "token_length": 171,
                        "seal": stats(2.0),
                        "open": stats(2.2),
                        "seal_vs_floor": 0.45,
                        "open_vs_floor": 0.5,
                        "seal_vs_tuned_floor": 1.0,
                        "open_vs_tuned_floor": 1.0,
                    },
                    "floor": {
                        "label": "floor (AES-256-GCM, json, base64)",
                        "encrypts": True,
                        "token_length": 172,
                        "seal": stats(4.4),
                        "open": stats(4.4),
                        "seal_vs_floor": 1.0,
                        "open_vs_floor": 1.0,
                        "seal_vs_tuned_floor": 2.2,
                        "open_vs_tuned_floor": 2.0,
                    },
                    "pyjwt_hs256": {
                        "label": "PyJWT HS256 (SIGNED ONLY, not encrypted)",
                        "encrypts": False,
                        "token_length": 215,
                        "seal": stats(20.0),
                        "open": stats(44.0),
                        "seal_vs_floor": 4.5,
                        "open_vs_floor": 10.0,
                        "seal_vs_tuned_floor": 10.0,
                        "open_vs_tuned_floor": 20.0,
                    },
                    "jwcrypto_jwe": {
                        "label": "jwcrypto JWE",
                        "skipped": "skipped (not installed)",
                        "missing": "jwcrypto",
                    },
                },
            },
            "flow": {
                "goals": {
                    "access_decision_vs_open": 1.3,
                    "refresh_decision_vs_open": 4.0,
                    "cookie_header_us": 1000.0,
                },
                "access_cookie_header": "a=b; " * 140,
                "refresh_sessions": 1024,
                "refresh_rotations_checked": 30000,
                "rows": {
                    "open": {"label": "codec.open (access token)", **stats(2.4)},
                    "access_decision": {
                        "label": "flow.decide, valid access",
                        **stats(3.0),
                        "vs_open": 1.25,
                    },
                    "refresh_decision": {
                        "label": "flow.decide, refresh rotated on MemoryStore",
                        **stats(9.0),
                        "vs_open": 3.75,
                    },
                    "cookie_header/realistic_8k": {
                        "header_bytes": 8192,
                        "decision": "Process",
                        "read_auth_cookies": stats(4.0),
                        "decide": stats(7.0),
                    },
                    "cookie_header/quotes": {
                        "header_bytes": 16384,
                        "decision": "Unauthorized",
                        "read_auth_cookies": stats(5.0),
                        "decide": stats(11.0),
                    },
                },
            },
            "stores": {
                "goals": {"redis_rotate_vs_evalsha": 1.25, "sqlite_refresh_1e6_vs_1e3": 1.2},
                "rows": {
                    "redis": {
                        "label": "Redis",
                        "server": "Redis 7.2.4",
                        "round_trip": "PING",
                        "cheapest_write": "EVALSHA of a constant script",
                        "rotation": stats(60.0),
                        "cheapest_write_us": stats(50.0),
                        "bare_round_trip": stats(45.0),
                        "rotation_vs_cheapest_write": 1.2,
                        "rotation_vs_roundtrip": 1.3333,
                        "throughput": [
                            {"clients": 1, "rotations_per_s": 1.5e4, "round_trips_per_s": 2.1e4},
                            {"clients": 16, "rotations_per_s": 5.2e4, "round_trips_per_s": 8e4},
                        ],
                        "round_trips_per_rotation": 1.0,
                    },
                    "postgres": {"skipped": "server not reachable"},
                    "sqlite_refresh_at_scale": {
                        "label": "SQLite refresh",
                        "small_sessions": 1000,
                        "large_sessions": 1000000,
                        "small": stats(100.0),
                        "large": stats(110.0),
                        "large_vs_small": 1.1,
                    },
                },
            },
            "scale": {
                "rows": {
                    "open": {"label": "codec.open (access token)", **stats(2.4)},
                    **{
                        f"MemoryStore/{n}": {
                            "label": f"refresh decision on MemoryStore, {n:,} sessions",
                            "store": "MemoryStore",
                            "sessions": n,
                            "refresh_decision": stats(9.0),
                            "refresh_decision_vs_open": 3.75 + n / 1e6,
                        }
                        for n in (1000, 10000, 100000)
                    },
                },
            },
            "oidc": {
                "goal": {"verify_vs_pyjwt": 1.2},
                "rows": {
                    "tokenflow": {
                        "label": "tokenflow.oidc",
                        "verify": stats(30.0),
                        "verify_vs_pyjwt": 0.8125,
                        "cache_hits": 12,
                    },
                    "authlib": {"skipped": "not installed"},
                },
            },
        },
        "seal_vs_tuned_floor": 1.1,
        "races": [
            {
                "store": "RedisStore",
                "driver": "sync, threads",
                "callers": 20,
                "trials": 5,
                "rotated": 5,
                "grace": 95,
                "double_rotations": 0,
                "bad_trials": 0,
            }
        ],
    }


def write(tmp_path: Path, run: dict[str, Any], name: str = "run.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(run))
    return path


def generate(tmp_path: Path, run: dict[str, Any]) -> tuple[Path, Path]:
    """Run the command in-process; the page and the chart directory."""
    out = tmp_path / "docs" / "benchmarks"
    assert report.main([str(write(tmp_path, run)), "--out", str(out)]) == 0
    return tmp_path / "docs" / "benchmarks.md", out


EXPECTED_CHARTS = {
    "tokens.svg",
    "flow-decisions.svg",
    "cookie-headers.svg",
    "stores-rotation.svg",
    "stores-throughput.svg",
    "scale-sessions.svg",
    "group-oidc.svg",
}


def test_page_shows_the_machine_versions_ratios_and_noise(tmp_path: Path) -> None:
    page, out = generate(tmp_path, synthetic_run())
    text = page.read_text(encoding="utf-8")
    # The machine, the versions and how the run was timed.
    assert "Test CPU 9000, 4 usable cores" in text
    assert "CPython 3.12.1" in text
    assert "| cryptography | 46.0.1 |" in text
    assert "| jwcrypto | not installed |" in text
    assert "15 interleaved rounds of 20.0 ms batches" in text
    # Ratios from the JSON, as written there, with each case's noise.
    assert f"| 1.10{X} | 1.09{X} |" in text  # tokenflow seal and open over the tuned floor
    assert "10.0 % / 10.0 %" in text
    assert f"| flow.decide, valid access | 3.00 | 1.25{X} | ≤ 1.3{X} | 10.0 % |" in text
    assert (
        f"| Redis 7.2.4 | EVALSHA of a constant script | 60.0 | 50.0 | 1.20{X} | ≤ 1.25 | 1.33{X} |"
        in text
    )
    assert f"| SQLite refresh | 1,000 | 1,000,000 | 100 | 110 | 1.10{X} |" in text
    assert "cycling through 1,024 sessions (30,000 rotations in all)" in text
    # What could not be measured says so; a signing-only contender is marked.
    assert "skipped (not installed)" in text
    assert "postgres (server not reachable)" in text
    assert "PyJWT HS256 (SIGNED ONLY, not encrypted) †" in text
    # Not a smoke run: no warning.
    assert "Smoke sample" not in text
    # Every chart is linked from the page, relative to it, and is well-formed SVG.
    assert {p.name for p in out.glob("*.svg")} == EXPECTED_CHARTS
    for name in EXPECTED_CHARTS:
        assert f"](benchmarks/{name})" in text
        root = ET.parse(out / name).getroot()  # noqa: S314 - our own output
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_a_new_group_gets_a_generic_chart_and_table(tmp_path: Path) -> None:
    page, out = generate(tmp_path, synthetic_run())
    text = page.read_text(encoding="utf-8")
    assert "## Group `oidc`" in text
    assert f"| tokenflow.oidc | verify vs pyjwt | 0.81{X} | verify 10.0 % |" in text
    assert "authlib (not installed)" in text
    # A count is not a ratio: only fields named "... vs ..." are charted.
    assert "cache hits" not in text
    svg = (out / "group-oidc.svg").read_text(encoding="utf-8")
    assert "verify vs pyjwt" in svg


def test_ratio_figures_are_the_numeric_fields_named_vs() -> None:
    row = {
        "seal_vs_floor": 0.5,
        "vs_open": 2,
        "rotation_vs_roundtrip": None,
        "canvas_size": 3.0,
        "vsync": 1.0,
        "encrypts_vs_x": True,
        "nan_vs_x": float("nan"),
    }
    assert report.ratio_figures(row) == {"seal_vs_floor": 0.5, "vs_open": 2.0}


def test_the_same_run_gives_the_same_bytes(tmp_path: Path) -> None:
    """Separate processes, separate directories: byte-identical page and charts."""
    run = write(tmp_path, synthetic_run())
    outputs = []
    for name in ("first", "second"):
        out = tmp_path / name / "benchmarks"
        result = subprocess.run(  # noqa: S603 - our own interpreter, fixed arguments
            [sys.executable, "-m", "benchmarks.report", str(run), "--out", str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        files = {p.name: p.read_bytes() for p in sorted(out.glob("*.svg"))}
        files["page"] = (tmp_path / name / "benchmarks.md").read_bytes()
        outputs.append(files)
    assert outputs[0].keys() == outputs[1].keys()
    for name, data in outputs[0].items():
        assert data == outputs[1][name], f"{name} differs between two runs"
    svg = outputs[0]["tokens.svg"].decode()
    assert "<dc:date>" not in svg
    assert "Matplotlib" not in svg  # no version stamp either


def test_a_quick_run_is_labelled_a_smoke_sample(tmp_path: Path) -> None:
    page, _ = generate(tmp_path, synthetic_run(quick=True))
    text = page.read_text(encoding="utf-8")
    assert '!!! warning "Smoke sample"' in text
    assert "Do not quote them." in text


def test_charts_of_groups_no_longer_in_the_run_are_removed(tmp_path: Path) -> None:
    _, out = generate(tmp_path, synthetic_run())
    (out / "notes.txt").write_text("not a chart")
    smaller = copy.deepcopy(synthetic_run())
    del smaller["groups"]["oidc"]
    smaller["groups"]["stores"]["rows"] = {"redis": {"skipped": "server not reachable"}}
    page, out = generate(tmp_path, smaller)
    names = {p.name for p in out.glob("*.svg")}
    assert names == EXPECTED_CHARTS - {
        "group-oidc.svg",
        "stores-rotation.svg",
        "stores-throughput.svg",
    }
    assert (out / "notes.txt").exists()
    text = page.read_text(encoding="utf-8")
    assert "oidc" not in text
    assert "redis (server not reachable)" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (json.dumps({"schema": 2, "groups": {}}), "schema: 2"),
        ("{not json", "is not JSON"),
        (json.dumps([1, 2]), "schema: 'list'"),
        (json.dumps({"schema": 1}), "has no groups"),
    ],
)
def test_input_that_is_not_a_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "run.json"
    path.write_text(content)
    out = tmp_path / "out"
    assert report.main([str(path), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path / "absent.json"), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_web_group_charts_its_paired_ratios_and_skips_its_lists(tmp_path: Path) -> None:
    run = synthetic_run()
    run["groups"]["web"] = {
        "goals": {"asgi_access_rps_vs_bare": 0.8},
        "rows": {
            "httptools+uvloop/bare": {"label": "bare ASGI endpoint", "rps": 30000.0},
            "httptools+uvloop/tokenflow": {
                "label": "TokenflowMiddleware (httptools+uvloop)",
                "rps": 24000.0,
                "rps_vs_bare": 0.8,
                "rps_vs_bare_per_round": [0.79, 0.8, 0.81],
                "us_added": 8.3,
            },
            "httptools+uvloop/fastapi_authx": {
                "label": "FastAPI + authx (cookie) (httptools+uvloop)",
                "rps": 4000.0,
                "rps_vs_fastapi_bare": 0.26,
            },
            "refresh/tokenflow": {"label": "refresh, TokenflowMiddleware", "p99_ms": 7.1},
        },
    }
    page, out = generate(tmp_path, run)
    text = page.read_text(encoding="utf-8")
    assert "## Group `web`" in text
    assert f"| TokenflowMiddleware (httptools+uvloop) | rps vs bare | 0.80{X} |" in text
    assert (
        f"| FastAPI + authx (cookie) (httptools+uvloop) | rps vs fastapi bare | 0.26{X} |" in text
    )
    # Per-round lists and absolute figures are not ratios of the chart.
    assert "per round" not in text
    assert "us added" not in text
    assert (out / "group-web.svg").exists()
