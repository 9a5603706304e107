"""The outage experiment: publish at a steady rate while the broker is stopped and started,
then reconcile with a consumer, message by message.

``python -m demo_app.experiment --help`` runs it; :func:`run` is the same as a library call.
"""

from __future__ import annotations

from pathlib import Path

from ._report import ExperimentResult, PhaseRow, plot, summarize, write_files
from ._run import ExperimentError, ExperimentOptions, RawRun, run_experiment

__all__ = [
    "ExperimentError",
    "ExperimentOptions",
    "ExperimentResult",
    "PhaseRow",
    "RawRun",
    "plot",
    "run",
    "run_experiment",
    "summarize",
    "write_files",
]


async def run(options: ExperimentOptions) -> tuple[ExperimentResult, list[Path]]:
    """Run the experiment, write its files (and plot) to ``options.out_dir``, return both."""
    raw = await run_experiment(options)
    result = summarize(raw)
    paths = write_files(raw, result, options.out_dir)
    if options.plot:
        paths.append(plot(raw, result, options.out_dir / "experiment.png"))
    return result, paths
