"""Returned, nacked and channel-breaking messages are kept, retried and finally delivered."""

from __future__ import annotations

import os

import aio_pika
import pytest

from tests.broker import drain, wait_for_ids
from tests.integration.conftest import ProducerFactory
from tests.waiting import store_is_empty, wait_until

pytestmark = pytest.mark.broker


async def test_unroutable_message_is_kept_until_a_binding_exists(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    later = f"test-later-{os.urandom(6).hex()}"
    producer = make_producer()
    await producer.start()
    ids = {await producer.publish({"n": n}, routing_key=later) for n in range(20)}
    await wait_until(lambda: producer.stats().returned >= 20, what="returns")
    await wait_until(lambda: producer.stats().spilled >= 20, what="returned messages stored")
    assert producer.stats().confirmed == 0

    channel = await amqp.channel()
    await channel.declare_queue(later, durable=True)
    try:
        got = await wait_for_ids(amqp, later, ids, timeout=60)
        assert {m.message_id for m in got} == ids
        await wait_until(store_is_empty(producer.store), what="store drained")
    finally:
        await channel.queue_delete(later)
        await channel.close()


async def test_missing_exchange_breaks_only_its_own_messages(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    missing = f"test-missing-{os.urandom(6).hex()}"
    producer = make_producer(spill_after=30.0)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    good: set[str] = set()
    bad: set[str] = set()
    for n in range(1000):
        if n % 100 == 50:
            bad.add(await producer.publish({"bad": n}, exchange=missing, routing_key=queue))
        else:
            good.add(await producer.publish({"good": n}, routing_key=queue))

    got = await wait_for_ids(amqp, queue, good, timeout=60)
    assert not bad & {m.message_id for m in got}
    stats = producer.stats()
    assert stats.channel_errors >= 1
    await wait_until(lambda: producer.stats().spilled >= len(bad), what="bad messages held back")

    # Once the exchange exists, the held-back messages are delivered through it.
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(missing, aio_pika.ExchangeType.DIRECT)
    try:
        other = await channel.declare_queue(f"{missing}-q", durable=True)
        await other.bind(exchange, routing_key=queue)
        await wait_for_ids(amqp, other.name, bad, timeout=60)
        await wait_until(store_is_empty(producer.store), what="store drained")
    finally:
        await channel.queue_delete(f"{missing}-q")
        await channel.exchange_delete(missing)
        await channel.close()


async def test_refused_exchange_is_held_back_without_stalling_others(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    """A 403 names no culprit: a message in flight at two breaks in a row is held back."""
    channel = await amqp.channel()
    # Publishing to an internal exchange is refused with 403 ACCESS_REFUSED, closing the
    # channel without naming a missing exchange.
    internal = await channel.declare_exchange(
        f"test-internal-{os.urandom(6).hex()}", aio_pika.ExchangeType.DIRECT, internal=True
    )
    producer = make_producer(spill_after=30.0)
    await producer.start()
    try:
        good = {await producer.publish({"n": n}, routing_key=queue) for n in range(200)}
        refused = await producer.publish({"x": 1}, exchange=internal.name, routing_key=queue)
        good |= {await producer.publish({"n": n}, routing_key=queue) for n in range(200)}
        await wait_for_ids(amqp, queue, good, timeout=60)
        await wait_until(
            lambda: producer.stats().spilled >= 1, what="the refused message held back"
        )
        assert producer.stats().channel_errors >= 2
        assert refused not in {m.message_id for m in await drain(amqp, queue)}
    finally:
        await internal.delete()
        await channel.close()
