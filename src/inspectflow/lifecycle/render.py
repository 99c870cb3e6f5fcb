"""Text renderings of the lifecycle's results for a terminal; the CLI commands print them."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inspectflow.lifecycle.aliases import Promotion, Rollback, VersionRow, gate_verdict
from inspectflow.lifecycle.audit import ELLIPSIS, AuditEntry
from inspectflow.lifecycle.comparison import KEY_METRICS, Comparison
from inspectflow.names import CHAMPION


def to_json(value: Any) -> str:
    """A result (dataclasses, and dicts or lists of them) as indented JSON; times in ISO 8601."""
    return json.dumps(value, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def _param_item(key: str, value: str, width: int) -> str:
    """``key=value`` in at most ``width`` characters: the value keeps its end (a path's last folders)."""
    item = f"{key}={value}"
    if len(item) <= width:
        return item
    room = width - len(key) - 2
    if room >= 4:
        return f"{key}={ELLIPSIS}{value[len(value) - room :]}"
    return _clip(item, width)


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _short(digest: str | None, width: int = 8) -> str:
    if not digest:
        return "-"
    return digest.split(":", 1)[-1][:width]  # "md5:abc…" or a bare hex digest


def format_versions(name: str, rows: list[VersionRow]) -> str:
    """Renders :func:`list_versions` as a table, one line per version, newest first."""
    if not rows:
        return f"{name}: no versions"
    lines = [f"{name}: {len(rows)} version{'s' if len(rows) != 1 else ''}, newest first"]
    header = f"{'version':>7}  {'registered (UTC)':<16}  {'aliases':<20}  {'gate test score':<18}  "
    header += f"{'gate':<8}  {'data':<8}  run"
    lines.append(header)
    for row in rows:
        score = "-" if row.score is None else f"{row.score:.4f}"
        metric = f"{row.metric} {score}" if row.metric else score
        lines.append(
            f"{row.version:>7}  {_minute(row.created):<16}  {_clip(', '.join(row.aliases) or '-', 20):<20}  "
            f"{_clip(metric, 18):<18}  {row.decision or '-':<8}  {_short(row.data_version):<8}  "
            f"{(row.run_id or '-')[:12]}"
        )
    return "\n".join(lines)


def format_entry(entry: AuditEntry) -> str:
    """One audit entry on one line: sequence, time, action, alias ``from -> to``, actor, reason."""
    move = f"{entry.from_version or '-'} -> {entry.to_version}"
    return (
        f"{entry.seq:>4}  {entry.time.replace('T', ' ')}  {entry.action:<8}  {entry.alias:<10}  {move:<10}  "
        f"{entry.actor}: {entry.reason}"
    )


def format_history(name: str, entries: list[AuditEntry], outside: list[str] | None = None) -> str:
    """Renders :func:`audit_trail` one line per alias move, oldest first, then moves made outside it."""
    warnings = [f"! {text}" for text in outside or []]
    if not entries:
        return "\n".join([f"{name}: no alias moves recorded", *warnings])
    count = f"{len(entries)} alias move{'s' if len(entries) != 1 else ''}"
    header = f"{'seq':>4}  {'time (UTC)':<20}  {'action':<8}  {'alias':<10}  {'from -> to':<10}  who: why"
    return "\n".join([f"{name}: {count}, oldest first", header, *map(format_entry, entries), *warnings])


def format_promotion(result: Promotion) -> str:
    """Says what :func:`promote` did, with the gate's verdict on the version."""
    verdict = gate_verdict(result.gate_decision, result.gate_reason)
    if not result.changed:
        return f"{result.name} version {result.version} already is champion; nothing changed ({verdict})"
    before = f"version {result.previous}" if result.previous else "no champion"
    return f"{result.name}@{CHAMPION}: {before} -> version {result.version} ({verdict})"


def format_rollback(result: Rollback) -> str:
    """Says what :func:`rollback` did."""
    return (
        f"{result.name}@{CHAMPION} rolled back: version {result.from_version} -> "
        f"version {result.to_version}; why: {result.entry.reason}"
    )


def _param_cell(params: dict[str, str], keys: list[str], width: int) -> list[str]:
    """The run's differing params as ``key=value`` items, wrapped to ``width`` (each item clipped to fit)."""
    lines = [""]
    for key in keys:
        item = _param_item(key, params.get(key, "-"), width)
        if not lines[-1]:
            lines[-1] = item
        elif len(lines[-1]) + 2 + len(item) <= width:
            lines[-1] += "  " + item
        else:
            lines.append(item)
    return lines


def format_table(comparison: Comparison, width: int = 110) -> str:
    """Renders a :class:`Comparison` as a fixed-width table, one row per run, at most ``width`` columns.

    Columns: champion mark ``*``, run name and short id, start time, data version, the key test metrics,
    registered version, then the params that differ (wrapped onto continuation lines when long).
    """
    rows = comparison.runs
    lines = [
        f"experiment {comparison.experiment}: the last {len(rows)} finished pipeline "
        f"run{'s' if len(rows) != 1 else ''}, newest first"
    ]
    metric_widths = [max(len(KEY_METRICS[name]), 6) for name in comparison.metric_names]
    fixed = [
        ("run", 22, "<"),
        ("start (UTC)", 16, "<"),
        ("data", 8, "<"),
        *(
            (KEY_METRICS[name], w, ">")
            for name, w in zip(comparison.metric_names, metric_widths, strict=True)
        ),
        ("ver", 3, ">"),
    ]
    gap = "  "
    offset = len("* ") + sum(w for _, w, _ in fixed) + len(gap) * len(fixed)
    params_width = max(width - offset, 16)

    def line(mark: str, cells: list[str]) -> str:
        """The champion mark and the fixed columns, padded to the params column."""
        parts = [f"{cell:{align}{w}}" for cell, (_, w, align) in zip(cells, fixed, strict=True)]
        return f"{mark:<1} " + gap.join(parts) + gap

    header_cells = [title for title, _, _ in fixed]
    params_title = "params that differ" if comparison.differing_params else "params: all equal"
    lines.append((line("", header_cells) + params_title).rstrip())
    for run in rows:
        label = f"{_clip(run.run_name, 13)} {run.run_id[:8]}" if run.run_name else run.run_id[:8]
        cells = [
            label,
            _minute(run.start_time),
            _short(run.data_version),
            *(f"{run.metrics[name]:.4f}" if name in run.metrics else "-" for name in comparison.metric_names),
            run.version or "-",
        ]
        params = _param_cell(run.params, comparison.differing_params, params_width)
        lines.append((line("*" if run.champion else "", cells) + params[0]).rstrip())
        lines.extend(" " * offset + more for more in params[1:])
    champions = ", ".join(f"{name}@{CHAMPION} (version {v})" for name, v in comparison.champions.items())
    footer = [
        f"* = the run of {champions}" if comparison.champion_run else f"champion: {champions or 'none'}"
    ]
    if comparison.metric_names:
        footer.append(
            "metrics: " + ", ".join(f"{KEY_METRICS[name]}={name}" for name in comparison.metric_names)
        )
    lines.extend(_clip(text, width) for text in footer)
    return "\n".join(lines)
