"""The live pipeline: publishes buffered messages, many in flight, each settled by its confirm."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ._config import format_exception
from ._context import Context
from ._link import Link, Outcome, Result, Sent
from ._message import Message, State

log = logging.getLogger("aioproducer.producer")

#: Body bytes sent in one write at most: one write of a whole window of large
#: messages would be copied into, and shifted along, the transport's buffer.
WRITE_BYTES = 512 * 1024

#: Failures that are the message's own: it is held back (and counts an attempt).
MESSAGE_FAULTS = frozenset({Outcome.RETURNED, Outcome.NACKED, Outcome.FAILED})


class LivePublisher:
    """Takes messages from the buffer and publishes them on the ``live`` channel.

    Up to ``max_in_flight`` publishes wait for their confirms at once; the window is
    refilled in batches, each sent in one write (:meth:`Link.send`) and settled
    message by message as its confirms come in, by callback. A message that fails
    for a reason of its own is held back (with backoff); one caught by a lost
    connection or a missing confirm goes back to the head of the queue, and
    publishing pauses for a moment.
    """

    def __init__(self, context: Context, link: Link) -> None:
        self._context = context
        self._link = link
        settings = context.settings
        self._max_in_flight = settings.max_in_flight
        self._refill_at = settings.max_in_flight - max(1, settings.max_in_flight // 8)
        self._sent: list[Sent] = []
        self._slot_free = asyncio.Event()
        self._paused_until = 0.0
        self._stopped = False

    async def run(self) -> None:
        context = self._context
        buffer = context.buffer
        link = self._link
        while True:
            now = context.now()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            if not buffer.ready(now):
                wake = buffer.next_held()
                timeout = None if wake is None else max(0.0, wake - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(buffer.has_pending.wait(), timeout)
                continue
            channel = await link.channel("live")
            free = self._max_in_flight - buffer.in_flight
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            batch = buffer.take(context.now(), free)
            if not batch:
                await asyncio.sleep(0)
                continue
            settings = context.settings
            self._sent = [s for s in self._sent if not s.done]
            for part in _by_bytes(batch, WRITE_BYTES):
                sent = link.send(
                    channel,
                    part,
                    mandatory=settings.mandatory,
                    persistent=settings.persistent,
                    timeout=settings.confirm_timeout,
                    on_result=self._on_result,
                )
                self._sent.append(sent)
                # Let the frames go out before writing more.
                await sent.written()

    async def stop(self) -> None:
        """Stop settling the publishes in flight; their messages go back to the buffer."""
        self._stopped = True
        for sent in self._sent:
            sent.abandon()
        self._sent.clear()
        buffer = self._context.buffer
        # Publishes cut short here may have reached the broker: they are stored and
        # replayed with the same message_id (at least once).
        buffer.retry(buffer.take_in_flight())

    def _on_result(self, message: Message, result: Result) -> None:
        if self._stopped:
            return
        try:
            self._settle(message, result)
        except Exception as exc:
            # A bug in settling must not strand the message in flight.
            log.error(
                "producer %s: settling %s failed\n%s",
                self._context.owner,
                message.message_id,
                format_exception(exc, with_text=False),
            )
            if message.state is State.IN_FLIGHT:
                self._context.buffer.retry((message,))
        # Refill the window in batches, not one publish per confirm.
        if self._context.buffer.in_flight <= self._refill_at:
            self._slot_free.set()

    def _settle(self, message: Message, result: Result) -> None:
        context = self._context
        buffer = context.buffer
        outcome = result.outcome
        if outcome is Outcome.ACKED:
            if buffer.settle(message):
                # Its copy went to the store while the confirm was slow: delete it.
                context.redundant.append(message.message_id)
                buffer.needs_spill.set()
            context.counters.confirmed += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug("producer %s: message %s confirmed", context.owner, message.message_id)
            return
        context.count_failure(outcome)
        if outcome is Outcome.CHANNEL_ERROR:
            message.channel_breaks += 1
            named = result.missing_exchange
            culprit = named == message.exchange if named is not None else None
            if culprit or (culprit is None and message.channel_breaks >= 2):
                self._hold(message, result)
            else:
                buffer.retry((message,))
            return
        message.channel_breaks = 0
        if outcome in MESSAGE_FAULTS:
            self._hold(message, result)
            return
        buffer.retry((message,))
        now = context.now()
        if outcome is Outcome.LOST:
            # The connection is going or gone: wait for it rather than spin on it.
            self._paused_until = now + context.settings.reconnect_backoff.base
        else:
            # A broker that does not confirm in time is blocked, or its socket is
            # half-open: stop feeding it for a moment; the spill task takes what is due.
            if self._paused_until < now:
                log.warning(
                    "producer %s: no confirm for message %s in time; pausing publishes",
                    context.owner,
                    message.message_id,
                )
            self._paused_until = now + context.settings.reconnect_backoff.cap

    def _hold(self, message: Message, result: Result) -> None:
        context = self._context
        delay = context.fail(message, result)
        log.debug(
            "producer %s: holding back message %s (attempt %d, %s); retry in %.1fs",
            context.owner,
            message.message_id,
            message.attempts,
            message.last_error,
            delay,
        )
        context.buffer.hold(message, context.now() + delay)


def _by_bytes(batch: list[Message], limit: int) -> list[list[Message]]:
    """``batch`` in runs of at most ``limit`` body bytes (a larger message alone)."""
    parts: list[list[Message]] = []
    part: list[Message] = []
    size = 0
    for message in batch:
        length = len(message.body)
        if part and size + length > limit:
            parts.append(part)
            part, size = [], 0
        part.append(message)
        size += length
    if part:
        parts.append(part)
    return parts
