"""The Producer: publish() hands off to memory; background tasks deliver, spill and replay."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import yarl

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
from ._exceptions import (
    BodyNotSerializable,
    MessageTooLarge,
    ProducerClosed,
    ProducerError,
    UnknownMessage,
)
from ._link import Link
from ._live import LivePublisher
from ._message import Message, Properties, State, check_name, check_properties, prepare_headers
from ._outgoing import Finish, Middleware, Outgoing, outgoing_batch
from ._replay import Replayer
from ._serializer import _BYTES_LIKE, BYTES_TYPE, Serializer, json_serializer
from ._settlement import SettledHook, Settlement, Settlements
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
        serializer: Serializer = json_serializer,
        on_settled: SettledHook | None = None,
        middleware: Sequence[Middleware] = (),
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
        self._serializer = serializer
        self._on_settled = on_settled
        self._middleware = tuple(middleware)
        #: Who the producer connects as: the only ``user_id`` RabbitMQ accepts.
        self._users = connection_users(url)
        self._settlements: Settlements | None = None
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
        self._settlements = Settlements(self.owner, self._on_settled)
        if self._on_settled is not None:
            context.buffer.observer = self._observe
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
                # Raised below once closing is done, even when it came as closing ended.
                cancelled = True
                if closer.done():
                    break
                # Skip what is left of the drain; storing the rest still completes.
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
                if self._settlements is not None:
                    self._settlements.close()
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
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: int | timedelta | str | None = None,
        type: str | None = None,
        app_id: str | None = None,
        user_id: str | None = None,
        content_encoding: str | None = None,
        persistent: bool | None = None,
        mandatory: bool | None = None,
    ) -> str:
        """Accept a message for delivery and return its ``message_id``; never does I/O.

        ``body`` goes through the producer's ``serializer`` (by default: bytes as is,
        str as UTF-8, anything else as JSON); ``content_type`` overrides the type it
        names. The other keywords are AMQP properties (``expiration`` in milliseconds,
        or a timedelta); ``persistent`` and ``mandatory`` override the producer's
        defaults for this message. Raises at once, accepting nothing, for a closed
        producer, a full buffer, a body that cannot be serialised or is too large, or
        a bad name, header, id or property.
        """
        return self.publish_nowait(
            body,
            routing_key=routing_key,
            exchange=exchange,
            headers=headers,
            message_id=message_id,
            content_type=content_type,
            priority=priority,
            correlation_id=correlation_id,
            reply_to=reply_to,
            expiration=expiration,
            type=type,
            app_id=app_id,
            user_id=user_id,
            content_encoding=content_encoding,
            persistent=persistent,
            mandatory=mandatory,
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
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: int | timedelta | str | None = None,
        type: str | None = None,
        app_id: str | None = None,
        user_id: str | None = None,
        content_encoding: str | None = None,
        persistent: bool | None = None,
        mandatory: bool | None = None,
    ) -> str:
        """:meth:`publish` for code that is not a coroutine."""
        if self._state is not ProducerState.RUNNING or self._context is None:
            raise ProducerClosed(f"producer is {self._state.value}")
        if self._middleware:
            outgoing = Outgoing(
                body,
                routing_key,
                exchange,
                headers,
                message_id,
                content_type,
                priority,
                correlation_id,
                reply_to,
                expiration,
                type,
                app_id,
                user_id,
                content_encoding,
                persistent,
                mandatory,
            )
            return self._publish_all([outgoing])[0]
        properties = self._properties(
            priority,
            correlation_id,
            reply_to,
            expiration,
            type,
            app_id,
            user_id,
            content_encoding,
            persistent,
            mandatory,
        )
        message = self._build(
            body, routing_key, exchange, headers, message_id, content_type, properties
        )
        self._accept(message)
        return message.message_id

    async def publish_many(
        self,
        messages: Iterable[Any],
        *,
        routing_key: str = "",
        exchange: str | None = None,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = None,
        priority: int | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        expiration: int | timedelta | str | None = None,
        type: str | None = None,
        app_id: str | None = None,
        user_id: str | None = None,
        content_encoding: str | None = None,
        persistent: bool | None = None,
        mandatory: bool | None = None,
    ) -> list[str]:
        """Accept every message of a batch, or none; return their ids in order.

        Each item is an :class:`Outgoing` (which carries all its own arguments) or a
        body, published with the keyword arguments given here. Every message is
        serialised and checked, and the buffer's room for all of them, before any is
        accepted: the first error raises and nothing is accepted. Never does I/O.
        """
        if self._state is not ProducerState.RUNNING or self._context is None:
            raise ProducerClosed(f"producer is {self._state.value}")
        shared = Outgoing(
            None,
            routing_key,
            exchange,
            headers,
            None,
            content_type,
            priority,
            correlation_id,
            reply_to,
            expiration,
            type,
            app_id,
            user_id,
            content_encoding,
            persistent,
            mandatory,
        )
        return self._publish_all(outgoing_batch(messages, shared))

    def _publish_all(self, batch: list[Outgoing]) -> list[str]:
        """Run the middleware over ``batch``, build and accept it all, or raise accepting none."""
        finishes: list[tuple[int, Finish]] = []
        if self._middleware:
            # Middleware changes copies: the caller's Outgoing objects stay as they were.
            batch = [self._for_middleware(outgoing) for outgoing in batch]
        try:
            for index, outgoing in enumerate(batch):
                for middleware in self._middleware:
                    finish = middleware(outgoing)
                    if finish is not None:
                        finishes.append((index, finish))
            messages = [self._build_outgoing(outgoing) for outgoing in batch]
            self._accept_all(messages)
        except BaseException as exc:
            for _index, finish in finishes:
                _call_finish(finish, exc)
            raise
        if finishes:
            assert self._settlements is not None
            self._listen()
            for index, finish in finishes:
                future = self._settlements.wait_for(messages[index])
                future.add_done_callback(functools.partial(_finish_when_settled, finish))
        return [message.message_id for message in messages]

    def _for_middleware(self, outgoing: Outgoing) -> Outgoing:
        """A copy of ``outgoing`` for the middleware, its exchange resolved."""
        exchange = self.exchange if outgoing.exchange is None else outgoing.exchange
        return dataclasses.replace(outgoing, exchange=exchange)

    def _properties(
        self,
        priority: int | None,
        correlation_id: str | None,
        reply_to: str | None,
        expiration: int | timedelta | str | None,
        type: str | None,
        app_id: str | None,
        user_id: str | None,
        content_encoding: str | None,
        persistent: bool | None,
        mandatory: bool | None,
    ) -> Properties | None:
        """The checked properties of one message, or None if none is set (the usual case,
        kept cheap). Raises :class:`InvalidMessage` naming the first bad value.

        Touches no shared state, so any thread may call it.
        """
        if (
            priority is None
            and correlation_id is None
            and reply_to is None
            and expiration is None
            and type is None
            and app_id is None
            and user_id is None
            and content_encoding is None
            and persistent is None
            and mandatory is None
        ):
            return None
        return check_properties(
            {
                "priority": priority,
                "correlation_id": correlation_id,
                "reply_to": reply_to,
                "expiration": expiration,
                "type": type,
                "app_id": app_id,
                "user_id": user_id,
                "content_encoding": content_encoding,
                "persistent": persistent,
                "mandatory": mandatory,
            },
            self._users,
        )

    def _build_outgoing(self, outgoing: Outgoing) -> Message:
        o = outgoing
        properties = self._properties(
            o.priority,
            o.correlation_id,
            o.reply_to,
            o.expiration,
            o.type,
            o.app_id,
            o.user_id,
            o.content_encoding,
            o.persistent,
            o.mandatory,
        )
        return self._build(
            o.body, o.routing_key, o.exchange, o.headers, o.message_id, o.content_type, properties
        )

    def _accept(self, message: Message) -> None:
        """Take a built message into the buffer, or raise, changing nothing.

        Runs in the producer's event loop (the threaded façade drains its hand-off here).
        """
        context = self._context
        assert context is not None
        context.buffer.add(message)
        context.counters.accepted += 1

    def _accept_all(self, messages: list[Message]) -> None:
        """Take every message of a batch into the buffer, or raise, changing nothing."""
        context = self._context
        assert context is not None
        context.buffer.add_all(messages)
        context.counters.accepted += len(messages)

    def _build(
        self,
        body: Any,
        routing_key: str,
        exchange: str | None,
        headers: Mapping[str, Any] | None,
        message_id: str | None,
        content_type: str | None,
        properties: Properties | None = None,
    ) -> Message:
        """Serialise and check one message; raise, changing nothing, if it cannot be sent.

        Touches no shared state, so any thread may call it.
        """
        context = self._context
        assert context is not None
        if type(body) is bytes:
            data, default_type = body, BYTES_TYPE
        else:
            data, default_type = self._serialize(body)
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
            properties=properties,
        )

    def _serialize(self, body: Any) -> tuple[bytes, str]:
        """``body`` through the serializer; bytes-like bodies always go as they are."""
        serializer = self._serializer
        if serializer is json_serializer:
            return json_serializer(body)
        if isinstance(body, _BYTES_LIKE):
            return bytes(body), BYTES_TYPE
        try:
            result = serializer(body)
        except ProducerError:
            raise
        except Exception as exc:
            raise BodyNotSerializable(
                f"the serializer failed: {exc.__class__.__name__}: {exc}"[:300]
            ) from exc
        if (
            not isinstance(result, tuple)
            or len(result) != 2
            or not isinstance(result[0], bytes)
            or not isinstance(result[1], str)
        ):
            raise BodyNotSerializable("the serializer must return (bytes, content_type str)")
        return result

    # -- settlement ------------------------------------------------------------

    def settled(self, message_id: str, *, timeout: float | None = None) -> Awaitable[Settlement]:
        """Await how the message ``message_id`` settles: CONFIRMED, STORED or DEAD.

        It registers at the call, before any await: called right after publish() it
        never misses the settlement. Once a producer has been asked, it also remembers
        how the latest 10,000 messages settled, and answers for those; any other id
        raises :class:`UnknownMessage`. The first settlement counts: a message whose
        copy was stored is STORED even if its confirm or its replay comes later
        (``on_settled`` hears of those). Raises TimeoutError after ``timeout`` seconds
        (the message is not affected), and :class:`ProducerClosed` if the producer
        closed before the message settled. publish() itself never waits, and until
        settled() is first called nothing is tracked per message.
        """
        context = self._context
        if context is None or self._settlements is None:
            raise ProducerClosed(f"producer is {self._state.value}")
        message = context.buffer.get(message_id)
        if message is None:
            recent = self._settlements.recent
            outcome = recent.get(message_id) if recent is not None else None
            if outcome is None:
                raise UnknownMessage(message_id)
            future = asyncio.get_running_loop().create_future()
            future.set_result(outcome)
        else:
            future = self._settlements.wait_for(message)
            self._listen()
        return _await_settlement(future, message_id, timeout)

    def _listen(self) -> None:
        """Have the buffer tell :class:`Settlements` of every move (from now on)."""
        context = self._context
        assert context is not None
        if context.buffer.observer != self._observe:
            context.buffer.observer = self._observe

    def _observe(self, message: Message, state: State) -> None:
        if self._observer is not None:
            self._observer(message, state)
        assert self._settlements is not None
        self._settlements.observe(message, state)

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


def _finish_when_settled(finish: Finish, future: asyncio.Future[Settlement | None]) -> None:
    _call_finish(finish, future.result())


def _call_finish(finish: Finish, outcome: Settlement | BaseException | None) -> None:
    try:
        finish(outcome)
    except Exception:
        log.exception("a middleware's finish callback failed")


async def _await_settlement(
    future: asyncio.Future[Settlement | None], message_id: str, timeout: float | None
) -> Settlement:
    async with asyncio.timeout(timeout):
        outcome = await asyncio.shield(future)
    if outcome is None:
        raise ProducerClosed(f"the producer closed before message {message_id} settled")
    return outcome


def connection_users(url: str | Sequence[str]) -> frozenset[str]:
    """The user names a producer connects as (aio-pika's default: guest)."""
    urls = [url] if isinstance(url, str) else list(url)
    return frozenset(yarl.URL(u).user or "guest" for u in urls)


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
