"""How a message settled, and who is told: waiters of ``settled()`` and ``on_settled``.

Nothing here runs per message unless someone listens: the producer installs
:meth:`Settlements.observe` as the buffer's observer only once an ``on_settled`` hook
is set or a first waiter registers.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from typing import Protocol

from ._message import Message, State

log = logging.getLogger("aioproducer.producer")


class Settlement(enum.Enum):
    """How an accepted message settled."""

    CONFIRMED = "confirmed"
    """The broker confirmed it (routed, with ``mandatory``)."""
    STORED = "stored"
    """The store holds it durably; it is replayed from there."""
    DEAD = "dead"
    """The store keeps it as dead after ``max_attempts`` failures; never retried."""


class SettledHook(Protocol):
    """``on_settled``: called with a message's id and how it settled, on the producer's loop."""

    def __call__(self, message_id: str, outcome: Settlement, /) -> None: ...


#: How many settled messages' outcomes ``settled()`` can still tell, after the fact.
RECENT_OUTCOMES = 10_000

#: The settlement each settled state stands for.
OUTCOMES = {
    State.CONFIRMED: Settlement.CONFIRMED,
    State.STORED_IN_FLIGHT: Settlement.STORED,
    State.STORED: Settlement.STORED,
    State.DEAD: Settlement.DEAD,
}


class Settlements:
    """The waiters for messages in memory, and the ``on_settled`` hook.

    A waiter learns a message's first settlement: STORED for one whose copy was
    stored, even if its confirm comes in later. The hook hears that first settlement
    of each message this producer accepted, and then, for a stored message, its
    CONFIRMED or DEAD when this producer's replay (or a late confirm) ends it; replay
    reports messages of every producer that shares the store.
    """

    def __init__(self, owner: str, hook: SettledHook | None) -> None:
        self._owner = owner
        self._hook = hook
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[str, tuple[Message, asyncio.Future[Settlement | None]]] = {}
        #: How the latest messages first settled: kept once anyone has waited, so a
        #: wait that comes after the fact is answered too.
        self.recent: collections.OrderedDict[str, Settlement] | None = None

    def wait_for(self, message: Message) -> asyncio.Future[Settlement | None]:
        """A future that ``message``'s first settlement resolves (None: the producer closed)."""
        entry = self._waiters.get(message.message_id)
        if entry is not None and entry[0] is message:
            return entry[1]
        future: asyncio.Future[Settlement | None] = self._loop.create_future()
        self._waiters[message.message_id] = (message, future)
        if self.recent is None:
            self.recent = collections.OrderedDict()
        return future

    def observe(self, message: Message, state: State) -> None:
        """A move of ``message`` (the buffer's observer): tell whoever listens of a settlement."""
        outcome = OUTCOMES.get(state)
        if outcome is None:
            return
        if self._waiters:
            entry = self._waiters.get(message.message_id)
            if entry is not None and entry[0] is message:
                del self._waiters[message.message_id]
                if not entry[1].done():
                    entry[1].set_result(outcome)
        first = not message.reported
        message.reported = True
        recent = self.recent
        if recent is not None and first and message.message_id not in recent:
            recent[message.message_id] = outcome
            if len(recent) > RECENT_OUTCOMES:
                recent.popitem(last=False)
        if self._hook is not None and (first or outcome is not Settlement.STORED):
            # Not from inside the buffer's bookkeeping: the hook may publish.
            self._loop.call_soon(self._report, message.message_id, outcome)

    def _report(self, message_id: str, outcome: Settlement) -> None:
        assert self._hook is not None
        try:
            self._hook(message_id, outcome)
        except Exception:
            log.exception(
                "producer %s: on_settled failed for message %s (%s)",
                self._owner,
                message_id,
                outcome.value,
            )

    def close(self) -> None:
        """The producer closed: wake every waiter left (its message was neither stored
        nor confirmed, see the log)."""
        waiters, self._waiters = self._waiters, {}
        for _message, future in waiters.values():
            if not future.done():
                future.set_result(None)
