"""AmqpLink's lines: for a blocked connection (one when a publisher finds it blocked, one
when it is unblocked), and for each change of the connection (an attempt failed, lost,
connected, moved, closed). Driven without a broker: the aiormq connection is a
stand-in, and the callbacks aio-pika calls are called as it calls them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from aioproducer import Backoff
from aioproducer._connection import AmqpLink
from tests.fakes import VirtualClockLoop
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


async def test_a_new_connection_is_not_told_as_unblocked(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.connection")
    link = AmqpLink("amqp://app:s3cret@rabbit:5672/", backoff=Backoff())
    channel = object()

    async def channel_now(which: str) -> Any:
        return channel

    monkeypatch.setattr(link, "_channel_now", channel_now)
    for _ in range(2):  # connected, then connected again
        link._connected()
        assert await link.channel("live") is channel
    assert [r.getMessage() for r in caplog.records] == [
        "connected to amqp://app:***@rabbit:5672/"
    ] * 2


A = "amqp://app:s3cret@node-a:5672/"
B = "amqp://app:s3cret@node-b:5672/"
SHOWN_A = "amqp://app:***@node-a:5672/"
SHOWN_B = "amqp://app:***@node-b:5672/"


def keep_order(addresses: list[str]) -> None:
    """The shuffle a test gives a link: none, the addresses stay as given."""


def told(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    caplog.clear()
    return lines


@pytest.mark.parametrize("addresses", [[A], [A, B]], ids=["one-node", "two-nodes"])
async def test_each_change_of_the_connection_is_told_once_with_its_address_masked(
    caplog: pytest.LogCaptureFixture, addresses: list[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer.connection")
    errors: list[str] = []
    link = AmqpLink(
        addresses,
        backoff=Backoff(0.5, cap=4.0, jitter=0),
        on_error=errors.append,
        shuffle=keep_order,
    )
    two = len(addresses) == 2
    refused = ConnectionRefusedError(111, f"Connect call failed {A}")
    reason = "ConnectionRefusedError(111, 'Connect call failed amqp://app:***@node-a:5672/')"
    assert link.address is None and link.connections == 0

    # The first attempt fails: a warning naming what comes next; later ones at DEBUG.
    delay = link._rotation.failed()
    link._attempt_failed(refused, A, delay, first=True)
    following = SHOWN_B if two else SHOWN_A
    then = f"trying {SHOWN_B} next" if two else "retrying in the background"
    assert told(caplog) == [(logging.WARNING, f"cannot connect to {SHOWN_A}: {reason}; {then}")]
    failed_at = link._rotation.address
    delay = link._rotation.failed()
    link._attempt_failed(refused, failed_at, delay, first=False)
    shown = SHOWN_B if two else SHOWN_A
    assert told(caplog) == [
        (
            logging.DEBUG,
            f"connection attempt to {shown} failed: {reason}; next to {SHOWN_A} in {delay:.1f}s",
        )
    ]
    # One node: each failure is a full round (0.5 s, then 1 s); two: the second ends one.
    assert delay == (0.5 if two else 1.0)
    assert errors == [
        f"connecting to {SHOWN_A} failed: {reason}",
        f"connecting to {shown} failed: {reason}",
    ]
    errors.clear()

    # Connected (back at the first node): told, counted.
    link._rotation.connected()
    link._connected()
    assert told(caplog) == [(logging.INFO, f"connected to {SHOWN_A}")]
    assert link.connections == 1

    # Lost: a warning, once; aio-pika's further failed attempts only at DEBUG.
    lost = ConnectionResetError(104, "Connection reset by peer")
    link._on_connection_closed(None, lost)
    moving = f"; moving to {SHOWN_B}" if two else ""
    assert told(caplog) == [
        (
            logging.WARNING,
            f"connection to {SHOWN_A} lost: ConnectionResetError(104, "
            f"'Connection reset by peer'){moving}",
        )
    ]
    link._rotation.lost()
    link._on_connection_closed(None, refused)
    assert told(caplog) == [(logging.DEBUG, f"connection attempt to {following} failed: {reason}")]
    assert errors == [
        f"connection to {SHOWN_A} lost: ConnectionResetError(104, 'Connection reset by peer')",
        f"connecting to {following} failed: {reason}",
    ]

    # Reconnected, to the next node if there is one: the move is told.
    link._on_reconnected(None)
    moved = f"connected to {SHOWN_B} (moved from {SHOWN_A})" if two else f"connected to {SHOWN_A}"
    assert told(caplog) == [(logging.INFO, moved)]
    assert link.connections == 2

    # Closed by us: told as such, not as a loss.
    link._closing = True
    link._on_connection_closed(None, None)
    assert told(caplog) == [(logging.INFO, f"connection to {following} closed")]
    assert "s3cret" not in " ".join(errors)


def test_a_change_of_the_connection_wakes_a_waiting_channel_call_at_once(
    loop: VirtualClockLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = loop.call(lambda: AmqpLink("amqp://app:s3cret@rabbit:5672/", backoff=Backoff()))
    channel: list[object] = []

    async def channel_now(which: str) -> Any:
        return channel[0] if channel else None

    monkeypatch.setattr(link, "_channel_now", channel_now)
    monkeypatch.setattr(link, "_amqp", lambda: None)
    waiting = loop.drive(link.channel("live"), within=0.5)
    assert not waiting.done()
    channel.append(object())

    start = loop.time()
    loop.call(lambda: link._on_channel_event(None))  # as aio-pika calls it, on the loop
    # Woken by the change, not by the periodic re-check a second later.
    assert waiting.done() and waiting.result() is channel[0]
    assert loop.time() == start


def test_a_waiting_channel_call_notices_an_unblock_at_once_and_any_change_within_a_second(
    loop: VirtualClockLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aioproducer.connection")

    link = loop.call(lambda: AmqpLink("amqp://app:s3cret@rabbit:5672/", backoff=Backoff()))
    amqp = loop.call(BlockedConnection)
    channel: list[object] = []

    async def channel_now(which: str) -> Any:
        blocked = not amqp._Connection__connection_unblocked.is_set()
        return channel[0] if channel and not blocked else None

    monkeypatch.setattr(link, "_channel_now", channel_now)
    monkeypatch.setattr(link, "_amqp", lambda: amqp)
    channel.append(object())
    # Blocked: the wait ends the moment the broker unblocks, not at the next re-check.
    waiting = loop.drive(link.channel("live"), within=0.5)
    assert not waiting.done()

    start = loop.time()
    loop.call(amqp.unblock)
    assert waiting.result() is channel[0] and loop.time() == start
    # Blocked again, and a change hands a channel out meanwhile: the wait for the
    # unblock is given up, not left behind.
    amqp._Connection__connection_unblocked.clear()
    waiting = loop.drive(link.channel("live"), within=0.5)
    assert not waiting.done()
    handed: list[object] = []

    async def handed_out(which: str) -> Any:
        return handed[0] if handed else None

    monkeypatch.setattr(link, "_channel_now", handed_out)
    handed.append(object())
    loop.call(lambda: link._on_channel_event(None))
    assert waiting.result() is handed[0]
    left = [t for t in asyncio.all_tasks(loop) if "BlockedConnection.ready" in repr(t)]
    assert left == []
    amqp.unblock()
    # A closed connection is not told as blocked, whatever its flag says; and a change
    # that comes with no callback is seen at the re-check, a second later.
    caplog.clear()
    amqp.is_closed = True
    amqp._Connection__connection_unblocked.clear()
    ready: list[object] = []

    async def later(which: str) -> Any:
        return ready[0] if ready else None

    monkeypatch.setattr(link, "_channel_now", later)
    waiting = loop.drive(link.channel("live"), within=0.5)
    assert not waiting.done()
    ready.append(object())
    loop.drive(within=0.6)
    assert waiting.done() and waiting.result() is ready[0]
    assert caplog.records == []


async def test_an_attempt_that_fails_before_any_connection_is_not_told_as_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioproducer.connection")
    link = AmqpLink(A, backoff=Backoff(), shuffle=keep_order)
    refused = ConnectionRefusedError(111, "Connect call failed")
    # aio-pika calls the close callbacks after each failed attempt, the first included.
    link._on_connection_closed(None, refused)
    assert told(caplog) == [
        (
            logging.DEBUG,
            f"connection attempt to {SHOWN_A} failed: "
            "ConnectionRefusedError(111, 'Connect call failed')",
        )
    ]
