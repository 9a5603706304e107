"""Serialisation: the default JSON encoder's types, and a serializer of the caller's own."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pydantic
import pytest

from aioproducer import (
    BodyNotSerializable,
    Message,
    MessageTooLarge,
    Producer,
    SQLiteStore,
    json_serializer,
)
from aioproducer._serializer import encode_text

NOWHERE = "amqp://guest:guest@127.0.0.1:1/"
ORDER_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Line:
    sku: str
    price: Decimal


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    at: datetime
    lines: list[Line]


class OrderModel(pydantic.BaseModel):
    id: uuid.UUID
    at: datetime
    total: Decimal
    colour: Colour


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05+00:00"),
        (datetime(2026, 1, 2, 3, 4, 5, 600), "2026-01-02T03:04:05.000600"),
        (
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
            "2026-01-02T03:04:05-05:00",
        ),
        (date(2026, 1, 2), "2026-01-02"),
        (time(3, 4, 5), "03:04:05"),
        (ORDER_ID, "12345678-1234-5678-1234-567812345678"),
        (Decimal("12.30"), "12.30"),
        (Colour.RED, "red"),
        (Level.HIGH, 3),
        (
            Order(ORDER_ID, datetime(2026, 1, 2, tzinfo=UTC), [Line("a", Decimal("1.5"))]),
            {
                "id": "12345678-1234-5678-1234-567812345678",
                "at": "2026-01-02T00:00:00+00:00",
                "lines": [{"sku": "a", "price": "1.5"}],
            },
        ),
        (
            OrderModel(
                id=ORDER_ID,
                at=datetime(2026, 1, 2, tzinfo=UTC),
                total=Decimal("9.99"),
                colour=Colour.RED,
            ),
            {
                "id": "12345678-1234-5678-1234-567812345678",
                "at": "2026-01-02T00:00:00Z",
                "total": "9.99",
                "colour": "red",
            },
        ),
        (
            {"nested": [{"at": date(2026, 1, 2)}, Colour.RED]},
            {"nested": [{"at": "2026-01-02"}, "red"]},
        ),
    ],
    ids=[
        "aware-datetime",
        "naive-datetime",
        "offset-datetime",
        "date",
        "time",
        "uuid",
        "decimal",
        "enum",
        "int-enum",
        "dataclass",
        "pydantic",
        "nested",
    ],
)
def test_the_default_encodes_what_web_code_passes(body: Any, expected: Any) -> None:
    data, content_type = json_serializer(body)
    assert content_type == "application/json"
    assert json.loads(data) == expected


@pytest.mark.parametrize(
    "body", [object(), {1, 2}, complex(1, 2), {"x": float("inf")}, Line], ids=str
)
def test_the_default_refuses_the_rest(body: Any) -> None:
    with pytest.raises(BodyNotSerializable):
        json_serializer(body)


def test_bytes_and_text_keep_their_types() -> None:
    assert json_serializer(bytearray(b"\x00")) == (b"\x00", "application/octet-stream")
    assert json_serializer("é") == ("é".encode(), "text/plain; charset=utf-8")


def upper_text(body: Any) -> tuple[bytes, str]:
    """A serializer of the caller's own: everything as upper-case text."""
    return str(body).upper().encode(), "text/x-upper"


@pytest.fixture
async def custom(tmp_path: Path) -> AsyncIterator[Producer]:
    producer = Producer(
        NOWHERE,
        store=SQLiteStore(tmp_path / "spill.db"),
        spill_after=3600,
        max_message_size=100,
        fallback_dir=tmp_path,
        serializer=upper_text,
    )
    await producer.start()
    yield producer
    await producer.close(timeout=0)


def buffered(producer: Producer, message_id: str) -> Message:
    assert producer._context is not None
    message = producer._context.buffer.get(message_id)
    assert message is not None
    return message


async def test_a_custom_serializer_sets_body_and_content_type(custom: Producer) -> None:
    message = buffered(custom, await custom.publish({"a": 1}))
    assert (message.body, message.content_type) == (b"{'A': 1}", "text/x-upper")
    message = buffered(custom, await custom.publish("hi", content_type="text/plain"))
    assert (message.body, message.content_type) == (b"HI", "text/plain")
    # Bytes are never re-encoded.
    message = buffered(custom, await custom.publish(b"raw"))
    assert (message.body, message.content_type) == (b"raw", "application/octet-stream")


async def test_a_custom_serializers_failures_raise_at_publish(tmp_path: Path) -> None:
    def broken(body: Any) -> tuple[bytes, str]:
        raise ValueError("cannot")

    def wrong(body: Any) -> tuple[bytes, str]:
        return "not bytes", "text/plain"  # type: ignore[return-value]

    for serializer in (broken, wrong):
        async with Producer(
            NOWHERE,
            store=SQLiteStore(tmp_path / "s.db"),
            fallback_dir=tmp_path,
            serializer=serializer,
        ) as producer:
            with pytest.raises(BodyNotSerializable):
                await producer.publish({"a": 1})
            assert producer.stats().accepted == 0


async def test_the_size_limit_applies_to_what_the_serializer_made(custom: Producer) -> None:
    with pytest.raises(MessageTooLarge):
        await custom.publish("x" * 101)


def test_what_json_cannot_encode_is_refused_naming_its_type_and_a_lone_surrogate_its_cause() -> (
    None
):
    with pytest.raises(BodyNotSerializable) as raised:
        json_serializer({"ids": {1, 2}})
    assert str(raised.value) == "body is not JSON-serialisable: a set is not JSON-serialisable"
    assert isinstance(raised.value.__cause__, TypeError)
    with pytest.raises(BodyNotSerializable) as surrogate:
        encode_text("caf\ud800")
    assert str(surrogate.value) == "body is not valid Unicode (a lone surrogate)"
    assert surrogate.value.__cause__ is None
