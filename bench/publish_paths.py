"""publish() connected and with the broker unreachable, beside the in-memory floor.

Both producers and the floor live in one process and are timed in turns, several
rounds, so that the machine's noise falls on all three alike; then one cProfile of
publish() on the connected producer shows where its time goes.

    .venv/bin/python -m bench.publish_paths --calls 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from aioproducer import Producer, SQLiteStore

URL = os.environ.get("AIOPRODUCER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
#: A port nothing listens on: connecting is refused at once.
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/"
BODY = b"x" * 256
QUEUE = "bench-publish-paths"


async def percentiles(call: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    """p50 and p99 of ``n`` calls, in microseconds."""
    gc.collect()
    times: list[int] = []
    for _ in range(n):
        started = time.perf_counter_ns()
        await call()
        times.append(time.perf_counter_ns() - started)
    times.sort()
    return times[n // 2] / 1000, times[int(n * 0.99)] / 1000


async def main(calls: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        size = (rounds + 2) * calls
        up = Producer(URL, store=SQLiteStore(Path(tmp) / "up.db"), max_buffer=size, spill_after=600)
        down = Producer(
            UNREACHABLE,
            store=SQLiteStore(Path(tmp) / "down.db"),
            max_buffer=size,
            spill_after=600,
            connect_timeout=1.0,
        )
        await up.start()
        await down.start()
        await up.publish(BODY, routing_key=QUEUE)
        if not await up.flush(timeout=30):
            raise RuntimeError("not connected")
        floor: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()

        async def in_memory() -> None:
            floor.put_nowait((uuid.uuid4().hex, QUEUE, BODY))

        async def connected() -> None:
            await up.publish(BODY, routing_key=QUEUE)

        async def unreachable() -> None:
            await down.publish(BODY, routing_key=QUEUE)

        cases = (("floor", in_memory), ("connected", connected), ("unreachable", unreachable))
        print("round  case         p50 µs  p99 µs")
        for round_ in range(rounds):
            for name, call in cases:
                p50, p99 = await percentiles(call, calls)
                print(f"{round_:>5}  {name:<11} {p50:>7.2f} {p99:>7.2f}")
            if not await up.flush(timeout=300):
                raise RuntimeError("not flushed")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(calls):
            await connected()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(10)
        await up.close(timeout=30)
        await down.close(timeout=5)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))


if __name__ == "__main__":
    cli()
