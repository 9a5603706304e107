"""In-process stand-ins for the broker, the store and the clock, for whole-producer tests.

- :class:`VirtualClockLoop`: an event loop whose ``time()`` is virtual. When no
  callback is ready it jumps to the next timer, up to a limit the test sets, so
  "time passes" costs no real time and nothing ever sleeps.
- :class:`FakeBroker` and :class:`FakeLink`: an implementation of the producer's
  ``Link`` whose publish encodes the real AMQP content header (the properties
  :class:`~aioproducer._connection.AmqpLink` sends, marshalled and decoded by pamqp)
  and whose broker can be down, blocked, slow to confirm, nacking, returning,
  breaking channels, or poisoned for one message id. It records every delivery.
- :class:`FakeStore`: an in-memory ``Store`` with leases, dead messages, and faults
  (unavailable, unavailable after writing, hanging, rejecting one message).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import enum
import itertools
import math
import selectors
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, TypeVarTuple

from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from aioproducer import (
    Backlog,
    KeyCount,
    Message,
    Producer,
    Properties,
    StoreRejected,
    StoreUnavailable,
)
from aioproducer._connection import message_properties, publish_frames
from aioproducer._context import Context
from aioproducer._link import ACKED, Link, OnResult, Outcome, Result, Sent, send_each

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: Wall-clock seconds at virtual time zero.
WALL_ZERO = 1_700_000_000.0


# -- time ------------------------------------------------------------------------------


#: Loop iterations at one virtual instant that mean a task is spinning, never waiting.
SPIN_LIMIT = 100_000
#: The last busy turns whose callbacks a SpinError names.
SPIN_SAMPLE = 100


class _VirtualSelector(selectors.SelectSelector):
    """Polls without blocking; when the loop would wait, lets virtual time move instead."""

    def __init__(
        self,
        on_idle: Callable[[float | None], None],
        busy_with: Callable[[], list[str]],
        clock: Callable[[], str],
    ) -> None:
        super().__init__()
        self._on_idle = on_idle
        self._busy_with = busy_with
        self._clock = clock
        self.busy = 0
        self._seen: collections.Counter[str] = collections.Counter()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready and (timeout is None or timeout > 0):
            self.busy = 0
            self._on_idle(timeout)
        else:
            self.busy += 1
            if self.busy > SPIN_LIMIT - SPIN_SAMPLE:
                # What the loop runs in its last busy turns: the spinning task is among it.
                self._seen.update(self._busy_with())
            if self.busy > SPIN_LIMIT:
                self.busy = 0
                seen, self._seen = self._seen, collections.Counter()
                raise SpinError(
                    f"{SPIN_LIMIT} loop iterations without a wait: a task spins; its last "
                    f"{SPIN_SAMPLE} turns ran: "
                    + "; ".join(f"{count}x {what}" for what, count in seen.most_common(5))
                    + f"; select(timeout={timeout!r}) found {len(ready)} ready; "
                    + self._clock()
                )
        return ready


def _woken(handle: asyncio.Handle) -> str:
    """A ready callback, or the task it wakes with the line that task waits at."""
    task = getattr(getattr(handle, "_callback", None), "__self__", None)
    if not isinstance(task, asyncio.Task):
        return repr(handle)
    stack: list[str] = []
    awaiting: Any = task.get_coro()
    while awaiting is not None and len(stack) < 20:
        frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
        if frame is None:
            break
        stack.append(f"{frame.f_code.co_qualname} ({frame.f_code.co_filename}:{frame.f_lineno})")
        awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "gi_yieldfrom", None)
    return f"task {task.get_name()}: {' > '.join(stack)}"


class SpinError(RuntimeError):
    """Some task keeps the loop busy at one virtual instant: it would hang a real process."""


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock, driven by :meth:`drive`."""

    def __init__(self) -> None:
        self._now = 0.0
        self._limit = 0.0
        self._idle: asyncio.Future[None] | None = None
        super().__init__(_VirtualSelector(self._idle_for, self._busy_with, self._clock_state))

    def time(self) -> float:
        return self._now

    def wall(self) -> float:
        """Wall-clock seconds tied to the virtual clock."""
        return WALL_ZERO + self._now

    def _idle_for(self, timeout: float | None) -> None:
        """No callback is ready and the next timer is ``timeout`` away (None: no timer)."""
        if timeout is not None and self._now + timeout <= self._limit:
            self._now += timeout
            return
        self._now = max(self._now, self._limit)
        idle, self._idle = self._idle, None
        if idle is None or idle.done():
            raise RuntimeError("the virtual loop went idle outside drive()")
        idle.set_result(None)

    def _busy_with(self) -> list[str]:
        """The callbacks ready to run and the timers already due: what keeps the loop busy."""
        ready = [_woken(h) for h in self._ready]  # type: ignore[attr-defined]
        due = [repr(t) for t in self._scheduled if t.when() <= self._now]  # type: ignore[attr-defined]
        return ready + due

    def call_at(
        self,
        when: float,
        callback: Callable[[*Ts], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return super().call_at(when, self._at, when, callback, *args, context=context)

    def _at(self, when: float, callback: Callable[[*Ts], object], *args: *Ts) -> None:
        # The loop runs a timer up to its clock resolution (1 ns) early; a real clock moves
        # on by itself, a virtual one must be moved, or a task waiting for a time a hair
        # ahead would be woken before it, forever.
        self._now = max(self._now, when)
        callback(*args)

    def _clock_state(self) -> str:
        """The virtual time, the limit of this drive and the next timers, to the last digit."""
        timers = sorted(t.when() for t in self._scheduled)[:3]  # type: ignore[attr-defined]
        return f"now {self._now!r}, limit {self._limit!r}, next timers {timers!r}"

    def _stop_clock(self, _: object) -> None:
        self._limit = min(self._limit, self._now)

    def drive(self, awaitable: Awaitable[T] | None = None, *, within: float = 0.0) -> Any:
        """Run until the loop is idle, letting ``within`` virtual seconds pass at most.

        Time stops at the moment ``awaitable`` is done. Returns the task running it
        (done or not: a task still waiting at the end is blocked on something no timer
        within the limit will bring).
        """
        task: asyncio.Future[T] | None = None
        self._limit = self._now + within
        if awaitable is not None:
            task = asyncio.ensure_future(awaitable, loop=self)
            # Time stops moving once the task is done; what it set off still settles.
            task.add_done_callback(self._stop_clock)
        idle = self.create_future()
        self._idle = idle
        self.run_until_complete(idle)
        return task

    def run(self, coro: Coroutine[Any, Any, T], *, within: float = 0.0) -> T:
        """Run ``coro`` to its end within ``within`` virtual seconds, then settle; its result."""
        task = self.drive(coro, within=within)
        assert isinstance(task, asyncio.Future)
        if not task.done():
            task.cancel()
            self.drive()
            raise AssertionError(f"still waiting after {within} virtual seconds: {coro!r}")
        result: T = task.result()
        return result

    def call(self, function: Callable[[], T]) -> T:
        """Call ``function`` on the running loop (code that needs one: a task made, a
        future set, a callback as aio-pika calls it), then settle; its result."""

        async def on_the_loop() -> T:
            return function()

        return self.run(on_the_loop())


# -- broker ------------------------------------------------------------------------------


class Mode(enum.Enum):
    """How the broker answers publishes."""

    ACK = "ack"
    SLOW = "slow"
    NACK = "nack"
    RETURN = "return"
    CHANNEL_ERROR_NAMED = "channel_error_named"
    CHANNEL_ERROR = "channel_error"


@dataclass(slots=True, eq=False)
class Delivery:
    """One publish the broker routed to a queue."""

    message_id: str
    message: Message
    channel: str
    client: str | None = None
    """How the publishing client saw it end: an Outcome value, "cancelled", or None yet."""


@dataclass(slots=True, eq=False)
class _Pending:
    """A publish the broker holds the confirm of."""

    message: Message
    channel: str
    confirm: asyncio.Future[Result]
    client: str | None = None
    delivery: Delivery | None = None


@dataclass(slots=True)
class FakeBroker:
    """The broker's state, shared by every link to it."""

    up: bool = True
    blocked: bool = False
    mode: Mode = Mode.ACK
    #: Seconds a slow confirm takes; None: until :meth:`release`.
    confirm_delay: float | None = None
    poison: dict[str, Mode] = field(default_factory=dict)
    #: How a message's next publishes end, one mode each, before ``poison`` and ``mode``.
    script: dict[str, list[Mode]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    #: Messages the producer accepted that the wire could not carry, with the reason.
    encoding_failures: list[str] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def ready(self) -> bool:
        return self.up and not self.blocked

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def set_up(self) -> None:
        self.up = True
        self._notify()

    def set_down(self, took: bool) -> None:
        """The connection drops; the broker routed the unconfirmed publishes if ``took``."""
        self.up = False
        for pending in self._take_pending(lambda _: True):
            if took:
                self._deliver(pending)
            if not pending.confirm.done():
                pending.confirm.set_result(Result(Outcome.LOST, "connection lost"))
        self._notify()

    def set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        if not blocked and self.mode is not Mode.SLOW:
            self.release()
        self._notify()

    def release(self) -> None:
        """Confirm every publish the broker holds (routed, acked)."""
        for pending in self._take_pending(lambda _: True):
            self._deliver(pending)
            if not pending.confirm.done():
                pending.confirm.set_result(ACKED)

    def _take_pending(self, which: Callable[[_Pending], bool]) -> list[_Pending]:
        taken = [p for p in self.pending if which(p)]
        self.pending = [p for p in self.pending if not which(p)]
        return taken

    def _deliver(self, pending: _Pending) -> None:
        message = pending.message
        delivery = Delivery(message.message_id, message, pending.channel, pending.client)
        pending.delivery = delivery
        self.deliveries.append(delivery)

    def _break_channel(self, channel: str, result: Result) -> None:
        """A channel error: every unconfirmed publish on ``channel`` fails with it."""
        for pending in self._take_pending(lambda p: p.channel == channel):
            if not pending.confirm.done():
                pending.confirm.set_result(result)


def _headers_equal(left: Any, right: Any) -> bool:
    """Equality of decoded header values, NaN equal to NaN, bytes to bytearray."""
    if isinstance(left, float) and isinstance(right, float):
        return left == right or (math.isnan(left) and math.isnan(right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_headers_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(
            _headers_equal(a, b) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)


def check_on_the_wire(message: Message, *, persistent: bool, mandatory: bool) -> str | None:
    """Encode ``message``'s publish frames as the real link does; decode them with pamqp.

    Returns what went wrong, or None if the frames are the bytes pamqp marshals and
    carry the message's routing, id and headers intact.
    """
    try:
        properties = message_properties(message, persistent=persistent)
        frames: list[bytes] = []
        publish_frames(1, message, properties, mandatory, 128 * 1024 - 8, frames)
        data = b"".join(frames)
        method = commands.Basic.Publish(
            exchange=message.exchange, routing_key=message.routing_key, mandatory=mandatory
        )
        header = ContentHeader(body_size=len(message.body), properties=properties)
        expected = frame.marshal(method, 1) + frame.marshal(header, 1)
        if message.body:
            expected += frame.marshal(ContentBody(message.body), 1)
        if data != expected:
            return f"frames differ from pamqp's: {data!r} != {expected!r}"
        used, _, decoded_method = frame.unmarshal(data)
        _, _, decoded = frame.unmarshal(data[used:])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    assert isinstance(decoded_method, commands.Basic.Publish)
    if (decoded_method.exchange, decoded_method.routing_key, decoded_method.mandatory) != (
        message.exchange,
        message.routing_key,
        mandatory,
    ):
        return f"routing arrived as {decoded_method!r}"
    assert isinstance(decoded, ContentHeader)
    if decoded.body_size != len(message.body):
        return f"body size arrived as {decoded.body_size}"
    got = decoded.properties
    if got.message_id != message.message_id:
        return f"message_id {message.message_id!r} arrived as {got.message_id!r}"
    if got.timestamp != datetime.fromtimestamp(int(message.timestamp), UTC):
        return f"timestamp arrived as {got.timestamp!r}"
    expected_headers = message.headers or None
    if not _headers_equal(got.headers, expected_headers):
        return f"headers {expected_headers!r} arrived as {got.headers!r}"
    extra = message.properties or Properties()
    sent = (
        extra.priority, extra.correlation_id, extra.reply_to, extra.expiration, extra.type,
        extra.app_id, extra.user_id, extra.content_encoding,
    )  # fmt: skip
    arrived = (
        got.priority, got.correlation_id, got.reply_to, got.expiration, got.message_type,
        got.app_id, got.user_id, got.content_encoding,
    )  # fmt: skip
    if sent != arrived:
        return f"properties {sent!r} arrived as {arrived!r}"
    durable = persistent if extra.persistent is None else extra.persistent
    if got.delivery_mode != (2 if durable else 1):
        return f"delivery mode {got.delivery_mode} for persistent={durable}"
    return None


class FakeLink:
    """A :class:`~aioproducer._link.Link` to a :class:`FakeBroker`."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.connections = 0
        self.closed = False

    @property
    def connected(self) -> bool:
        return self.broker.up and not self.closed

    @property
    def address(self) -> str | None:
        return "fake://broker/" if self.connected else None

    @property
    def blocked(self) -> bool:
        return self.broker.blocked

    def start(self) -> None:
        self.connections += 1

    async def channel(self, which: str) -> str:
        while not self.broker.ready() or self.closed:
            await self.broker.changed.wait()
        return which

    async def publish(
        self,
        channel: Any,
        message: Message,
        *,
        mandatory: bool,
        persistent: bool,
        timeout: float,
    ) -> Result:
        broker = self.broker
        mandatory = message.mandatory_or(mandatory)
        problem = check_on_the_wire(message, persistent=persistent, mandatory=mandatory)
        if problem is not None:
            broker.encoding_failures.append(f"{message.message_id}: {problem}")
            return Result(Outcome.FAILED, "properties could not be encoded")
        if not broker.up or self.closed:
            return Result(Outcome.LOST, "connection lost")
        script = broker.script.get(message.message_id)
        scripted = script.pop(0) if script else None
        mode = scripted or broker.poison.get(message.message_id, broker.mode)
        if mode is Mode.NACK:
            return Result(Outcome.NACKED, "nacked by the broker")
        if mode is Mode.RETURN and mandatory:
            return Result(Outcome.RETURNED, "312 NO_ROUTE", 312)
        if mode in (Mode.CHANNEL_ERROR, Mode.CHANNEL_ERROR_NAMED):
            named = mode is Mode.CHANNEL_ERROR_NAMED
            result = Result(
                Outcome.CHANNEL_ERROR,
                f"NOT_FOUND - no exchange '{message.exchange}' in vhost '/'"
                if named
                else "PRECONDITION_FAILED",
                404 if named else 406,
                missing_exchange=message.exchange if named else None,
            )
            broker._break_channel(str(channel), result)
            return result
        loop = asyncio.get_running_loop()
        pending = _Pending(message, str(channel), loop.create_future())
        broker.pending.append(pending)
        if broker.mode is not Mode.SLOW and scripted is not Mode.SLOW and not broker.blocked:
            broker.release()
        elif broker.confirm_delay is not None and not broker.blocked:
            loop.call_later(broker.confirm_delay, _release_one, broker, pending)
        try:
            result = await asyncio.wait_for(asyncio.shield(pending.confirm), timeout)
        except TimeoutError:
            result = Result(Outcome.TIMEOUT, f"no confirm within {timeout:.3g}s")
            _client_saw(pending, result.outcome.value)
            return result
        except asyncio.CancelledError:
            _client_saw(pending, "cancelled")
            raise
        _client_saw(pending, result.outcome.value)
        return result

    def send(
        self,
        channel: Any,
        messages: Sequence[Message],
        *,
        mandatory: bool,
        persistent: bool,
        timeout: float,
        on_result: OnResult,
    ) -> Sent:
        return send_each(
            self,
            channel,
            messages,
            mandatory=mandatory,
            persistent=persistent,
            timeout=timeout,
            on_result=on_result,
        )

    async def close(self, timeout: float) -> None:
        self.closed = True


class FakeLinkProducer(Producer):
    """A Producer whose link is a :class:`FakeLink` to ``broker``."""

    broker: FakeBroker

    def _make_link(self, context: Context) -> Link:
        return FakeLink(self.broker)


def _release_one(broker: FakeBroker, pending: _Pending) -> None:
    if pending in broker.pending:
        broker.pending.remove(pending)
        broker._deliver(pending)
        if not pending.confirm.done():
            pending.confirm.set_result(ACKED)


def _client_saw(pending: _Pending, outcome: str) -> None:
    pending.client = outcome
    if pending.delivery is not None:
        pending.delivery.client = outcome


# -- store -------------------------------------------------------------------------------


class StoreFault(enum.Enum):
    """How the store behaves."""

    UP = "up"
    DOWN = "down"
    """Every call raises StoreUnavailable and changes nothing."""
    DOWN_AFTER = "down_after"
    """Every call does its work, then raises StoreUnavailable (the answer was lost)."""
    HANGING = "hanging"
    """Every call waits until the store is up again (or the caller gives up)."""


@dataclass(slots=True, eq=False)
class Record:
    message: Message
    origin: Message
    """The object first put: the accepted message this record holds."""
    lease_owner: str | None = None
    lease_until: float = 0.0
    lease_token: str | None = None


class FakeStore:
    """An in-memory store that keeps the Store protocol's rules, with faults."""

    max_body_size = 1 << 20

    def __init__(self, wall: Callable[[], float]) -> None:
        self._wall = wall
        self.records: dict[str, Record] = {}
        self.fault = StoreFault.UP
        self.reject: str | None = None
        self._resume = asyncio.Event()
        self._tokens = itertools.count()
        #: Claimed copies, by ``id()``, and the object first put for each.
        self._origins: dict[int, tuple[Message, Message]] = {}
        #: Ids an ack was asked to delete and did not (raised, cancelled, answer lost).
        self.ack_failed: set[str] = set()
        #: Ids written by a put that then reported failure.
        self.written_but_failed: set[str] = set()

    def __repr__(self) -> str:
        return "FakeStore()"

    def set_fault(self, fault: StoreFault) -> None:
        self.fault = fault
        if fault is not StoreFault.HANGING:
            self._resume.set()
        elif self._resume.is_set():
            # Calls already waiting keep waiting on the same event until the store is back.
            self._resume = asyncio.Event()

    def origin(self, message: Message) -> Message:
        """The accepted message a claimed copy was made from (else ``message`` itself)."""
        entry = self._origins.get(id(message))
        return entry[1] if entry is not None and entry[0] is message else message

    async def _enter(self) -> None:
        # Every call waits on I/O in a real store: a caller that loops on it must yield.
        await asyncio.sleep(0)
        if self.fault is StoreFault.HANGING:
            await self._resume.wait()
        if self.fault is StoreFault.DOWN:
            raise StoreUnavailable("the fake store is down")

    def _leave(self) -> None:
        if self.fault is StoreFault.DOWN_AFTER:
            raise StoreUnavailable("the fake store's answer was lost")

    async def put(self, messages: Sequence[Message]) -> None:
        await self._enter()
        if self.reject is not None and any(m.message_id == self.reject for m in messages):
            raise StoreRejected("the fake store refuses this message")
        for message in messages:
            record = self.records.get(message.message_id)
            if record is None:
                copy = replace(message, lease_token=None, stored=False, copying=False)
                self.records[message.message_id] = Record(copy, message)
            elif message.attempts > record.message.attempts or (
                message.dead and not record.message.dead
            ):
                # The protocol's rule: a held copy's failure record moves forward.
                held = record.message
                held.attempts = max(held.attempts, message.attempts)
                held.last_error, held.due_at = message.last_error, message.due_at
                held.dead = held.dead or message.dead
        if self.fault is StoreFault.DOWN_AFTER:
            self.written_but_failed.update(m.message_id for m in messages)
        self._leave()

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        await self._enter()
        now = self._wall()
        due = sorted(
            (
                r
                for r in self.records.values()
                if not r.message.dead and r.message.due_at <= now and r.lease_until <= now
            ),
            key=lambda r: r.message.timestamp,
        )[:limit]
        token = f"{owner}#{next(self._tokens)}"
        claimed: list[Message] = []
        for record in due:
            record.lease_owner, record.lease_until, record.lease_token = owner, now + lease, token
            copy = replace(record.message, lease_token=token)
            self._origins[id(copy)] = (copy, record.origin)
            claimed.append(copy)
        self._leave()
        return claimed

    async def ack(self, message_ids: Sequence[str]) -> None:
        ids = list(message_ids)
        done = False
        try:
            await self._enter()
            for message_id in ids:
                self.records.pop(message_id, None)
            done = self.fault is not StoreFault.DOWN_AFTER
            self._leave()
        finally:
            if not done:
                self.ack_failed.update(ids)

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        await self._enter()
        for message in messages:
            record = self.records.get(message.message_id)
            # As the SQLite and MongoDB stores: the claim's token, under its owner's name.
            if (
                record is None
                or record.lease_token != message.lease_token
                or record.lease_owner != owner
            ):
                continue
            record.message.attempts = max(record.message.attempts, message.attempts)
            record.message.last_error = message.last_error
            record.message.due_at = message.due_at
            record.message.dead = record.message.dead or message.dead
            record.lease_owner, record.lease_until, record.lease_token = None, 0.0, None
        self._leave()

    async def count(self) -> int:
        await self._enter()
        self._leave()
        return len(self.records)

    async def backlog(self) -> Backlog:
        await self._enter()
        now = self._wall()
        records = list(self.records.values())
        dead = sum(1 for r in records if r.message.dead)
        leased = sum(1 for r in records if not r.message.dead and r.lease_until > now)
        held = sum(
            1
            for r in records
            if not r.message.dead and r.lease_until <= now and r.message.due_at > now
        )
        self._leave()
        return Backlog(
            total=len(records),
            due=len(records) - dead - leased - held,
            leased=leased,
            held=held,
            dead=dead,
            oldest=min((r.message.timestamp for r in records), default=None),
        )

    async def scan(self, *, dead: bool | None = None, batch: int = 500) -> AsyncIterator[Message]:
        """The operations below serve tools, not the producer: plain, without faults."""
        for message_id in sorted(self.records):
            message = self.records[message_id].message
            if dead is None or message.dead == dead:
                yield replace(message)

    async def get(self, message_id: str) -> Message | None:
        record = self.records.get(message_id)
        return None if record is None else replace(record.message)

    async def by_key(self) -> list[KeyCount]:
        counts: dict[tuple[str, str], list[int]] = {}
        for record in self.records.values():
            key = (record.message.exchange, record.message.routing_key)
            total_dead = counts.setdefault(key, [0, 0])
            total_dead[0] += 1
            total_dead[1] += int(record.message.dead)
        return sorted(
            (KeyCount(e, r, total, dead) for (e, r), (total, dead) in counts.items()),
            key=lambda k: -k.total,
        )

    async def requeue(
        self,
        message_ids: Sequence[str],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> int:
        done = 0
        for message_id in message_ids:
            record = self.records.get(message_id)
            if record is None or not record.message.dead:
                continue
            message = record.message
            message.dead, message.attempts, message.due_at = False, 0, self._wall()
            message.exchange = message.exchange if exchange is None else exchange
            message.routing_key = message.routing_key if routing_key is None else routing_key
            done += 1
        return done

    async def purge_dead(self, message_ids: Sequence[str] | None = None) -> int:
        ids = [
            i
            for i, r in self.records.items()
            if r.message.dead and (message_ids is None or i in message_ids)
        ]
        for message_id in ids:
            del self.records[message_id]
        return len(ids)

    async def close(self) -> None:
        """Closing a client is local: it neither fails nor hangs."""
