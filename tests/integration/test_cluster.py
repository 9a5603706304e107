"""A real three-node RabbitMQ cluster and a quorum queue: losing nodes loses nothing.

One cluster (see :mod:`tests.cluster`) serves every test of this module; each test
starts with all three nodes up. The producer is given the three addresses and
publishes steadily while nodes are killed (``kill -9``), all at once, or restarted
one after the other. Each test checks that publish() never waited, that every
message_id arrived, and prints its figures (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import aio_pika
import pytest

from aioproducer import Producer, SQLiteStore
from tests.broker import drain, wait_for_ids
from tests.cluster import Cluster, Node, more_confirms
from tests.integration.conftest import ProducerFactory
from tests.load import Load, steady_load
from tests.waiting import store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault, pytest.mark.cluster, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three clustered nodes beside the system broker; killed at the end, whatever happens."""
    cluster = Cluster()
    # Also on an interpreter exit that skips fixture teardown.
    atexit.register(cluster.destroy)
    try:
        asyncio.run(cluster.form())
        yield cluster
    finally:
        cluster.destroy()
        atexit.unregister(cluster.destroy)


@pytest.fixture
async def whole(cluster: Cluster) -> Cluster:
    """The cluster with all three nodes running, whatever the previous test left."""
    await cluster.heal()
    return cluster


@pytest.fixture
async def quorum_queue(whole: Cluster) -> AsyncIterator[str]:
    """A fresh quorum queue, replicated on the three nodes; deleted afterwards."""
    name = f"test-quorum-{os.urandom(6).hex()}"
    connection = await aio_pika.connect(whole.nodes[0].url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    yield name
    # Deleted through any node that answers; if none does, the next cluster is new anyway.
    for node in whole.nodes:
        try:
            connection = await aio_pika.connect(node.url, timeout=10)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
            continue
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)
        break


@dataclass
class Figures:
    """What one run measured, printed for the docs' table."""

    name: str
    sent: int = 0
    delivered: int = 0
    duplicates: int = 0
    longest_publish: float = 0.0
    #: The CPU time of the longest call (the rest of its wall time it waited for a CPU).
    longest_publish_cpu: float = 0.0
    #: Seconds from each fault (kill, or the stop command) to the first confirm on another
    #: node, and from the producer's noticing the loss to that confirm.
    to_first_confirm: list[tuple[float, float]] = field(default_factory=list)

    def line(self) -> str:
        moves = (
            ", ".join(
                f"{fault:.2f}s (after the loss {loss:.2f}s)"
                for fault, loss in self.to_first_confirm
            )
            or "-"
        )
        return (
            f"\ncluster figures [{self.name}]: sent={self.sent} delivered={self.delivered} "
            f"lost={self.sent - self.delivered} duplicates={self.duplicates} "
            f"longest_publish={self.longest_publish * 1e6:.0f}us "
            f"(cpu {self.longest_publish_cpu * 1e6:.0f}us) "
            f"fault_to_first_confirm_elsewhere=[{moves}]"
        )


def connected_node(cluster: Cluster, producer: Producer) -> Node:
    return cluster.by_url(producer.stats().broker)


async def first_confirm_elsewhere(
    producer: Producer, left: str, since: float
) -> tuple[float, float]:
    """Seconds until a live publish is confirmed over a connection to a node other
    than ``left``: from ``since``, and from when the connection to ``left`` was seen
    gone."""
    try:
        await wait_until(lambda: producer.stats().broker != left, timeout=60, what="a loss")
        lost_at = time.perf_counter()
        await wait_until(
            lambda: producer.stats().broker not in (None, left), timeout=60, what="a move"
        )
        await wait_until(more_confirms(producer, 1), timeout=60, what="a live confirm")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {producer.stats()}") from None
    now = time.perf_counter()
    return now - since, now - lost_at


async def settle_and_count(
    cluster: Cluster, producer: Producer, load: Load, queue: str, figures: Figures
) -> None:
    """Wait until nothing is buffered or stored, then read the queue: every id arrived."""
    store = producer.store
    assert isinstance(store, SQLiteStore)
    await wait_until(store_is_empty(store), timeout=120, what="the store drained")
    await wait_until(lambda: producer.stats().buffered == 0, timeout=60, what="buffer empty")
    running = next(node for node in cluster.nodes if node.running)
    connection = await aio_pika.connect(running.url)
    async with connection:
        got = await wait_for_ids(connection, queue, set(load.ids), timeout=60)
        got += await drain(connection, queue)
    counts = Counter(received.message_id for received in got)
    assert set(counts) == set(load.ids)
    figures.sent = len(load.ids)
    figures.delivered = len(counts)
    figures.duplicates = sum(counts.values()) - len(counts)
    longest = max(range(len(load.marked)), key=load.marked.__getitem__)
    figures.longest_publish = load.marked[longest]
    figures.longest_publish_cpu = load.marked_cpu[longest]
    print(figures.line())


