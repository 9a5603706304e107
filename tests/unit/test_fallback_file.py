"""The file of last resort: what it holds of each message, and how it is read back."""

from __future__ import annotations

import calendar
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from aioproducer import Message
from aioproducer._fallback import read_messages, write_fallback, write_messages
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
    bad = (
        ("timestamp", "yesterday"),
        ("attempts", 1.5),
        ("headers", {"tenant": "acme"}),  # headers are kept as encoded text, or null
        ("last_error", 5),
    )
    for field, value in bad:
        path.write_text(json.dumps({**record, field: value}) + "\n", encoding="utf-8")
        with pytest.raises(ValueError) as raised:
            list(read_messages(path))
        assert str(raised.value) == f"bad record for message {'b' * 32!r}"


def test_a_write_that_fails_after_its_file_vanished_raises_its_own_error(tmp_path: Path) -> None:
    path = tmp_path / "unsent.jsonl"

    def failing() -> Iterator[Message]:
        yield messages()[0]
        path.unlink()
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left") as raised:
        write_messages(path, failing())
    assert raised.value.errno == 28
    assert not path.exists()


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time five and a half hours ahead of UTC."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_the_file_is_named_in_utc_with_each_slash_of_the_owner_a_dash(tmp_path: Path) -> None:
    assert time.timezone == -(5 * 3600 + 1800)
    before = int(time.time())
    path = write_fallback(tmp_path, "eu/web/1:812", messages())
    after = int(time.time())
    assert path is not None and path.parent == tmp_path
    found = re.fullmatch(
        r"aioproducer-unsent-eu-web-1-812-(\d{8}T\d{6})-[0-9a-f]{6}\.jsonl", path.name
    )
    assert found is not None, path.name
    assert before <= calendar.timegm(time.strptime(found.group(1), "%Y%m%dT%H%M%S")) <= after
    assert [m.message_id for m in read_messages(path)] == ["a" * 32, "b" * 32]


class Unwritable(list[Message]):
    """Messages whose writing fails with an OSError that has no errno."""

    def __iter__(self) -> Iterator[Message]:
        raise OSError("the volume went read-only")


@pytest.mark.parametrize(
    ("unwritable", "reason"),
    [("missing folders", "No such file or directory"), ("no errno", "the volume went read-only")],
    ids=["missing-folders", "no-errno"],
)
def test_each_folder_that_fails_is_logged_with_the_count_path_and_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    unwritable: str,
    reason: str,
) -> None:
    folder, temp = tmp_path / "folder", tmp_path / "temp"
    written = messages()
    if unwritable == "no errno":
        folder.mkdir()
        temp.mkdir()
        written = Unwritable(written)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with caplog.at_level(logging.ERROR, "aioproducer.spill"):
        assert write_fallback(folder, "web-1", written) is None
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2
    for (name, level, text), where in zip(lines, (folder, temp), strict=True):
        assert (name, level) == ("aioproducer.spill", "ERROR")
        pattern = (
            rf"writing 2 messages to {re.escape(str(where))}/aioproducer-unsent-web-1-"
            rf"\d{{8}}T\d{{6}}-[0-9a-f]{{6}}\.jsonl failed: {reason}"
        )
        assert re.fullmatch(pattern, text), text
    assert [p.name for p in tmp_path.rglob("*.jsonl")] == []
