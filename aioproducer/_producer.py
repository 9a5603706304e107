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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from ._backoff import Backoff
from ._buffer import Observer
from ._config import (
    DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_RECONNECT_BACKOFF,
    DEFAULT_RETRY_BACKOFF,
    DEFAULT_STORE_BACKOFF,
    Settings,
    check_fallback_dir,
)
from ._connection import AmqpLink
from ._context import Context, describe_store_error, supervise
from ._exceptions import BodyNotSerializable, MessageTooLarge, ProducerClosed
from ._link import Link
from ._live import LivePublisher
from ._message import Message, check_name, prepare_headers
from ._replay import Replayer
from ._spill import Spiller
from ._stores._base import Store
from ._stores._sqlite import SQLiteStore

log = logging.getLogger("aioproducer.producer")

#: The store always gets this many seconds on close, even when the timeout is spent.
STORE_ON_CLOSE = 1.0
#: Seconds past ``timeout`` that :meth:`Producer.close` may take: the store's minimum
#: share, then closing the connection and the store (half a second each). Writing the
#: local file, when the store fails, comes on top (a local, fsynced write).
CLOSE_MARGIN = STORE_ON_CLOSE + 1.0

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
    failed: int
    """Publishes the client could not send for a reason of the message's own (retried)."""
    retried: int
    """Publishes retried after a lost connection or a missing confirm."""
    exported: int
    """Messages written to a local file on close because the store failed."""
    unstorable: int
    """Messages the store refused for what they are (kept in memory, then exported)."""
    dead: int
    """Messages kept in the store as dead after ``max_attempts``, no longer retried."""
    buffered: int
    """Messages in memory and not yet settled (in flight included)."""
    buffered_bytes: int
    """Bytes of bodies and headers of the messages in memory (``max_buffer_bytes`` bounds it)."""
    in_flight: int
    """Messages published and awaiting their confirm."""
    held: int
    """Messages kept back after a nack, return or channel error."""
    connected: bool
    """Whether the AMQP connection is up."""
    broker: str | None
    """The broker address connected to, its password masked; None while not connected."""
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
    last_error: str | None
    """The latest connection or store error, as short text with passwords masked."""


