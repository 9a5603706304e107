"""``python -m tests.soak`` (``scripts/soak``): see ``--help``.

Exits 0 when every accepted message was delivered, 1 on a loss (or when the store did
not empty or the queue did not go quiet in time), 2 when the broker or the store could
not be restored or the soak could not run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import shlex
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from ._plan import KINDS_BY_STORE, draw_plan, parse_kinds
from ._report import format_table, report_json
from ._run import DEFAULT_AMQP_URL, Outcome, Soak, SoakOptions

log = logging.getLogger("soak")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except those that are ``None`` or off (their help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _parser() -> argparse.ArgumentParser:
    d = SoakOptions()
    p = argparse.ArgumentParser(
        prog="scripts/soak",
        description=(
            "Publish at a steady rate against a real broker while applying one random fault "
            "per cycle; reconcile every message_id with a consumer; print a table per fault "
            "kind. Exits 1 on any loss, 2 when the broker or the store could not be restored."
        ),
        formatter_class=_Formatter,
    )
    p.add_argument("--cycles", type=int, default=d.cycles, help="faults to apply, one per cycle")
    p.add_argument("--seed", type=int, default=None, help="replay a run (default: a random seed)")
    p.add_argument("--rate", type=float, default=d.rate, help="publish() calls per second")
    p.add_argument(
        "--amqp", default=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL), help="the broker"
    )
    p.add_argument(
        "--node",
        default=None,
        help="rabbitmqctl node serving --amqp, e.g. soak@localhost (default: rabbitmqctl's own)",
    )
    p.add_argument(
        "--faults",
        default=None,
        help="comma-separated fault kinds (default: every kind the store supports: "
        + "; ".join(f"{store}: {','.join(kinds)}" for store, kinds in KINDS_BY_STORE.items())
        + ")",
    )
    p.add_argument(
        "--store",
        choices=sorted(KINDS_BY_STORE),
        default=d.store,
        help="nx: MongoStore on an nx-27017 server the soak runs; sqlite: SQLiteStore",
    )
    p.add_argument(
        "--spill-after",
        type=float,
        default=d.spill_after,
        metavar="SECONDS",
        help="the producer's spill_after",
    )
    p.add_argument(
        "--fault-seconds",
        type=float,
        default=d.fault_seconds,
        metavar="SECONDS",
        help="mean time a fault is held (each is drawn between 0.5x and 1.5x)",
    )
    p.add_argument(
        "--up-seconds",
        type=float,
        default=d.up_seconds,
        metavar="SECONDS",
        help="time without a fault after each one (and before the first)",
    )
    p.add_argument(
        "--heartbeat",
        type=int,
        default=d.heartbeat,
        metavar="SECONDS",
        help="the producer's AMQP heartbeat: how soon it notices a half-open connection",
    )
    p.add_argument(
        "--close-timeout",
        type=float,
        default=d.close_timeout,
        metavar="SECONDS",
        help="close(timeout) in a close-reopen fault",
    )
    p.add_argument(
        "--recover-timeout",
        type=float,
        default=d.recover_timeout,
        metavar="SECONDS",
        help="a cycle whose producer has not recovered by then is reported as a stall",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=d.drain_timeout,
        metavar="SECONDS",
        help="bound on the final flush, replay and wait for the queue",
    )
    p.add_argument(
        "--idle-seconds",
        type=float,
        default=d.idle_seconds,
        metavar="SECONDS",
        help="how long the queue must stay quiet before the final count",
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="store files, server and soak logs (default: a new temporary folder)",
    )
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write results here")
    p.add_argument("-v", "--verbose", action="store_true", help="log INFO lines to stderr too")
    return p


def _logging(work_dir: Path, verbose: bool) -> None:
    """Everything at INFO to ``soak.log`` in the work folder; warnings (or INFO) to stderr."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    to_file = logging.FileHandler(work_dir / "soak.log")
    to_file.setFormatter(fmt)
    root.addHandler(to_file)
    to_err = logging.StreamHandler()
    to_err.setFormatter(fmt)
    to_err.setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        # The faults make the library and aio-pika log every retry; the file keeps them.
        to_err.addFilter(lambda record: record.name.startswith("soak") or record.levelno >= 50)
    root.addHandler(to_err)


