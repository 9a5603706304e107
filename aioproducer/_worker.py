"""The replay loop on its own: drains a store to the broker with no producer accepting publishes.

Built from the producer's own pieces (:class:`Context`, :class:`AmqpLink`,
:class:`Replayer`), so a standalone worker claims, publishes, settles and backs off
exactly as the replay task inside a producer does. Used by ``aioproducer replay``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._config import (
    DEFAULT_RECONNECT_BACKOFF,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_STORE_BACKOFF,
    Settings,
)
from ._connection import AmqpLink
from ._context import Context, supervise
from ._message import Message
from ._replay import Replayer
from ._stores._base import Backlog, KeyCount, Store

log = logging.getLogger("aioproducer.replay")

#: Seconds the worker gives itself to hand back its leases when stopped.
RELEASE_ON_STOP = 2.0


class _TrackingStore:
    """A store that remembers the messages claimed and not yet acked or released,
    so that a stopped worker can hand back every lease it holds."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.max_body_size = store.max_body_size
        self.holding: dict[str, Message] = {}
        #: Monotonic time of the latest deletion of confirmed messages.
        self.last_ack: float | None = None
        #: Claims still running.
        self.claims: set[asyncio.Future[list[Message]]] = set()

    async def put(self, messages: Sequence[Message]) -> None:
        await self.store.put(messages)

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        # Shielded: a claim the store made is recorded even if the worker is stopped
        # while it runs, so that stop() can hand its leases back.
        claim = asyncio.ensure_future(self.store.claim(owner, limit=limit, lease=lease))
        self.claims.add(claim)
        claim.add_done_callback(self._claimed)
        return await asyncio.shield(claim)

    def _claimed(self, claim: asyncio.Future[list[Message]]) -> None:
        self.claims.discard(claim)
        if not claim.cancelled() and claim.exception() is None:
            for message in claim.result():
                self.holding[message.message_id] = message

    async def ack(self, message_ids: Sequence[str]) -> None:
        await self.store.ack(message_ids)
        if message_ids:
            self.last_ack = time.monotonic()
        for message_id in message_ids:
            self.holding.pop(message_id, None)

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        await self.store.release(owner, messages)
        for message in messages:
            self.holding.pop(message.message_id, None)

    async def count(self) -> int:
        return await self.store.count()

    async def backlog(self) -> Backlog:
        return await self.store.backlog()

    def scan(self, *, dead: bool | None = None, batch: int = 500) -> AsyncIterator[Message]:
        return self.store.scan(dead=dead, batch=batch)

    async def get(self, message_id: str) -> Message | None:
        return await self.store.get(message_id)

    async def by_key(self) -> list[KeyCount]:
        return await self.store.by_key()

    async def requeue(
        self,
        message_ids: Sequence[str],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> int:
        return await self.store.requeue(message_ids, exchange=exchange, routing_key=routing_key)

    async def purge_dead(self, message_ids: Sequence[str] | None = None) -> int:
        return await self.store.purge_dead(message_ids)

    async def close(self) -> None:
        await self.store.close()


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a worker is: what it replayed, and what the store still holds."""

    replayed: int
    backlog: Backlog


class ReplayWorker:
    """Replays a store to the broker at ``url`` until told to stop (or the backlog is empty).

    ``url`` may name several nodes of a cluster, as the producer's ``url`` does.

    ``max_attempts`` marks a message dead after that many failures of its own, as
    the producer's option of the same name does.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        store: Store,
        *,
        lease: float = 30.0,
        replay_batch: int = 200,
        max_attempts: int | None = None,
        confirm_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.settings = Settings(
            url=url,
            exchange="",
            spill_after=5.0,
            max_buffer=1,
            max_buffer_bytes=1,
            max_message_size=1,
            max_in_flight=1,
            high_water=1.0,
            persistent=True,
            mandatory=True,
            lease=lease,
            replay_batch=replay_batch,
            replay_interval=0.5,
            confirm_timeout=confirm_timeout,
            connect_timeout=10.0,
            max_attempts=max_attempts,
            reconnect_backoff=DEFAULT_RECONNECT_BACKOFF,
            retry_backoff=DEFAULT_RETRY_BACKOFF,
            store_backoff=DEFAULT_STORE_BACKOFF,
            fallback_dir=Path("."),
        )
        self.store = _TrackingStore(store)
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:replay-{os.urandom(3).hex()}"
        self._context: Context | None = None
        self._link: AmqpLink | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def replayed(self) -> int:
        """Messages the broker confirmed and the store deleted, so far."""
        return 0 if self._context is None else self._context.counters.replayed

    @property
    def dead(self) -> int:
        """Messages this worker kept as dead."""
        return 0 if self._context is None else self._context.counters.dead

    @property
    def leases_held(self) -> int:
        """Messages claimed and neither deleted nor handed back yet."""
        return len(self.store.holding)

    @property
    def claims_unanswered(self) -> int:
        """Claims sent to the store and not answered yet (each may hold leases)."""
        return len(self.store.claims)

    @property
    def connected(self) -> bool:
        return self._link is not None and self._link.connected

    def start(self) -> None:
        """Connect and start replaying in the background."""
        context = Context(self.settings, self.store, self.owner)
        link = AmqpLink(
            self.settings.urls,
            backoff=self.settings.reconnect_backoff,
            connect_timeout=self.settings.connect_timeout,
            name=f"aioproducer {self.owner}",
            on_error=context.record_error,
        )
        context.link = link
        self._context, self._link = context, link
        replayer = Replayer(context, link)
        link.start()
        self._task = asyncio.create_task(supervise("replay", replayer.run, context))
        log.info("replay worker %s started (store %r)", self.owner, self.store.store)

    async def progress(self) -> Progress:
        return Progress(self.replayed, await self.store.backlog())

    async def stop(self) -> None:
        """Stop replaying, hand back every lease held, close the connection.

        The store stays open: it is the caller's, as it was given.
        """
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.store.claims:
            # A claim cut short by the stop still completes: its leases are handed back too.
            await asyncio.wait(self.store.claims, timeout=RELEASE_ON_STOP)
        holding = list(self.store.holding.values())
        if holding and self._context is not None:
            wall = self._context.wall()
            for message in holding:
                message.due_at = min(message.due_at, wall)
            try:
                async with asyncio.timeout(RELEASE_ON_STOP):
                    await self.store.release(self.owner, holding)
            except Exception as exc:
                log.warning(
                    "replay worker %s: %d leases not handed back (%s); they expire by themselves",
                    self.owner,
                    len(holding),
                    type(exc).__name__,
                )
        if self._link is not None:
            await self._link.close(timeout=1.0)
        log.info("replay worker %s stopped: %d replayed", self.owner, self.replayed)
