"""publish() is a hand-off: it serialises, checks and enqueues, or raises and enqueues nothing.

The producer here points at a closed local port, so nothing is ever delivered; the
tests look only at what publish() accepts.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aioproducer import (
    BodyNotSerializable,
    BufferFull,
    InvalidMessage,
    MessageTooLarge,
    Producer,
    ProducerClosed,
    ProducerError,
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
        max_message_size=1024,
        spill_after=3600,
        fallback_dir=tmp_path,
    )
    await producer.start()
    yield producer
    await producer.close(timeout=0)


def nested(depth: int) -> list[Any]:
    body: list[Any] = []
    for _ in range(depth):
        body = [body]
    return body


def accepted(producer: Producer) -> tuple[int, int]:
    stats = producer.stats()
    return stats.accepted, stats.buffered


async def test_publish_returns_a_fresh_id_without_suspending(producer: Producer) -> None:
    first = run_without_suspending(producer.publish({"order": 1}, routing_key="q"))
    second = run_without_suspending(producer.publish(b"raw", routing_key="q"))
    assert len(first) == 32 and first != second
    assert accepted(producer) == (2, 2)


async def test_callers_message_id_is_kept(producer: Producer) -> None:
    assert await producer.publish("hi", message_id="order-1") == "order-1"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (object(), BodyNotSerializable),
        ({"at": complex(1, 2)}, BodyNotSerializable),
        ({"x": math.nan}, BodyNotSerializable),
        (b"x" * 1025, MessageTooLarge),
        ("é" * 513, MessageTooLarge),
        ({"pad": "x" * 1100}, MessageTooLarge),
        ("lone \ud800 surrogate", BodyNotSerializable),
        ({"k": "lone \udfff surrogate"}, BodyNotSerializable),
        (nested(10_000), BodyNotSerializable),
    ],
    ids=[
        "object",
        "complex",
        "nan",
        "bytes",
        "utf8",
        "json",
        "surrogate",
        "json-surrogate",
        "deep",
    ],
)
async def test_bad_bodies_raise_and_enqueue_nothing(
    producer: Producer, body: object, error: type[ProducerError]
) -> None:
    with pytest.raises(error):
        await producer.publish(body, routing_key="q")
    assert accepted(producer) == (0, 0)


async def test_message_too_large_carries_size_and_limit(producer: Producer) -> None:
    with pytest.raises(MessageTooLarge) as caught:
        await producer.publish(b"x" * 2000)
    assert (caught.value.size, caught.value.limit) == (2000, 1024)


async def test_serialisation_errors_are_type_errors(producer: Producer) -> None:
    with pytest.raises(TypeError):
        await producer.publish({1, 2})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"routing_key": "r" * 256},
        {"routing_key": 5},
        {"routing_key": "q\ud800"},
        {"exchange": "x\udc00"},
        {"headers": {"k": 2**63}},
        {"headers": {"k": "v\ud800"}},
        {"exchange": "é" * 128},
        {"headers": {"when": object()}},
        {"headers": {1: "x"}},
        {"headers": "not-a-dict"},
        {"message_id": ""},
        {"message_id": 42},
        {"content_type": b"text/plain"},
    ],
    ids=lambda kwargs: next(iter(kwargs)),
)
async def test_bad_fields_raise_and_enqueue_nothing(
    producer: Producer, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidMessage):
        await producer.publish(b"x", **kwargs)
    assert accepted(producer) == (0, 0)


async def test_an_id_still_unsettled_is_refused(producer: Producer) -> None:
    await producer.publish(b"x", message_id="same")
    with pytest.raises(InvalidMessage):
        await producer.publish(b"y", message_id="same")
    assert accepted(producer) == (1, 1)


async def test_full_buffer_raises_buffer_full(producer: Producer) -> None:
    for _ in range(5):
        await producer.publish(b"x")
    with pytest.raises(BufferFull) as caught:
        await producer.publish(b"x")
    assert caught.value.capacity == 5
    assert accepted(producer) == (5, 5)


async def test_publish_before_start_and_after_close_raises(tmp_path: Path) -> None:
    producer = Producer(NOWHERE, store=SQLiteStore(tmp_path / "s.db"), fallback_dir=tmp_path)
    with pytest.raises(ProducerClosed):
        await producer.publish(b"x")
    await producer.start()
    await producer.close(timeout=0)
    with pytest.raises(ProducerClosed):
        await producer.publish(b"x")
    with pytest.raises(ProducerClosed):
        await producer.start()


async def test_close_without_a_broker_stores_everything(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    producer = Producer(NOWHERE, store=store, spill_after=3600, fallback_dir=tmp_path)
    await producer.start()
    for n in range(20):
        await producer.publish({"n": n})
    await producer.close(timeout=0)
    assert producer.stats().spilled == 20
    assert await store.count() == 20
    await store.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "http://localhost"},
        {"spill_after": 0},
        {"max_buffer": 0},
        {"high_water": 1.5},
        {"max_in_flight": 0},
        {"exchange": 3},
        {"max_buffer_bytes": 0},
        {"max_attempts": 0},
        {"url": "amqp://user:pw-secret@host:notaport/"},
        {"url": "amqp://user:pw-secret@host:70000/"},
        {"url": "amqp://user:pw-secret@[::1/"},
        {"url": "amqp://user:pw-secret@/vhost"},
        {"fallback_dir": "/nonexistent/folder"},
        {"lease": 10.0},  # not longer than confirm_timeout (10 s by default)
        {"confirm_timeout": 31.0},  # longer than lease (30 s by default)
    ],
    ids=lambda kwargs: f"{next(iter(kwargs))}={next(iter(kwargs.values()))}",
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises((ValueError, InvalidMessage)) as caught:
        Producer(**kwargs)
    assert "pw-secret" not in str(caught.value)


async def test_the_stores_size_limit_bounds_the_body(tmp_path: Path) -> None:
    class SmallStore(SQLiteStore):
        max_body_size = 100

    producer = Producer(NOWHERE, store=SmallStore(tmp_path / "s.db"), fallback_dir=tmp_path)
    assert producer.max_message_size == 100
    await producer.start()
    try:
        with pytest.raises(MessageTooLarge) as caught:
            await producer.publish(b"x" * 101)
        assert caught.value.limit == 100
        await producer.publish(b"x" * 100)
    finally:
        await producer.close(timeout=0)


async def test_headers_mutated_after_publish_do_not_reach_the_buffer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    producer = Producer(NOWHERE, store=store, spill_after=3600, fallback_dir=tmp_path)
    await producer.start()
    headers: dict[str, Any] = {"list": [1], "n": 1}
    await producer.publish(b"x", headers=headers, message_id="m")
    headers["list"].append(object())
    headers["bad"] = object()
    await producer.close(timeout=0)
    [stored] = await store.claim("reader", limit=1, lease=60)
    assert stored.headers == {"list": [1], "n": 1}
    await store.close()
