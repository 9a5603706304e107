"""Replay rate: the standalone worker (``aioproducer replay``) against a producer's own replay task.

Each run leaves the same backlog in a fresh SQLite store (a producer pointed at a
closed port, then closed), then drains it to the broker either with the command, in
a subprocess, or with a Producer started on the store; the queue is purged between
runs. The rate is messages over the seconds from start to an empty store.

    .venv/bin/python -m bench.replay_rate -n 10000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aio_pika

from aioproducer import Producer, SQLiteStore

from .backlog import make_backlog

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def worker_run(path: Path, count: int) -> float:
    """Seconds the command took to drain the store, as it reports them: from its
    start (connected, backlog read) to its last deletion of confirmed messages."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aioproducer", "replay", "--sqlite", str(path),
        "--amqp", AMQP_URL, "--no-bar",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    text = out.decode()
    match = re.search(r"\((\d+) in ([\d.]+)s", text)
    if process.returncode != 0 or match is None or int(match.group(1)) != count:
        raise RuntimeError(f"replay failed: {text}")
    return float(match.group(2))


async def producer_run(path: Path, count: int) -> float:
    """Seconds from start() until a producer's replay task emptied the store."""
    store = SQLiteStore(path)
    started = time.perf_counter()
    producer = Producer(AMQP_URL, store=store, name="bench-replay")
    await producer.start()
    while producer.stats().replayed < count:  # noqa: ASYNC110 (polling stats is the point)
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    await producer.close()
    return seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for name in ("aio_pika", "aiormq", "aioproducer"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    queue = f"bench-replay-{os.urandom(4).hex()}"
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    declared = await channel.declare_queue(queue, durable=True)
    results: dict[str, list[float]] = {"worker": [], "producer": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                for how in ("worker", "producer"):
                    path = Path(tmp) / f"{how}-{run}.db"
                    await make_backlog(SQLiteStore(path), args.count, routing_keys=[queue])
                    go = worker_run if how == "worker" else producer_run
                    seconds = await go(path, args.count)
                    results[how].append(args.count / seconds)
                    print(f"run {run + 1} {how:8}: {args.count} in {seconds:.2f}s, "
                          f"{args.count / seconds:,.0f} msg/s", flush=True)  # fmt: skip
                    await declared.purge()
    finally:
        await channel.queue_delete(queue)
        await connection.close()
    for how, rates in results.items():
        print(f"{how:8}: median {statistics.median(rates):,.0f} msg/s over {len(rates)} runs")


if __name__ == "__main__":
    asyncio.run(main())
