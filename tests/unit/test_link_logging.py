"""AmqpLink's lines for a blocked connection: one when a publisher finds it blocked,
one when it is unblocked. Driven without a broker: the aiormq connection is a stand-in."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from aioproducer import Backoff
from aioproducer._connection import AmqpLink
from tests.waiting import wait_until


class BlockedConnection:
    """What AmqpLink reads of an aiormq connection that the broker has blocked."""

    def __init__(self) -> None:
        self._Connection__connection_unblocked = asyncio.Event()
        self.is_closed = False

    async def ready(self) -> None:
        await self._Connection__connection_unblocked.wait()

    def unblock(self) -> None:
        self._Connection__connection_unblocked.set()


async def test_blocked_and_unblocked_are_each_told_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.connection")
    link = AmqpLink("amqp://app:s3cret@rabbit:5672/", backoff=Backoff())
    amqp = BlockedConnection()
    channel = object()

    async def channel_now(which: str) -> Any:
        return channel if amqp._Connection__connection_unblocked.is_set() else None

    monkeypatch.setattr(link, "_channel_now", channel_now)
    monkeypatch.setattr(link, "_amqp", lambda: amqp)
    waiters = [asyncio.create_task(link.channel(which)) for which in ("live", "replay")]
    await wait_until(lambda: any("blocked" in r.getMessage() for r in caplog.records))
    assert not any(w.done() for w in waiters)
    amqp.unblock()
    assert await asyncio.gather(*waiters) == [channel, channel]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "connection to amqp://app:***@rabbit:5672/ blocked by the broker (a resource alarm); "
        "publishes wait, messages spill on their deadline",
        "connection to amqp://app:***@rabbit:5672/ unblocked by the broker",
    ]
