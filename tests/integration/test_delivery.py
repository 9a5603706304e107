"""While the broker is up, everything published arrives, with its properties."""

from __future__ import annotations

import json
from datetime import datetime

import aio_pika
import pytest

from tests.broker import wait_for_ids
from tests.integration.conftest import ProducerFactory

pytestmark = pytest.mark.broker


async def test_thousands_of_messages_arrive_with_their_properties(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    # A confirm later than confirm_timeout means a second publish (a documented
    # duplicate): give a loaded machine plenty, so any duplicate here is a defect.
    producer = make_producer(spill_after=30.0, confirm_timeout=30.0, lease=60.0)
    await producer.start()
    headers = {"tenant": "acme", "attempt": 1, "tags": ["a", "b"]}
    sent = {
        await producer.publish({"n": n}, routing_key=queue, headers=headers): n for n in range(3000)
    }
    assert await producer.flush(timeout=60)

    got = await wait_for_ids(amqp, queue, set(sent))
    assert len(got) == len(sent)
    for message in got:
        assert json.loads(message.body) == {"n": sent[message.message_id]}
        assert message.content_type == "application/json"
        assert message.delivery_mode == 2
        assert message.headers == headers
        assert isinstance(message.timestamp, datetime)
    stats = producer.stats()
    assert (stats.accepted, stats.confirmed, stats.spilled) == (3000, 3000, 0)
    assert stats.buffered == 0 and stats.connected


async def test_bodies_are_encoded_by_type(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    producer = make_producer()
    await producer.start()
    ids = {
        await producer.publish(b"\x00\x01", routing_key=queue): (
            b"\x00\x01",
            "application/octet-stream",
        ),
        await producer.publish("héllo", routing_key=queue): (
            "héllo".encode(),
            "text/plain; charset=utf-8",
        ),
        await producer.publish([1, "é"], routing_key=queue): (
            '[1,"é"]'.encode(),
            "application/json",
        ),
        await producer.publish(b"<a/>", routing_key=queue, content_type="application/xml"): (
            b"<a/>",
            "application/xml",
        ),
    }
    got = {
        m.message_id: (m.body, m.content_type) for m in await wait_for_ids(amqp, queue, set(ids))
    }
    assert got == ids


async def test_a_named_default_exchange_routes_by_binding(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        f"ex-{queue}", aio_pika.ExchangeType.DIRECT, auto_delete=True
    )
    bound = await channel.get_queue(queue)
    await bound.bind(exchange, routing_key="k")
    producer = make_producer(exchange=exchange.name)
    await producer.start()
    ids = {await producer.publish({"n": n}, routing_key="k") for n in range(50)}
    got = await wait_for_ids(amqp, queue, ids)
    assert {m.exchange for m in got} == {exchange.name}
    await channel.close()


async def test_persistent_false_publishes_transient_messages(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    producer = make_producer(persistent=False)
    await producer.start()
    ids = {await producer.publish({"n": n}, routing_key=queue) for n in range(5)}
    got = await wait_for_ids(amqp, queue, ids)
    assert {m.delivery_mode for m in got} == {1}