async def _run_guarded(soak: Soak, emit: Callable[[Outcome], int]) -> int:
    """Run ``soak`` and ``emit`` its outcome; the first SIGINT or SIGTERM cancels it (its
    cleanup then restores the broker and the store), later ones are ignored until then.

    The outcome is emitted before the event loop shuts down, so a background task that
    will not stop cannot hold the table back.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signalled: list[int] = []

    def on_signal(signum: int) -> None:
        if not signalled:
            print("interrupted: restoring the broker and the store", file=sys.stderr)
            task.cancel()
        else:
            print("still restoring the broker and the store; please wait", file=sys.stderr)
        signalled.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return emit(await soak.run())
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        kinds = parse_kinds(args.faults, args.store)
        if args.rate <= 0 or args.cycles < 0:
            raise ValueError("--rate must be > 0 and --cycles >= 0")
        seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
        plan = draw_plan(seed, args.cycles, kinds, args.fault_seconds)
    except ValueError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="aioproducer-soak-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    _logging(work_dir, args.verbose)
    command = shlex.join(
        ["scripts/soak", *argv, *([] if args.seed is not None else ["--seed", str(seed)])]
    )
    options = SoakOptions(
        cycles=args.cycles,
        rate=args.rate,
        amqp=args.amqp,
        node=args.node,
        store=args.store,
        spill_after=args.spill_after,
        fault_seconds=args.fault_seconds,
        up_seconds=args.up_seconds,
        heartbeat=args.heartbeat,
        close_timeout=args.close_timeout,
        recover_timeout=args.recover_timeout,
        drain_timeout=args.drain_timeout,
        idle_seconds=args.idle_seconds,
        work_dir=work_dir,
    )
    soak = Soak(options, plan, kinds=kinds, seed=seed, command=command, progress=sys.stderr)

    def emit(outcome: Outcome) -> int:
        return _emit(outcome, options, args.json)

    try:
        return asyncio.run(_run_guarded(soak, emit))
    except asyncio.CancelledError:
        print(f"soak interrupted (seed {seed}); files in {work_dir}", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as exc:
        log.exception("the soak could not run")
        print(f"soak: {exc} (files in {work_dir})", file=sys.stderr)
        return 2


def _emit(outcome: Outcome, options: SoakOptions, json_path: Path | None) -> int:
    """Print the table and what went wrong, write the JSON file; return the exit status."""
    report = outcome.report
    print(format_table(report))
    print(
        f"store {outcome.store}; queue {outcome.queue}; consumer-side redeliveries "
        f"{outcome.redelivered} (not counted); files in {options.work_dir}"
    )
    for stall in outcome.stalls:
        print(f"stall: {stall}")
    if outcome.exported:
        print(f"{outcome.exported} messages were written to fallback files in {options.work_dir}")
    if not outcome.drained:
        print(f"NOT drained: store left {outcome.stored_left}, or the queue never went quiet")
    if not outcome.restored:
        print("the broker or the store could NOT be restored: see soak.log")
    for kind, ids in report.lost_ids.items():
        print(f"lost under {kind} (first {len(ids)}): {' '.join(ids)}")
    sys.stdout.flush()
    if json_path is not None:
        data = report_json(
            report,
            options={k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            cycles=[asdict(c) for c in outcome.cycles],
            drained=outcome.drained,
            restored=outcome.restored,
            exported=outcome.exported,
            stored_left=outcome.stored_left,
            stalls=outcome.stalls,
            redelivered=outcome.redelivered,
            queue=outcome.queue,
            store=outcome.store,
        )
        json_path.write_text(json.dumps(data, indent=2) + "\n")
    if not outcome.restored:
        return 2
    return 1 if report.lost or not outcome.drained else 0


if __name__ == "__main__":
    sys.exit(main())