#: Kills of the connected node per run: each is a fresh chance for a restored channel
#: to be nacked for good (about half of them were, here, before such channels were
#: replaced).
KILLS = 2


# Bounds: 30 + 30; per kill 60 x 4, and a heal (a 120 s boot) before the second;
# the count 120 + 60 + 60. With some margin:
@pytest.mark.timeout(960)
async def test_killing_the_connected_node_moves_to_a_live_one(
    whole: Cluster, quorum_queue: str, make_producer: ProducerFactory
) -> None:
    producer = make_producer(whole.urls)
    figures = Figures(f"kill -9 of the connected node, {KILLS} times")
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="a connection")
    async with steady_load(producer, quorum_queue) as load:
        load.marking = True
        await wait_until(lambda: producer.stats().confirmed >= 200, what="confirms")
        for kill in range(KILLS):
            if kill:
                # The killed node back, so that the next kill leaves a majority.
                await whole.heal()
            victim = connected_node(whole, producer)
            left = producer.stats().broker
            assert left is not None
            killed_at = time.perf_counter()
            await whole.kill(victim)
            figures.to_first_confirm.append(
                await first_confirm_elsewhere(producer, left, killed_at)
            )
            assert connected_node(whole, producer) is not victim
            await wait_until(more_confirms(producer, 200), timeout=60, what="confirms after")
    await settle_and_count(whole, producer, load, quorum_queue, figures)
    assert producer.stats().connections >= 1 + KILLS


async def test_all_nodes_down_then_back_spills_and_replays_everything(
    whole: Cluster, quorum_queue: str, make_producer: ProducerFactory
) -> None:
    producer = make_producer(whole.urls)
    figures = Figures("all three nodes killed, then brought back")
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="a connection")
    async with steady_load(producer, quorum_queue) as load:
        load.marking = True
        await wait_until(lambda: producer.stats().confirmed >= 200, what="confirms")
        for node in whole.nodes:
            await whole.kill(node)
        spilled = producer.stats().spilled
        await wait_until(
            lambda: producer.stats().spilled >= spilled + 200, timeout=60, what="spilling"
        )
        assert not producer.stats().connected
        # One node back: the producer finds it among the dead addresses. Alone it is a
        # minority of the quorum queue's three replicas: nothing can be confirmed yet.
        first = whole.nodes[0]
        await whole.start(first, force=True)
        await wait_until(
            lambda: producer.stats().broker is not None, timeout=60, what="a connection"
        )
        assert connected_node(whole, producer) is first
        # The other two boot together; the first of them up makes a majority again:
        # confirms resume, the store replays.
        booting = {asyncio.create_task(whole.start(node)) for node in whole.nodes[1:]}
        done, booting = await asyncio.wait(booting, return_when=asyncio.FIRST_COMPLETED)
        majority_at = time.perf_counter()
        for task in done:
            task.result()
        figures.to_first_confirm.append(await first_confirm_elsewhere(producer, "", majority_at))
        await asyncio.gather(*booting)
    await settle_and_count(whole, producer, load, quorum_queue, figures)
    stats = producer.stats()
    assert stats.spilled > 0
    assert stats.replayed > 0


async def test_a_rolling_restart_under_load_loses_nothing(
    whole: Cluster, quorum_queue: str, make_producer: ProducerFactory
) -> None:
    producer = make_producer(whole.urls)
    figures = Figures("rolling restart of the three nodes")
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="a connection")
    async with steady_load(producer, quorum_queue) as load:
        load.marking = True
        for node in whole.nodes:
            await wait_until(lambda: producer.stats().connected, timeout=60, what="connected")
            await wait_until(more_confirms(producer, 100), timeout=60, what="load")
            await whole.safe_to_stop(node)
            left = producer.stats().broker
            on_it = connected_node(whole, producer) is node
            stopped_at = time.perf_counter()
            stopping = asyncio.create_task(whole.stop(node))
            if on_it and left is not None:
                figures.to_first_confirm.append(
                    await first_confirm_elsewhere(producer, left, stopped_at)
                )
            await stopping
            await whole.start(node)
    await settle_and_count(whole, producer, load, quorum_queue, figures)
    # The producer was on some node when that node's turn came.
    assert figures.to_first_confirm
