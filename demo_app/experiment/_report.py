"""Turn a recorded run into per-phase numbers, files and a timeline plot."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._run import Phase, RawRun, Send


@dataclass(frozen=True, slots=True)
class PhaseRow:
    """One line of the result table.

    ``sent``, ``rejected``, ``lost``, ``duplicates`` and the latencies count the
    messages whose publish() was *called* in the phase. ``confirmed``, ``spilled`` and
    ``replayed`` count what the producer *did* during the phase, whenever the message
    was sent: ``confirmed`` are direct confirms (first publish, not from the store),
    ``replayed`` are messages confirmed after coming back from the store.
    """

    phase: str
    seconds: float
    sent: int
    rejected: int
    confirmed: int
    spilled: int
    replayed: int
    lost: int
    duplicates: int
    p50_us: float | None
    p99_us: float | None
    max_us: float | None


@dataclass(frozen=True, slots=True)
class ExperimentResult:
    """The outcome of a run, as the table shows it."""

    rows: list[PhaseRow]
    total: PhaseRow
    drained: bool
    """The store emptied and every accepted message arrived within the drain timeout."""
    recovery_seconds: list[float | None]
    """Per outage: from the broker's restart until everything sent so far arrived and the
    store was empty (``None``: not within the recovery timeout)."""
    final_backlog: int | None
    queue: str
    store: str
    rate: float
    max_buffered: int
    max_backlog: int

    @property
    def lost(self) -> int:
        return self.total.lost

    @property
    def duplicates(self) -> int:
        return self.total.duplicates

    def table(self) -> str:
        """The rows as a Markdown table."""
        head = (
            "| phase | seconds | sent | rejected | confirmed directly | spilled | replayed "
            "| lost | duplicates | publish() p50 | p99 | max |"
        )
        lines = [head, "|" + " --- |" * 12]
        for row in [*self.rows, self.total]:
            name = f"**{row.phase}**" if row is self.total else row.phase
            lines.append(
                f"| {name} | {row.seconds:.1f} | {row.sent} | {row.rejected} | {row.confirmed} "
                f"| {row.spilled} | {row.replayed} | {row.lost} | {row.duplicates} "
                f"| {_us(row.p50_us)} | {_us(row.p99_us)} | {_us(row.max_us)} |"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        recoveries = ", ".join(
            "not within the timeout" if r is None else f"{r:.1f}s" for r in self.recovery_seconds
        )
        return "\n".join(
            [
                f"queue {self.queue}, store {self.store}, {self.rate:g} msg/s",
                f"accepted {self.total.sent}, rejected {self.total.rejected}, "
                f"lost {self.lost}, duplicates {self.duplicates}",
                f"most in memory {self.max_buffered}, most in the store {self.max_backlog}",
                f"recovery after each outage: {recoveries or 'no outage'}",
                "drained: store empty and every message delivered"
                if self.drained
                else f"NOT drained: store backlog {self.final_backlog}",
            ]
        )


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f} ms"
    return f"{value:.0f} µs"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by the nearest-rank method; ``None`` if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _delta(phase: Phase, name: str) -> int:
    return int(phase.stats_end.get(name, 0)) - int(phase.stats_start.get(name, 0))


def _row(
    label: str,
    seconds: float,
    sends: Sequence[Send],
    counters: dict[str, int],
    deliveries: dict[str, int],
) -> PhaseRow:
    accepted = [s for s in sends if s.message_id is not None]
    latencies = [s.latency * 1e6 for s in sends]
    return PhaseRow(
        phase=label,
        seconds=seconds,
        sent=len(accepted),
        rejected=len(sends) - len(accepted),
        confirmed=counters["confirmed"],
        spilled=counters["spilled"],
        replayed=counters["replayed"],
        lost=sum(1 for s in accepted if deliveries.get(s.message_id or "", 0) == 0),
        duplicates=sum(max(0, deliveries.get(s.message_id or "", 0) - 1) for s in accepted),
        p50_us=percentile(latencies, 50),
        p99_us=percentile(latencies, 99),
        max_us=max(latencies, default=None),
    )


def _counters(phase_stats: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, int]:
    totals = {"confirmed": 0, "spilled": 0, "replayed": 0}
    for start, end in phase_stats:
        for name in totals:
            totals[name] += int(end.get(name, 0)) - int(start.get(name, 0))
    return totals


def summarize(raw: RawRun) -> ExperimentResult:
    by_phase: dict[int, list[Send]] = {}
    for send in raw.sends:
        by_phase.setdefault(send.phase, []).append(send)
    rows = [
        _row(
            phase.label,
            phase.end - phase.start,
            by_phase.get(index, []),
            _counters([(phase.stats_start, phase.stats_end)]),
            raw.deliveries,
        )
        for index, phase in enumerate(raw.phases)
    ]
    total = _row(
        "total",
        (raw.phases[-1].end - raw.phases[0].start) if raw.phases else 0.0,
        raw.sends,
        _counters([(raw.phases[0].stats_start, raw.phases[-1].stats_end)] if raw.phases else []),
        raw.deliveries,
    )
    return ExperimentResult(
        rows=rows,
        total=total,
        drained=raw.drained,
        recovery_seconds=raw.recovery_seconds,
        final_backlog=raw.final_backlog,
        queue=raw.queue,
        store=raw.store,
        rate=raw.options.rate,
        max_buffered=max((s.buffered for s in raw.samples), default=0),
        max_backlog=max((s.backlog or 0 for s in raw.samples), default=0),
    )


def write_files(raw: RawRun, result: ExperimentResult, out_dir: Path) -> list[Path]:
    """Write results.json, table.md, sends.csv, timeline.csv and ids.txt to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(raw.options).items()}
    results = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(raw.started_at)),
        "options": options,
        "queue": raw.queue,
        "store": raw.store,
        "rows": [asdict(r) for r in result.rows],
        "total": asdict(result.total),
        "drained": result.drained,
        "recovery_seconds": result.recovery_seconds,
        "phases": [
            {
                "phase": p.label,
                "start": p.start,
                "end": p.end,
                "stats_start": p.stats_start,
                "stats_end": p.stats_end,
            }
            for p in raw.phases
        ],
    }
    paths = {
        name: out_dir / name
        for name in ("results.json", "table.md", "sends.csv", "timeline.csv", "ids.txt")
    }
    paths["results.json"].write_text(json.dumps(results, indent=2, default=str) + "\n")
    paths["table.md"].write_text(result.table() + "\n\n" + result.summary() + "\n")
    with paths["sends.csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seq", "t", "phase", "message_id", "latency_us", "copies_delivered", "error"])
        for s in raw.sends:
            copies = raw.deliveries.get(s.message_id, 0) if s.message_id else ""
            w.writerow(
                [
                    s.seq,
                    f"{s.t:.4f}",
                    raw.phases[s.phase].label,
                    s.message_id or "",
                    f"{s.latency * 1e6:.1f}",
                    copies,
                    s.error or "",
                ]
            )
    with paths["timeline.csv"].open("w", newline="") as f:
        w = csv.writer(f)
        fields = [
            "t",
            "connected",
            "blocked",
            "buffered",
            "in_flight",
            "backlog",
            "accepted",
            "confirmed",
            "spilled",
            "replayed",
            "delivered",
        ]
        w.writerow(fields)
        for sample in raw.samples:
            w.writerow([getattr(sample, name) for name in fields])
    paths["ids.txt"].write_text("".join(f"{i}\n" for i in sorted(raw.deliveries)))
    return list(paths.values())


