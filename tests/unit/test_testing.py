"""aioproducer.testing.FakeProducer: the Producer's interface, recording, failing on demand."""

from __future__ import annotations

import inspect

import pytest

import aioproducer
from aioproducer import (
    BufferFull,
    InvalidMessage,
    Outgoing,
    Producer,
    ProducerClosed,
    ProducerState,
    Settlement,
    ThreadedProducer,
    UnknownMessage,
)
from aioproducer.testing import FakeProducer


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    names = [
        n for n in dir(cls) if not n.startswith("_") or n in ("__init__", "__aenter__", "__aexit__")
    ]
    return {
        name: inspect.signature(getattr(cls, name))
        for name in names
        if callable(getattr(cls, name)) and not isinstance(getattr(cls, name), type)
    }


def test_the_fake_has_every_public_method_of_the_producer_with_its_signature() -> None:
    real = public_methods(Producer)
    fake = public_methods(FakeProducer)
    assert {"publish", "publish_many", "settled", "flush", "close", "stats"} <= set(real)
    drifted = {name: (real[name], fake.get(name)) for name in real if fake.get(name) != real[name]}
    assert drifted == {}
    for name in real:
        assert inspect.iscoroutinefunction(getattr(FakeProducer, name)) == (
            inspect.iscoroutinefunction(getattr(Producer, name))
        ), name


def test_the_threaded_producer_takes_the_same_publish_arguments() -> None:
    for name in ("publish", "publish_many", "settled"):
        real = inspect.signature(getattr(Producer, name)).parameters
        threaded = inspect.signature(getattr(ThreadedProducer, name)).parameters
        assert list(threaded) == list(real), name
        for parameter in real:
            assert threaded[parameter].default == real[parameter].default, (name, parameter)


def test_the_fake_is_not_in_the_core_import_path() -> None:
    assert "FakeProducer" not in aioproducer.__all__


async def test_it_records_what_was_published_and_settles_it() -> None:
    heard: list[tuple[str, Settlement]] = []
    async with FakeProducer(
        exchange="shop", on_settled=lambda i, o: heard.append((i, o))
    ) as producer:
        first = await producer.publish({"order": 1}, routing_key="orders", priority=5)
        ids = await producer.publish_many(["text", Outgoing(b"raw", routing_key="raw")])
        assert await producer.settled(first, timeout=1) is Settlement.CONFIRMED
        assert await producer.flush(1)
        assert producer.decoded_bodies() == [{"order": 1}, "text", b"raw"]
        message = producer.published[0]
        assert (message.exchange, message.routing_key, message.message_id) == (
            "shop",
            "orders",
            first,
        )
        assert message.properties is not None and message.properties.priority == 5
        stats = producer.stats()
        assert (stats.accepted, stats.confirmed, stats.buffered) == (3, 3, 0)
    assert heard == [(i, Settlement.CONFIRMED) for i in [first, *ids]]


async def test_it_checks_input_as_the_producer_does() -> None:
    async with FakeProducer(max_message_size=10) as producer:
        with pytest.raises(aioproducer.MessageTooLarge):
            await producer.publish(b"x" * 11)
        with pytest.raises(InvalidMessage):
            await producer.publish(b"x", priority=256)
        with pytest.raises(aioproducer.BodyNotSerializable):
            await producer.publish(object())
        assert producer.published == []
    with pytest.raises(ProducerClosed):
        await producer.publish(b"x")


async def test_it_can_be_told_to_fail() -> None:
    async with FakeProducer() as producer:
        producer.fail_with(BufferFull(10))
        with pytest.raises(BufferFull):
            await producer.publish(b"x")
        with pytest.raises(BufferFull):
            await producer.publish_many([b"x", b"y"])
        producer.fail_with(None)
        await producer.publish(b"x")
        assert len(producer.published) == 1


async def test_it_settles_as_told_or_when_told() -> None:
    async with FakeProducer() as producer:
        producer.settle_as = Settlement.DEAD
        dead = await producer.publish(b"x")
        assert await producer.settled(dead, timeout=1) is Settlement.DEAD
        producer.auto_settle = False
        held = await producer.publish(b"y")
        with pytest.raises(TimeoutError):
            await producer.settled(held, timeout=0.05)
        assert producer.stats().buffered == 1
        producer.settle(held, Settlement.STORED)
        assert await producer.settled(held) is Settlement.STORED
        with pytest.raises(UnknownMessage):
            producer.settle("no-such-id")
        last = await producer.publish(b"z")
    # close() stores what is left, as the producer does.
    assert await producer.settled(last) is Settlement.STORED


async def test_a_full_fake_refuses_as_the_producer_does() -> None:
    async with FakeProducer(max_buffer=2) as producer:
        producer.auto_settle = False
        await producer.publish_many([b"a", b"b"])
        with pytest.raises(BufferFull):
            await producer.publish(b"c")
        producer.settle()
        await producer.publish(b"c")


async def test_its_stats_show_a_running_producer_that_made_no_connection() -> None:
    async with FakeProducer() as producer:
        stats = producer.stats()
        assert (stats.connected, stats.broker, stats.blocked, stats.connections) == (
            True,
            None,
            False,
            0,
        )
        assert (stats.state, stats.store_ok, stats.last_error) == (
            ProducerState.RUNNING,
            True,
            None,
        )
    assert producer.stats().state is ProducerState.CLOSED
