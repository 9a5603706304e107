"""The ``aioproducer.*`` log lines tell the story, and never hold a password, body or header.

Every record of every aioproducer logger is captured at DEBUG while a producer meets a
closed port, a store that fails once, unroutable messages and a real broker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from aioproducer import Message, SQLiteStore, StoreUnavailable
from tests.waiting import wait_until

from .conftest import ProducerFactory

pytestmark = pytest.mark.broker

SECRET = "Pl4ntedS3cret"
BODY_MARK = "B0dyM4rker"
HEADER_MARK = "H3aderM4rker"


class FlakyStore(SQLiteStore):
    """A SQLite store whose first ``failures`` writes fail as if the database were down."""

    failures = 2

    async def put(self, messages: Sequence[Message]) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("SQLite put failed: unavailable (test)")
        await super().put(messages)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = []
    for record in caplog.records:
        if record.name.startswith("aioproducer"):
            text = record.getMessage()
            if record.exc_info:
                text += logging.Formatter().formatException(record.exc_info)
            out.append(f"{record.levelname} {record.name}: {text}")
    return out


def assert_clean(logged: list[str]) -> None:
    for line in logged:
        assert SECRET not in line, line
        assert BODY_MARK not in line, line
        assert HEADER_MARK not in line, line


async def test_no_broker_and_a_failing_store_are_told_without_secrets(
    make_producer: ProducerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer")
    producer = make_producer(
        f"amqp://ops:{SECRET}@127.0.0.1:1/", store=FlakyStore(tmp_path / "s.db"), spill_after=0.2
    )
    await producer.start()
    for n in range(3):
        await producer.publish(
            {BODY_MARK: n}, routing_key="orders", headers={"tenant": HEADER_MARK}
        )
    await wait_until(lambda: producer.stats().spilled == 3, what="three stored messages")
    await producer.close(timeout=1)
    logged = lines(caplog)
    assert_clean(logged)
    text = "\n".join(logged)
    assert "ops:***@127.0.0.1:1" in text
    assert "failing: SQLite put failed" in text
    assert "is back" in text
    assert "spilling to" in text and "stopped spilling, 3 stored" in text


async def test_dead_messages_and_connection_are_told_without_bodies(
    make_producer: ProducerFactory, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer")
    producer = make_producer(max_attempts=1)
    await producer.start()
    await producer.publish(BODY_MARK, routing_key=queue, headers={"h": HEADER_MARK})
    await producer.publish(BODY_MARK, routing_key=f"{queue}-nowhere", headers={"h": HEADER_MARK})
    assert await producer.flush(timeout=30)
    await wait_until(lambda: producer.stats().dead == 1, what="a dead message")
    await producer.close()
    logged = lines(caplog)
    assert_clean(logged)
    text = "\n".join(logged)
    assert "connected to amqp://guest:***@" in text
    assert "keeping it as dead" in text
    assert "closed" in text
