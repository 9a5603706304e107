"""Returned, nacked and channel-breaking messages are kept, retried and finally delivered.

``spill_after`` is far longer than any wait here, so a message found in the store
got there by being held back, never by its deadline; the store's record carries the
failure (``attempts``, ``last_error``) that proves why.
"""

from __future__ import annotations

import json
import logging
import os

import aio_pika
import pytest

from aioproducer import Producer
from tests.broker import rabbitmqctl, wait_for_ids
from tests.integration.conftest import ProducerFactory
from tests.load import steady_load
from tests.waiting import store_is_empty, wait_until

pytestmark = pytest.mark.broker

#: Longer than every wait bound below: no message reaches the store by its deadline.
NEVER = 3600.0


async def held_back(producer: Producer, ids: set[str], reason: str) -> None:
    """Wait until every message of ``ids`` is in the store with a failure for ``reason``."""
    seen: dict[str, tuple[int, str | None] | None] = {}

    async def all_held() -> bool:
        for message_id in ids:
            stored = await producer.store.get(message_id)
            seen[message_id] = None if stored is None else (stored.attempts, stored.last_error)
            if stored is None or stored.attempts < 1 or reason not in (stored.last_error or ""):
                return False
        return True

    try:
        await wait_until(all_held, what=f"held back for {reason}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the store has (attempts, last_error): {seen}") from None


# Bounds: returns 30, held 30, delivery 60, drained 30.
@pytest.mark.timeout(240)
async def test_unroutable_message_is_kept_until_a_binding_exists(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection
) -> None:
    later = f"test-later-{os.urandom(6).hex()}"
    producer = make_producer(spill_after=NEVER)
    await producer.start()
    ids = {await producer.publish({"n": n}, routing_key=later) for n in range(20)}
    await wait_until(lambda: producer.stats().returned >= 20, what="returns")
    await held_back(producer, ids, "NO_ROUTE")
    stats = producer.stats()
    assert stats.confirmed == 0 and stats.channel_errors == 0 and stats.nacked == 0
    assert stats.spilled >= 20

    channel = await amqp.channel()
    await channel.declare_queue(later, durable=True)
    try:
        got = await wait_for_ids(amqp, later, ids, timeout=60)
        assert {m.message_id for m in got} == ids
        await wait_until(store_is_empty(producer.store), what="store drained")
    finally:
        await channel.queue_delete(later)
        await channel.close()


# Bounds: delivery 60, held 30, delivery 60, drained 30.
@pytest.mark.timeout(270)
async def test_missing_exchange_breaks_only_its_own_messages(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    missing = f"test-missing-{os.urandom(6).hex()}"
    producer = make_producer(spill_after=NEVER)
    await producer.start()
    await wait_until(lambda: producer.stats().connected, what="connection")
    good: set[str] = set()
    bad: set[str] = set()
    for n in range(1000):
        if n % 100 == 50:
            bad.add(await producer.publish({"bad": n}, exchange=missing, routing_key=queue))
        else:
            good.add(await producer.publish({"good": n}, routing_key=queue))

    await wait_for_ids(amqp, queue, good, timeout=60)
    # Only the culprits are held back (404 names their exchange): once each.
    await held_back(producer, bad, "NOT_FOUND")
    for message_id in bad:
        stored = await producer.store.get(message_id)
        assert stored is not None and missing in (stored.last_error or "")
    assert producer.stats().channel_errors >= 1
    assert producer.stats().confirmed == len(good)

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


# Bounds: delivery 60, held 30.
@pytest.mark.timeout(180)
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
    producer = make_producer(spill_after=NEVER)
    await producer.start()
    try:
        good = {await producer.publish({"n": n}, routing_key=queue) for n in range(200)}
        refused = await producer.publish({"x": 1}, exchange=internal.name, routing_key=queue)
        good |= {await producer.publish({"n": n}, routing_key=queue) for n in range(200)}
        await wait_for_ids(amqp, queue, good, timeout=60)
        await held_back(producer, {refused}, "ACCESS_REFUSED")
        assert producer.stats().channel_errors >= 2
    finally:
        await internal.delete()
        await channel.close()


async def nacks_every_publish(amqp: aio_pika.abc.AbstractRobustConnection, queue: str) -> bool:
    """Whether the broker nacks a publish to ``queue`` now (the probe is never queued)."""
    channel = await amqp.channel(publisher_confirms=True)
    try:
        await channel.default_exchange.publish(aio_pika.Message(b"probe"), routing_key=queue)
    except aio_pika.exceptions.DeliveryError:
        return True
    finally:
        await channel.close()
    await channel_purge(amqp, queue)
    return False


async def channel_purge(amqp: aio_pika.abc.AbstractRobustConnection, queue: str) -> None:
    channel = await amqp.channel()
    try:
        await (await channel.get_queue(queue)).purge()
    finally:
        await channel.close()


# Bounds: policy 30, nacks 30, held 30, replaced 30, delivery 60, drained 30.
@pytest.mark.timeout(300)
async def test_nacked_messages_are_held_back_and_a_channel_nacked_throughout_is_replaced(
    make_producer: ProducerFactory,
    amqp: aio_pika.abc.AbstractRobustConnection,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A queue that takes nothing (``max-length`` 0, ``reject-publish``) nacks every
    publish: each message is held back with its nack, the live channel is replaced
    after a second of nothing but nacks, and once the queue takes messages again
    every one of them arrives."""
    caplog.set_level(logging.WARNING, logger="aioproducer.connection")
    policy = f"{queue}-rejects"
    definition = json.dumps({"max-length": 0, "overflow": "reject-publish"})
    await rabbitmqctl("set_policy", policy, f"^{queue}$", definition, "--apply-to", "queues")
    try:
        await wait_until(lambda: nacks_every_publish(amqp, queue), what="the policy applied")
        producer = make_producer(spill_after=NEVER)
        await producer.start()
        # A steady load keeps the live channel publishing, so that its run of nacks lasts.
        async with steady_load(producer, queue) as load:
            await wait_until(lambda: producer.stats().nacked >= 20, what="nacks")
            await held_back(producer, set(load.ids[:20]), "nacked")

            def replaced() -> bool:
                return any(
                    "the live channel" in record.getMessage()
                    and "replacing it" in record.getMessage()
                    for record in caplog.records
                )

            await wait_until(replaced, what="the live channel replaced")
        ids = set(load.ids)
        stats = producer.stats()
        assert stats.nacked >= len(ids)
        assert stats.confirmed == 0 and stats.returned == 0 and stats.channel_errors == 0
    finally:
        await rabbitmqctl("clear_policy", policy)
    got = await wait_for_ids(amqp, queue, ids, timeout=60)
    assert {received.message_id for received in got} == ids
    await wait_until(store_is_empty(producer.store), what="store drained")
    assert producer.stats().confirmed + producer.stats().replayed >= len(ids)
