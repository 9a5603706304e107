"""One benchmark case, run in a process of its own: ``python -m bench.contenders CASE ...``.

Each case prints one JSON line: messages, wall seconds, client CPU seconds (user +
sys of this process over the timed part), per-call times of the publish call and
the peak RSS. The harness (:mod:`bench.harness`) runs every case in a fresh process,
so one case's threads, garbage or imports never count against another's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aioproducer import Producer, SQLiteStore, Store

URL = os.environ.get("AIOPRODUCER_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/"
Publish = Callable[[], Awaitable[object]]


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summary(n: int, seconds: float, cpu_seconds: float, calls: list[float]) -> dict[str, Any]:
    ordered = sorted(calls)
    return {
        "messages": n,
        "seconds": seconds,
        "cpu": cpu_seconds,
        "p50": statistics.median(ordered) if ordered else 0.0,
        "p99": ordered[max(0, int(len(ordered) * 0.99) - 1)] if ordered else 0.0,
        "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


async def timed(
    n: int, publish: Callable[[], Awaitable[object]], finish: Publish
) -> dict[str, Any]:
    """Call ``publish`` ``n`` times, timing each call, then ``finish`` (wait for confirms)."""
    calls: list[float] = []
    gc.collect()
    started, cpu0 = time.perf_counter(), cpu()
    for _ in range(n):
        t0 = time.perf_counter()
        await publish()
        calls.append((time.perf_counter() - t0) * 1e6)
    await finish()
    return summary(n, time.perf_counter() - started, cpu() - cpu0, calls)


def windowed(publish_one: Publish, window: int) -> tuple[Publish, Publish]:
    """A publish call that keeps up to ``window`` publishes awaiting their confirms."""
    slots = asyncio.Semaphore(window)
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        try:
            await publish_one()
        finally:
            slots.release()

    async def publish() -> None:
        await slots.acquire()
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def finish() -> None:
        await asyncio.gather(*pending)

    return publish, finish


async def floor(n: int, body: bytes, queue: str) -> dict[str, Any]:
    """The in-memory floor: a message id, a record, put_nowait; no broker."""
    q: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()

    async def publish() -> None:
        q.put_nowait((uuid.uuid4().hex, queue, body))

    async def finish() -> None:
        return None

    return await timed(n, publish, finish)


async def aioproducer(n: int, body: bytes, queue: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        # The whole run is accepted at once, faster than any broker confirms it: a
        # long deadline keeps this the live path (the spill path is a case of its own).
        producer = Producer(
            URL, store=SQLiteStore(Path(tmp) / "b.db"), max_buffer=2 * n + 2, spill_after=600
        )
        await producer.start()
        # Connected before the clock starts, as the other contenders are.
        await producer.publish(body, routing_key=queue)
        if not await producer.flush(timeout=60):
            raise RuntimeError("aioproducer did not connect")

        async def publish() -> None:
            await producer.publish(body, routing_key=queue)

        async def finish() -> None:
            if not await producer.flush(timeout=600):
                raise RuntimeError("aioproducer did not flush")

        row = await timed(n, publish, finish)
        stats = producer.stats()
        await producer.close()
        if stats.confirmed != n + 1 or stats.spilled:
            raise RuntimeError(f"{stats.confirmed} of {n + 1} confirmed, {stats.spilled} stored")
        return row


async def aio_pika_case(
    n: int, body: bytes, queue: str, *, window: int, confirms: bool
) -> dict[str, Any]:
    import aio_pika

    connection = await aio_pika.connect(URL)
    channel = await connection.channel(publisher_confirms=confirms)
    exchange = channel.default_exchange

    async def publish_one() -> object:
        message = aio_pika.Message(
            body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=uuid.uuid4().hex
        )
        return await exchange.publish(message, routing_key=queue, mandatory=confirms)

    async def done() -> None:
        return None

    publish, finish = windowed(publish_one, window) if window > 1 else (publish_one, done)
    row = await timed(n, publish, finish)
    await connection.close()
    return row


async def aiormq_case(n: int, body: bytes, queue: str) -> dict[str, Any]:
    import aiormq

    connection = await aiormq.connect(URL)
    channel = await connection.channel(publisher_confirms=True)

    async def publish_one() -> object:
        properties = aiormq.spec.Basic.Properties(delivery_mode=2, message_id=uuid.uuid4().hex)
        return await channel.basic_publish(
            body, routing_key=queue, properties=properties, mandatory=True
        )

    publish, finish = windowed(publish_one, 1000)
    row = await timed(n, publish, finish)
    await connection.close()
    return row


async def faststream_case(n: int, body: bytes, queue: str) -> dict[str, Any]:
    from faststream.rabbit import RabbitBroker

    broker = RabbitBroker(URL, logger=None)
    await broker.start()

    async def publish_one() -> object:
        return await broker.publish(
            body, queue=queue, persist=True, message_id=uuid.uuid4().hex, mandatory=True
        )

    publish, finish = windowed(publish_one, 1000)
    row = await timed(n, publish, finish)
    await broker.stop()
    return row


async def kombu_case(n: int, body: bytes, queue: str) -> dict[str, Any]:
    from kombu import Connection  # type: ignore[attr-defined]

    connection = Connection(URL, transport_options={"confirm_publish": True})  # type: ignore[no-untyped-call]
    producer = connection.Producer()  # type: ignore[no-untyped-call]

    async def publish() -> None:
        # kombu is synchronous: each call returns once the broker confirmed it.
        producer.publish(
            body,
            routing_key=queue,
            delivery_mode=2,
            content_type="application/octet-stream",
            content_encoding="binary",
            message_id=uuid.uuid4().hex,
            mandatory=True,
        )

    async def finish() -> None:
        return None

    row = await timed(n, publish, finish)
    connection.release()  # type: ignore[no-untyped-call]
    return row


# -- the producer's own paths ---------------------------------------------------------


async def spill(n: int, body: bytes, queue: str) -> dict[str, Any]:
    """Broker unreachable (a closed port): every message goes to SQLite on its deadline.

    The per-call times are publish() with no broker. The rate is messages over the
    seconds from the first publish() until the store holds them all.
    """
    with tempfile.TemporaryDirectory() as tmp:
        producer = Producer(
            CLOSED_PORT_URL,
            store=SQLiteStore(Path(tmp) / "s.db"),
            spill_after=0.05,
            max_buffer=n + 1,
            connect_timeout=1.0,
        )
        await producer.start()

        async def publish() -> None:
            await producer.publish(body, routing_key=queue)

        async def finish() -> None:
            while producer.stats().spilled < n:  # noqa: ASYNC110 (polling stats is the point)
                await asyncio.sleep(0.005)

        row = await timed(n, publish, finish)
        await producer.close(timeout=5)
        return row


async def _replay_from(store: Store, n: int, queue: str) -> dict[str, Any]:
    from bench.backlog import make_backlog

    await make_backlog(store, n, routing_keys=[queue])
    await store.close()
    gc.collect()
    started, cpu0 = time.perf_counter(), cpu()
    producer = Producer(URL, store=store, name="bench-replay")
    await producer.start()
    end = started + 60 + n / 100
    while producer.stats().replayed < n:
        if time.perf_counter() > end:
            raise RuntimeError(f"replayed {producer.stats().replayed} of {n}")
        await asyncio.sleep(0.005)
    row = summary(n, time.perf_counter() - started, cpu() - cpu0, [])
    await producer.close()
    return row


async def replay_sqlite(n: int, body: bytes, queue: str) -> dict[str, Any]:
    """A backlog of ``n`` in SQLite, drained by a producer's replay: start() to all confirmed."""
    with tempfile.TemporaryDirectory() as tmp:
        return await _replay_from(SQLiteStore(Path(tmp) / "r.db"), n, queue)


