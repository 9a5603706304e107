"""The Producer: publish() hands off to memory; background tasks deliver, spill and replay."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from ._backoff import Backoff
from ._buffer import Buffer
from ._connection import AmqpLink, Outcome, Result
from ._exceptions import (
    BodyNotSerializable,
    InvalidMessage,
    MessageTooLarge,
    ProducerClosed,
    StoreError,
)
from ._fallback import write_messages
from ._message import Message, check_headers
from ._stores._base import Store
from ._stores._sqlite import SQLiteStore

log = logging.getLogger("aioproducer.producer")

#: RabbitMQ 4's default ``max_message_size``; earlier versions allow more.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024

_BYTES_TYPE = "application/octet-stream"
_TEXT_TYPE = "text/plain; charset=utf-8"
_JSON_TYPE = "application/json"


class ProducerState(enum.Enum):
    """Where a producer is in its life."""

    NEW = "new"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot of a producer's counters and state, from :meth:`Producer.stats`."""

    accepted: int
    """Messages publish() accepted."""
    confirmed: int
    """Messages the broker confirmed straight from memory."""
    spilled: int
    """Messages written to the store."""
    replayed: int
    """Messages the broker confirmed after replay from the store."""
    returned: int
    """Publishes the broker returned as unroutable (each is retried)."""
    nacked: int
    """Publishes the broker nacked (each is retried)."""
    channel_errors: int
    """Publishes caught by a channel-level error, such as a missing exchange."""
    retried: int
    """Publishes retried after a lost connection or a missing confirm."""
    exported: int
    """Messages written to a local file on close because the store failed."""
    buffered: int
    """Messages in memory and not yet settled (in flight included)."""
    in_flight: int
    """Messages published and awaiting their confirm."""
    held: int
    """Messages kept back after a nack, return or channel error."""
    connected: bool
    """Whether the AMQP connection is up."""
    blocked: bool
    """Whether the broker has blocked the connection (a resource alarm)."""
    store_ok: bool
    """Whether the store's last operation succeeded."""
    store_errors: int
    """Store operations that failed (each is retried)."""
    connections: int
    """Connections made, the first one included."""
    state: ProducerState
    """Where the producer is in its life."""


@dataclass(slots=True)
class _Counters:
    accepted: int = 0
    confirmed: int = 0
    spilled: int = 0
    replayed: int = 0
    returned: int = 0
    nacked: int = 0
    channel_errors: int = 0
    retried: int = 0
    exported: int = 0
    store_errors: int = 0


