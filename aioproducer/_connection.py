"""The AMQP link: one robust aio-pika connection and its publishing channels.

This is the only module that imports aio-pika or aiormq. It turns their
exceptions, confirm frames and returned messages into :class:`Result` values,
so the producer's policy never sees a foreign exception.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import re
import struct
import sys
import weakref
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import aio_pika
import aiormq
import aiormq.abc
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aio_pika.robust_connection import RobustConnection
from aiormq.channel import EXCEPTION_MAPPING
from yarl import URL

from ._backoff import Backoff
from ._config import format_exception, mask
from ._failover import Rotation
from ._link import ACKED, ErrorSink, OnResult, Outcome, Result, Sent, send_each
from ._message import Message, encode_headers_wire

log = logging.getLogger("aioproducer.connection")

_CODES = {cls: code for code, cls in EXCEPTION_MAPPING.items()}
_MISSING_EXCHANGE = re.compile(r"no exchange '(.*)' in vhost")


class _Properties(aiormq.spec.Basic.Properties):
    """Basic properties whose headers go out as the bytes encoded once at publish()."""

    headers_wire: bytes

    def encode_property(self, name: str, value: Any) -> bytes:
        if name == "headers":
            return self.headers_wire
        return super().encode_property(name, value)


def message_properties(message: Message, *, persistent: bool) -> aiormq.spec.Basic.Properties:
    """The basic properties ``message`` is published with, its headers encoded once.

    ``persistent`` is the producer's default; the message's own setting wins.
    """
    extra = message.properties
    if extra is not None and extra.persistent is not None:
        persistent = extra.persistent
    properties = _Properties(
        content_type=message.content_type,
        delivery_mode=2 if persistent else 1,
        message_id=message.message_id,
        timestamp=datetime.fromtimestamp(int(message.timestamp), UTC),
        headers=message.headers,
    )
    if extra is not None:
        properties.priority = extra.priority
        properties.correlation_id = extra.correlation_id
        properties.reply_to = extra.reply_to
        properties.expiration = extra.expiration
        properties.message_type = extra.type
        properties.app_id = extra.app_id
        properties.user_id = extra.user_id
        properties.content_encoding = extra.content_encoding
    if message.headers:
        if message.headers_wire is None:
            message.headers_wire = encode_headers_wire(message.headers)
        properties.headers_wire = message.headers_wire
    else:
        properties.headers = None
    return properties


def _failure(exc: BaseException) -> Result:
    """The Result of a publish that failed with ``exc``, raised by aiormq or the connection."""
    if isinstance(exc, aiormq.exceptions.ChannelClosed):
        text = str(exc.args[-1]) if exc.args else repr(exc)
        code = _CODES.get(type(exc), 0)
        if not code and len(exc.args) == 2 and isinstance(exc.args[0], int):
            code = exc.args[0]
        missing = _MISSING_EXCHANGE.search(text) if code == 404 else None
        return Result(
            Outcome.CHANNEL_ERROR,
            text,
            code,
            missing_exchange=missing.group(1) if missing else None,
        )
    if isinstance(exc, asyncio.CancelledError):
        # aiormq cancels pending confirms when the connection drops under them.
        return Result(Outcome.LOST, "confirm cancelled by a closing connection")
    if isinstance(exc, (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError)):
        # ChannelInvalidStateError is a RuntimeError: the channel or connection is gone.
        return Result(Outcome.LOST, repr(exc))
    return Result(Outcome.FAILED, f"{type(exc).__name__} while publishing")


class _BackoffConnection(RobustConnection):
    """A robust connection that moves along the broker addresses and backs off per round.

    aio-pika reads ``url`` once per connection attempt, and ``reconnect_interval``
    while handling a failed one and again for its sleep. Here ``url`` is the address
    :class:`Rotation` names; a failed attempt moves on to the next at once, and only
    a full round of failures waits, for the next delay of ``policy`` (jittered). A
    lost connection moves on too; a successful one starts the rounds afresh.
    """

    policy: ClassVar[Backoff] = Backoff()
    rotation: ClassVar[Rotation]
    link: ClassVar[AmqpLink | None] = None
    #: What aio-pika sleeps after an attempt: decided once, when the attempt ended.
    _delay = 0.0
    #: The failure last counted (aio-pika may read the interval more than once for it).
    _failure: BaseException | None = None
    #: Whether the connection is up (so that its close is a loss, not a failed attempt).
    _was_up = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # connect_robust() returns only once connected: hand the connection over at
        # once, so that a close() while the broker is down can stop its reconnecting.
        if self.link is not None:
            self.link._adopt(self)

    #: The address the latest attempt was given (what aio-pika's own log lines name).
    _attempted: URL | None = None

    @property
    def url(self) -> URL:
        url = self._attempted = self.rotation.url
        return url

    @url.setter
    def url(self, value: URL) -> None:
        """The rotation decides; aio-pika's own assignment is ignored."""

    def __str__(self) -> str:
        # The rotation may have moved on already when aio-pika logs a failed attempt:
        # name the address that failed, password masked as aio-pika does.
        url = self._attempted or self.rotation.url
        return str(url.with_password("******") if url.password else url)

    @property
    def reconnect_interval(self) -> float:
        failure = sys.exc_info()[1]
        if failure is not None and failure is not self._failure:
            # Read while aio-pika handles a failed attempt: count it, once.
            self._failure = failure
            failed = self.rotation.address
            first = self.rotation.failures == 0
            self._delay = self.rotation.failed()
            if self.link is not None:
                self.link._attempt_failed(failure, failed, self._delay, first=first)
        return self._delay

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        """The policy decides; the URL's fixed interval is ignored."""

    async def _on_connected(self) -> None:
        await super()._on_connected()
        self.rotation.connected()
        self._was_up = True
        self._failure = None
        # A short pause before aio-pika watches for the next loss: a node that accepts
        # connections and drops them at once is not retried in a busy loop.
        self._delay = self.policy.delay(0)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        await super()._on_connection_close(closing)
        # aio-pika's next attempt waits for this to return: aim it at the next address.
        if self._was_up:
            self._was_up = False
            self.rotation.lost()


