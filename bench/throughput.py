"""Publish cost and confirmed throughput: aioproducer beside raw aio-pika and aiormq.

Every contender publishes the same persistent 256-byte messages with publisher
confirms to a fresh durable queue on the same broker, in one run, so the figures
compare as ratios on a noisy machine.

    .venv/bin/python -m bench.throughput --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aiormq

from aioproducer import Producer, SQLiteStore

URL = os.environ.get("AIOPRODUCER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BODY = {"pad": "x" * 246}  # 256 bytes as compact JSON


@dataclass
class Row:
    name: str
    messages: int
    seconds: float
    call_us: list[float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def cells(self) -> list[str]:
        ordered = sorted(self.call_us)
        p50 = statistics.median(ordered)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        return [self.name, f"{self.rate:,.0f}", f"{p50:,.1f}", f"{p99:,.1f}", f"{ordered[-1]:,.0f}"]


def body() -> bytes:
    data = json.dumps(BODY, separators=(",", ":")).encode()
    assert len(data) == 256
    return data


async def fresh_queue(connection: aio_pika.abc.AbstractConnection) -> str:
    channel = await connection.channel()
    name = f"bench-{os.urandom(4).hex()}"
    await channel.declare_queue(name, durable=True)
    await channel.close()
    return name


async def timed(
    name: str,
    n: int,
    setup: Callable[[], Awaitable[Callable[[int], Awaitable[None]]]],
    finish: Callable[[], Awaitable[None]],
) -> Row:
    """Call the contender ``n`` times, timing each call, then wait for all confirms."""
    publish = await setup()
    calls: list[float] = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        await publish(i)
        calls.append((time.perf_counter() - t0) * 1e6)
    await finish()
    return Row(name, n, time.perf_counter() - started, calls)


async def bench_handoff(n: int) -> Row:
    """The floor: what any in-memory hand-off costs (uuid4, json.dumps, put_nowait)."""
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def setup() -> Callable[[int], Awaitable[None]]:
        async def publish(_: int) -> None:
            queue.put_nowait((uuid.uuid4().hex, json.dumps(BODY).encode()))

        return publish

    async def finish() -> None:
        return None

    return await timed(
        "in-memory hand-off (uuid4 + json + put_nowait), no broker", n, setup, finish
    )


async def bench_aioproducer(n: int, queue: str, store_dir: Path) -> Row:
    producer = Producer(URL, store=SQLiteStore(store_dir / "bench.db"), max_buffer=2 * n + 2)

    async def setup() -> Callable[[int], Awaitable[None]]:
        await producer.start()
        # Connect before the clock starts, as the other contenders do.
        await producer.publish(BODY, routing_key=queue)
        if not await producer.flush(timeout=30):
            raise RuntimeError("aioproducer did not connect")

        async def publish(_: int) -> None:
            await producer.publish(BODY, routing_key=queue)

        return publish

    async def finish() -> None:
        if not await producer.flush(timeout=300):
            raise RuntimeError("aioproducer did not flush")
        stats = producer.stats()
        await producer.close()
        if stats.confirmed != n + 1:
            raise RuntimeError(f"only {stats.confirmed} of {n + 1} confirmed directly")

    return await timed("aioproducer publish() + flush()", n, setup, finish)


async def bench_aio_pika_serial(n: int, queue: str, data: bytes) -> Row:
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)

    async def setup() -> Callable[[int], Awaitable[None]]:
        async def publish(_: int) -> None:
            message = aio_pika.Message(
                data, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=uuid.uuid4().hex
            )
            await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)

        return publish

    async def finish() -> None:
        await connection.close()

    return await timed("aio-pika, one await publish() at a time", n, setup, finish)


async def pipelined(
    name: str,
    n: int,
    publish_one: Callable[[], Awaitable[object]],
    close: Callable[[], Awaitable[None]],
    window: int,
) -> Row:
    """Run ``publish_one`` with up to ``window`` calls awaiting their confirms at once."""
    slots = asyncio.Semaphore(window)
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            await publish_one()
        finally:
            slots.release()

    async def setup() -> Callable[[int], Awaitable[None]]:
        async def publish(_: int) -> None:
            await slots.acquire()
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)

        return publish

    async def finish() -> None:
        await asyncio.gather(*pending)
        await close()

    return await timed(f"{name} pipelined ({window} in flight)", n, setup, finish)


async def bench_aio_pika_pipelined(n: int, queue: str, data: bytes, window: int = 1000) -> Row:
    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=True)

    async def publish_one() -> object:
        message = aio_pika.Message(
            data, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=uuid.uuid4().hex
        )
        return await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)

    return await pipelined("aio-pika", n, publish_one, connection.close, window)


async def bench_aiormq_pipelined(n: int, queue: str, data: bytes, window: int = 1000) -> Row:
    connection = await aiormq.connect(URL)
    channel = await connection.channel(publisher_confirms=True)

    async def publish_one() -> object:
        properties = aiormq.spec.Basic.Properties(delivery_mode=2, message_id=os.urandom(16).hex())
        return await channel.basic_publish(
            data, routing_key=queue, properties=properties, mandatory=True
        )

    async def close() -> None:
        await connection.close()

    return await pipelined("raw aiormq", n, publish_one, close, window)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    n: int = args.messages
    data = body()
    admin = await aio_pika.connect(URL)
    rows: list[Row] = []
    queues: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(await bench_handoff(n))
        contenders: list[Callable[[str], Awaitable[Row]]] = [
            lambda q: bench_aioproducer(n, q, Path(tmp)),
            lambda q: bench_aio_pika_serial(n, q, data),
            lambda q: bench_aio_pika_pipelined(n, q, data),
            lambda q: bench_aiormq_pipelined(n, q, data),
        ]
        for run in contenders:
            queue = await fresh_queue(admin)
            queues.append(queue)
            rows.append(await run(queue))
    channel = await admin.channel()
    for queue in queues:
        await channel.queue_delete(queue)
    await admin.close()

    header = ["publisher", "msg/s confirmed", "call p50 µs", "call p99 µs", "call max µs"]
    table = [header, ["---"] * len(header), *(row.cells() for row in rows)]
    print(f"{n} persistent messages of 256 B, publisher confirms, broker at {URL.split('@')[-1]}\n")
    for line in table:
        print("| " + " | ".join(line) + " |")


if __name__ == "__main__":
    asyncio.run(main())
