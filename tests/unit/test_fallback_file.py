"""The file of last resort: what it holds of each message, and how it is read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aioproducer import Message
from aioproducer._fallback import read_messages, write_messages
from aioproducer._message import Properties


def messages() -> list[Message]:
    return [
        Message(
            "a" * 32,
            b"\x00\xffbinary",
            "orders",
            "orders.created",
            "application/json",
            timestamp=1_700_000_000.25,
            headers={
                "tenant": "t-1",
                "n": 7,
                "price": Decimal("9.99"),
                "at": datetime(2026, 11, 29, 12, 0, tzinfo=UTC),
                "nested": {"ok": True, "list": [1, "two", None]},
            },
            attempts=3,
            last_error="returned: 312 NO_ROUTE",
            dead=True,
            properties=Properties(priority=5, reply_to="replies", correlation_id="c-9"),
        ),
        Message("b" * 32, b"", "", "q", "text/plain", timestamp=1_700_000_001.0),
    ]


def test_every_field_of_each_message_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "unsent.jsonl"
    written = messages()
    assert write_messages(path, written) == 2
    back = list(read_messages(path))
    fields = (
        "message_id body exchange routing_key content_type timestamp headers attempts "
        "last_error dead properties"
    ).split()
    for before, after in zip(written, back, strict=True):
        assert {f: getattr(after, f) for f in fields} == {f: getattr(before, f) for f in fields}
    # One compact JSON object a line.
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all(", " not in line and '": ' not in line for line in lines)
    assert json.loads(lines[1])["dead"] is False


def test_a_write_that_fails_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "unsent.jsonl"

    def failing() -> Iterator[Message]:
        yield messages()[0]
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_messages(path, failing())
    assert not path.exists()
    # The same name is free again.
    assert write_messages(path, messages()) == 2


def test_a_bad_record_is_refused_naming_its_message(tmp_path: Path) -> None:
    path = tmp_path / "unsent.jsonl"
    write_messages(path, messages()[1:])
    record = json.loads(path.read_text(encoding="utf-8"))
    for field, value in (("timestamp", "yesterday"), ("attempts", 1.5)):
        path.write_text(json.dumps({**record, field: value}) + "\n", encoding="utf-8")
        with pytest.raises(ValueError) as raised:
            list(read_messages(path))
        assert str(raised.value) == f"bad record for message {'b' * 32!r}"
