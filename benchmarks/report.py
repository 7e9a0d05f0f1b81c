"""Turn a benchmark run into the site's benchmark page and its charts.

    python -m benchmarks --json RUN.json
    python -m benchmarks.report RUN.json [--out docs/benchmarks] [--page docs/benchmarks.md]

The page (Markdown) and the charts (SVG) are derived from the JSON alone:
nothing is measured here, and nothing on the page is typed by hand. Every
figure is a ratio of two medians measured side by side in the same run (see
:mod:`benchmarks._harness`), printed with the run's machine, library versions
and noise, so that a reader can judge it.

Known groups get charts drawn for them (``tokens``: the codec against floors
and peers; ``flow``: decisions against opening a token, and Cookie headers by
size; ``stores``: rotation against a bare round trip, and throughput;
``scale``: cost against the number of sessions in the store). Any other group
gets a generic chart of its *ratio figures*, the numeric fields of its rows
whose names contain ``vs`` (``rotation_vs_roundtrip``, ``vs_open``...), and
a table of them, plus a table of its ``counts`` (attack outcomes, say) beside
its goals, so that a new group needs no change here.

Output is deterministic: the same JSON gives byte-identical SVG and Markdown
(no dates or random ids in the files), so regenerating only changes what the
figures changed. The command owns the output directory's ``*.svg`` files and
removes those it did not write, so charts of a group that left never linger.
Needs matplotlib (``pip install -e '.[docs]'``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeGuard

__all__ = ["Chart", "Page", "build_page", "load_run", "main", "ratio_figures", "write_report"]

SCHEMA: Final = 1
"""The version of ``python -m benchmarks --json`` output this report reads."""

DEFAULT_OUT: Final = Path("docs/benchmarks")

TIMES: Final = "\N{MULTIPLICATION SIGN}"
"""How ratios are written: the multiplication sign, not the letter x."""

# Fixed salt for the SVG element ids matplotlib derives: with it, the same
# figure always gets the same ids, so a regenerated chart is byte-identical.
_RC: Final[dict[str, Any]] = {
    "svg.hashsalt": "tokenflow-benchmarks",
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 10.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.alpha": 0.35,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
}
# Creator would stamp the matplotlib version, Date the time of the run.
_SVG_METADATA: Final[dict[str, Any]] = {"Date": None, "Creator": None}

_TOKENFLOW: Final = "#3f51b5"
_FLOOR: Final = "#8c8c8c"
_PEER: Final = "#80b1d3"
_SECOND: Final = "#fdb462"
_GOAL: Final = "#c62828"
_PALETTE: Final = ("#3f51b5", "#fdb462", "#4daf4a", "#984ea3", "#e41a1c", "#80b1d3", "#a65628")

JSONObject = Mapping[str, Any]


class ReportError(Exception):
    """The input cannot be turned into a report (wrong file, wrong schema)."""


# -- reading the run -----------------------------------------------------------------


def load_run(path: Path) -> dict[str, Any]:
    """The run in ``path``, checked to be a benchmark report this module understands."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ReportError(
            f"{path} is not a `python -m benchmarks --json` file of schema {SCHEMA} "
            f"(schema: {found!r})"
        )
    if not isinstance(data.get("groups"), dict):
        raise ReportError(f"{path} has no groups")
    return data


def _is_number(value: object) -> TypeGuard[float]:
    """A finite int or float (never a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_stats(value: object) -> bool:
    return isinstance(value, dict) and _is_number(value.get("median_us"))


_RATIO_NAME: Final = re.compile(r"(?:^|_)vs(?:_|$)")


def ratio_figures(row: JSONObject) -> dict[str, float]:
    """A row's ratio figures: its numeric fields whose name contains ``vs`` as a word."""
    return {
        key: float(value)
        for key, value in row.items()
        if _RATIO_NAME.search(key) and _is_number(value)
    }


def _rows(group: JSONObject) -> dict[str, JSONObject]:
    rows = group.get("rows")
    if not isinstance(rows, dict):
        return {}
    return {name: row for name, row in rows.items() if isinstance(row, dict)}


def _live(rows: Mapping[str, JSONObject]) -> dict[str, JSONObject]:
    return {name: row for name, row in rows.items() if "skipped" not in row}


def _skipped(rows: Mapping[str, JSONObject]) -> dict[str, str]:
    return {name: str(row["skipped"]) for name, row in rows.items() if "skipped" in row}


def _stats_in(row: JSONObject) -> dict[str, JSONObject]:
    """The timed figures (harness stats) a row holds, by field name; the row itself if it is one."""
    if _is_stats(row):
        return {"": row}
    return {key: value for key, value in row.items() if _is_stats(value)}


