"""Node kills and rolling restarts of a three-node cluster under a steady publish load.

Forms the private cluster of ``tests/cluster.py`` (ports 5681-5683, beside the system
broker), then, on a fresh quorum queue each time, runs ``--kills`` kills (``kill -9``)
of the node the producer is connected to and ``--rolling`` rolling restarts of the
three nodes, and prints one table row per run::

    .venv/bin/python -m bench.cluster_runs --kills 12 --rolling 3

A row gives the messages sent and delivered (each ``message_id`` counted once), the
ones lost (sent, never delivered) and the duplicates, the longest ``publish()`` call
(wall time and this thread's CPU time: the difference is time spent waiting for a CPU
of a busy machine, not for the broker), the seconds from each fault to the first
confirm of a *live* publish on another node, and the channels the producer replaced
because the broker nacked them for good. Needs root (the nodes run as ``rabbitmq``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from aioproducer import Backoff, Producer, SQLiteStore
from tests.broker import drain, wait_for_ids
from tests.cluster import Cluster, more_confirms
from tests.load import Load, steady_load
from tests.waiting import store_is_empty, wait_until

#: The integration tests' quick retries.
OPTIONS: dict[str, Any] = {
    "spill_after": 1.0,
    "replay_interval": 0.2,
    "confirm_timeout": 2.0,
    "reconnect_backoff": Backoff(base=0.05, cap=0.5),
    "retry_backoff": Backoff(base=0.1, cap=0.5),
    "store_backoff": Backoff(base=0.05, cap=0.5),
}


class Replacements(logging.Handler):
    """Counts the producer's log lines for a replaced channel."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "replacing it with a new channel" in record.getMessage():
            self.count += 1


@dataclass
class Row:
    run: str
    sent: int = 0
    delivered: int = 0
    duplicates: int = 0
    longest: float = 0.0
    longest_cpu: float = 0.0
    to_confirm: list[float] = field(default_factory=list)
    replaced: int = 0

    def line(self) -> str:
        confirms = ", ".join(f"{seconds:.2f}" for seconds in self.to_confirm) or "-"
        return (
            f"| {self.run} | {self.sent} | {self.delivered} | {self.sent - self.delivered} "
            f"| {self.duplicates} | {self.longest * 1e3:.1f} ({self.longest_cpu * 1e3:.2f}) "
            f"| {confirms} | {self.replaced} |"
        )


async def live_confirm_elsewhere(producer: Producer, left: str, since: float) -> float:
    """Seconds from ``since`` to a live confirm over a connection to a node but ``left``."""
    await wait_until(lambda: producer.stats().broker not in (None, left), timeout=60, what="a move")
    await wait_until(more_confirms(producer, 1), timeout=60, what="a confirm")
    return time.perf_counter() - since


async def fresh_queue(cluster: Cluster) -> str:
    name = f"bench-quorum-{os.urandom(6).hex()}"
    connection = await aio_pika.connect(cluster.nodes[0].url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    return name


async def count(cluster: Cluster, producer: Producer, load: Load, queue: str, row: Row) -> None:
    store = producer.store
    assert isinstance(store, SQLiteStore)
    await wait_until(store_is_empty(store), timeout=120, what="the store drained")
    await wait_until(lambda: producer.stats().buffered == 0, timeout=60, what="buffer empty")
    connection = await aio_pika.connect(next(n for n in cluster.nodes if n.running).url)
    async with connection:
        got = await wait_for_ids(connection, queue, set(load.ids), timeout=60)
        got += await drain(connection, queue)
        await (await connection.channel()).queue_delete(queue)
    counts = Counter(received.message_id for received in got)
    row.sent = len(load.ids)
    row.delivered = len(counts.keys() & set(load.ids))
    row.duplicates = sum(counts.values()) - len(counts)
    longest = max(range(len(load.marked)), key=load.marked.__getitem__)
    row.longest, row.longest_cpu = load.marked[longest], load.marked_cpu[longest]


async def one_run(cluster: Cluster, run: str, rolling: bool, folder: Path) -> Row:
    await cluster.heal()
    queue = await fresh_queue(cluster)
    row = Row(run)
    handler = Replacements()
    logger = logging.getLogger("aioproducer.connection")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    producer = Producer(
        cluster.urls, store=SQLiteStore(folder / f"{run}.db"), fallback_dir=folder, **OPTIONS
    )
    await producer.start()
    try:
        await wait_until(lambda: producer.stats().connected, timeout=60, what="a connection")
        async with steady_load(producer, queue) as load:
            load.marking = True
            await wait_until(lambda: producer.stats().confirmed >= 200, what="confirms")
            for node in cluster.nodes if rolling else [cluster.by_url(producer.stats().broker)]:
                left = producer.stats().broker
                assert left is not None
                on_it = cluster.by_url(left) is node
                if rolling:
                    await cluster.safe_to_stop(node)
                started = time.perf_counter()
                fault = asyncio.create_task(cluster.stop(node) if rolling else cluster.kill(node))
                if on_it:
                    row.to_confirm.append(await live_confirm_elsewhere(producer, left, started))
                await fault
                if rolling:
                    await cluster.start(node)
                await wait_until(more_confirms(producer, 200), timeout=60, what="confirms")
        await count(cluster, producer, load, queue, row)
    finally:
        await producer.close(timeout=5)
        logger.removeHandler(handler)
    row.replaced = handler.count
    return row


async def main(kills: int, rolling: int) -> None:
    cluster = Cluster()
    try:
        started = time.monotonic()
        await cluster.form()
        print(f"cluster formed in {time.monotonic() - started:.0f}s")
        print(
            "| run | sent | delivered | lost | duplicates | longest publish() ms (CPU) "
            "| fault to first live confirm elsewhere, s | channels replaced |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        with tempfile.TemporaryDirectory() as folder:
            runs = [(f"kill {n + 1}", False) for n in range(kills)]
            runs += [(f"rolling {n + 1}", True) for n in range(rolling)]
            for name, is_rolling in runs:
                row = await one_run(cluster, name, is_rolling, Path(folder))
                print(row.line(), flush=True)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--rolling", type=int, default=3)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main(arguments.kills, arguments.rolling))
