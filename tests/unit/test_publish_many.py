"""publish_many(): a batch is accepted whole or not at all, without suspending."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aioproducer import (
    BodyNotSerializable,
    BufferFull,
    InvalidMessage,
    MessageTooLarge,
    Outgoing,
    Producer,
    ProducerClosed,
    SQLiteStore,
)
from tests.waiting import run_without_suspending

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture
async def producer(tmp_path: Path) -> AsyncIterator[Producer]:
    producer = Producer(
        NOWHERE,
        store=SQLiteStore(tmp_path / "spill.db"),
        max_buffer=5,
        max_buffer_bytes=1000,
        max_message_size=400,
        spill_after=3600,
        fallback_dir=tmp_path,
    )
    await producer.start()
    yield producer
    await producer.close(timeout=0)


def buffered_ids(producer: Producer) -> set[str]:
    assert producer._context is not None
    return set(producer._context.buffer._unsettled)


async def test_a_batch_is_accepted_in_order_without_suspending(producer: Producer) -> None:
    ids = run_without_suspending(
        producer.publish_many(
            [
                {"n": 1},
                Outgoing(b"own", routing_key="other", message_id="own-1", priority=3),
                "text",
            ],
            routing_key="orders",
            app_id="shop",
        )
    )
    assert len(ids) == 3 and ids[1] == "own-1"
    assert buffered_ids(producer) == set(ids)
    assert producer._context is not None
    messages = [producer._context.buffer.get(i) for i in ids]
    assert [(m.routing_key, m.content_type) for m in messages if m] == [
        ("orders", "application/json"),
        ("other", "application/octet-stream"),
        ("orders", "text/plain; charset=utf-8"),
    ]
    # Keyword arguments apply to bare bodies; an Outgoing carries all its own.
    assert [
        m.properties and (m.properties.app_id, m.properties.priority) for m in messages if m
    ] == [
        ("shop", None),
        (None, 3),
        ("shop", None),
    ]
    assert producer.stats().accepted == 3


@pytest.mark.parametrize(
    ("batch", "error"),
    [
        ([b"a", b"b", b"c", b"d"], BufferFull),  # 2 already in: 6 > max_buffer
        ([b"a" * 340, b"b" * 340, b"c" * 340], BufferFull),  # bytes over max_buffer_bytes
        ([b"a", object()], BodyNotSerializable),
        ([b"a", b"x" * 401], MessageTooLarge),
        ([b"a", Outgoing(b"b", routing_key="r" * 256)], InvalidMessage),
        ([Outgoing(b"a", message_id="same"), Outgoing(b"b", message_id="same")], InvalidMessage),
        ([Outgoing(b"a", message_id="taken")], InvalidMessage),
        ([b"a", Outgoing(b"b", expiration=-5)], InvalidMessage),
    ],
    ids=[
        "count",
        "bytes",
        "unserialisable",
        "too-large",
        "bad-name",
        "duplicate-in-batch",
        "id-in-use",
        "bad-property",
    ],
)
async def test_one_bad_message_or_no_room_refuses_the_whole_batch(
    producer: Producer, batch: list[Any], error: type[Exception]
) -> None:
    before = {
        await producer.publish(b"first", message_id="taken"),
        await producer.publish(b"second"),
    }
    with pytest.raises(error):
        await producer.publish_many(batch)
    assert buffered_ids(producer) == before
    assert producer.stats().accepted == 2
    assert producer.stats().buffered_bytes == len(b"first") + len(b"second")


async def test_a_batch_that_fills_the_buffer_exactly_is_accepted(producer: Producer) -> None:
    # Without suspending: the spiller would store what is over the high-water mark.
    assert len(run_without_suspending(producer.publish_many([b"x"] * 5))) == 5
    with pytest.raises(BufferFull):
        run_without_suspending(producer.publish_many([b"y"]))


async def test_an_empty_batch_accepts_nothing(producer: Producer) -> None:
    assert await producer.publish_many([]) == []
    assert producer.stats().accepted == 0


async def test_a_closed_producer_refuses_a_batch(tmp_path: Path) -> None:
    producer = Producer(NOWHERE, store=SQLiteStore(tmp_path / "s.db"), fallback_dir=tmp_path)
    with pytest.raises(ProducerClosed):
        await producer.publish_many([b"x"])