class Producer:
    """Publishes to RabbitMQ without ever making the caller wait on the broker.

    See the package documentation for the delivery guarantees.
    """

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        exchange: str = "",
        store: Store | None = None,
        spill_after: float = 5.0,
        max_buffer: int = 10_000,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_in_flight: int = 1000,
        high_water: float = 0.8,
        persistent: bool = True,
        mandatory: bool = True,
        lease: float = 30.0,
        replay_batch: int = 200,
        replay_interval: float = 1.0,
        confirm_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect_backoff: Backoff | None = None,
        retry_backoff: Backoff | None = None,
        store_backoff: Backoff | None = None,
        fallback_dir: str | os.PathLike[str] = ".",
        name: str | None = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("amqp://", "amqps://")):
            raise ValueError("url must be an amqp:// or amqps:// URL")
        _check_name(exchange, "exchange")
        for option, value in (
            ("spill_after", spill_after),
            ("lease", lease),
            ("replay_interval", replay_interval),
            ("confirm_timeout", confirm_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{option} must be positive")
        if lease <= confirm_timeout:
            raise ValueError("lease must be longer than confirm_timeout")
        if not 0 < high_water <= 1:
            raise ValueError("high_water is a fraction of max_buffer, above 0 and at most 1")
        for option, count in (
            ("max_message_size", max_message_size),
            ("max_in_flight", max_in_flight),
            ("replay_batch", replay_batch),
        ):
            if count < 1:
                raise ValueError(f"{option} must be at least 1")
        self.url = url
        self.exchange = exchange
        self.store: Store = store if store is not None else SQLiteStore("aioproducer-spill.db")
        self.spill_after = spill_after
        self.max_buffer = max_buffer
        self.max_message_size = max_message_size
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._buffer = Buffer(capacity=max_buffer, high_water=max(1, int(max_buffer * high_water)))
        self._max_in_flight = max_in_flight
        self._refill_at = max_in_flight - max(1, max_in_flight // 8)
        self._persistent = persistent
        self._mandatory = mandatory
        self._lease = lease
        self._replay_batch = replay_batch
        self._replay_interval = replay_interval
        self._confirm_timeout = confirm_timeout
        self._redundant: list[str] = []
        self._connect_timeout = connect_timeout
        self._reconnect_backoff = reconnect_backoff or Backoff(base=0.1, cap=1.0)
        self._retry_backoff = retry_backoff or Backoff(base=1.0, cap=60.0)
        self._store_backoff = store_backoff or Backoff(base=0.2, cap=10.0)
        self._fallback_dir = Path(fallback_dir)
        self._encode_json = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode
        self._counters = _Counters()
        self._state = ProducerState.NEW
        self._store_ok = True
        self._link: AmqpLink | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._slot_free = asyncio.Event()
        self._stored = asyncio.Event()
        self._paused_until = 0.0
        self._closed = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Producer {self.owner} {self._state.value} store={self.store!r}>"

    # -- life ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks; returns at once, even while the broker is down."""
        if self._state is ProducerState.RUNNING:
            return
        if self._state is not ProducerState.NEW:
            raise ProducerClosed("a closed producer cannot be started again")
        self._link = AmqpLink(
            self.url,
            backoff=self._reconnect_backoff,
            connect_timeout=self._connect_timeout,
            name=f"aioproducer {self.owner}",
        )
        self._link.start()
        self._tasks = [
            asyncio.create_task(self._supervise("publisher", self._run_publisher)),
            asyncio.create_task(self._supervise("spill", self._run_spill)),
            asyncio.create_task(self._supervise("replay", self._run_replay)),
        ]
        self._state = ProducerState.RUNNING
        log.info("producer %s started (store %r)", self.owner, self.store)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float = 10.0) -> None:
        """Stop accepting, drain to the broker for up to ``timeout`` seconds, store the rest.

        If the store fails too, what is left goes to a local file (see
        ``python -m aioproducer import``). Idempotent.
        """
        if self._state in (ProducerState.CLOSING, ProducerState.CLOSED):
            await self._closed.wait()
            return
        was_running = self._state is ProducerState.RUNNING
        self._state = ProducerState.CLOSING
        try:
            if was_running:
                drained = await self.flush(timeout)
                log.info(
                    "producer %s closing: %s, %d messages left in memory",
                    self.owner,
                    "drained" if drained else "drain timed out",
                    len(self._buffer),
                )
                await self._stop_tasks()
                await self._store_rest()
                await self._delete_redundant()
        finally:
            try:
                if self._link is not None:
                    await self._link.close()
            finally:
                await self.store.close()
                self._state = ProducerState.CLOSED
                self._closed.set()
                log.info("producer %s closed", self.owner)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        sends = list(self._sends)
        for task in sends:
            task.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
        # Publishes cut short here may have reached the broker: they are stored and
        # replayed with the same message_id (at least once).
        self._buffer.retry(self._buffer.take_in_flight())

    async def _store_rest(self) -> None:
        rest = self._buffer.take_all()
        if not rest:
            return
        wall = time.time()
        for message in rest:
            message.due_at = wall
        try:
            await self.store.put(rest)
        except StoreError as exc:
            # Named by owner and time, and never overwritten (write_messages creates it).
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(wall))
            owner = self.owner.replace(":", "-")
            path = (
                self._fallback_dir
                / f"aioproducer-unsent-{owner}-{stamp}-{os.urandom(2).hex()}.jsonl"
            )
            count = await asyncio.to_thread(write_messages, path, rest)
            self._counters.exported += count
            log.error(
                "store failed on close (%s); %d messages written to %s: import them with "
                "'python -m aioproducer import %s'",
                exc,
                count,
                path,
                path,
            )
        else:
            self._counters.spilled += len(rest)
            log.info("stored %d messages on close", len(rest))
        self._buffer.spilled(rest)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is buffered or in flight; False if ``timeout`` passes first."""
        try:
            await asyncio.wait_for(self._buffer.empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- publishing ------------------------------------------------------------

    async def publish(
        self,
        body: Any,
        *,
        routing_key: str = "",
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Accept a message for delivery and return its ``message_id``; never does I/O.

        ``body`` is sent as is if bytes, UTF-8 encoded if str, and as JSON otherwise.
        Raises at once, accepting nothing, for a closed producer, a full buffer, a body
        that cannot be serialised or is too large, or a bad name, header or id.
        """
        return self.publish_nowait(
            body,
            routing_key=routing_key,
            exchange=exchange,
            headers=headers,
            message_id=message_id,
            content_type=content_type,
        )

    def publish_nowait(
        self,
        body: Any,
        *,
        routing_key: str = "",
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """:meth:`publish` for code that is not a coroutine."""
        if self._state is not ProducerState.RUNNING:
            raise ProducerClosed(f"producer is {self._state.value}")
        if isinstance(body, bytes):
            data, default_type = body, _BYTES_TYPE
        elif isinstance(body, str):
            data, default_type = body.encode(), _TEXT_TYPE
        elif isinstance(body, bytearray | memoryview):
            data, default_type = bytes(body), _BYTES_TYPE
        else:
            try:
                data = self._encode_json(body).encode()
            except (TypeError, ValueError) as exc:
                raise BodyNotSerializable(f"body is not JSON-serialisable: {exc}") from exc
            default_type = _JSON_TYPE
        if len(data) > self.max_message_size:
            raise MessageTooLarge(len(data), self.max_message_size)
        if type(routing_key) is not str or len(routing_key) > 63:
            _check_name(routing_key, "routing_key")
        if exchange is None:
            exchange = self.exchange
        elif type(exchange) is not str or len(exchange) > 63:
            _check_name(exchange, "exchange")
        if headers is not None:
            if not isinstance(headers, Mapping):
                raise InvalidMessage(f"headers must be a mapping, not {type(headers).__name__}")
            headers = dict(headers)
            check_headers(headers)
        if message_id is None:
            message_id = os.urandom(16).hex()
        elif type(message_id) is not str or not message_id or len(message_id) > 63:
            _check_name(message_id, "message_id", empty=False)
        if content_type is None:
            content_type = default_type
        elif type(content_type) is not str or len(content_type) > 63:
            _check_name(content_type, "content_type")
        self._buffer.add(
            Message(
                message_id=message_id,
                body=data,
                exchange=exchange,
                routing_key=routing_key,
                content_type=content_type,
                timestamp=time.time(),
                headers=headers,
                deadline=time.monotonic() + self.spill_after,
            )
        )
        self._counters.accepted += 1
        return message_id

    def stats(self) -> ProducerStats:
        """A snapshot of the counters and state."""
        c = self._counters
        link = self._link
        buffer = self._buffer
        return ProducerStats(
            accepted=c.accepted,
            confirmed=c.confirmed,
            spilled=c.spilled,
            replayed=c.replayed,
            returned=c.returned,
            nacked=c.nacked,
            channel_errors=c.channel_errors,
            retried=c.retried,
            exported=c.exported,
            buffered=len(buffer),
            in_flight=buffer.in_flight,
            held=buffer.held,
            connected=link is not None and link.connected,
            blocked=link is not None and link.blocked,
            store_ok=self._store_ok,
            store_errors=c.store_errors,
            connections=link.connections if link is not None else 0,
            state=self._state,
        )

    # -- background tasks ------------------------------------------------------

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a background loop; a bug that escapes it is logged and the loop restarted."""
        failures = 0
        while True:
            try:
                await run()
            except Exception:
                log.exception("producer %s: %s task failed; restarting it", self.owner, name)
                await asyncio.sleep(self._store_backoff.delay(failures))
                failures += 1

    async def _run_publisher(self) -> None:
        assert self._link is not None
        link = self._link
        buffer = self._buffer
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if now < self._paused_until:
                await asyncio.sleep(self._paused_until - now)
                continue
            if not buffer.ready(time.monotonic()):
                wake = buffer.next_held()
                timeout = None if wake is None else max(0.0, wake - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(buffer.has_pending.wait(), timeout)
                continue
            channel = await link.channel("live")
            free = self._max_in_flight - buffer.in_flight
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            for message in buffer.take(time.monotonic(), free):
                task = asyncio.create_task(self._send(link, channel, message))
                self._sends.add(task)
                task.add_done_callback(self._sends.discard)
            # Let the sends write their frames before taking more.
            await asyncio.sleep(0)

    async def _publish(self, link: AmqpLink, channel: Any, message: Message) -> Result:
        """Publish ``message`` with this producer's options and wait for its confirm."""
        return await link.publish(
            channel,
            message,
            mandatory=self._mandatory,
            persistent=self._persistent,
            timeout=self._confirm_timeout,
        )

    async def _send(self, link: AmqpLink, channel: Any, message: Message) -> None:
        result = await self._publish(link, channel, message)
        self._settle(message, result)
        # Refill the window in batches, not one publish per confirm.
        if self._buffer.in_flight <= self._refill_at:
            self._slot_free.set()

    def _settle(self, message: Message, result: Result) -> None:
        buffer = self._buffer
        counters = self._counters
        outcome = result.outcome
        if outcome is Outcome.ACKED:
            if buffer.settle(message):
                # Its copy went to the store while the confirm was slow: delete it.
                self._redundant.append(message.message_id)
                buffer.needs_spill.set()
            counters.confirmed += 1
            return
        message.attempts += 1
        message.last_error = f"{outcome.value}: {result.detail}"
        self._count_failure(outcome)
        if outcome is Outcome.CHANNEL_ERROR:
            message.channel_breaks += 1
            culprit = result.missing_exchange is not None and (
                result.missing_exchange == message.exchange
            )
            if culprit or (result.missing_exchange is None and message.channel_breaks >= 2):
                self._hold(message)
            else:
                buffer.retry((message,))
            return
        message.channel_breaks = 0
        if outcome in _MESSAGE_FAULTS:
            self._hold(message)
            return
        buffer.retry((message,))
        now = asyncio.get_running_loop().time()
        if outcome is Outcome.LOST:
            # The connection is going or gone: wait for it rather than spin on it.
            self._paused_until = now + self._reconnect_backoff.base
        else:
            # A broker that does not confirm in time is blocked, or its socket is
            # half-open: stop feeding it for a moment; the spill task takes what is due.
            if self._paused_until < now:
                log.warning(
                    "producer %s: no confirm for message %s in time; pausing publishes",
                    self.owner,
                    message.message_id,
                )
            self._paused_until = now + self._reconnect_backoff.cap

    def _hold(self, message: Message) -> None:
        delay = self._retry_backoff.delay(message.attempts - 1)
        log.debug(
            "producer %s: holding back message %s (attempt %d, %s); retry in %.1fs",
            self.owner,
            message.message_id,
            message.attempts,
            message.last_error,
            delay,
        )
        self._buffer.hold(message, time.monotonic() + delay)

    async def _run_spill(self) -> None:
        buffer = self._buffer
        # Messages falling due this soon after the one that woke the task go with it,
        # so that a steady stream is stored in batches, not one write per message.
        window = min(self.spill_after * 0.1, 0.5)
        failures = 0
        episode = 0
        while True:
            await self._delete_redundant()
            batch = buffer.take_for_spill(time.monotonic() + window, 500)
            if not batch:
                if self._redundant:
                    # More confirms came in while the last copies were deleted.
                    continue
                deadline = buffer.next_deadline()
                if deadline is None and episode:
                    log.info("producer %s: stopped spilling, %d stored", self.owner, episode)
                    episode = 0
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(buffer.needs_spill.wait(), timeout)
                continue
            wall = time.time()
            for message in batch:
                if message.copying:
                    # Still in flight: replay waits until its confirm cannot come.
                    message.due_at = wall + self._confirm_timeout
                elif message.not_before:
                    message.due_at = wall + max(0.0, message.not_before - time.monotonic())
                else:
                    message.due_at = wall
            try:
                await self.store.put(batch)
            except StoreError as exc:
                buffer.unspill(batch)
                self._store_ok = False
                self._counters.store_errors += 1
                delay = self._store_backoff.delay(failures)
                failures += 1
                log.warning(
                    "producer %s: storing %d messages failed (%s); retry in %.1fs",
                    self.owner,
                    len(batch),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except BaseException:
                buffer.unspill(batch)
                raise
            self._redundant.extend(buffer.spilled(batch))
            failures = 0
            self._store_ok = True
            self._counters.spilled += len(batch)
            self._stored.set()
            if not episode:
                log.info(
                    "producer %s: spilling to %r: messages unconfirmed after %.3gs",
                    self.owner,
                    self.store,
                    self.spill_after,
                )
            episode += len(batch)
            log.debug("producer %s: spilled %d messages", self.owner, len(batch))

    async def _delete_redundant(self) -> None:
        """Delete stored copies of messages the broker confirmed after all."""
        if not self._redundant:
            return
        ids, self._redundant = self._redundant, []
        try:
            await self.store.ack(ids)
        except StoreError as exc:
            # Left in the store, they are replayed: duplicates, never losses.
            self._counters.store_errors += 1
            log.warning(
                "producer %s: deleting %d confirmed copies failed (%s)", self.owner, len(ids), exc
            )

    async def _run_replay(self) -> None:
        assert self._link is not None
        link = self._link
        failures = 0
        replayed_before = self._counters.replayed
        replaying = False
        while True:
            channel = await link.channel("replay")
            try:
                batch = await self.store.claim(
                    self.owner, limit=self._replay_batch, lease=self._lease
                )
            except StoreError as exc:
                self._store_ok = False
                self._counters.store_errors += 1
                delay = self._store_backoff.delay(failures)
                failures += 1
                log.warning(
                    "producer %s: claim failed (%s); retry in %.1fs", self.owner, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            self._store_ok = True
            if not batch:
                if replaying:
                    replaying = False
                    log.info(
                        "producer %s: replay done, %d confirmed",
                        self.owner,
                        self._counters.replayed - replayed_before,
                    )
                self._stored.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stored.wait(), self._replay_interval)
                continue
            if not replaying:
                replaying = True
                replayed_before = self._counters.replayed
                log.info("producer %s: replaying stored messages", self.owner)
            log.debug("producer %s: replaying %d stored messages", self.owner, len(batch))
            await self._replay(link, channel, batch)

    async def _replay(self, link: AmqpLink, channel: Any, batch: list[Message]) -> None:
        """Publish a claimed batch; delete what is confirmed, release the rest with backoff."""
        results: list[Result] = []
        try:
            results = await asyncio.gather(
                *(self._publish(link, channel, message) for message in batch)
            )
        finally:
            # Also on cancellation (close): nothing claimed stays leased for long.
            confirmed: list[str] = []
            failed: list[Message] = []
            wall = time.time()
            for index, message in enumerate(batch):
                result = results[index] if index < len(results) else None
                if result is not None and result.outcome is Outcome.ACKED:
                    confirmed.append(message.message_id)
                    continue
                message.due_at = wall
                if result is not None:
                    message.attempts += 1
                    message.last_error = f"{result.outcome.value}: {result.detail}"
                    if result.outcome in _MESSAGE_FAULTS:
                        message.due_at += self._retry_backoff.delay(message.attempts - 1)
                    self._count_failure(result.outcome)
                failed.append(message)
            self._counters.replayed += len(confirmed)
            await self._finish_replay(confirmed, failed)

    def _count_failure(self, outcome: Outcome) -> None:
        counters = self._counters
        if outcome is Outcome.RETURNED:
            counters.returned += 1
        elif outcome is Outcome.NACKED:
            counters.nacked += 1
        elif outcome is Outcome.CHANNEL_ERROR:
            counters.channel_errors += 1
        else:
            counters.retried += 1

    async def _finish_replay(self, confirmed: list[str], failed: list[Message]) -> None:
        """Delete confirmed messages from the store and release the rest."""
        for attempt in range(5):
            try:
                await self.store.ack(confirmed)
                await self.store.release(self.owner, failed)
            except StoreError as exc:
                self._store_ok = False
                self._counters.store_errors += 1
                log.warning(
                    "producer %s: settling %d replayed messages in the store failed (%s)",
                    self.owner,
                    len(confirmed) + len(failed),
                    exc,
                )
                await asyncio.sleep(self._store_backoff.delay(attempt))
            else:
                return
        # The leases expire and the messages are replayed again: duplicates, not losses.
        log.error("producer %s: could not settle replayed messages; leases will expire", self.owner)


_MESSAGE_FAULTS = frozenset({Outcome.RETURNED, Outcome.NACKED, Outcome.CHANNEL_ERROR})


def _check_name(value: object, what: str, *, empty: bool = True) -> None:
    """Raise unless ``value`` is a str AMQP can carry as a short string (255 bytes)."""
    if not isinstance(value, str):
        raise InvalidMessage(f"{what} must be a str, not {type(value).__name__}")
    if not empty and not value:
        raise InvalidMessage(f"{what} must not be empty")
    if len(value.encode()) > 255:
        raise InvalidMessage(f"{what} is over 255 bytes")