def _connection_class(
    policy: Backoff, rotation: Rotation, link: AmqpLink
) -> type[_BackoffConnection]:
    return type(
        "Connection",
        (_BackoffConnection,),
        {"policy": policy, "rotation": rotation, "link": link},
    )


#: A channel whose every publish the broker nacks for this long (seconds), doubled for
#: each replacement in a row that did not help, up to the cap, is replaced.
NACK_RUN_SECONDS = 1.0
NACK_RUN_CAP = 60.0
#: Nacks in a row, at the least, before a channel counts as nacking everything.
NACK_RUN_COUNT = 3


def nack_span(replaced: int) -> float:
    """How long a channel must have had only nacks to be replaced, after ``replaced``
    replacements in a row that changed nothing."""
    return min(NACK_RUN_CAP, NACK_RUN_SECONDS * 2.0 ** min(replaced, 16))


class NackRun:
    """The nacks in a row on one channel: when the run began and how long it is."""

    __slots__ = ("count", "since", "span", "which")

    def __init__(self, which: str, span: float) -> None:
        self.which = which
        #: How long a run must last before the channel is replaced.
        self.span = span
        self.count = 0
        self.since = 0.0

    def stuck(self, now: float) -> bool:
        return self.count >= NACK_RUN_COUNT and now - self.since >= self.span


def _is_blocked(connection: aiormq.abc.AbstractConnection) -> bool:
    """Whether the broker has sent ``Connection.Blocked`` (a memory or disk alarm).

    aiormq keeps this in a private event that gates its ``ready()``; there is no
    public flag.
    """
    unblocked = getattr(connection, "_Connection__connection_unblocked", None)
    return isinstance(unblocked, asyncio.Event) and not unblocked.is_set()


