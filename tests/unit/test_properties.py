"""AMQP properties per message: checked at publish(), carried on the wire as given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pamqp import commands, frame
from pamqp.header import ContentHeader

from aioproducer import InvalidMessage, Message, Producer, Properties, SQLiteStore
from aioproducer._connection import message_properties
from tests.waiting import run_without_suspending

NOWHERE = "amqp://shop:secret@127.0.0.1:1/"


def plain_id(text: str) -> str:
    """A test id of printable ASCII without backslashes, at most 40 characters.

    pytest escapes other ids, and escapes them again when the same module is collected
    a second time in one process (as mutmut does), so such an id would not be found.
    """
    return "".join(c if " " <= c <= "~" and c != "\\" else "%" for c in text)[:40]


EVERY: dict[str, Any] = {
    "priority": 255,
    "correlation_id": "corr-é",
    "reply_to": "amq.rabbitmq.reply-to",
    "expiration": 60_000,
    "type": "order.created",
    "app_id": "shop-api",
    "user_id": "shop",
    "content_encoding": "gzip",
    "persistent": False,
    "mandatory": False,
}


@pytest.fixture
async def producer(tmp_path: Path) -> AsyncIterator[Producer]:
    producer = Producer(
        NOWHERE,
        store=SQLiteStore(tmp_path / "spill.db"),
        spill_after=3600,
        fallback_dir=tmp_path,
    )
    await producer.start()
    yield producer
    await producer.close(timeout=0)


def buffered(producer: Producer, message_id: str) -> Message:
    assert producer._context is not None
    message = producer._context.buffer.get(message_id)
    assert message is not None
    return message


def on_the_wire(message: Message, *, persistent: bool = True) -> commands.Basic.Properties:
    """Encode the content header as the link does and decode it back."""
    properties = message_properties(message, persistent=persistent)
    data = frame.marshal(ContentHeader(body_size=len(message.body), properties=properties), 1)
    _, _, decoded = frame.unmarshal(data)
    assert isinstance(decoded, ContentHeader)
    return decoded.properties


async def test_every_property_is_kept_and_goes_on_the_wire(producer: Producer) -> None:
    message_id = run_without_suspending(producer.publish(b"x", routing_key="q", **EVERY))
    message = buffered(producer, message_id)
    assert message.properties == Properties(**{**EVERY, "expiration": "60000"})
    wire = on_the_wire(message)
    assert (
        wire.priority,
        wire.correlation_id,
        wire.reply_to,
        wire.expiration,
        wire.message_type,
        wire.app_id,
        wire.user_id,
        wire.content_encoding,
        wire.delivery_mode,
    ) == (
        255,
        "corr-é",
        "amq.rabbitmq.reply-to",
        "60000",
        "order.created",
        "shop-api",
        "shop",
        "gzip",
        1,
    )
    assert (wire.message_id, wire.content_type) == (message_id, "application/octet-stream")


async def test_without_properties_the_producers_defaults_go_on_the_wire(
    producer: Producer,
) -> None:
    message = buffered(producer, await producer.publish(b"x"))
    assert message.properties is None
    wire = on_the_wire(message, persistent=True)
    assert wire.delivery_mode == 2
    assert (wire.priority, wire.expiration, wire.message_type, wire.user_id) == (None,) * 4
    assert on_the_wire(message, persistent=False).delivery_mode == 1


async def test_a_message_persistent_overrides_the_producers_default(producer: Producer) -> None:
    message = buffered(producer, await producer.publish(b"x", persistent=True))
    assert on_the_wire(message, persistent=False).delivery_mode == 2


@pytest.mark.parametrize(
    ("given", "wire"),
    [
        (0, "0"),
        (2**32 - 1, "4294967295"),
        (timedelta(seconds=1.5), "1500"),
        (timedelta(days=1), "86400000"),
        ("250", "250"),
    ],
    ids=["zero", "largest", "timedelta", "a-day", "digits"],
)
async def test_expiration_goes_as_milliseconds_text(
    producer: Producer, given: Any, wire: str
) -> None:
    message = buffered(producer, await producer.publish(b"x", expiration=given))
    assert on_the_wire(message).expiration == wire


@pytest.mark.parametrize(
    "kwargs",
    [
        {"priority": 256},
        {"priority": -1},
        {"priority": True},
        {"priority": 1.0},
        {"expiration": -1},
        {"expiration": 2**32},
        {"expiration": 1.5},
        {"expiration": timedelta(microseconds=1500)},
        {"expiration": timedelta(seconds=-1)},
        {"expiration": "1e3"},
        {"expiration": True},
        {"correlation_id": "c" * 256},
        {"reply_to": 5},
        {"type": "t\ud800"},
        {"app_id": b"a"},
        {"content_encoding": "é" * 128},
        {"user_id": "guest"},
        {"persistent": 1},
        {"mandatory": "yes"},
    ],
    ids=lambda kwargs: plain_id(f"{next(iter(kwargs))}={next(iter(kwargs.values()))!r}"),
)
async def test_bad_properties_raise_and_enqueue_nothing(
    producer: Producer, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidMessage):
        await producer.publish(b"x", **kwargs)
    with pytest.raises(InvalidMessage):
        await producer.publish_many([b"ok", b"x"], **kwargs)
    assert (producer.stats().accepted, producer.stats().buffered) == (0, 0)


async def test_user_id_must_be_the_connections_user(tmp_path: Path) -> None:
    async with Producer(
        "amqp://127.0.0.1:1/", store=SQLiteStore(tmp_path / "s.db"), fallback_dir=tmp_path
    ) as producer:
        # No user in the URL: aio-pika connects as guest.
        assert await producer.publish(b"x", user_id="guest")
        with pytest.raises(InvalidMessage, match="not the user the producer connects as"):
            await producer.publish(b"x", user_id="admin")
