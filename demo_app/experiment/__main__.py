"""``python -m demo_app.experiment``: see ``--help``. Exits 1 when a message was lost."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import ExperimentError, ExperimentOptions, run
from ._run import DEFAULT_AMQP_URL


def _parser() -> argparse.ArgumentParser:
    d = ExperimentOptions()
    p = argparse.ArgumentParser(
        prog="python -m demo_app.experiment",
        description=(
            "Publish at a steady rate through broker outages, then reconcile every message "
            "with a consumer. Prints a table per phase; exits 1 if any message was lost."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--amqp-url", default=os.environ.get("AMQP_URL", DEFAULT_AMQP_URL))
    p.add_argument("--rate", type=float, default=d.rate, help="publish() calls per second")
    p.add_argument(
        "--outage",
        type=float,
        default=d.outage,
        metavar="SECONDS",
        help="how long the broker stays stopped per cycle",
    )
    p.add_argument(
        "--up",
        type=float,
        default=d.up,
        metavar="SECONDS",
        help="how long the broker runs before each outage",
    )
    p.add_argument("--cycles", type=int, default=d.cycles, help="number of outages")
    p.add_argument(
        "--stop-cmd",
        default=d.stop_command,
        help="command that stops the broker, e.g. 'docker compose stop rabbitmq'",
    )
    p.add_argument(
        "--start-cmd",
        default=d.start_command,
        help="command that starts it again, e.g. 'docker compose start rabbitmq'",
    )
    p.add_argument(
        "--store",
        default=os.environ.get("MONGO_URL") or None,
        help="SQLite file or mongodb:// URL (default: env MONGO_URL, else "
        "OUT/spill.db, emptied first)",
    )
    p.add_argument("--mongo-database", default=d.mongo_database)
    p.add_argument("--mongo-collection", default=d.mongo_collection)
    p.add_argument("--out", type=Path, default=d.out_dir, help="output directory")
    p.add_argument(
        "--queue",
        default=None,
        help="queue to publish to (default: a fresh one, deleted afterwards)",
    )
    p.add_argument("--exchange", default="", help="publish through this direct exchange")
    p.add_argument("--spill-after", type=float, default=d.spill_after, metavar="SECONDS")
    p.add_argument("--max-buffer", type=int, default=d.max_buffer)
    p.add_argument("--recovery-timeout", type=float, default=d.recovery_timeout, metavar="SECONDS")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout, metavar="SECONDS")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="do not draw experiment.png")
    p.add_argument("-v", "--verbose", action="store_true", help="log the producer's INFO lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if not args.verbose:
        # The outages make aio-pika and aiormq log every failed reconnection as an error.
        for name in ("aio_pika", "aiormq"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    options = ExperimentOptions(
        amqp_url=args.amqp_url,
        rate=args.rate,
        outage=args.outage,
        up=args.up,
        cycles=args.cycles,
        stop_command=args.stop_cmd,
        start_command=args.start_cmd,
        store=args.store,
        mongo_database=args.mongo_database,
        mongo_collection=args.mongo_collection,
        out_dir=args.out,
        queue=args.queue,
        exchange=args.exchange,
        spill_after=args.spill_after,
        max_buffer=args.max_buffer,
        recovery_timeout=args.recovery_timeout,
        drain_timeout=args.drain_timeout,
        progress=not args.no_progress,
        plot=not args.no_plot,
    )
    try:
        result, paths = asyncio.run(run(options))
    except (ExperimentError, ValueError) as exc:
        print(f"experiment: {exc}", file=sys.stderr)
        return 2
    print()
    print(result.table())
    print()
    print(result.summary())
    print("wrote " + ", ".join(str(p) for p in paths))
    return 1 if result.lost or not result.drained else 0


if __name__ == "__main__":
    sys.exit(main())
