"""The in-memory buffer: every accepted message that is not yet settled.

Pure policy with no I/O: callers pass the current (monotonic) time, so the rules
on capacity, deadlines, high-water spilling and held-back messages are tested
without sleeping. A message is in exactly one of these places until it is
settled (confirmed by the broker, or durably stored):

- ``pending``: waiting to be published, oldest first;
- ``held``: failed for a reason of its own (nack, return, broke its channel);
  waiting for the store, or for its backoff to end if the store is down;
- ``dead``: reached ``max_attempts``; waiting to be stored as dead, never published;
- ``in_flight``: published, its confirm not yet in;
- ``spilling``: being written to the store.

A message still in flight at its deadline is not taken back: a *copy* of it is
stored, which settles it, while its confirm may still come in. If it does, the copy
is deleted; if the publish fails, the message is dropped from memory and the store's
copy is replayed. So a slow broker never causes a second publish from memory.

Every change of a message's :class:`~aioproducer._message.State` goes through
:meth:`Buffer.move`, which refuses a move :data:`~aioproducer._message.MOVES` does
not list and tells ``observer``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable

from ._exceptions import BufferFull, InvalidMessage
from ._message import MOVES, Message, State

Observer = Callable[[Message, State], None]


class Buffer:
    """Bounded store of unsettled messages, keyed by message id."""

    def __init__(
        self,
        *,
        capacity: int,
        high_water: int,
        max_bytes: int | None = None,
        observer: Observer | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("max_buffer must be at least 1")
        if not 0 < high_water <= capacity:
            raise ValueError("high_water must be between 1 and max_buffer")
        self.capacity = capacity
        self.high_water = high_water
        self.max_bytes = max_bytes
        self.observer = observer
        self.bytes = 0
        self._unsettled: dict[str, Message] = {}
        self._pending: deque[Message] = deque()
        self._held: list[tuple[float, int, Message]] = []
        self._held_seq = itertools.count()
        self._dead: list[Message] = []
        self._in_flight: dict[str, Message] = {}
        self._spilling = 0
        self.has_pending = asyncio.Event()
        #: Set when the spill task should look again: something is held or dead, the
        #: queue has a new head (so a new next deadline), or memory is above high water.
        self.needs_spill = asyncio.Event()
        self.empty = asyncio.Event()
        self.empty.set()

    def __len__(self) -> int:
        return len(self._unsettled)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def held(self) -> int:
        return len(self._held) + len(self._dead)

    def move(self, message: Message, state: State) -> None:
        """Record ``message``'s move to ``state``; a move MOVES does not list is a bug."""
        if state not in MOVES[message.state]:
            raise AssertionError(
                f"message {message.message_id}: no move from {message.state.value} to {state.value}"
            )
        message.state = state
        if self.observer is not None:
            self.observer(message, state)

    def add(self, message: Message) -> None:
        """Accept ``message`` or raise, leaving the buffer unchanged."""
        unsettled = self._unsettled
        if len(unsettled) >= self.capacity:
            raise BufferFull(self.capacity)
        size = message.size
        if self.max_bytes is not None and self.bytes + size > self.max_bytes and unsettled:
            raise BufferFull(self.capacity, self.max_bytes)
        message_id = message.message_id
        if message_id in unsettled or message_id in self._in_flight:
            raise InvalidMessage(f"message_id {message_id!r} is already in use, not yet settled")
        unsettled[message_id] = message
        self.bytes += size
        pending = self._pending
        if not pending or len(unsettled) > self.high_water:
            # A new head of the queue (a new next deadline), or too much in memory.
            self.needs_spill.set()
        pending.append(message)
        if len(unsettled) == 1:
            self.empty.clear()
        self.has_pending.set()
        if self.observer is not None:
            self.observer(message, State.MEMORY)

    def add_all(self, messages: list[Message]) -> None:
        """Accept every message of ``messages``, or raise, leaving the buffer unchanged."""
        unsettled = self._unsettled
        if len(unsettled) + len(messages) > self.capacity:
            raise BufferFull(self.capacity)
        size = sum(m.size for m in messages)
        if (
            self.max_bytes is not None
            and self.bytes + size > self.max_bytes
            and (unsettled or len(messages) > 1)
        ):
            # (As for add(): one message alone may exceed the bound of an empty buffer.)
            raise BufferFull(self.capacity, self.max_bytes)
        ids: set[str] = set()
        for message in messages:
            message_id = message.message_id
            if message_id in unsettled or message_id in self._in_flight or message_id in ids:
                raise InvalidMessage(
                    f"message_id {message_id!r} is already in use, not yet settled"
                )
            ids.add(message_id)
        for message in messages:
            self.add(message)

    def get(self, message_id: str) -> Message | None:
        """The unsettled message ``message_id``, if memory holds one."""
        return self._unsettled.get(message_id)

    def take(self, now: float, limit: int) -> list[Message]:
        """Up to ``limit`` messages to publish now; they count as in flight."""
        batch: list[Message] = []
        held = self._held
        while held and len(batch) < limit and held[0][0] <= now:
            batch.append(heapq.heappop(held)[2])
        pending = self._pending
        while pending and len(batch) < limit:
            batch.append(pending.popleft())
        in_flight = self._in_flight
        for message in batch:
            in_flight[message.message_id] = message
            self.move(message, State.IN_FLIGHT)
        if not pending:
            self.has_pending.clear()
        return batch

    def ready(self, now: float) -> bool:
        """Whether :meth:`take` would return anything at ``now``."""
        return bool(self._pending) or bool(self._held and self._held[0][0] <= now)

    def next_held(self) -> float | None:
        """When the first held message may be published again, if any is held."""
        return self._held[0][0] if self._held else None

    def take_in_flight(self) -> list[Message]:
        """Every in-flight message, for :meth:`retry` after their publishes were cut short."""
        return list(self._in_flight.values())

    def _land(self, message: Message) -> None:
        """``message``'s publish ended: it is no longer in flight."""
        if self._in_flight.get(message.message_id) is message:
            del self._in_flight[message.message_id]

    def settle(self, message: Message) -> bool:
        """The broker confirmed ``message``: forget it.

        True if a copy of it is in the store, now redundant, to be deleted.
        """
        self._land(message)
        self._forget(message)
        self.move(message, State.CONFIRMED)
        return message.stored

    def retry(self, messages: Iterable[Message]) -> None:
        """Put in-flight ``messages`` back in the queue, in their place by deadline.

        A message with a copy in the store is dropped instead: replay has it.
        """
        returned: list[Message] = []
        for message in messages:
            self._land(message)
            if message.stored:
                self._forget(message)
                self.move(message, State.STORED)
            else:
                message.not_before = 0.0
                self.move(message, State.MEMORY)
                returned.append(message)
        self._requeue(returned)
        if returned:
            self.needs_spill.set()

    def hold(self, message: Message, not_before: float) -> None:
        """Keep an in-flight ``message`` back until it is stored or ``not_before`` passes.

        A message marked ``dead`` is kept for the store only, never published again.
        """
        self._land(message)
        if message.stored:
            self._forget(message)
            self.move(message, State.STORED)
            return
        self.move(message, State.MEMORY)
        if message.dead:
            self._dead.append(message)
        else:
            message.not_before = not_before
            heapq.heappush(self._held, (not_before, next(self._held_seq), message))
        self.needs_spill.set()

    def take_for_spill(self, now: float, limit: int) -> list[Message]:
        """Messages to store now.

        Dead ones, held ones, pending ones past their deadline or above high water
        (these leave the queue), and in-flight ones past their deadline (these stay
        in flight and are marked ``copying``). Messages the store refused
        (``unstorable``) stay where they are.
        """
        batch: list[Message] = []
        kept: list[Message] = []
        for message in self._dead:
            if message.unstorable or len(batch) >= limit:
                kept.append(message)
            else:
                batch.append(message)
        self._dead = kept
        keep: list[tuple[float, int, Message]] = []
        for entry in self._held:
            if len(batch) < limit and not entry[2].unstorable:
                batch.append(entry[2])
            else:
                keep.append(entry)
        if len(keep) != len(self._held):
            heapq.heapify(keep)
            self._held = keep
        pending = self._pending
        excess = len(self._unsettled) - self._spilling - len(batch) - self.high_water
        skipped: list[Message] = []
        while pending and len(batch) < limit:
            # Refused messages are passed over whatever their deadline, as next_deadline()
            # passes over them: a retried one may sit before older messages already due.
            if pending[0].unstorable:
                skipped.append(pending.popleft())
                continue
            if pending[0].deadline > now and excess <= 0:
                break
            batch.append(pending.popleft())
            excess -= 1
        pending.extendleft(reversed(skipped))
        self._spilling += len(batch)
        for message in self._in_flight.values():
            if len(batch) >= limit:
                break
            if message.deadline <= now and not (
                message.stored or message.copying or message.unstorable
            ):
                message.copying = True
                batch.append(message)
        if not pending:
            self.has_pending.clear()
        self.needs_spill.clear()
        return batch

    def spilled(self, messages: Iterable[Message]) -> list[str]:
        """``messages`` taken by :meth:`take_for_spill` are durably stored: they are settled.

        Returns the ids of copies made redundant while they were written (their
        confirm came in meanwhile), to be deleted from the store.
        """
        redundant: list[str] = []
        for message in messages:
            if not message.copying:
                self._spilling -= 1
                self._forget(message)
                self.move(message, State.DEAD if message.dead else State.STORED)
                continue
            message.copying = False
            message.stored = True
            if message.state is State.IN_FLIGHT:
                self._forget(message)
                self.move(message, State.STORED_IN_FLIGHT)
            elif message.state is State.CONFIRMED:
                # Its confirm came in while the copy was written.
                redundant.append(message.message_id)
            elif message.state is State.MEMORY:
                # Its publish failed while the copy was written: the copy settles it.
                self._unqueue(message)
                self._forget(message)
                self.move(message, State.STORED)
        return redundant

    def unspill(self, messages: Iterable[Message]) -> None:
        """The store did not take ``messages``: keep them in memory as they were.

        A copy of an in-flight message is simply not made; the message is wherever
        its publish left it.
        """
        requeue: list[Message] = []
        for message in messages:
            if message.copying:
                message.copying = False
                continue
            self._spilling -= 1
            if message.dead:
                self._dead.append(message)
            elif message.not_before or message.unstorable:
                heapq.heappush(self._held, (message.not_before, next(self._held_seq), message))
            else:
                requeue.append(message)
        self._requeue(requeue)

    def _requeue(self, messages: list[Message]) -> None:
        """Put ``messages`` back in the pending queue, which stays in deadline order.

        The queue's head must be its next deadline: :meth:`take_for_spill` and
        :meth:`next_deadline` look no further. Messages coming back are mostly older
        than all that waits and go first; one that is not (retried after being held
        back, say) takes its place among the others.
        """
        if not messages:
            return
        messages.sort(key=_by_deadline)
        pending = self._pending
        if not pending or _by_deadline(messages[-1]) <= _by_deadline(pending[0]):
            pending.extendleft(reversed(messages))
        else:
            # Rare, and linear: on ties, those coming back go first (taken first).
            merged = list(heapq.merge(messages, pending, key=_by_deadline))
            pending.clear()
            pending.extend(merged)
        self.has_pending.set()

    def _unqueue(self, message: Message) -> None:
        """Take ``message`` out of the pending queue, the held heap or the dead list."""
        if message in self._pending:
            self._pending.remove(message)
            if not self._pending:
                self.has_pending.clear()
        elif message in self._dead:
            self._dead.remove(message)
        else:
            self._held = [entry for entry in self._held if entry[2] is not message]
            heapq.heapify(self._held)

    def take_all(self) -> list[Message]:
        """Everything not in flight or being spilled, for a final store on close."""
        batch = list(self._dead)
        batch.extend(entry[2] for entry in self._held)
        batch.extend(self._pending)
        self._dead.clear()
        self._held.clear()
        self._pending.clear()
        self._spilling += len(batch)
        self.has_pending.clear()
        return batch

    def next_deadline(self) -> float | None:
        """When the next unsettled message falls due for the store, if any will."""
        deadline = None
        for message in self._pending:
            if not message.unstorable:
                deadline = message.deadline
                break
        for message in self._in_flight.values():
            if not (message.stored or message.copying or message.unstorable) and (
                deadline is None or message.deadline < deadline
            ):
                deadline = message.deadline
        return deadline

    def _forget(self, message: Message) -> None:
        unsettled = self._unsettled
        if unsettled.get(message.message_id) is message:
            del unsettled[message.message_id]
            self.bytes -= message.size
            if not unsettled:
                self.empty.set()


def _by_deadline(message: Message) -> tuple[float, float]:
    return message.deadline, message.timestamp
