"""publish() called now and then, as a request handler does, beside a bare hand-off.

Each call follows a 10 ms sleep, so it runs cold (caches, branch predictors, a vCPU
that was idle). The producer points at a closed port: no broker is involved.

    .venv/bin/python -m bench.cold_call --calls 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aioproducer import Producer, SQLiteStore


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pause", type=float, default=0.01, help="seconds between calls")
    args = parser.parse_args()
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        producer = Producer(
            "amqp://guest:guest@127.0.0.1:1/",
            store=SQLiteStore(Path(tmp) / "cold.db"),
            spill_after=3600,
            max_buffer=args.calls + 1,
        )
        await producer.start()
        ours: list[float] = []
        bare: list[float] = []
        for n in range(args.calls):
            await asyncio.sleep(args.pause)
            began = time.perf_counter()
            await producer.publish({"seq": n, "sent_at": time.time()}, routing_key="cold")
            ours.append((time.perf_counter() - began) * 1e6)
            await asyncio.sleep(args.pause)
            began = time.perf_counter()
            queue.put_nowait((uuid.uuid4().hex, json.dumps({"seq": n}).encode()))
            bare.append((time.perf_counter() - began) * 1e6)
        await producer.close(timeout=0)
    print(f"{args.calls} calls, each after a {args.pause * 1000:.0f} ms sleep\n")
    print("| call | p50 µs | p99 µs |")
    print("| --- | --- | --- |")
    for name, values in (("aioproducer publish()", ours), ("uuid4 + json + put_nowait", bare)):
        print(f"| {name} | {statistics.median(values):.1f} | {percentile(values, 0.99):.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