async def replay_mongo(n: int, body: bytes, queue: str) -> dict[str, Any]:
    """The same from MongoDB (nx-27017, a MongoDB wire server on SQLite)."""
    from aioproducer import MongoStore
    from tests.stores.nx import NxServer

    with tempfile.TemporaryDirectory() as tmp:
        server = NxServer(Path(tmp) / "nx")
        server.start()
        try:
            # nx-27017 runs no update pipelines: leases on this host's clock.
            store = MongoStore.from_url(
                server.url, database="bench", collection="spill", clock=time.time
            )
            return await _replay_from(store, n, queue)
        finally:
            server.kill()


async def memory(n: int, body: bytes, queue: str) -> dict[str, Any]:
    """Bytes held per buffered message beyond its body (broker unreachable, nothing spilled)."""
    with tempfile.TemporaryDirectory() as tmp:
        producer = Producer(
            CLOSED_PORT_URL,
            store=SQLiteStore(Path(tmp) / "m.db"),
            spill_after=3600,
            max_buffer=n + 1,
            connect_timeout=1.0,
        )
        await producer.start()
        bodies = [os.urandom(len(body)) for _ in range(n)]  # the caller's, not counted
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for data in bodies:
            await producer.publish(data, routing_key=queue)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        row = summary(n, 0.0, 0.0, [])
        row["overhead_bytes"] = (after - before) / n
        await producer.close(timeout=1)
        return row