class Producer:
    """Publishes to RabbitMQ without ever making the caller wait on the broker.

    See the package documentation for the delivery guarantees.
    """

    def __init__(
        self,
        url: str | Sequence[str] = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        exchange: str = "",
        store: Store | None = None,
        spill_after: float = 5.0,
        max_buffer: int = 10_000,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        max_in_flight: int = 1000,
        max_attempts: int | None = None,
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
        self._settings = Settings(
            url=url,
            exchange=exchange,
            spill_after=spill_after,
            max_buffer=max_buffer,
            max_buffer_bytes=max_buffer_bytes,
            max_message_size=max_message_size,
            max_in_flight=max_in_flight,
            high_water=high_water,
            persistent=persistent,
            mandatory=mandatory,
            lease=lease,
            replay_batch=replay_batch,
            replay_interval=replay_interval,
            confirm_timeout=confirm_timeout,
            connect_timeout=connect_timeout,
            max_attempts=max_attempts,
            reconnect_backoff=reconnect_backoff or DEFAULT_RECONNECT_BACKOFF,
            retry_backoff=retry_backoff or DEFAULT_RETRY_BACKOFF,
            store_backoff=store_backoff or DEFAULT_STORE_BACKOFF,
            fallback_dir=check_fallback_dir(fallback_dir),
        )
        self.url = url
        self.exchange = exchange
        self.store: Store = store if store is not None else SQLiteStore("aioproducer-spill.db")
        self.spill_after = spill_after
        self.max_buffer = max_buffer
        #: The largest body publish() accepts: the option, or what the store can hold.
        self.max_message_size = min(
            max_message_size, getattr(self.store, "max_body_size", max_message_size)
        )
        self.owner = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._encode_json = json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode
        self._state = ProducerState.NEW
        #: Told of every move of every message (tests check the invariant with it).
        self._observer: Observer | None = None
        #: Wall-clock seconds, for timestamps and due times (tests inject a clock).
        self._wall: Callable[[], float] = time.time
        self._context: Context | None = None
        self._live: LivePublisher | None = None
        self._spiller: Spiller | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closer: asyncio.Task[None] | None = None
        self._abandon_drain = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Producer {self.owner} {self._state.value} store={self.store!r}>"

    # -- life ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks; returns at once, even while the broker is down."""
        if self._state is ProducerState.RUNNING:
            return
        if self._state is not ProducerState.NEW:
            raise ProducerClosed("a closed producer cannot be started again")
        context = Context(self._settings, self.store, self.owner, observer=self._observer)
        context.wall = self._wall
        link = self._make_link(context)
        context.link = link
        self._context = context
        self._live = LivePublisher(context, link)
        self._spiller = Spiller(context)
        replayer = Replayer(context, link)
        link.start()
        self._tasks = [
            asyncio.create_task(supervise("publisher", self._live.run, context)),
            asyncio.create_task(supervise("spill", self._spiller.run, context)),
            asyncio.create_task(supervise("replay", replayer.run, context)),
        ]
        self._state = ProducerState.RUNNING
        log.info("producer %s started (store %r)", self.owner, self.store)

    def _make_link(self, context: Context) -> Link:
        """The link to the broker; tests put other implementations of :class:`Link` here."""
        return AmqpLink(
            self._settings.urls,
            backoff=self._settings.reconnect_backoff,
            connect_timeout=self._settings.connect_timeout,
            name=f"aioproducer {self.owner}",
            on_error=context.record_error,
        )

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
        """Stop accepting, drain to the broker, store the rest; idempotent.

        Returns within ``timeout`` plus :data:`CLOSE_MARGIN` seconds, whatever the
        broker and the store do. The broker gets the time up to the last
        ``min(timeout / 2, 2)`` seconds; the store gets what is left, and at least
        :data:`STORE_ON_CLOSE`; what it has not taken by then is written to a local
        file (see ``python -m aioproducer import``). Cancelling close() cuts the
        drain short but not the storing: the messages are stored or written to the
        file before the cancellation goes on.
        """
        if self._state is ProducerState.NEW:
            self._state = ProducerState.CLOSED
            await self._close_store(1.0)
            return
        if self._closer is None:
            self._closer = asyncio.create_task(self._close(timeout), name="aioproducer-close")
        closer = self._closer
        cancelled = False
        while not closer.done():
            try:
                await asyncio.shield(closer)
            except asyncio.CancelledError:
                if closer.done():
                    break
                # Skip what is left of the drain; storing the rest still completes.
                cancelled = True
                self._abandon_drain.set()
        if cancelled:
            raise asyncio.CancelledError
        if not closer.cancelled():
            closer.result()

    async def _close(self, timeout: float) -> None:
        context = self._context
        assert context is not None and self._live is not None and self._spiller is not None
        self._state = ProducerState.CLOSING
        deadline = context.now() + timeout
        try:
            await self._drain(deadline - min(timeout / 2, 2.0))
            log.info(
                "producer %s closing: %d messages left in memory", self.owner, len(context.buffer)
            )
            await self._stop_tasks()
            deadline = max(deadline, context.now() + STORE_ON_CLOSE)
            await self._spiller.store_rest(deadline)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - context.now())):
                    await self._spiller.delete_redundant()
        finally:
            try:
                if context.link is not None:
                    await context.link.close(timeout=0.5)
            finally:
                await self._close_store(0.5)
                self._state = ProducerState.CLOSED
                log.info("producer %s closed", self.owner)

    async def _drain(self, until: float) -> None:
        """Wait until memory is empty, ``until`` passes, or a cancelled close() cuts it short."""
        assert self._context is not None
        waits = [
            asyncio.ensure_future(self._context.buffer.empty.wait()),
            asyncio.ensure_future(self._abandon_drain.wait()),
        ]
        try:
            await asyncio.wait(
                waits,
                timeout=max(0.0, until - self._context.now()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for wait in waits:
                wait.cancel()

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Cancelled loops end at once; the replayer hands its claim back within a second.
        await asyncio.wait(self._tasks, timeout=1.1)
        assert self._live is not None
        await self._live.stop()

    async def _close_store(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.store.close()
        except Exception as exc:
            log.warning(
                "producer %s: closing the store failed: %s", self.owner, describe_store_error(exc)
            )

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until nothing is buffered or in flight; False if ``timeout`` passes first."""
        if self._context is None:
            return True
        try:
            await asyncio.wait_for(self._context.buffer.empty.wait(), timeout)
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
        context = self._context
        if self._state is not ProducerState.RUNNING or context is None:
            raise ProducerClosed(f"producer is {self._state.value}")
        message = self._build(body, routing_key, exchange, headers, message_id, content_type)
        self._accept(message)
        return message.message_id

    def _accept(self, message: Message) -> None:
        """Take a built message into the buffer, or raise, changing nothing.

        Runs in the producer's event loop (the threaded façade drains its hand-off here).
        """
        context = self._context
        assert context is not None
        context.buffer.add(message)
        context.counters.accepted += 1

    def _build(
        self,
        body: Any,
        routing_key: str,
        exchange: str | None,
        headers: Mapping[str, Any] | None,
        message_id: str | None,
        content_type: str | None,
    ) -> Message:
        """Serialise and check one message; raise, changing nothing, if it cannot be sent.

        Touches no shared state, so any thread may call it.
        """
        context = self._context
        assert context is not None
        if type(body) is bytes:
            data, default_type = body, _BYTES_TYPE
        elif isinstance(body, str):
            data, default_type = _encode_text(body), _TEXT_TYPE
        elif isinstance(body, bytes | bytearray | memoryview):
            data, default_type = bytes(body), _BYTES_TYPE
        else:
            try:
                data = _encode_text(self._encode_json(body))
            except (TypeError, ValueError, RecursionError) as exc:
                raise BodyNotSerializable(
                    f"body is not JSON-serialisable: {type(exc).__name__}"
                ) from exc
            default_type = _JSON_TYPE
        if len(data) > self.max_message_size:
            raise MessageTooLarge(len(data), self.max_message_size)
        routing_key = check_name(routing_key, "routing_key")
        exchange = self.exchange if exchange is None else check_name(exchange, "exchange")
        wire = None
        if headers is not None:
            headers, wire = prepare_headers(headers)
        if message_id is None:
            message_id = os.urandom(16).hex()
        else:
            message_id = check_name(message_id, "message_id", empty=False)
        content_type = (
            default_type if content_type is None else check_name(content_type, "content_type")
        )
        return Message(
            message_id=message_id,
            body=data,
            exchange=exchange,
            routing_key=routing_key,
            content_type=content_type,
            timestamp=context.wall(),
            headers=headers,
            headers_wire=wire,
            deadline=context.now() + self.spill_after,
        )

    def stats(self) -> ProducerStats:
        """A snapshot of the counters and state."""
        context = self._context
        if context is None:
            return _empty_stats(self._state)
        c = context.counters
        link = context.link
        buffer = context.buffer
        return ProducerStats(
            accepted=c.accepted,
            confirmed=c.confirmed,
            spilled=c.spilled,
            replayed=c.replayed,
            returned=c.returned,
            nacked=c.nacked,
            channel_errors=c.channel_errors,
            failed=c.failed,
            retried=c.retried,
            exported=c.exported,
            unstorable=c.unstorable,
            dead=c.dead,
            buffered=len(buffer),
            buffered_bytes=buffer.bytes,
            in_flight=buffer.in_flight,
            held=buffer.held,
            connected=link is not None and link.connected,
            broker=link.address if link is not None else None,
            blocked=link is not None and link.blocked,
            store_ok=context.store_ok,
            store_errors=c.store_errors,
            connections=link.connections if link is not None else 0,
            state=self._state,
            last_error=context.last_error,
        )


def _encode_text(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise BodyNotSerializable("body is not valid Unicode (a lone surrogate)") from None


def _empty_stats(state: ProducerState) -> ProducerStats:
    return ProducerStats(
        accepted=0,
        confirmed=0,
        spilled=0,
        replayed=0,
        returned=0,
        nacked=0,
        channel_errors=0,
        failed=0,
        retried=0,
        exported=0,
        unstorable=0,
        dead=0,
        buffered=0,
        buffered_bytes=0,
        in_flight=0,
        held=0,
        connected=False,
        broker=None,
        blocked=False,
        store_ok=True,
        store_errors=0,
        connections=0,
        state=state,
        last_error=None,
    )
