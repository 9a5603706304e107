"""Replay against live throughput alone: the harness's goal ratio without its full run.

Runs the harness cases ``aioproducer`` (live publishing) and ``replay mongo`` or
``replay sqlite`` one after the other in each repeat, each in a fresh process as the
harness does (a quarter as many messages for MongoDB, as there), and prints each
pair's rates and ratio::

    .venv/bin/python -m bench.replay_ratio --case "replay mongo" --repeats 3

Needs the broker of :data:`bench.harness.URL`; run it under the broker lock when
tests may stop the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid

from bench import harness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=["replay mongo", "replay sqlite"], default="replay mongo")
    parser.add_argument("--messages", type=int, default=20_000, help="live; MongoDB replays /4")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    replayed = args.messages // (4 if "mongo" in args.case else 1)
    queue = f"bench-ratio-{uuid.uuid4().hex[:8]}"
    asyncio.run(harness.declare(queue))
    ratios = []
    try:
        for _ in range(args.repeats):
            live = harness.rate(harness.run_case("aioproducer", args.messages, 256, queue))
            asyncio.run(harness.purge(queue))
            replay = harness.rate(harness.run_case(args.case, replayed, 256, queue))
            asyncio.run(harness.purge(queue))
            ratios.append(replay / live)
            print(f"live {live:,.0f}/s  {args.case} {replay:,.0f}/s  ratio {replay / live:.2f}x")
    finally:
        asyncio.run(harness.purge(queue, delete=True))
    print(f"median ratio {statistics.median(ratios):.2f}x over {len(ratios)} repeats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
