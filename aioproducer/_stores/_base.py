"""The interface every store implements, and the lease rules they share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .._message import Message


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a store holds, by state, from :meth:`Store.backlog`."""

    total: int
    """Every message held."""
    due: int
    """Messages that may be claimed now."""
    leased: int
    """Messages claimed by a replayer whose lease has not expired."""
    held: int
    """Messages waiting for a retry time in the future (after a failure)."""
    dead: int
    """Messages that reached ``max_attempts``: kept, never retried."""
    oldest: float | None
    """Wall-clock accept time of the oldest message held, if any."""


@dataclass(frozen=True, slots=True)
class KeyCount:
    """How many messages a store holds for one exchange and routing key, from
    :meth:`Store.by_key`."""

    exchange: str
    routing_key: str
    total: int
    """Every message held for this key, dead ones included."""
    dead: int
    """Dead messages among them."""


@runtime_checkable
class Store(Protocol):
    """Where unconfirmed messages wait, durably, for the broker to come back.

    A store opens lazily on first use; :meth:`close` is idempotent and a closed
    store opens again on its next use. Every method raises
    :class:`~aioproducer.StoreError` when the backing database fails.

    Leases: :meth:`claim` hands each due message to one owner at a time, until
    ``lease`` seconds pass. An owner :meth:`ack`\\ s what the broker confirmed and
    :meth:`release`\\ s what it could not publish; a message whose lease expired
    (its owner crashed) is due again for anyone.

    Errors: :class:`~aioproducer.StoreUnavailable` when the database could not be
    reached or did not answer in time (retry), :class:`~aioproducer.StoreRejected`
    when it refused the messages of the call for what they are (isolate them).
    """

    max_body_size: int
    """The largest message body, in bytes, this store can hold (headers and names aside)."""

    async def put(self, messages: Sequence[Message]) -> None:
        """Write ``messages`` durably, due at their ``due_at``.

        Idempotent by ``message_id``: a message already held keeps its record. Only
        its failure record moves on: when the put carries more ``attempts`` than the
        store holds, or ``dead`` where the store's copy is live, its attempts, last
        error, due time and ``dead`` are taken from the put. (A copy written by a call
        that then answered with an error is thus brought up to date, and never
        outlives the message's fate.) Failure records only move forward: neither a
        put nor a :meth:`release` lowers ``attempts`` or revives a dead message.
        """

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        """Lease up to ``limit`` due messages to ``owner``: earliest due first, then
        oldest accepted.

        Dead messages are never claimed. Each message returned carries the
        ``lease_token`` of this claim. An empty list means that no due message was
        free: claims that run at the same time take different messages, and never
        come back empty because another claim got to the same message first.
        """

    async def ack(self, message_ids: Sequence[str]) -> None:
        """Delete messages the broker confirmed. Unknown ids are ignored."""

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        """End the leases of ``messages``, saving their attempts, error, due time and ``dead``
        (attempts never lower, ``dead`` never cleared: see :meth:`put`).

        Matched by each message's ``lease_token``: a message whose lease has passed to
        another claim (even one by an owner of the same name) is left untouched.
        """

    async def count(self) -> int:
        """How many messages the store holds, leased, dead or not: one cheap call.

        Cheap enough for a health check; a store may answer from its metadata
        (MongoDB), which can be off after a crash of the database server.
        """

    async def backlog(self) -> Backlog:
        """Exact counts of the messages held, by state, and the oldest accept time."""

    def scan(self, *, dead: bool | None = None, batch: int = 500) -> AsyncIterator[Message]:
        """Every message held (only dead ones, or only live ones, if ``dead`` says so),
        in ``message_id`` order, read ``batch`` at a time.

        For tools and operations: it takes no lease, and each batch is read on its
        own, so messages written or deleted meanwhile may or may not appear.
        """

    async def get(self, message_id: str) -> Message | None:
        """The message held under ``message_id``, or None."""

    async def by_key(self) -> list[KeyCount]:
        """Counts of the messages held, by exchange and routing key, largest first."""

    async def requeue(
        self,
        message_ids: Sequence[str],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> int:
        """Make the listed dead messages live again, due now, with no attempts counted.

        ``exchange`` and ``routing_key``, when given, replace the message's own.
        Messages that are not held or not dead are left alone. Returns how many
        were requeued.
        """

    async def purge_dead(self, message_ids: Sequence[str] | None = None) -> int:
        """Delete dead messages: the listed ones, or every one; return how many."""

    async def close(self) -> None:
        """Release the database connection; the store reopens on its next use."""
