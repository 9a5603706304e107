"""The batched publish path on the real broker: every outcome reaches its own message.

The link marshals a batch into one write and lets aiormq's channel reader settle
each message through an entry of its own in ``Channel.confirmations``; these tests
fail when aiormq's internals stop doing that.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from aioproducer import Backoff, Message
from aioproducer._connection import BATCHED, AmqpLink, check_internals
from aioproducer._link import Outcome, Result
from tests.broker import AMQP_URL, drain

pytestmark = pytest.mark.broker


def test_aiormq_has_what_the_batched_path_uses() -> None:
    assert check_internals() == []
    assert BATCHED


def message(routing_key: str, exchange: str = "", size: int = 16) -> Message:
    return Message(
        message_id=uuid.uuid4().hex,
        body=os.urandom(size),
        exchange=exchange,
        routing_key=routing_key,
        content_type="application/octet-stream",
        timestamp=1_700_000_000.0,
    )


@pytest.fixture
async def link() -> AsyncIterator[AmqpLink]:
    link = AmqpLink(AMQP_URL, backoff=Backoff(base=0.05, cap=0.5))
    link.start()
    yield link
    await link.close(timeout=2.0)


async def send(link: AmqpLink, messages: list[Message], timeout: float = 10.0) -> list[Result]:
    """Send ``messages`` as one batch; wait until each is reported, exactly once."""
    reported: dict[str, list[Result]] = {m.message_id: [] for m in messages}
    all_in = asyncio.Event()

    def on_result(m: Message, result: Result) -> None:
        reported[m.message_id].append(result)
        if all(reported.values()):
            all_in.set()

    channel = await asyncio.wait_for(link.channel("live"), 30)
    sent = link.send(
        channel, messages, mandatory=True, persistent=True, timeout=timeout, on_result=on_result
    )
    await sent.written()
    await asyncio.wait_for(all_in.wait(), 30)
    assert sent.done
    assert all(len(results) == 1 for results in reported.values()), reported
    return [reported[m.message_id][0] for m in messages]


async def test_a_batch_is_confirmed_message_by_message_in_order(
    link: AmqpLink, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    # Bodies over one frame (128 KiB) are split, as basic_publish splits them.
    messages = [message(queue, size=size) for size in (0, 1, 256, 4096, 300_000)]
    messages += [message(queue) for _ in range(500)]
    results = await send(link, messages)
    assert {r.outcome for r in results} == {Outcome.ACKED}
    got = await drain(amqp, queue)
    assert [m.message_id for m in got] == [m.message_id for m in messages]
    assert [m.body for m in got] == [m.body for m in messages]
    assert all(m.delivery_mode == 2 for m in got)


async def test_an_unroutable_message_is_returned_and_its_neighbours_confirmed(
    link: AmqpLink, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    nowhere = f"test-nowhere-{os.urandom(6).hex()}"
    messages = [message(queue), message(nowhere), message(queue)]
    results = await send(link, messages)
    assert [r.outcome for r in results] == [Outcome.ACKED, Outcome.RETURNED, Outcome.ACKED]
    assert results[1].code == 312
    assert [m.message_id for m in await drain(amqp, queue)] == [
        messages[0].message_id,
        messages[2].message_id,
    ]


async def test_a_missing_exchange_fails_the_batch_with_the_channel_error(
    link: AmqpLink, queue: str
) -> None:
    missing = f"test-missing-{os.urandom(6).hex()}"
    messages = [message(queue), message("x", exchange=missing), message(queue)]
    results = await send(link, messages)
    # The broker closes the channel at the bad publish; what it had not confirmed
    # before fails with the channel's error, naming the exchange.
    assert results[1].outcome is Outcome.CHANNEL_ERROR
    assert results[1].code == 404
    assert results[1].missing_exchange == missing
    assert results[2].outcome is Outcome.CHANNEL_ERROR
    # The channel reopens and takes publishes again.
    assert [r.outcome for r in await send(link, [message(queue)])] == [Outcome.ACKED]
