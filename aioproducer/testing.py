"""A test double for code that publishes: :class:`FakeProducer`.

It is a :class:`~aioproducer.Producer` (same constructor, same methods, the same
checks at ``publish()``) that never connects and never stores: what is published is
recorded in memory, and settles a moment later as the test says. ::

    from aioproducer.testing import FakeProducer

    async def test_order_is_announced() -> None:
        async with FakeProducer() as producer:
            await place_order(producer, order_id=1)
            assert producer.decoded_bodies() == [{"order": 1}]
            assert producer.published[0].routing_key == "orders"

Tell it to fail with :meth:`FakeProducer.fail_with` (every publish raises that
error, accepting nothing), to settle otherwise with ``settle_as`` (STORED, DEAD), or
not to settle on its own (``auto_settle = False``, then :meth:`FakeProducer.settle`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable
from typing import Any

from ._context import Context
from ._exceptions import BufferFull, InvalidMessage, ProducerClosed, UnknownMessage
from ._message import Message, State
from ._producer import Producer, ProducerState, ProducerStats, _await_settlement
from ._settlement import Settlement, Settlements

__all__ = ["FakeProducer"]

_STATES = {
    Settlement.CONFIRMED: State.CONFIRMED,
    Settlement.STORED: State.STORED,
    Settlement.DEAD: State.DEAD,
}


class FakeProducer(Producer):
    """An in-memory :class:`~aioproducer.Producer` that records what is published.

    ``published`` lists every accepted message (a :class:`~aioproducer.Message`:
    body as bytes, routing key, headers, properties...), in order. Unless
    ``auto_settle`` is off, each one settles as ``settle_as`` on the next turn of
    the loop: ``settled()`` and ``on_settled`` see it as they would see the broker's
    confirm. ``close()`` settles what is left as STORED, as the real one stores it.
    """

    #: How accepted messages settle on their own.
    settle_as: Settlement = Settlement.CONFIRMED
    #: Whether accepted messages settle on their own (else: :meth:`settle`).
    auto_settle: bool = True
    _published: list[Message] | None = None
    _failure: BaseException | None = None
    _unsettled: dict[str, Message] | None = None
    _idle: asyncio.Event | None = None

    # -- what a test reads -------------------------------------------------------

    @property
    def published(self) -> list[Message]:
        """Every message accepted, in order."""
        return self._published if self._published is not None else []

    def decoded_bodies(self) -> list[Any]:
        """The bodies of every message accepted, decoded: JSON as values, text as str."""
        return [_decoded(message) for message in self.published]

    def clear(self) -> None:
        """Forget what was published (messages not settled yet stay unsettled)."""
        if self._published is not None:
            self._published.clear()

    # -- what a test tells it --------------------------------------------------

    def fail_with(self, error: BaseException | None) -> None:
        """Make every publish raise ``error`` (say ``BufferFull(10)``); None: stop failing."""
        self._failure = error

    def settle(self, message_id: str | None = None, outcome: Settlement | None = None) -> None:
        """Settle one unsettled message (or every one) as ``outcome`` (else ``settle_as``)."""
        unsettled = self._unsettled or {}
        if message_id is not None and message_id not in unsettled:
            raise UnknownMessage(message_id)
        ids = [message_id] if message_id is not None else list(unsettled)
        for each in ids:
            self._settle_now(unsettled[each], outcome or self.settle_as)

    # -- the Producer's life, without a broker or a store -----------------------

    async def start(self) -> None:
        """Start recording; no connection is made."""
        if self._state is ProducerState.RUNNING:
            return
        if self._state is not ProducerState.NEW:
            raise ProducerClosed("a closed producer cannot be started again")
        context = Context(self._settings, self.store, self.owner, observer=self._observer)
        context.wall = self._wall
        self._context = context
        self._settlements = Settlements(self.owner, self._on_settled)
        self._published = []
        self._unsettled = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._state = ProducerState.RUNNING

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting; what is not settled yet settles as STORED. Idempotent."""
        if self._state is ProducerState.RUNNING:
            self._state = ProducerState.CLOSING
            for message in list((self._unsettled or {}).values()):
                self._settle_now(message, Settlement.STORED)
            assert self._settlements is not None
            self._settlements.close()
        self._state = ProducerState.CLOSED

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every accepted message has settled; False if ``timeout`` passes first."""
        if self._idle is None:
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def settled(self, message_id: str, *, timeout: float | None = None) -> Awaitable[Settlement]:
        """As :meth:`Producer.settled`, for the messages this fake holds."""
        if self._settlements is None or self._unsettled is None:
            raise ProducerClosed(f"producer is {self._state.value}")
        message = self._unsettled.get(message_id)
        if message is None:
            recent = self._settlements.recent
            outcome = recent.get(message_id) if recent is not None else None
            if outcome is None:
                raise UnknownMessage(message_id)
            future = asyncio.get_running_loop().create_future()
            future.set_result(outcome)
        else:
            future = self._settlements.wait_for(message)
        return _await_settlement(future, message_id, timeout)

    def stats(self) -> ProducerStats:
        """The real counters, with what the fake holds as buffered."""
        stats = super().stats()
        unsettled = self._unsettled or {}
        return dataclasses.replace(
            stats,
            buffered=len(unsettled),
            buffered_bytes=sum(m.size for m in unsettled.values()),
            connected=self._state is ProducerState.RUNNING,
        )

    def _accept(self, message: Message) -> None:
        self._accept_all([message])

    def _accept_all(self, messages: list[Message]) -> None:
        if self._failure is not None:
            raise self._failure
        unsettled = self._unsettled
        assert unsettled is not None and self._context is not None
        if len(unsettled) + len(messages) > self.max_buffer:
            raise BufferFull(self.max_buffer)
        ids = {m.message_id for m in messages}
        if len(ids) < len(messages) or not ids.isdisjoint(unsettled):
            raise InvalidMessage("a message_id of the batch is already in use, not yet settled")
        loop = asyncio.get_running_loop()
        for message in messages:
            unsettled[message.message_id] = message
            self.published.append(message)
            if self.auto_settle:
                loop.call_soon(self._settle_later, message)
        self._context.counters.accepted += len(messages)
        if self._idle is not None and unsettled:
            self._idle.clear()

    def _settle_later(self, message: Message) -> None:
        if self._unsettled is not None and self._unsettled.get(message.message_id) is message:
            self._settle_now(message, self.settle_as)

    def _settle_now(self, message: Message, outcome: Settlement) -> None:
        assert self._unsettled is not None and self._context is not None
        del self._unsettled[message.message_id]
        counters = self._context.counters
        if outcome is Settlement.CONFIRMED:
            counters.confirmed += 1
        elif outcome is Settlement.STORED:
            counters.spilled += 1
        else:
            counters.dead += 1
        state = _STATES[outcome]
        message.state = state
        if self._observer is not None:
            self._observer(message, state)
        assert self._settlements is not None
        self._settlements.observe(message, state)
        if not self._unsettled and self._idle is not None:
            self._idle.set()


def _decoded(message: Message) -> Any:
    if message.content_type.startswith("application/json"):
        return json.loads(message.body)
    if message.content_type.startswith("text/"):
        return message.body.decode()
    return message.body
