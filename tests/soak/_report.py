"""Reconciliation and the table: pure functions of what the soak recorded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: the messages whose publish() was called in cycles of a kind."""

    fault: str
    cycles: int
    accepted: int
    """publish() returned a message_id."""
    refused: int
    """publish() raised (BufferFull): the caller was told, so not a loss."""
    delivered: int
    """Accepted ids the consumer received at least once."""
    lost: int
    """Accepted ids the consumer never received."""
    duplicates: int
    """Deliveries beyond the first, per id."""
    longest: float | None
    """The longest publish() call, in seconds (``None``: no call)."""


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of a soak, as the table shows it."""

    rows: list[Row]
    total: Row
    seed: int
    command: str
    unexpected: int = 0
    """Deliveries of ids the soak never had accepted (another publisher on the queue)."""
    lost_ids: dict[str, list[str]] = field(default_factory=dict)
    """Per fault kind, the first lost ids (to look them up in the log)."""

    @property
    def lost(self) -> int:
        return self.total.lost


def reconcile(
    accepted: Mapping[str, str],
    deliveries: Mapping[str, int],
    *,
    kinds: Sequence[str],
    cycles: Mapping[str, int],
    refused: Mapping[str, int],
    longest: Mapping[str, float],
    seed: int,
    command: str,
    keep_lost: int = 20,
) -> Report:
    """Match every accepted id (mapped to the fault kind it was accepted under) with
    the consumer's delivery counts, and sum them per kind.

    Rows come in the order of ``kinds``, then any other kind seen, in order of appearance.
    """
    order = list(dict.fromkeys([*kinds, *accepted.values(), *refused, *longest]))
    tally = {kind: {"accepted": 0, "delivered": 0, "lost": 0, "duplicates": 0} for kind in order}
    lost_ids: dict[str, list[str]] = {}
    for message_id, kind in accepted.items():
        got = deliveries.get(message_id, 0)
        counts = tally[kind]
        counts["accepted"] += 1
        if got:
            counts["delivered"] += 1
            counts["duplicates"] += got - 1
        else:
            counts["lost"] += 1
            ids = lost_ids.setdefault(kind, [])
            if len(ids) < keep_lost:
                ids.append(message_id)
    rows = [
        Row(
            fault=kind,
            cycles=cycles.get(kind, 0),
            refused=refused.get(kind, 0),
            longest=longest.get(kind),
            **tally[kind],
        )
        for kind in order
    ]
    unexpected = sum(n for message_id, n in deliveries.items() if message_id not in accepted)
    return Report(
        rows=rows,
        total=total_row(rows),
        seed=seed,
        command=command,
        unexpected=unexpected,
        lost_ids=lost_ids,
    )


def total_row(rows: Iterable[Row]) -> Row:
    """The sums of ``rows``, and the longest call of all."""
    rows = list(rows)
    longest = [r.longest for r in rows if r.longest is not None]
    return Row(
        fault="total",
        cycles=sum(r.cycles for r in rows),
        accepted=sum(r.accepted for r in rows),
        refused=sum(r.refused for r in rows),
        delivered=sum(r.delivered for r in rows),
        lost=sum(r.lost for r in rows),
        duplicates=sum(r.duplicates for r in rows),
        longest=max(longest) if longest else None,
    )


def format_duration(seconds: float | None) -> str:
    """``1.2 s``, ``35.0 ms`` or ``84 µs``; ``-`` for none."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.1f} s"
    if seconds >= 0.01:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


_HEADER = (
    "fault",
    "cycles",
    "accepted",
    "refused",
    "delivered",
    "lost",
    "duplicates",
    "longest publish()",
)


def _cells(row: Row) -> tuple[str, ...]:
    return (
        row.fault,
        str(row.cycles),
        str(row.accepted),
        str(row.refused),
        str(row.delivered),
        str(row.lost),
        str(row.duplicates),
        format_duration(row.longest),
    )


def format_table(report: Report) -> str:
    """The rows, a rule and the total as aligned text, then the seed and the command."""
    lines = [_HEADER, *(_cells(r) for r in report.rows)]
    total = _cells(report.total)
    widths = [max(len(cells[i]) for cells in [*lines, total]) for i in range(len(_HEADER))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(lines[0]), rule, *(line(c) for c in lines[1:]), rule, line(total)]
    out.append(f"seed {report.seed}: {report.command}")
    if report.unexpected:
        out.append(f"{report.unexpected} deliveries of ids the soak never published")
    return "\n".join(out)


def report_json(report: Report, **extra: Any) -> dict[str, Any]:
    """The report as JSON-ready data (durations in seconds), with ``extra`` keys."""
    return {
        "seed": report.seed,
        "command": report.command,
        "rows": [asdict(r) for r in report.rows],
        "total": asdict(report.total),
        "unexpected": report.unexpected,
        "lost_ids": report.lost_ids,
        **extra,
    }
