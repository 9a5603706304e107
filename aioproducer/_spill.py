"""The spiller: moves messages that memory should not keep any longer into the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from ._context import Context, describe_store_error
from ._exceptions import StoreRejected
from ._fallback import write_fallback
from ._message import Message

log = logging.getLogger("aioproducer.spill")

#: Messages written to the store in one call at most.
SPILL_BATCH = 500


class Spiller:
    """Stores what is overdue, held back, dead, or above high water; deletes redundant copies.

    A batch the store refuses (:class:`~aioproducer.StoreRejected`) is split until
    the message it cannot hold is isolated; that one stays in memory, published
    again with backoff, and is written to the fallback file on close. A store that
    is unavailable is retried with backoff while memory keeps everything.
    """

    def __init__(self, context: Context) -> None:
        self._context = context
        settings = context.settings
        # Messages falling due this soon after the one that woke the task go with it,
        # so that a steady stream is stored in batches, not one write per message.
        self._window = min(settings.spill_after * 0.1, 0.5)
        self._failures = 0
        self._episode = 0

    async def run(self) -> None:
        context = self._context
        buffer = context.buffer
        while True:
            await self.delete_redundant()
            wall = context.wall()
            now = context.now()
            batch = buffer.take_for_spill(now + self._window, SPILL_BATCH)
            if not batch:
                if context.redundant:
                    # More confirms came in while the last copies were deleted.
                    continue
                deadline = buffer.next_deadline()
                if deadline is None and self._episode:
                    log.info(
                        "producer %s: stopped spilling, %d stored", context.owner, self._episode
                    )
                    self._episode = 0
                timeout = None if deadline is None else max(0.0, deadline - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(buffer.needs_spill.wait(), timeout)
                continue
            self._set_due(batch, wall, now)
            stored: list[Message] = []
            rejected: list[Message] = []
            try:
                await self.put_isolating(batch, stored, rejected)
            except Exception as exc:
                # StoreUnavailable, or an error a store should have translated: the
                # messages stay in memory and the write is retried with backoff.
                self._settle(stored, rejected)
                buffer.unspill(_rest(batch, stored, rejected))
                context.store_failed(exc)
                delay = context.settings.store_backoff.delay(self._failures)
                self._failures += 1
                log.warning(
                    "producer %s: storing %d messages failed (%s); retry in %.1fs",
                    context.owner,
                    len(batch) - len(stored) - len(rejected),
                    describe_store_error(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self._settle(stored, rejected)
                buffer.unspill(_rest(batch, stored, rejected))
                raise
            self._settle(stored, rejected)
            self._failures = 0
            context.store_worked()
            if stored and not self._episode:
                log.info(
                    "producer %s: spilling to %r: messages unconfirmed after %.3gs",
                    context.owner,
                    context.store,
                    context.settings.spill_after,
                )
            self._episode += len(stored)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "producer %s: stored %d messages: %s",
                    context.owner,
                    len(stored),
                    " ".join(m.message_id for m in stored),
                )

    def _set_due(self, batch: Sequence[Message], wall: float, now: float) -> None:
        confirm_timeout = self._context.settings.confirm_timeout
        for message in batch:
            if message.copying:
                # Still in flight: replay waits until its confirm cannot come.
                message.due_at = wall + confirm_timeout
            elif message.not_before:
                message.due_at = wall + max(0.0, message.not_before - now)
            else:
                message.due_at = wall

    async def put_isolating(
        self, batch: Sequence[Message], stored: list[Message], rejected: list[Message]
    ) -> None:
        """Put ``batch``, splitting it on :class:`StoreRejected` down to single messages.

        Appends to ``stored`` what the store took and to ``rejected`` what it refused,
        as it goes; raises the first other :class:`StoreError`.
        """
        try:
            await self._context.store.put(batch)
        except StoreRejected as exc:
            if len(batch) == 1:
                rejected.append(batch[0])
                batch[0].last_error = f"store refused it: {exc}"[:300]
                return
            middle = len(batch) // 2
            await self.put_isolating(batch[:middle], stored, rejected)
            await self.put_isolating(batch[middle:], stored, rejected)
        else:
            stored.extend(batch)

    def _settle(self, stored: list[Message], rejected: list[Message]) -> None:
        context = self._context
        buffer = context.buffer
        if stored:
            context.redundant.extend(buffer.spilled(stored))
            context.counters.spilled += sum(1 for m in stored if not m.dead)
            context.counters.dead += sum(1 for m in stored if m.dead)
            context.stored.set()
        if rejected:
            context.counters.unstorable += len(rejected)
            for message in rejected:
                message.unstorable = True
                log.error(
                    "producer %s: the store refused message %s (%s); it stays in memory "
                    "and goes to the fallback file on close",
                    context.owner,
                    message.message_id,
                    message.last_error,
                )
            buffer.unspill(rejected)

    async def delete_redundant(self) -> None:
        """Delete stored copies of messages the broker confirmed after all."""
        context = self._context
        if not context.redundant:
            return
        ids, context.redundant = context.redundant, []
        try:
            await context.store.ack(ids)
        except Exception as exc:
            # Left in the store, they are replayed: duplicates, never losses.
            context.store_failed(exc)
            log.warning(
                "producer %s: deleting %d confirmed copies failed (%s)",
                context.owner,
                len(ids),
                describe_store_error(exc),
            )

    async def store_rest(self, deadline: float) -> None:
        """On close: store everything still in memory by ``deadline``, else write a file.

        Cancellation cannot lose messages: what is not stored yet is written to the
        fallback file (synchronously, a local write) before it propagates.
        """
        context = self._context
        buffer = context.buffer
        rest = buffer.take_all()
        if not rest:
            return
        wall = context.wall()
        for message in rest:
            message.due_at = wall
        stored: list[Message] = []
        rejected: list[Message] = []
        reason = ""
        try:
            async with asyncio.timeout(max(0.0, deadline - context.now())):
                await self.put_isolating(rest, stored, rejected)
        except TimeoutError:
            context.record_error("store: no answer before the close deadline")
            reason = "no answer before the close deadline"
        except Exception as exc:
            context.store_failed(exc)
            reason = describe_store_error(exc)
        except BaseException:
            self._export(_rest(rest, stored, rejected) + rejected, "close was cancelled")
            raise
        finally:
            self._settle(stored, [])
        if stored:
            log.info("producer %s: stored %d messages on close", context.owner, len(stored))
        left = _rest(rest, stored, rejected)
        if rejected and not reason:
            reason = "the store refused them"
        if left or rejected:
            self._export(left + rejected, reason)

    def _export(self, messages: list[Message], reason: str) -> None:
        context = self._context
        if not messages:
            return
        path = write_fallback(context.settings.fallback_dir, context.owner, messages)
        buffer = context.buffer
        if path is None:
            log.critical(
                "producer %s: %d messages could be neither stored (%s) nor written to a file",
                context.owner,
                len(messages),
                reason,
            )
            return
        context.counters.exported += len(messages)
        for message in messages:
            message.unstorable = False
        buffer.spilled(messages)
        log.error(
            "producer %s: store failed on close (%s); %d messages written to %s: import them "
            "with 'python -m aioproducer import %s'",
            context.owner,
            reason,
            len(messages),
            path,
            path,
        )


def _rest(
    batch: Sequence[Message], stored: list[Message], rejected: list[Message]
) -> list[Message]:
    """The messages of ``batch`` in neither ``stored`` nor ``rejected``."""
    done = {id(m) for m in stored}
    done.update(id(m) for m in rejected)
    return [m for m in batch if id(m) not in done]