def _goals(group: JSONObject) -> dict[str, float]:
    """A group's numeric goals (``goal`` or ``goals``), flattened by name."""
    found: dict[str, float] = {}
    for key in ("goal", "goals"):
        value = group.get(key)
        if isinstance(value, dict):
            found.update({k: float(v) for k, v in value.items() if _is_number(v)})
        elif _is_number(value):
            found[key] = float(value)
    return found


def _goal_for(goals: Mapping[str, float], metric: str) -> float | None:
    for name in (metric, f"max_{metric}"):
        if name in goals:
            return goals[name]
    return None


# -- formatting ----------------------------------------------------------------------


def _us(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _x(value: float) -> str:
    return f"{value:.2f}{TIMES}" if value < 100 else f"{value:,.0f}{TIMES}"


def _pct(value: object) -> str:
    return f"{float(value):.1f} %" if _is_number(value) else "n/a"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str) -> str:
    """A Markdown table; ``align`` holds one ``l`` or ``r`` per column."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _humanize(name: str) -> str:
    return name.replace("_", " ")


# -- the page model ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chart:
    """One SVG chart: its file name, its alternative text and how to draw it."""

    name: str
    alt: str
    draw: Callable[[Any], None]
    """Draws on a fresh :class:`matplotlib.figure.Figure`."""
    size: tuple[float, float] = (8.0, 4.0)


@dataclass(slots=True)
class Page:
    """The page being built: Markdown blocks and the charts they show."""

    blocks: list[str] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    chart_dir: str = "benchmarks"
    """The charts' directory, relative to the page."""

    def text(self, block: str) -> None:
        self.blocks.append(block.strip("\n"))

    def chart(self, chart: Chart, caption: str) -> None:
        if any(c.name == chart.name for c in self.charts):
            raise ValueError(f"two charts named {chart.name}")
        self.charts.append(chart)
        self.blocks.append(f"![{chart.alt}]({self.chart_dir}/{chart.name})\n\n*{caption}*")

    def markdown(self) -> str:
        return "\n\n".join(self.blocks) + "\n"


# -- charts ---------------------------------------------------------------------------