class AmqpLink:
    """One robust connection with a channel per use (``live`` and ``replay``).

    Given several broker addresses (nodes of one cluster), it is connected to one
    at a time and moves to the next when a connection is lost or cannot be made.
    """

    CHANNELS = ("live", "replay")

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        backoff: Backoff,
        connect_timeout: float = 10.0,
        name: str = "aioproducer",
        on_error: ErrorSink | None = None,
        shuffle: Callable[[list[str]], None] | None = None,
    ) -> None:
        addresses = [urls] if isinstance(urls, str) else list(urls)
        self._rotation = (
            Rotation(addresses, backoff)
            if shuffle is None
            else Rotation(addresses, backoff, shuffle=shuffle)
        )
        #: Each address as logs and errors show it: its password masked, once.
        self._masked = {address: mask(address) for address in addresses}
        #: The address last connected to, masked (to log a move between nodes).
        self._last_connected: str | None = None
        self._on_error = on_error
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._name = name
        self._connection: AbstractRobustConnection | None = None
        self._channels: dict[str, AbstractRobustChannel] = {}
        #: Each handed-out channel's run of nacks, and per channel name the replacements
        #: in a row that were nacked as well.
        self._runs: weakref.WeakKeyDictionary[Any, NackRun] = weakref.WeakKeyDictionary()
        self._replaced: dict[str, int] = {}
        self._opener: asyncio.Task[None] | None = None
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connections = 0
        self._closing = False
        self._up = False
        #: Whether a publisher found the connection blocked (logged once per block).
        self._blocked_seen = False

    @property
    def connected(self) -> bool:
        connection = self._connection
        return connection is not None and connection.connected.is_set()

    @property
    def _shown(self) -> str:
        """The address of the current (or next) attempt, masked."""
        return self._masked[self._rotation.address]

    @property
    def address(self) -> str | None:
        """The broker address connected to, its password masked; None while not connected."""
        return self._shown if self.connected else None

    @property
    def blocked(self) -> bool:
        amqp = self._amqp()
        return amqp is not None and _is_blocked(amqp)

    def start(self) -> None:
        """Connect in the background; returns at once, whatever the broker's state."""
        if self._opener is None:
            self._opener = asyncio.create_task(self._keep_open(), name="aioproducer-connect")

    def _error(self, text: str) -> None:
        if self._on_error is not None:
            self._on_error(mask(text))

    async def _keep_open(self) -> None:
        """Run :meth:`_open` until it succeeds: a failure is logged and retried with backoff."""
        failures = 0
        while True:
            try:
                await self._open()
            except Exception as exc:
                delay = self._backoff.delay(failures)
                failures += 1
                self._error(f"connecting to {self._shown} failed: {exc!r}")
                log.error(
                    "connecting to %s failed; retrying in %.1fs\n%s",
                    self._shown,
                    delay,
                    format_exception(exc),
                )
                await self._drop_connection()
                await asyncio.sleep(delay)
            else:
                return

    async def _drop_connection(self) -> None:
        """Close the connection of an opening that failed; it is not told as lost."""
        connection, self._connection = self._connection, None
        self._channels.clear()
        if connection is not None:
            connection.close_callbacks.discard(self._on_connection_closed)
            with contextlib.suppress(Exception):
                await connection.close()

    async def _open(self) -> None:
        connection = await aio_pika.connect_robust(
            self._rotation.address,
            connection_class=_connection_class(self._backoff, self._rotation, self),
            fail_fast=False,
            timeout=self._connect_timeout,
            client_properties={"connection_name": self._name},
        )
        connection.close_callbacks.add(self._on_connection_closed)
        connection.reconnect_callbacks.add(self._on_reconnected)
        self._connected()
        attempt = 0
        for which in self.CHANNELS:
            while which not in self._channels:
                channel = await self._new_channel(connection, which)
                if channel is None:
                    # The robust connection reconnects by itself; try again after it.
                    await asyncio.sleep(self._backoff.delay(attempt))
                    attempt += 1
                    continue
                self._channels[which] = channel
        self._notify()

    async def _new_channel(
        self, connection: AbstractRobustConnection, which: str
    ) -> AbstractRobustChannel | None:
        """Open channel ``which`` with publisher confirms; None (logged) if it failed."""
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            self._error(f"opening the {which} channel failed: {exc!r}")
            log.warning("opening the %s channel failed: %s", which, mask(repr(exc)))
            return None
        channel.close_callbacks.add(self._on_channel_event)
        channel.reopen_callbacks.add(self._on_channel_event)
        return channel

    async def _replace(self, which: str, run: NackRun, now: float) -> None:
        """Put a new channel in place of ``which``, whose publishes were all nacked.

        A channel restored on a new connection can be refused by a quorum queue whose
        leader died as it first reached it: the broker then nacks every publish of
        that channel, while a new channel on the same connection is confirmed. The
        old channel is closed; what it still had unconfirmed ends lost and is sent
        again, under the same message ids.
        """
        connection, old = self._connection, self._channels.get(which)
        if connection is None or old is None:
            return
        replaced = self._replaced.get(which, 0)
        self._error(f"the {which} channel to {self._shown} nacked every publish; replaced")
        log.warning(
            "the %s channel to %s nacked every publish (%d in a row, for %.1fs); "
            "replacing it with a new channel",
            which,
            self._shown,
            run.count,
            now - run.since,
        )
        channel = await self._new_channel(connection, which)
        if channel is None:
            # Tried again on the channel's next use, after another span of nacks.
            run.since = now
            return
        self._replaced[which] = replaced + 1
        self._channels[which] = channel
        self._notify()
        try:
            async with asyncio.timeout(self._connect_timeout):
                await old.close()
        except (TimeoutError, aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.debug("closing the replaced %s channel failed: %s", which, mask(repr(exc)))

    def _observe(self, channel: Any, on_result: OnResult) -> OnResult:
        """``on_result``, counting the nacks in a row of ``channel`` (one handed out by
        :meth:`channel`; any other is not watched)."""
        run = self._runs.get(channel)
        if run is None:
            return on_result
        loop = asyncio.get_running_loop()
        replaced = self._replaced

        def observe(message: Message, result: Result) -> None:
            outcome = result.outcome
            if outcome is Outcome.ACKED:
                if run.count:
                    run.count = 0
                if replaced.get(run.which):
                    replaced[run.which] = 0
            elif outcome is Outcome.NACKED:
                if not run.count:
                    run.since = loop.time()
                run.count += 1
            on_result(message, result)

        return observe

    def _adopt(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection

    def _connected(self) -> None:
        self._up = True
        self._blocked_seen = False
        self.connections += 1
        previous, self._last_connected = self._last_connected, self._shown
        if previous is not None and previous != self._shown:
            log.info("connected to %s (moved from %s)", self._shown, previous)
        else:
            log.info("connected to %s", self._shown)

    def _attempt_failed(
        self, exc: BaseException, address: str, delay: float, *, first: bool
    ) -> None:
        """The attempt at ``address`` failed: a line for the first of a row, DEBUG for the
        rest. The rotation has moved on to the next address already."""
        reason = mask(repr(exc))
        shown, following = self._masked[address], self._shown
        self._error(f"connecting to {shown} failed: {reason}")
        if first:
            if following != shown:
                log.warning("cannot connect to %s: %s; trying %s next", shown, reason, following)
            else:
                log.warning("cannot connect to %s: %s; retrying in the background", shown, reason)
        else:
            log.debug(
                "connection attempt to %s failed: %s; next to %s in %.1fs",
                shown,
                reason,
                following,
                delay,
            )

    def _on_connection_closed(self, _sender: Any, exc: BaseException | None = None) -> None:
        # aio-pika calls this after every failed reconnection attempt too: log the
        # change of state once, the attempts only at DEBUG.
        was_up, self._up = self._up, False
        reason = mask(repr(exc))
        if self._closing:
            log.info("connection to %s closed", self._shown)
        elif was_up:
            self._error(f"connection to {self._shown} lost: {reason}")
            following = self._masked[self._rotation.after]
            if following != self._shown:
                log.warning(
                    "connection to %s lost: %s; moving to %s", self._shown, reason, following
                )
            else:
                log.warning("connection to %s lost: %s", self._shown, reason)
        else:
            self._error(f"connecting to {self._shown} failed: {reason}")
            log.debug("connection attempt to %s failed: %s", self._shown, reason)
        self._notify()

    def _on_reconnected(self, _sender: Any) -> None:
        self._connected()
        self._notify()

    def _on_channel_event(self, _sender: Any, *_: Any) -> None:
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        if not changed.done():
            changed.set_result(None)

    def _amqp(self) -> aiormq.abc.AbstractConnection | None:
        connection = self._connection
        transport = connection.transport if connection is not None else None
        return transport.connection if transport is not None else None

    async def _channel_now(self, which: str) -> aiormq.abc.AbstractChannel | None:
        channel = self._channels.get(which)
        if channel is None or channel.is_closed or not self.connected:
            return None
        try:
            underlay = await channel.get_underlay_channel()
        except (aiormq.exceptions.AMQPError, RuntimeError):
            return None
        if underlay.is_closed or _is_blocked(underlay.connection):
            return None
        run = self._runs.get(underlay)
        if run is None:
            self._runs[underlay] = NackRun(which, nack_span(self._replaced.get(which, 0)))
        else:
            now = asyncio.get_running_loop().time()
            if run.stuck(now):
                await self._replace(which, run, now)
                return None
        return underlay

    async def channel(self, which: str) -> aiormq.abc.AbstractChannel:
        """Wait until channel ``which`` can take publishes: connected, open, not blocked."""
        while True:
            changed = self._changed
            underlay = await self._channel_now(which)
            if underlay is not None:
                if self._blocked_seen:
                    self._blocked_seen = False
                    log.info("connection to %s unblocked by the broker", self._shown)
                return underlay
            waiters: list[asyncio.Future[Any]] = [changed]
            amqp = self._amqp()
            if amqp is not None and not amqp.is_closed and _is_blocked(amqp):
                if not self._blocked_seen:
                    self._blocked_seen = True
                    log.warning(
                        "connection to %s blocked by the broker (a resource alarm); "
                        "publishes wait, messages spill on their deadline",
                        self._shown,
                    )
                waiters.append(asyncio.ensure_future(amqp.ready()))
            # A state change that raises no callback is caught by the periodic re-check.
            await asyncio.wait(waiters, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters[1:]:
                waiter.cancel()

    def send(
        self,
        channel: aiormq.abc.AbstractChannel,
        messages: Sequence[Message],
        *,
        mandatory: bool,
        persistent: bool,
        timeout: float,
        on_result: OnResult,
    ) -> Sent:
        """Publish ``messages`` in one write; settle each through ``on_result``.

        The frames of all of them are marshalled into one buffer and queued for the
        connection's writer at once; confirms settle them by callback, without a task
        or a future per message (see :class:`_Batch`).
        """
        on_result = self._observe(channel, on_result)
        if not BATCHED:
            return send_each(
                self,
                channel,
                messages,
                mandatory=mandatory,
                persistent=persistent,
                timeout=timeout,
                on_result=on_result,
            )
        return _Batch(channel, messages, mandatory, persistent, timeout, on_result)

    async def publish(
        self,
        channel: aiormq.abc.AbstractChannel,
        message: Message,
        *,
        mandatory: bool,
        persistent: bool,
        timeout: float,
    ) -> Result:
        """Publish ``message`` and wait for its confirm, at most ``timeout`` seconds.

        Never raises but for its own task's cancellation: every failure is a Result.
        """
        try:
            properties = message_properties(message, persistent=persistent)
        except Exception as exc:
            return Result(Outcome.FAILED, f"properties could not be encoded: {type(exc).__name__}")
        try:
            confirm = await channel.basic_publish(
                message.body,
                exchange=message.exchange,
                routing_key=message.routing_key,
                properties=properties,
                mandatory=message.mandatory_or(mandatory),
                timeout=timeout,
            )
        except TimeoutError:
            return Result(Outcome.TIMEOUT, f"no confirm within {timeout:.3g}s")
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            return _failure(exc)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # aiormq cancels pending confirms when the connection drops under them.
            return Result(Outcome.LOST, "confirm cancelled by a closing connection")
        except Exception as exc:
            # Anything else is this message's own failure: it is held back and retried,
            # it never stops the pipeline. The text names the type only, never a value.
            log.error(
                "publishing message %s failed unexpectedly\n%s",
                message.message_id,
                format_exception(exc, with_text=False),
            )
            return Result(Outcome.FAILED, f"{type(exc).__name__} while publishing")
        if isinstance(confirm, aiormq.spec.Basic.Ack):
            return ACKED
        if isinstance(confirm, aiormq.abc.DeliveredMessage):
            frame = confirm.delivery
            code = getattr(frame, "reply_code", 0) or 0
            text = getattr(frame, "reply_text", "") or "returned"
            return Result(Outcome.RETURNED, f"{code} {text}", code)
        return Result(Outcome.NACKED, "nacked by the broker")

    async def close(self, timeout: float) -> None:
        """Close the connection, stopping any reconnection in progress.

        Waits at most ``timeout`` seconds for the broker to answer the close.
        """
        self._closing = True
        if self._opener is not None:
            self._opener.cancel()
            await asyncio.gather(self._opener, return_exceptions=True)
            self._opener = None
        connection, self._connection = self._connection, None
        self._channels.clear()
        if connection is not None:
            try:
                async with asyncio.timeout(timeout):
                    await connection.close()
            except (
                TimeoutError,
                aiormq.exceptions.AMQPError,
                ConnectionError,
                RuntimeError,
            ) as exc:
                log.info("closing the connection did not finish cleanly: %s", mask(repr(exc)))
        self._notify()


# -- the batched publish path ------------------------------------------------------
#
# Publishing through ``Channel.basic_publish`` costs a lock, a timeout scope, a
# drain future, a confirmation future and pamqp marshalling per message. A batch
# below goes under it: it marshals the frames of many messages into one write and
# registers an entry of its own per message in aiormq's table of pending confirms,
# which aiormq's channel reader settles by calling it. What it relies on of aiormq
# is listed in INTERNALS and checked when this module is imported; the versions it
# was verified with are pinned in pyproject.toml.

#: What the batched path uses of an aiormq channel: methods, and attributes its
#: ``__init__`` sets.
CHANNEL_METHODS = ("create_future", "_confirm_delivery", "_on_return_frame", "_on_confirm_frame")
CHANNEL_FIELDS = (
    "confirmations",
    "message_id_delivery_tag",
    "delivery_tag",
    "write_queue",
    "max_content_size",
    "number",
)


def check_internals() -> list[str]:
    """What the batched path needs of aiormq that this aiormq lacks: empty if nothing."""
    channel = aiormq.Channel
    missing = [f"Channel.{name}()" for name in CHANNEL_METHODS if not hasattr(channel, name)]
    assigned = channel.__init__.__code__.co_names
    missing += [f"Channel.{name}" for name in CHANNEL_FIELDS if name not in assigned]
    fields = getattr(aiormq.abc.ChannelFrame, "__dataclass_fields__", {})
    missing += [
        f"ChannelFrame.{name}"
        for name in ("payload", "should_close", "drain_future")
        if name not in fields
    ]
    return missing


#: Whether this aiormq has what the batched path needs; if not, each message is
#: published through ``basic_publish`` (slower, same outcomes).
BATCHED = not check_internals()
if not BATCHED:
    log.warning(
        "aiormq %s lacks %s: publishing one message at a time",
        getattr(aiormq, "__version__", "?"),
        ", ".join(check_internals()),
    )

_FRAME_HEAD = struct.Struct(">BHI")
_METHOD_HEAD = struct.Struct(">BHIHHH")  # frame head, Basic.Publish ids, reserved short
_CONTENT_HEAD = struct.Struct(">BHIHHQH")  # frame head, class, weight, body size, flags
_U64 = struct.Struct(">Q")
_FRAME_END = b"\xce"
_SHORTSTR = "shortstr"
#: Basic properties in wire order: name, presence flag, AMQP type.
_PROPERTIES = tuple(
    (
        name,
        aiormq.spec.Basic.Properties.flags[name],
        aiormq.spec.Basic.Properties.amqp_type(name),
    )
    for name in aiormq.spec.Basic.Properties.__slots__
)


def _shortstr(value: str) -> bytes:
    data = value.encode()
    if len(data) > 255:
        raise ValueError("a short string is longer than 255 bytes")
    return bytes((len(data),)) + data


def publish_frames(
    number: int,
    message: Message,
    properties: aiormq.spec.Basic.Properties,
    mandatory: bool,
    max_content: int,
    out: list[bytes],
) -> None:
    """Append the Basic.Publish, content header and body frames of ``message`` to ``out``.

    The same bytes pamqp marshals (a test compares them), without its per-field
    dispatch: short strings, octets and the timestamp are encoded here, any other
    property by ``properties.encode_property`` (as pamqp does).
    """
    names = _shortstr(message.exchange) + _shortstr(message.routing_key)
    method = _METHOD_HEAD.pack(1, number, 7 + len(names), 60, 40, 0) + names
    flags = 0
    parts: list[bytes] = []
    for name, flag, kind in _PROPERTIES:
        value = getattr(properties, name)
        if value is None or value == "":
            continue
        flags |= flag
        if kind == _SHORTSTR and type(value) is str:
            parts.append(_shortstr(value))
        elif kind == "octet" and type(value) is int:
            parts.append(bytes((value,)))
        elif kind == "timestamp" and type(value) is datetime and value.tzinfo is UTC:
            parts.append(_U64.pack(calendar.timegm(value.utctimetuple())))
        else:
            parts.append(properties.encode_property(name, value))
    encoded = b"".join(parts)
    body = message.body
    out.append(method)
    out.append(b"\x01\xce" if mandatory else b"\x00\xce")
    out.append(_CONTENT_HEAD.pack(2, number, 14 + len(encoded), 60, 0, len(body), flags))
    out.append(encoded)
    out.append(_FRAME_END)
    for start in range(0, len(body), max_content):
        chunk = body[start : start + max_content]
        out.append(_FRAME_HEAD.pack(3, number, len(chunk)))
        out.append(chunk)
        out.append(_FRAME_END)


class _Confirm:
    """One message of a :class:`_Batch`, as an entry of ``Channel.confirmations``.

    aiormq's channel reader settles such an entry by calling ``set_result`` (with an
    ack frame, or the returned message) or ``set_exception`` (a nack); it asks
    ``done()`` and ``cancelled()`` of an entry whose confirm came after its timeout.
    """

    __slots__ = ("batch", "message", "settled", "tag")

    def __init__(self, batch: _Batch, message: Message, tag: int) -> None:
        self.batch = batch
        self.message = message
        self.tag = tag
        self.settled = False

    def done(self) -> bool:
        return self.settled

    def cancelled(self) -> bool:
        # Only a timed-out entry is done before its confirm: aiormq logs that at DEBUG.
        return self.settled

    def set_result(self, value: Any) -> None:
        if isinstance(value, aiormq.abc.DeliveredMessage):
            frame = value.delivery
            code = getattr(frame, "reply_code", 0) or 0
            text = getattr(frame, "reply_text", "") or "returned"
            self.batch.settle(self, Result(Outcome.RETURNED, f"{code} {text}", code))
        elif isinstance(value, aiormq.spec.Basic.Ack):
            self.batch.settle(self, ACKED)
        else:
            self.batch.settle(self, _NACKED)

    def set_exception(self, exc: BaseException) -> None:
        if isinstance(exc, aiormq.exceptions.DeliveryError):
            self.batch.settle(self, _NACKED)
        else:
            self.batch.settle(self, _failure(exc))


_NACKED = Result(Outcome.NACKED, "nacked by the broker")


class _Batch:
    """Messages published in one write on one channel, settled one by one by callback.

    A future from the channel's own future store stands for the whole batch: aiormq
    rejects it when the channel or its connection closes, which settles whatever
    is still unconfirmed as lost (or as the channel's error). One timer settles
    what is left unconfirmed after ``timeout`` seconds.
    """

    def __init__(
        self,
        channel: Any,
        messages: Sequence[Message],
        mandatory: bool,
        persistent: bool,
        timeout: float,
        on_result: OnResult,
    ) -> None:
        self._channel = channel
        self._on_result = on_result
        self._timeout = timeout
        self._entries: list[_Confirm] = []
        self._pending = 0
        self._abandoned = False
        self._watch: asyncio.Future[None] | None = None
        self._put: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        number: int = channel.number
        max_content: int = channel.max_content_size
        frames: list[bytes] = []
        sendable: list[Message] = []
        for message in messages:
            try:
                properties = message_properties(message, persistent=persistent)
                publish_frames(
                    number,
                    message,
                    properties,
                    message.mandatory_or(mandatory),
                    max_content,
                    frames,
                )
            except Exception as exc:
                self._report(
                    message,
                    Result(
                        Outcome.FAILED,
                        f"properties could not be encoded: {type(exc).__name__}",
                    ),
                )
                continue
            sendable.append(message)
        if not sendable:
            return
        if channel.is_closed:
            lost = Result(Outcome.LOST, f"{channel!r} closed")
            for message in sendable:
                self._report(message, lost)
            return
        confirmations = channel.confirmations
        tags = channel.message_id_delivery_tag
        tag: int = channel.delivery_tag
        entries = self._entries
        for message in sendable:
            tag += 1
            entry = _Confirm(self, message, tag)
            confirmations[tag] = entry
            tags[message.message_id] = tag
            entries.append(entry)
        channel.delivery_tag = tag
        self._pending = len(entries)
        self._watch = watch = channel.create_future()
        self._drain = channel.create_future()
        frame = aiormq.abc.ChannelFrame(
            payload=b"".join(frames), should_close=False, drain_future=self._drain
        )
        # The broker numbers publishes in the order it reads them: once numbered
        # here, the frames must reach the queue, in this order (nothing awaits above).
        try:
            channel.write_queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._put = asyncio.ensure_future(channel.write_queue.put(frame))
        self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)
        watch.add_done_callback(self._closed)

    @property
    def done(self) -> bool:
        return self._abandoned or self._pending == 0

    async def written(self) -> None:
        """Wait until the frames are in the connection's queue and written out.

        Gives up when the channel closes, or after the batch's timeout (a socket
        that takes nothing): the confirms settle the messages either way.
        """
        put, watch = self._put, self._watch
        if put is not None and watch is not None and not put.done():
            await asyncio.wait((put, watch), return_when=asyncio.FIRST_COMPLETED)
        drain = self._drain
        if drain is not None and not drain.done() and not self.done:
            await asyncio.wait((drain,), timeout=self._timeout)

    def abandon(self) -> None:
        """Report nothing more; the write already queued still goes out."""
        self._abandoned = True
        self._finish()

    def settle(self, entry: _Confirm, result: Result) -> None:
        if entry.settled:
            return
        entry.settled = True
        tags = self._channel.message_id_delivery_tag
        message = entry.message
        if tags.get(message.message_id) == entry.tag:
            del tags[message.message_id]
        self._pending -= 1
        if self._pending == 0:
            self._finish()
        if not self._abandoned:
            self._report(message, result)

    def _report(self, message: Message, result: Result) -> None:
        try:
            self._on_result(message, result)
        except Exception as exc:
            log.error(
                "settling message %s failed\n%s",
                message.message_id,
                format_exception(exc, with_text=False),
            )

    def _finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        watch = self._watch
        if watch is not None and not watch.done():
            watch.set_result(None)

    def _closed(self, watch: asyncio.Future[None]) -> None:
        if self.done:
            return
        exc = asyncio.CancelledError() if watch.cancelled() else watch.exception()
        result = _failure(exc) if exc is not None else Result(Outcome.LOST, "channel closed")
        for entry in self._entries:
            self.settle(entry, result)

    def _expire(self) -> None:
        self._timer = None
        timed_out = Result(Outcome.TIMEOUT, f"no confirm within {self._timeout:.3g}s")
        for entry in self._entries:
            self.settle(entry, timed_out)


async def probe(url: str, timeout: float) -> str | None:
    """Open and close one plain connection to ``url``: None if it worked, else why not.

    The reason is short text with the password masked.
    """
    try:
        async with asyncio.timeout(timeout):
            connection = await aio_pika.connect(url, timeout=timeout)
            await connection.close()
    except TimeoutError:
        return f"no answer from {mask(url)} within {timeout:g}s"
    except (aiormq.exceptions.AMQPError, OSError, RuntimeError, ValueError) as exc:
        return f"{mask(url)}: {mask(repr(exc))}"
    return None