def plot(raw: RawRun, result: ExperimentResult, path: Path) -> Path:
    """Draw the run's timeline to ``path`` (PNG): outages shaded, what waited in memory and
    in the store, the counters, and how long each publish() call took."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in raw.samples]
    fig, (ax_wait, ax_count, ax_lat) = plt.subplots(
        3, 1, sharex=True, figsize=(11, 8.5), height_ratios=[1.1, 1, 1], layout="constrained"
    )
    for ax in (ax_wait, ax_count, ax_lat):
        for phase in raw.phases:
            if phase.name == "down":
                ax.axvspan(phase.start, phase.end, color="#d64545", alpha=0.13, lw=0)
            elif phase.name == "recovery":
                ax.axvspan(phase.start, phase.end, color="#d98a00", alpha=0.10, lw=0)
        ax.grid(alpha=0.3)

    ax_wait.plot(
        t, [s.buffered for s in raw.samples], label="in memory (buffered)", color="#2f5bd3"
    )
    ax_wait.plot(
        t, [s.in_flight for s in raw.samples], label="of which in flight", color="#1aa3a3", lw=0.8
    )
    ax_wait.plot(
        t,
        [s.backlog if s.backlog is not None else math.nan for s in raw.samples],
        label="store backlog",
        color="#d98a00",
        lw=2,
    )
    ax_wait.fill_between(
        t,
        0.96,
        1.0,
        where=[not s.connected for s in raw.samples],
        step="post",
        transform=ax_wait.get_xaxis_transform(),
        color="#5b6170",
        alpha=0.8,
        lw=0,
        label="producer not connected",
    )
    ax_wait.set_ylabel("messages waiting")
    ax_wait.legend(loc="upper left", fontsize=8)

    for name, color in (
        ("accepted", "#2f5bd3"),
        ("confirmed", "#1f9d55"),
        ("spilled", "#d64545"),
        ("replayed", "#9b4dca"),
        ("delivered", "#333333"),
    ):
        ax_count.plot(
            t,
            [getattr(s, name) for s in raw.samples],
            label=name,
            color=color,
            ls="--" if name == "delivered" else "-",
        )
    ax_count.set_ylabel("messages since start")
    ax_count.legend(loc="upper left", fontsize=8, ncols=5)

    ok = [s for s in raw.sends if s.message_id is not None]
    refused = [s for s in raw.sends if s.message_id is None]
    ax_lat.scatter(
        [s.t for s in ok],
        [s.latency * 1e6 for s in ok],
        s=4,
        color="#2f5bd3",
        alpha=0.6,
        label="publish() accepted",
        lw=0,
    )
    if refused:
        ax_lat.scatter(
            [s.t for s in refused],
            [s.latency * 1e6 for s in refused],
            s=8,
            color="#d64545",
            label="publish() refused (BufferFull)",
            lw=0,
        )
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("publish() latency (µs)")
    ax_lat.set_xlabel(
        "seconds since start (red: from the stop command to the start command; amber: recovery)"
    )
    ax_lat.legend(loc="upper left", fontsize=8)

    o = raw.options
    fig.suptitle(
        f"{o.rate:g} msg/s, {o.cycles} x {o.outage:g}s outage, spill_after {o.spill_after:g}s, "
        f"{result.store.split()[0]} store — accepted {result.total.sent}, lost {result.lost}, "
        f"duplicates {result.duplicates}",
        fontsize=11,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