async def _declare(url: str, queue: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    await channel.declare_queue(queue, durable=True)
    await connection.close()


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


async def _ctl(node: str, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-n", node, *args, stdout=asyncio.subprocess.DEVNULL
    )
    if await process.wait() != 0:
        raise RuntimeError(f"rabbitmqctl -n {node} {' '.join(args)} failed")


async def recovery(n: int, body: bytes, queue: str) -> dict[str, Any]:
    """Seconds from a stopped private node's port reopening to the producer's first confirm.

    ``AIOPRODUCER_BENCH_NODE`` (name@localhost) and ``AIOPRODUCER_BENCH_NODE_PORT`` name
    a node of scripts/rabbitmq-node; the shared broker is never stopped. One trial;
    the harness repeats it. The producer runs with its default settings.
    """
    node = os.environ["AIOPRODUCER_BENCH_NODE"]
    port = int(os.environ["AIOPRODUCER_BENCH_NODE_PORT"])
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    await _declare(url, queue)
    with tempfile.TemporaryDirectory() as tmp:
        producer = Producer(url, store=SQLiteStore(Path(tmp) / "r.db"), spill_after=60)
        await producer.start()
        await producer.publish(body, routing_key=queue)
        if not await producer.flush(timeout=60):
            raise RuntimeError("no first confirm from the private node")
        await _ctl(node, "stop_app")
        calls: list[float] = []
        for _ in range(100):  # publish() with the broker stopped
            t0 = time.perf_counter()
            await producer.publish(body, routing_key=queue)
            calls.append((time.perf_counter() - t0) * 1e6)
        await asyncio.sleep(1.0)  # let the producer notice and back off, as in an outage
        confirmed = producer.stats().confirmed
        start_app = asyncio.create_task(_ctl(node, "start_app"))
        while not _port_open(port):  # noqa: ASYNC110 (the port is what is measured)
            await asyncio.sleep(0.005)
        opened = time.perf_counter()
        while producer.stats().confirmed == confirmed:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        seconds = time.perf_counter() - opened
        await start_app
        await producer.flush(timeout=30)
        await producer.close()
        return summary(1, seconds, 0.0, calls)


async def alarm(n: int, body: bytes, queue: str) -> dict[str, Any]:
    """publish() on a connection the private node blocks (a memory alarm)."""
    node = os.environ["AIOPRODUCER_BENCH_NODE"]
    port = int(os.environ["AIOPRODUCER_BENCH_NODE_PORT"])
    url = f"amqp://guest:guest@127.0.0.1:{port}/"
    await _declare(url, queue)
    with tempfile.TemporaryDirectory() as tmp:
        producer = Producer(url, store=SQLiteStore(Path(tmp) / "a.db"), max_buffer=n + 2)
        await producer.start()
        await producer.publish(body, routing_key=queue)
        if not await producer.flush(timeout=60):
            raise RuntimeError("no first confirm from the private node")
        await _ctl(node, "set_vm_memory_high_watermark", "0.0000001")
        try:
            # The broker blocks a connection that publishes during the alarm.
            await producer.publish(body, routing_key=queue)
            end = time.perf_counter() + 30
            while not producer.stats().blocked and time.perf_counter() < end:  # noqa: ASYNC110
                await asyncio.sleep(0.05)

            async def publish() -> None:
                await producer.publish(body, routing_key=queue)

            async def finish() -> None:
                return None

            row = await timed(n, publish, finish)
            row["blocked"] = producer.stats().blocked
        finally:
            await _ctl(node, "set_vm_memory_high_watermark", "0.4")
        await producer.flush(timeout=60)
        await producer.close()
        return row


CASES: dict[str, Callable[[int, bytes, str], Coroutine[Any, Any, dict[str, Any]]]] = {
    "floor": floor,
    "aioproducer": aioproducer,
    "aio-pika serial": lambda n, b, q: aio_pika_case(n, b, q, window=1, confirms=True),
    "aio-pika 1000": lambda n, b, q: aio_pika_case(n, b, q, window=1000, confirms=True),
    "aio-pika no confirms": lambda n, b, q: aio_pika_case(n, b, q, window=1, confirms=False),
    "aiormq 1000": aiormq_case,
    "faststream 1000": faststream_case,
    "kombu confirm": kombu_case,
    "spill": spill,
    "replay sqlite": replay_sqlite,
    "replay mongo": replay_mongo,
    "memory": memory,
    "recovery": recovery,
    "alarm": alarm,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    for name in ("aio_pika", "aiormq", "aioproducer", "faststream", "kombu"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.basicConfig(level=logging.CRITICAL)
    body = os.urandom(args.size)
    row = asyncio.run(CASES[args.case](args.messages, body, args.queue))
    print(json.dumps(row), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
