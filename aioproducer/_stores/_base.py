"""The interface every store implements, and the lease rules they share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._message import Message


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
    """

    async def put(self, messages: Sequence[Message]) -> None:
        """Write ``messages`` durably, due at their ``due_at``.

        Idempotent by ``message_id``: a message already held is left as it is.
        """

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        """Lease up to ``limit`` due messages to ``owner``, oldest accepted first."""

    async def ack(self, message_ids: Sequence[str]) -> None:
        """Delete messages the broker confirmed. Unknown ids are ignored."""

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        """End ``owner``'s lease on ``messages``, saving their attempts, error and due time.

        A message whose lease ``owner`` no longer holds is left untouched.
        """

    async def count(self) -> int:
        """How many messages the store holds, leased or not."""

    async def close(self) -> None:
        """Release the database connection; the store reopens on its next use."""