def _bars(
    ax: Any,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], Sequence[tuple[float, float] | None], str]],
    *,
    xlabel: str,
    goal: float | None = None,
    goal_label: str = "goal",
    baseline: float | None = 1.0,
    colors: Sequence[str] | None = None,
) -> None:
    """Horizontal grouped bars, one group per label, first label on top.

    ``series`` holds (name, values, whiskers, colour); a whisker is a
    (low, high) pair drawn around the bar's end, ``None`` for none. The axis
    is logarithmic when the values span more than a factor of 20.
    """
    count = len(series)
    height = 0.8 / count
    values = [v for _, vs, _, _ in series for v in vs if v is not None and v > 0]
    log = bool(values) and max(values) / min(values) > 20
    for i, (name, vals, whiskers, color) in enumerate(series):
        ys = [row - 0.4 + height * (i + 0.5) for row in range(len(labels))]
        for j, (y, value) in enumerate(zip(ys, vals, strict=True)):
            if value is None:
                continue
            bar_color = colors[j] if colors is not None and count == 1 else color
            ax.barh(y, value, height=height * 0.9, color=bar_color, label=name if j == 0 else None)
            whisker = whiskers[j]
            if whisker is not None:
                low, high = whisker
                ax.plot([low, high], [y, y], color="#333333", linewidth=1.0)
            ax.annotate(
                _x(value) if xlabel.startswith(TIMES) else _us(value),
                (value, y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
    ax.set_yticks(range(len(labels)), labels)
    for tick in ax.get_yticklabels():
        if tick.get_text().startswith("tokenflow"):
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    if log:
        ax.set_xscale("log")
        _plain_ticks(ax.xaxis, TIMES)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.15)
    if baseline is not None:
        ax.axvline(baseline, color="#333333", linewidth=0.8)
    if goal is not None:
        ax.axvline(goal, color=_GOAL, linestyle="--", linewidth=1.2, label=goal_label)
    if count > 1 or goal is not None:
        _legend_above(ax)


def _legend_above(ax: Any) -> None:
    handles, labels = ax.get_legend_handles_labels()
    wide = max((len(label) for label in labels), default=0) > 28
    ax.legend(
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=1 if wide else min(len(handles), 3),
        fontsize=8,
        frameon=False,
    )


def _plain_ticks(axis: Any, unit: str = "") -> None:
    """Tick labels as plain numbers (0.1, 10, 100 and a unit) rather than powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}{unit}"))


def _whisker(stats: JSONObject | None, over: float | None) -> tuple[float, float] | None:
    """A case's interquartile range, divided by a baseline median (or in µs)."""
    if stats is None or not _is_number(stats.get("p25_us")) or not _is_number(stats.get("p75_us")):
        return None
    scale = over if over else 1.0
    return float(stats["p25_us"]) / scale, float(stats["p75_us"]) / scale


def _median(stats: object) -> float | None:
    return float(stats["median_us"]) if _is_stats(stats) else None  # type: ignore[index]


# -- environment ----------------------------------------------------------------------


def _environment(page: Page, run: JSONObject) -> None:
    env = run.get("environment") or {}
    settings = run.get("settings") or {}
    meta = run.get("run") or {}
    cpu = env.get("cpu_model") or "unknown CPU"
    cores = env.get("cpu_usable") or env.get("cpu_count")
    facts = [
        ("CPU", f"{cpu}, {cores} usable cores" if cores else cpu),
        ("system", env.get("platform", "unknown")),
        ("Python", f"{env.get('implementation', 'Python')} {env.get('python', '?')}"),
        ("load average when the run started (1 min)", env.get("load_average_1m", "n/a")),
        (
            "timing",
            f"{settings.get('rounds', '?')} interleaved rounds of "
            f"{settings.get('batch_ms', '?')} ms batches "
            f"(shuffle seed {settings.get('seed', '?')})",
        ),
        ("run", f"started {meta.get('started', '?')}, took {meta.get('duration_s', '?')} s"),
    ]
    if env.get("tracing"):
        facts.append(("warning", "a tracer (debugger, coverage) was active: timings are inflated"))
    page.text(
        "## The machine and the run\n\n"
        + "\n".join(f"- **{name}**: {_cell(value)}" for name, value in facts)
    )
    libraries = env.get("libraries") or {}
    if libraries:
        lib_rows = [
            [name, version if version else "not installed"] for name, version in libraries.items()
        ]
        page.text("Library versions:\n\n" + _table(["library", "version"], lib_rows, "ll"))


def _noise(page: Page, run: JSONObject) -> None:
    worst: list[tuple[float, str]] = []
    for group_name, group in run["groups"].items():
        if not isinstance(group, dict):
            continue
        for row_name, row in _live(_rows(group)).items():
            for key, stats in _stats_in(row).items():
                if _is_number(stats.get("noise_pct")):
                    label = f"{group_name} / {row_name}" + (f" / {key}" if key else "")
                    worst.append((float(stats["noise_pct"]), label))
    if not worst:
        return
    worst.sort(key=lambda item: (-item[0], item[1]))
    values = sorted(n for n, _ in worst)
    median = values[len(values) // 2]
    top = ", ".join(f"{label} ({n:.1f} %)" for n, label in worst[:3])
    page.text(
        f"""## Noise

Noise is the interquartile range of a case's rounds over its median. In this run
it is {median:.1f} % for the median case, and largest for {top}. Two figures
closer than their noise are a tie in this run; the tables give each case's noise,
and the whiskers on the charts span each case's interquartile range."""
    )


# -- group sections -------------------------------------------------------------------


def _tokens(page: Page, group: JSONObject) -> None:
    rows = _rows(group)
    live = _live(rows)
    if "tuned_floor" not in live or "floor" not in live:
        _generic(page, "tokens", group)
        return
    goal = _goals(group).get("max_ratio_to_tuned_floor")
    tuned = live["tuned_floor"]
    order = ["tokenflow", "tuned_floor", "floor"]
    names = [n for n in order if n in live] + [n for n in live if n not in order]

    def label(name: str) -> str:
        row = live[name]
        text = str(row.get("label", name))
        return text if row.get("encrypts", True) else f"{text} †"

    def short(name: str) -> str:
        # The chart names the contender; the table says what it is built from.
        text = str(live[name].get("label", name)).split(" (", 1)[0]
        return text if live[name].get("encrypts", True) else f"{text} †"

    labels = [short(n) for n in names]

    def series(op: str, color: str) -> tuple[str, list[float | None], list[Any], str]:
        base = _median(tuned.get(op))
        values = [live[n].get(f"{op}_vs_tuned_floor") for n in names]
        return (
            op,
            [float(v) if _is_number(v) else None for v in values],
            [_whisker(live[n].get(op), base) for n in names],
            color,
        )

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        _bars(
            ax,
            labels,
            [series("seal", _TOKENFLOW), series("open", _SECOND)],
            xlabel=f"{TIMES} the tuned floor's median (lower is faster)",
            goal=goal,
            goal_label=f"tokenflow's goal (≤ {goal:g}{TIMES})" if goal else "goal",
        )

    page.text(
        """## Sealing and opening tokens

Every contender seals the same claims into a token and opens it again. The two
floors are hand-written AES-256-GCM with nothing around it (no key ids, no
purpose binding, no expiry check): the *floor* with the standard library's
`json` and `base64`, the *tuned floor* with `orjson` and `binascii`, the building
blocks tokenflow itself uses. The *v1 floor* is tokenflow's own token format
(key-id header, subkey, purpose in the associated data) with none of its checks:
tokenflow over the v1 floor is what the checks cost. The other libraries are
called as their users call them."""
    )
    page.chart(
        Chart(
            "tokens.svg",
            "Seal and open time of each token library, as a multiple of the tuned floor",
            draw,
            (8.0, 0.55 * len(names) + 1.4),
        ),
        "Seal and open medians over the tuned floor's. † signs only: anyone can read its claims.",
    )
    table_rows = []
    for n in names:
        row = live[n]
        seal, open_ = _median(row.get("seal")), _median(row.get("open"))
        table_rows.append(
            [
                label(n),
                _us(seal) if seal is not None else "n/a",
                _us(open_) if open_ is not None else "n/a",
                *(
                    _x(float(row[k])) if _is_number(row.get(k)) else "n/a"
                    for k in (
                        "seal_vs_tuned_floor",
                        "open_vs_tuned_floor",
                        "seal_vs_floor",
                        "open_vs_floor",
                    )
                ),
                row.get("token_length", "n/a"),
                f"{_pct((row.get('seal') or {}).get('noise_pct'))} / "
                f"{_pct((row.get('open') or {}).get('noise_pct'))}",
            ]
        )
    for name, why in _skipped(rows).items():
        table_rows.append([str(rows[name].get("label", name)), why, "", "", "", "", "", "", ""])
    page.text(
        _table(
            [
                "contender",
                "seal µs",
                "open µs",
                "seal / tuned",
                "open / tuned",
                "seal / floor",
                "open / floor",
                "chars",
                "noise seal / open",
            ],
            table_rows,
            "lrrrrrrrr",
        )
    )


def _flow(page: Page, group: JSONObject) -> None:
    rows = _live(_rows(group))
    goals = _goals(group)
    base = _median(rows.get("open"))
    decisions = {n: r for n, r in rows.items() if _is_number(r.get("vs_open"))}
    if base is None or not decisions:
        _generic(page, "flow", group)
        return
    names = ["open", *decisions]
    labels = [str(rows[n].get("label", n)) for n in names]
    values: list[float | None] = [1.0, *(float(decisions[n]["vs_open"]) for n in decisions)]
    whiskers = [_whisker(rows[n], base) for n in names]

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        colors = [_FLOOR, *(_TOKENFLOW for _ in decisions)]
        _bars(
            ax,
            labels,
            [("median", values, whiskers, _TOKENFLOW)],
            xlabel=f"{TIMES} codec.open's median (lower is faster)",
            colors=colors,
            baseline=None,
        )
        for i, name in enumerate(names):
            goal = _goal_for(goals, f"{name}_vs_open")
            if goal is not None:
                ax.plot(
                    [goal, goal], [i - 0.45, i + 0.45], color=_GOAL, linestyle="--", linewidth=1.2
                )
                ax.annotate(
                    f"goal ≤ {goal:g}{TIMES}",
                    (goal, i - 0.45),
                    xytext=(3, 2),
                    textcoords="offset points",
                    fontsize=7,
                    color=_GOAL,
                    va="top",
                )

    page.text(
        """## Decisions against the cryptography inside them

Opening the access token is the one piece of cryptography a valid request
needs. Each decision path is measured against `codec.open` in the same rounds:
what the flow costs on top of the token it opens."""
    )
    page.chart(
        Chart(
            "flow-decisions.svg",
            "Decision paths as a multiple of opening one token",
            draw,
            (8.0, 0.6 * len(names) + 1.2),
        ),
        "Each path's median over codec.open's; dashed: the path's goal.",
    )
    table_rows = []
    for name, label, value in zip(names, labels, values, strict=True):
        goal = _goal_for(goals, f"{name}_vs_open")
        table_rows.append(
            [
                label,
                _us(float(rows[name]["median_us"])),
                _x(value) if value is not None else "n/a",
                f"≤ {goal:g}{TIMES}" if goal is not None else "",
                _pct(rows[name].get("noise_pct")),
            ]
        )
    page.text(_table(["case", "µs", f"{TIMES} open", "goal", "noise"], table_rows, "lrrrl"))
    if _is_number(group.get("refresh_sessions")):
        page.text(
            f"Every timed refresh was checked to be a real rotation, cycling through "
            f"{group['refresh_sessions']:,} sessions"
            + (
                f" ({group['refresh_rotations_checked']:,} rotations in all)."
                if _is_number(group.get("refresh_rotations_checked"))
                else "."
            )
        )
    _cookie_headers(page, group, rows, base)


def _cookie_headers(
    page: Page, group: JSONObject, rows: Mapping[str, JSONObject], base: float
) -> None:
    headers = {n.partition("/")[2]: r for n, r in rows.items() if n.startswith("cookie_header/")}
    headers = {
        n: r
        for n, r in headers.items()
        if _is_number(r.get("header_bytes")) and _is_stats(r.get("decide"))
    }
    if not headers:
        return
    limit = _goals(group).get("cookie_header_us")
    access = rows.get("access_decision")
    cookie = group.get("access_cookie_header")
    points: list[tuple[str, float, float, bool]] = []
    if _is_stats(access) and isinstance(cookie, str):
        median = _median(access)
        assert median is not None
        points.append(("typical page (6 cookies)", float(len(cookie)), median, False))
    for name, row in headers.items():
        hostile = not name.startswith("realistic")
        points.append(
            (name, float(row["header_bytes"]), float(row["decide"]["median_us"]), hostile)
        )

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        plain = [(b, us) for _, b, us, hostile in points if not hostile]
        bad = [(b, us) for _, b, us, hostile in points if hostile]
        if plain:
            ax.scatter(
                *zip(*plain, strict=True), color=_TOKENFLOW, label="real-world headers", zorder=3
            )
        if bad:
            ax.scatter(
                *zip(*bad, strict=True),
                color=_SECOND,
                marker="x",
                label="hostile headers (built to hurt a parser)",
                zorder=3,
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_ticks(ax.xaxis)
        _plain_ticks(ax.yaxis)
        ax.set_xlabel("Cookie header size, bytes")
        ax.set_ylabel("flow.decide, µs (median)")
        if limit is not None:
            ax.axhline(
                limit, color=_GOAL, linestyle="--", linewidth=1.2, label=f"limit: {limit:g} µs"
            )
        ax.axhline(base, color=_FLOOR, linestyle=":", linewidth=1.0, label="codec.open")
        _legend_above(ax)

    page.text(
        """### Cookie headers

The `Cookie` header is the one input every client controls in full. Decisions
are timed on headers from a typical page up to the 16 KiB the reader scans,
including headers built to make a cookie parser slow."""
    )
    page.chart(
        Chart("cookie-headers.svg", "Decision time against Cookie header size", draw, (8.0, 4.0)),
        "flow.decide's median by header size; dashed: the limit every header must stay under.",
    )
    table_rows = [
        [
            name,
            f"{row['header_bytes']:,}",
            _us(float(row["read_auth_cookies"]["median_us"]))
            if _is_stats(row.get("read_auth_cookies"))
            else "n/a",
            _us(float(row["decide"]["median_us"])),
            _x(float(row["decide"]["median_us"]) / base),
            row.get("decision", ""),
            _pct(row["decide"].get("noise_pct")),
        ]
        for name, row in headers.items()
    ]
    page.text(
        _table(
            [
                "header",
                "bytes",
                "read µs",
                "decide µs",
                f"decide {TIMES} open",
                "decision",
                "noise",
            ],
            table_rows,
            "lrrrrll",
        )
    )


def _stores(page: Page, group: JSONObject, run: JSONObject) -> None:
    rows = _rows(group)
    goals = _goals(group)
    servers = {
        n: r
        for n, r in _live(rows).items()
        if _is_number(r.get("rotation_vs_cheapest_write")) and _is_stats(r.get("rotation"))
    }
    page.text(
        """## Session stores: a rotation against the cheapest durable write

A refresh rotates its session in the store with one atomic compare-and-set.
Each store's rotation is timed against the cheapest durable write its server
accepts, on the same connection (Redis: `EVALSHA` of a script returning a
constant; PostgreSQL: an autocommit single-row `UPDATE ... RETURNING`): what
the store adds beyond a write it cannot avoid. The ratio against a read-only
round trip (`PING`, `SELECT 1`) is kept as information."""
    )
    if servers:
        labels: list[str] = []
        values: list[float | None] = []
        whiskers: list[tuple[float, float] | None] = []
        for name, row in servers.items():
            base = _median(row.get("cheapest_write_us"))
            labels.append(str(row.get("label", name)))
            values.append(float(row["rotation_vs_cheapest_write"]))
            whiskers.append(_whisker(row.get("rotation"), base))

        def draw(fig: Any) -> None:
            ax = fig.subplots()
            _bars(
                ax,
                labels,
                [("median", values, whiskers, _TOKENFLOW)],
                xlabel=f"{TIMES} the cheapest durable write's median (lower is faster)",
            )

        page.chart(
            Chart(
                "stores-rotation.svg",
                "Store rotation as a multiple of the cheapest durable write",
                draw,
                (8.0, 0.6 * len(labels) + 1.4),
            ),
            "Rotation medians over the same connection's cheapest durable write.",
        )
        table_rows = []
        for name, row in servers.items():
            goal = goals.get(f"{name}_rotate_vs_{'evalsha' if name == 'redis' else 'update'}")
            table_rows.append(
                [
                    row.get("server", name),
                    row.get("cheapest_write", ""),
                    _us(_median(row.get("rotation")) or 0.0),
                    _us(_median(row.get("cheapest_write_us")) or 0.0),
                    _x(float(row["rotation_vs_cheapest_write"])),
                    f"≤ {goal:g}" if goal is not None else "",
                    _x(float(row["rotation_vs_roundtrip"]))
                    if _is_number(row.get("rotation_vs_roundtrip"))
                    else "n/a",
                    f"{_pct((row.get('rotation') or {}).get('noise_pct'))} / "
                    f"{_pct((row.get('cheapest_write_us') or {}).get('noise_pct'))}",
                ]
            )
        page.text(
            _table(
                [
                    "server",
                    "cheapest durable write",
                    "rotation µs",
                    "write µs",
                    "ratio",
                    "goal",
                    "vs a read-only round trip",
                    "noise rotation / write",
                ],
                table_rows,
                "llrrrlrl",
            )
        )
        hot = (servers.get("postgres") or {}).get("hot_updates")
        if isinstance(hot, dict) and hot:
            page.text(
                "PostgreSQL heap-only-tuple updates during the run: "
                + ", ".join(f"{k} {v}" for k, v in hot.items())
                + "."
            )
        _throughput(page, servers)
    scale = {n: r for n, r in _live(rows).items() if _is_number(r.get("large_vs_small"))}
    if scale:
        scale_rows = [
            [
                str(row.get("label", name)),
                f"{row.get('small_sessions', '?'):,}"
                if isinstance(row.get("small_sessions"), int)
                else "?",
                f"{row.get('large_sessions', '?'):,}"
                if isinstance(row.get("large_sessions"), int)
                else "?",
                _us(_median(row.get("small")) or 0.0),
                _us(_median(row.get("large")) or 0.0),
                _x(float(row["large_vs_small"])),
                f"{_pct((row.get('small') or {}).get('noise_pct'))} / "
                f"{_pct((row.get('large') or {}).get('noise_pct'))}",
            ]
            for name, row in scale.items()
        ]
        page.text(
            "Refresh latency as the store fills: the same refresh with many live sessions "
            "against few.\n\n"
            + _table(
                ["store", "few", "many", "few µs", "many µs", "ratio", "noise few / many"],
                scale_rows,
                "lrrrrrl",
            )
        )
    skipped = _skipped(rows)
    if skipped:
        page.text(
            "Not measured in this run: "
            + "; ".join(f"{n} ({why})" for n, why in skipped.items())
            + "."
        )
    races = run.get("races")
    if isinstance(races, list) and races:
        race_rows = [
            [
                r.get("store", "?"),
                r.get("driver", "?"),
                r.get("callers", "?"),
                r.get("trials", "?"),
                r.get("rotated", "?"),
                r.get("grace", "?"),
                r.get("double_rotations", "?"),
                r.get("bad_trials", "?"),
            ]
            for r in races
            if isinstance(r, dict)
        ]
        page.text(
            "Races: N callers rotate one session at once, presenting the same token; "
            "exactly one must rotate and the others get the grace answer.\n\n"
            + _table(
                [
                    "store",
                    "driver",
                    "callers",
                    "trials",
                    "rotated",
                    "grace",
                    "double rotations",
                    "bad trials",
                ],
                race_rows,
                "llrrrrrr",
            )
        )


def _throughput(page: Page, live: Mapping[str, JSONObject]) -> None:
    points = {
        str(row.get("label", name)): [t for t in row.get("throughput", []) if isinstance(t, dict)]
        for name, row in live.items()
    }
    points = {k: v for k, v in points.items() if v}
    if not points:
        return

    def draw(fig: Any) -> None:
        axes = fig.subplots(1, len(points), squeeze=False)[0]
        for ax, (label, entries) in zip(axes, points.items(), strict=True):
            clients = [str(t.get("clients")) for t in entries]
            xs = range(len(clients))
            width = 0.38
            rot = [float(t.get("rotations_per_s", 0)) for t in entries]
            trip = [float(t.get("round_trips_per_s", 0)) for t in entries]
            ax.bar([x - width / 2 for x in xs], trip, width, color=_FLOOR, label="bare round trips")
            ax.bar([x + width / 2 for x in xs], rot, width, color=_TOKENFLOW, label="rotations")
            ax.set_xticks(list(xs), [f"{c} client{'s' if c != '1' else ''}" for c in clients])
            ax.set_title(label, fontsize=10)
            ax.set_ylabel("operations per second")
        _legend_above(axes[0])

    page.chart(
        Chart(
            "stores-throughput.svg",
            "Rotations and bare round trips per second",
            draw,
            (4.0 * len(points) + 1.0, 3.6),
        ),
        "Throughput from 1 and from many client threads, each with its own sessions.",
    )


def _scale(page: Page, group: JSONObject) -> None:
    rows = {n: r for n, r in _live(_rows(group)).items() if _is_number(r.get("sessions"))}
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows.values():
        for metric, value in ratio_figures(row).items():
            key = f"{row.get('store', '?')}: {_humanize(metric)}"
            series.setdefault(key, []).append((float(row["sessions"]), value))
    if not series:
        _generic(page, "scale", group)
        return

    def draw(fig: Any) -> None:
        ax = fig.subplots()
        for i, (key, pts) in enumerate(sorted(series.items())):
            pts.sort()
            ax.plot(
                *zip(*pts, strict=True), marker="o", color=_PALETTE[i % len(_PALETTE)], label=key
            )
        ax.set_xscale("log")
        counts = sorted({x for pts in series.values() for x, _ in pts})
        ax.set_xticks(counts, [f"{c:,.0f}" for c in counts])
        ax.minorticks_off()
        ax.set_xlabel("sessions in the store")
        ax.set_ylabel(f"{TIMES} codec.open's median")
        ax.set_ylim(bottom=0)
        _legend_above(ax)

    page.text(
        """## Scale with the number of sessions

The same decisions, timed against `codec.open` with more and more sessions in
the store. An access decision touches no store, so its line should stay flat;
a refresh looks one session up by id."""
    )
    page.chart(
        Chart(
            "scale-sessions.svg", "Decision cost against the number of sessions", draw, (8.0, 4.0)
        ),
        "Each point: a decision's median over codec.open's, in the same rounds.",
    )
    _ratio_table(page, rows)


def _ratio_table(page: Page, rows: Mapping[str, JSONObject]) -> None:
    table_rows = []
    for name, row in rows.items():
        stats = _stats_in(row)
        noise = ", ".join(
            f"{key or 'median'} {_pct(s.get('noise_pct'))}" for key, s in stats.items()
        )
        for metric, value in ratio_figures(row).items():
            table_rows.append([row.get("label", name), _humanize(metric), _x(value), noise])
    if table_rows:
        page.text(_table(["case", "ratio", "value", "noise"], table_rows, "llrl"))


def _generic(page: Page, name: str, group: JSONObject) -> None:
    """Any group: a chart and a table of its rows' ratio figures."""
    rows = _rows(group)
    live = {n: r for n, r in _live(rows).items() if ratio_figures(r)}
    summary = group.get("summary") if isinstance(group.get("summary"), str) else None
    page.text(f"## Group `{name}`" + (f"\n\n{summary}" if summary else ""))
    _counts(page, group)
    if not live:
        page.text("This group reported no ratio figures in this run.")
    else:
        goals = _goals(group)
        labels: list[str] = []
        values: list[float | None] = []
        colors: list[str] = []
        goal_marks: list[tuple[int, float]] = []
        for row_name, row in live.items():
            for metric, value in ratio_figures(row).items():
                goal = _goal_for(goals, metric)
                if goal is not None:
                    goal_marks.append((len(labels), goal))
                labels.append(f"{row.get('label', row_name)}: {_humanize(metric)}")
                values.append(value)
                colors.append(
                    _TOKENFLOW
                    if "tokenflow" in row_name or "tokenflow" in str(row.get("label", ""))
                    else _PEER
                )

        def draw(fig: Any) -> None:
            ax = fig.subplots()
            _bars(
                ax,
                labels,
                [("median", values, [None] * len(values), _TOKENFLOW)],
                xlabel=f"{TIMES} (ratio of medians, as named)",
                colors=colors,
            )
            for i, goal in goal_marks:
                ax.plot(
                    [goal, goal], [i - 0.45, i + 0.45], color=_GOAL, linestyle="--", linewidth=1.2
                )

        page.chart(
            Chart(
                f"group-{_slug(name)}.svg",
                f"Ratio figures of the {name} group",
                draw,
                (8.0, 0.45 * len(labels) + 1.4),
            ),
            f"The {name} group's ratios, each the median of one case over another's in the same "
            "rounds; dashed: a goal.",
        )
        _ratio_table(page, live)
    skipped = _skipped(rows)
    if skipped:
        page.text(
            "Not measured in this run: "
            + "; ".join(f"{n} ({why})" for n, why in skipped.items())
            + "."
        )


def _counts(page: Page, group: JSONObject) -> None:
    """A group's ``counts`` (attack outcomes and the like), each beside its goal."""
    counts = group.get("counts")
    if not isinstance(counts, dict):
        return
    goals = _goals(group)
    rows = []
    for metric, value in counts.items():
        if not _is_number(value):
            continue
        goal = _goal_for(goals, metric)
        verdict = "" if goal is None else ("met" if value <= goal else "**missed**")
        rows.append(
            [_humanize(metric), f"{value:g}", "" if goal is None else f"≤ {goal:g}", verdict]
        )
    if rows:
        page.text(_table(["count", "this run", "goal", ""], rows, "lrrl"))


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "group"


# -- the page -------------------------------------------------------------------------

_SPECIFIC: Final = ("tokens", "flow", "stores", "scale")


def build_page(run: JSONObject, chart_dir: str = "benchmarks") -> Page:
    """The whole page for ``run``; charts are drawn when the page is written."""
    page = Page(chart_dir=chart_dir)
    settings = run.get("settings") or {}
    page.text(
        """# Benchmarks

How much tokenflow costs next to what you would use instead. Every figure below
is a **ratio of two medians measured side by side in one run**: cases are timed
in interleaved rounds, in a freshly shuffled order each round, so that a drift
of the machine lands on all of them alike. Absolute times are printed too, but
only ratios carry over to another machine.

This page and its charts are generated from one run's JSON, never edited by
hand:

```
python -m benchmarks --json run.json
python -m benchmarks.report run.json
```"""
    )
    if settings.get("quick"):
        page.text(
            """!!! warning "Smoke sample"

    These figures come from a `--quick` run: few rounds of short batches, on a
    shared machine. They show what the page looks like, not what tokenflow
    costs. Do not quote them."""
        )
    _environment(page, run)
    groups = {n: g for n, g in run["groups"].items() if isinstance(g, dict)}
    if "tokens" in groups:
        _tokens(page, groups["tokens"])
    if "flow" in groups:
        _flow(page, groups["flow"])
    if "stores" in groups:
        _stores(page, groups["stores"], run)
    if "scale" in groups:
        _scale(page, groups["scale"])
    for name, group in groups.items():
        if name not in _SPECIFIC:
            _generic(page, name, group)
    _noise(page, run)
    return page


def _draw(chart: Chart) -> bytes:
    import io

    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        fig = Figure(figsize=chart.size, layout="constrained")
        chart.draw(fig)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg", metadata=_SVG_METADATA)
    return buffer.getvalue()


def write_report(run: JSONObject, out: Path, page_path: Path) -> list[Path]:
    """Write the charts into ``out`` and the page to ``page_path``; the files written."""
    chart_dir = Path(os.path.relpath(out, page_path.parent)).as_posix()
    page = build_page(run, chart_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for chart in page.charts:
        path = out / chart.name
        _write_if_changed(path, _draw(chart))
        written.append(path)
    keep = {p.name for p in written}
    for stale in sorted(out.glob("*.svg")):
        if stale.name not in keep:
            stale.unlink()
    page_path.parent.mkdir(parents=True, exist_ok=True)
    _write_if_changed(page_path, page.markdown().encode())
    written.append(page_path)
    return written


def _write_if_changed(path: Path, data: bytes) -> None:
    # Leaves the file's modification time alone when nothing changed, so that
    # `mkdocs serve` does not rebuild for a regeneration that changed nothing.
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Turn a `python -m benchmarks --json` file into the site's benchmark page "
        "and SVG charts.",
    )
    parser.add_argument("run", type=Path, metavar="RUN.json", help="the benchmark run")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"directory of the charts (default {DEFAULT_OUT}); its other *.svg files are removed",
    )
    parser.add_argument(
        "--page",
        type=Path,
        help="the Markdown page to write (default: the --out directory's name + .md, "
        "next to it: docs/benchmarks.md)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.report``; returns the exit status."""
    args = _parser().parse_args(argv)
    page_path: Path = args.page if args.page is not None else args.out.with_suffix(".md")
    try:
        run = load_run(args.run)
        import matplotlib  # noqa: F401 - fail early, with the fix, when it is missing
    except ReportError as exc:
        print(f"python -m benchmarks.report: {exc}", file=sys.stderr)
        return 2
    except ImportError:
        print(
            "python -m benchmarks.report: needs matplotlib: pip install -e '.[docs]'",
            file=sys.stderr,
        )
        return 2
    for path in write_report(run, args.out, page_path):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
