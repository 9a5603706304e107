"""The replayer: claims stored messages under a lease; deletes each once it is confirmed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ._context import Context, describe_store_error
from ._link import Link, Outcome, Result
from ._live import MESSAGE_FAULTS
from ._message import Message, State

log = logging.getLogger("aioproducer.replay")

#: Seconds a cancelled replay may spend handing its claimed messages back.
_RELEASE_ON_CANCEL = 1.0
#: Seconds between two INFO lines of progress during a long replay.
PROGRESS_EVERY = 10.0


class Replayer:
    """Republishes what the store holds, on its own ``replay`` channel.

    Each claimed message is settled from its own result: confirmed ones are
    deleted; one that failed for a reason of its own counts an attempt and is
    due again after a backoff (or kept as dead after ``max_attempts``); one caught
    by a lost connection or a missing confirm is due again after a pause that
    grows while the broker keeps failing, so a slow broker is not sent the same
    messages over and over. After a channel error that names no culprit, messages
    are replayed one at a time for a while, so the one that breaks the channel is
    found and held back alone.
    """

    def __init__(self, context: Context, link: Link) -> None:
        self._context = context
        self._link = link
        self._store_failures = 0
        self._broker_failures = 0
        #: Messages still to replay one at a time after an unexplained channel error.
        self._careful = 0
        self._replaying = False
        self._replayed_before = 0
        self._progress_at = 0.0

    async def run(self) -> None:
        context = self._context
        settings = context.settings
        while True:
            channel = await self._link.channel("replay")
            limit = 1 if self._careful else settings.replay_batch
            try:
                batch = await context.store.claim(context.owner, limit=limit, lease=settings.lease)
            except Exception as exc:
                context.store_failed(exc)
                delay = settings.store_backoff.delay(self._store_failures)
                self._store_failures += 1
                log.warning(
                    "producer %s: claim failed (%s); retry in %.1fs",
                    context.owner,
                    describe_store_error(exc),
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            self._store_failures = 0
            context.store_worked()
            if not batch:
                self._careful = 0
                if self._replaying:
                    self._replaying = False
                    log.info(
                        "producer %s: replay done, %d confirmed",
                        context.owner,
                        context.counters.replayed - self._replayed_before,
                    )
                context.stored.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(context.stored.wait(), settings.replay_interval)
                continue
            if not self._replaying:
                self._replaying = True
                self._replayed_before = context.counters.replayed
                self._progress_at = context.now()
                log.info("producer %s: replaying stored messages", context.owner)
            log.debug("producer %s: replaying %d stored messages", context.owner, len(batch))
            pause = await self._replay(channel, batch)
            if context.now() - self._progress_at >= PROGRESS_EVERY:
                self._progress_at = context.now()
                log.info(
                    "producer %s: replaying, %d confirmed so far",
                    context.owner,
                    context.counters.replayed - self._replayed_before,
                )
            if pause:
                await asyncio.sleep(pause)

    async def _replay(self, channel: Any, batch: list[Message]) -> float:
        """Publish a claimed batch and settle each message; return seconds to pause after."""
        context = self._context
        settings = context.settings
        place = {id(message): i for i, message in enumerate(batch)}
        results: dict[int, Result] = {}
        all_in: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_result(message: Message, result: Result) -> None:
            results[place[id(message)]] = result
            if len(results) == len(batch) and not all_in.done():
                all_in.set_result(None)

        sent = self._link.send(
            channel,
            batch,
            mandatory=settings.mandatory,
            persistent=settings.persistent,
            timeout=settings.confirm_timeout,
            on_result=on_result,
        )
        try:
            await sent.written()
            if len(results) < len(batch):
                await all_in
        except BaseException:
            # Cancelled (close): hand back every message not confirmed, quickly.
            sent.abandon()
            confirmed = [
                batch[i].message_id for i, r in results.items() if r.outcome is Outcome.ACKED
            ]
            wall = context.wall()
            acked = set(confirmed)
            rest = [m for m in batch if m.message_id not in acked]
            for message in rest:
                message.due_at = wall
            await self._settle_briefly(confirmed, rest)
            raise
        return await self._settle(batch, [results[i] for i in range(len(batch))])

    async def _settle(self, batch: list[Message], results: list[Result]) -> float:
        context = self._context
        settings = context.settings
        wall = context.wall()
        confirmed: list[str] = []
        failed: list[Message] = []
        broker_trouble: Outcome | None = None
        unexplained = False
        for message, result in zip(batch, results, strict=True):
            outcome = result.outcome
            if outcome is Outcome.ACKED:
                confirmed.append(message.message_id)
                continue
            context.count_failure(outcome)
            failed.append(message)
            if outcome in MESSAGE_FAULTS or (
                outcome is Outcome.CHANNEL_ERROR and self._is_culprit(message, result, batch)
            ):
                message.due_at = wall + context.fail(message, result)
            elif outcome is Outcome.CHANNEL_ERROR:
                # Its channel was broken by another message: due again at once.
                message.due_at = wall
                unexplained = unexplained or result.missing_exchange is None
            else:
                broker_trouble = outcome
        pause = 0.0
        if broker_trouble is not None:
            backoff = (
                settings.retry_backoff
                if broker_trouble is Outcome.TIMEOUT
                else settings.reconnect_backoff
            )
            pause = backoff.delay(self._broker_failures)
            self._broker_failures += 1
            for message in failed:
                if message.due_at <= wall:
                    message.due_at = wall + pause
        elif not failed:
            self._broker_failures = 0
        if unexplained:
            self._careful = max(self._careful, len(batch))
        elif self._careful and not failed:
            self._careful -= 1
        context.counters.replayed += len(confirmed)
        if confirmed and log.isEnabledFor(logging.DEBUG):
            log.debug("producer %s: replayed and confirmed %s", context.owner, " ".join(confirmed))
        try:
            settled = await self._finish(confirmed, failed)
        except asyncio.CancelledError:
            await self._settle_briefly(confirmed, failed)
            raise
        # A message is dead only once the store has kept it so; until then it is
        # stored as before, and replayed again when its lease expires.
        dead = [m for m in failed if m.dead] if settled else []
        context.counters.dead += len(dead)
        observe = context.buffer.observer
        if observe is not None:
            for message, result in zip(batch, results, strict=True):
                if result.outcome is Outcome.ACKED:
                    observe(message, State.CONFIRMED)
            for message in dead:
                observe(message, State.DEAD)
        return pause

    def _is_culprit(self, message: Message, result: Result, batch: list[Message]) -> bool:
        """Whether ``message`` itself broke the channel."""
        if result.missing_exchange is not None:
            return result.missing_exchange == message.exchange
        return len(batch) == 1

    async def _settle_briefly(self, confirmed: list[str], failed: list[Message]) -> None:
        """On cancellation (close): one quick try at deleting and releasing in the store.

        What it cannot do within :data:`_RELEASE_ON_CANCEL` is left to lease expiry.
        """
        store = self._context.store
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_RELEASE_ON_CANCEL):
                await store.ack(confirmed)
                await store.release(self._context.owner, failed)

    async def _finish(self, confirmed: list[str], failed: list[Message]) -> bool:
        """Delete confirmed messages from the store and release the rest; False if that failed."""
        context = self._context
        for attempt in range(5):
            try:
                await context.store.ack(confirmed)
                await context.store.release(context.owner, failed)
            except Exception as exc:
                context.store_failed(exc)
                log.warning(
                    "producer %s: settling %d replayed messages in the store failed (%s)",
                    context.owner,
                    len(confirmed) + len(failed),
                    describe_store_error(exc),
                )
                await asyncio.sleep(context.settings.store_backoff.delay(attempt))
            else:
                return True
        # The leases expire and the messages are replayed again: duplicates, not losses.
        log.error(
            "producer %s: could not settle replayed messages; leases will expire", context.owner
        )
        return False
