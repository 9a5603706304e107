"""The demo's queue declaration and consumer, given several broker addresses."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aio_pika
import pytest

from demo_app._topology import declare_once
from demo_app.consumer import DedupConsumer
from tests.broker import AMQP_URL
from tests.demo.test_consumer import send

pytestmark = pytest.mark.broker


@pytest.fixture
async def fresh_queue(amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[str]:
    """A queue name nothing has declared yet; deleted after the test."""
    name = f"test-topology-{secrets.token_hex(6)}"
    yield name
    channel = await amqp.channel()
    try:
        await channel.queue_delete(name)
    finally:
        await channel.close()


async def test_declare_once_passes_over_a_dead_node_to_one_that_answers(
    amqp: aio_pika.abc.AbstractRobustConnection, fresh_queue: str, dead_amqp_url: str
) -> None:
    await declare_once([dead_amqp_url, AMQP_URL], "", fresh_queue, queue_type="quorum")
    channel = await amqp.channel()
    try:
        declared = await channel.declare_queue(fresh_queue, passive=True)
        assert declared.name == fresh_queue
    finally:
        await channel.close()
    channel = await amqp.channel()
    # Declared as asked: the broker refuses the same queue as a classic one.
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
        await channel.declare_queue(
            fresh_queue, durable=True, arguments={"x-queue-type": "classic"}
        )


async def test_declare_once_raises_when_no_node_answers(
    fresh_queue: str, dead_amqp_url: str
) -> None:
    with pytest.raises(ConnectionError):
        await declare_once([dead_amqp_url, dead_amqp_url], "", fresh_queue)


async def test_the_consumer_reads_from_the_first_node_that_answers(
    amqp: aio_pika.abc.AbstractRobustConnection, queue: str, dead_amqp_url: str
) -> None:
    async with DedupConsumer(f"{dead_amqp_url},{AMQP_URL}", queue) as consumer:
        await send(amqp, queue, "a", "b")
        assert await consumer.wait_for({"a", "b"}, timeout=30) == set()
