"""Python calls and event-loop callbacks per confirmed message, counted by cProfile.

aioproducer's live path beside raw aiormq with 1,000 publishes in flight, on the same
broker. Counts, unlike times, do not depend on how loaded the machine is.

    .venv/bin/python -m bench.calls --messages 5000 --queue QUEUE
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiormq

from aioproducer import Producer, SQLiteStore

URL = os.environ.get("AIOPRODUCER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def ours(n: int, body: bytes, queue: str) -> cProfile.Profile:
    with tempfile.TemporaryDirectory() as tmp:
        producer = Producer(URL, store=SQLiteStore(Path(tmp) / "c.db"), max_buffer=2 * n + 2)
        await producer.start()
        await producer.publish(body, routing_key=queue)
        await producer.flush(timeout=60)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            await producer.publish(body, routing_key=queue)
        await producer.flush(timeout=600)
        profile.disable()
        await producer.close()
        return profile


async def theirs(n: int, body: bytes, queue: str) -> cProfile.Profile:
    connection = await aiormq.connect(URL)
    channel = await connection.channel(publisher_confirms=True)
    slots = asyncio.Semaphore(1000)
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            properties = aiormq.spec.Basic.Properties(delivery_mode=2, message_id=uuid.uuid4().hex)
            await channel.basic_publish(
                body, routing_key=queue, properties=properties, mandatory=True
            )
        finally:
            slots.release()

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(n):
        await slots.acquire()
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    profile.disable()
    await connection.close()
    return profile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--queue", required=True, help="a durable queue that exists")
    args = parser.parse_args()
    body = os.urandom(256)
    runs: list[tuple[str, Callable[..., Coroutine[Any, Any, cProfile.Profile]]]] = [
        ("aioproducer", ours),
        ("raw aiormq, 1,000 in flight", theirs),
    ]
    for name, run in runs:
        stats = pstats.Stats(asyncio.run(run(args.messages, body, args.queue)))
        table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        calls = sum(row[1] for row in table.values())
        callbacks = sum(row[1] for key, row in table.items() if key[2] == "_run")
        print(
            f"{name}: {calls / args.messages:.0f} Python calls, "
            f"{callbacks / args.messages:.1f} event-loop callbacks per message"
        )


if __name__ == "__main__":
    main()
