"""Connections cut mid-stream or left half-open, through a TCP proxy: nothing is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aio_pika
import pytest

from aioproducer import Producer, ProducerState
from tests.broker import drain, wait_for_ids
from tests.integration.conftest import ProducerFactory, proxied_url
from tests.load import steady_load
from tests.proxy import TcpProxy
from tests.waiting import run_without_suspending, store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault]


# Bounds: waits 30+30+30+60+30.
@pytest.mark.timeout(240)
async def test_connection_cut_mid_stream_loses_nothing(
    make_producer: ProducerFactory,
    proxy: TcpProxy,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
) -> None:
    producer = make_producer(proxied_url(proxy))
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    ids: set[str] = set()
    for cut in range(3):
        for n in range(1000):
            ids.add(run_without_suspending(producer.publish({"n": n}, routing_key=queue)))
            if n == 500:
                # Let part of the stream go out, then cut it with publishes in flight
                # (a batch is confirmed within milliseconds: check at every loop turn).
                await wait_until(
                    lambda: producer.stats().in_flight > 0, what="publishes in flight", every=0
                )
                assert proxy.cut() == 1
        await wait_until(connections(producer, cut + 2), what="reconnection")
    await wait_for_ids(amqp, queue, ids, timeout=60)
    await wait_until(store_is_empty(producer.store), what="store drained")
    assert producer.stats().retried > 0, "the cuts caught publishes in flight"


def connections(producer: Producer, count: int) -> Callable[[], bool]:
    return lambda: producer.stats().connections >= count


# Bounds: waits 30+30+30+60+60+30.
@pytest.mark.timeout(300)
async def test_half_open_connection_is_noticed_and_nothing_is_lost(
    make_producer: ProducerFactory,
    proxy: TcpProxy,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
) -> None:
    producer = make_producer(proxied_url(proxy, heartbeat=1), spill_after=0.5)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(100)}
    assert await producer.flush(timeout=30)

    assert proxy.blackhole() == 1
    # Neither side is told: the producer keeps publishing into the dead path until its
    # heartbeat gives up; meanwhile overdue messages must reach the store.
    async with steady_load(producer, queue, interval=0.01) as load:
        await wait_until(lambda: producer.stats().spilled > 0, what="spill while half-open")
        await wait_until(
            lambda: producer.stats().connections >= 2,
            timeout=60,
            what="reconnect after heartbeat",
        )
    ids.update(load.ids)
    await wait_for_ids(amqp, queue, ids, timeout=60)
    await wait_until(store_is_empty(producer.store), what="store drained")


# Bounds: waits 30+30+30+60.
@pytest.mark.timeout(180)
async def test_slow_confirms_are_waited_for_not_answered_with_republishing(
    make_producer: ProducerFactory,
    proxy: TcpProxy,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
) -> None:
    """Confirms slower than spill_after: copies are stored, then deleted; no duplicates."""
    producer = make_producer(proxied_url(proxy), spill_after=0.3, confirm_timeout=10.0)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    assert proxy.lag(1.0) == 1
    ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(50)}
    await wait_until(lambda: producer.stats().confirmed == 50, what="every confirm")
    await wait_until(store_is_empty(producer.store), what="stored copies deleted")

    stats = producer.stats()
    assert stats.spilled > 0, "messages in flight past their deadline were copied"
    assert (stats.replayed, stats.retried) == (0, 0), "nothing was published twice"
    got = await wait_for_ids(amqp, queue, ids)
    assert sorted(m.message_id for m in got) == sorted(ids)
    assert await drain(amqp, queue) == [], "no second copy of any message"


# Bounds: connection 30, flush 30, retried 30, spilled 30, delivery 60, drained 30.
@pytest.mark.timeout(300)
async def test_without_heartbeats_each_publish_gives_up_after_confirm_timeout(
    make_producer: ProducerFactory,
    proxy: TcpProxy,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
) -> None:
    """Half-open, and no heartbeat to notice: confirm_timeout alone bounds each publish."""
    producer = make_producer(proxied_url(proxy), spill_after=0.5, confirm_timeout=2.0)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(10)}
    assert await producer.flush(timeout=30)

    assert proxy.blackhole() == 1
    stuck = {await producer.publish({"stuck": n}, routing_key=queue) for n in range(10)}
    await wait_until(lambda: producer.stats().retried >= 10, what="publishes given up")
    stats = producer.stats()
    assert stats.connections == 1, "nothing but confirm_timeout noticed the dead path"
    await wait_until(lambda: producer.stats().spilled >= 10, what="stuck messages stored")
    # The path is cut for real; a new connection delivers everything.
    proxy.cut()
    await wait_for_ids(amqp, queue, ids | stuck, timeout=60)
    await wait_until(store_is_empty(producer.store), what="store drained")


# Bounds: connection 30, flush 30, close 30.
@pytest.mark.timeout(120)
async def test_a_close_the_broker_never_answers_gives_up_at_its_bound(
    make_producer: ProducerFactory,
    proxy: TcpProxy,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The connection goes silent: close() gives the broker its half second, then ends."""
    producer = make_producer(proxied_url(proxy))
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    await producer.publish(b"x", routing_key=queue)
    assert await producer.flush(timeout=30)
    assert proxy.blackhole() == 1
    with caplog.at_level(logging.INFO, logger="aioproducer.connection"):
        # Returns: without its bound, the close would wait for an answer that never comes.
        await asyncio.wait_for(producer.close(timeout=1.0), 30)
    assert producer.stats().state is ProducerState.CLOSED
    assert producer.stats().confirmed == 1
    assert "closing the connection did not finish cleanly: TimeoutError()" in [
        r.getMessage() for r in caplog.records
    ]
