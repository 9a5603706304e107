"""The soak's run: a load, a consumer, one fault per cycle, then the reconciliation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from aioproducer import BufferFull, Producer, ProducerClosed, ProducerStats
from tests.proxy import TcpProxy

from ._faults import Broker, RestoreFailed
from ._plan import (
    ALARM,
    BROKER,
    BROKER_AND_STORE,
    CLOSE_REOPEN,
    CUT,
    HALF_OPEN,
    STORE_FREEZE,
    STORE_KILL,
    STORE_LOCK,
    WARM_UP,
    Cycle,
)
from ._report import Report, format_duration, reconcile
from ._store import SoakStore

log = logging.getLogger("soak")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
CLOSE_MARGIN = 10.0
"""Seconds past its timeout a producer's close() may take before it is reported as a stall."""


@dataclass(frozen=True, slots=True)
class SoakOptions:
    """Everything a run needs; the command line fills it in."""

    cycles: int = 100
    rate: float = 200.0
    """publish() calls per second."""
    amqp: str = DEFAULT_AMQP_URL
    node: str | None = None
    """The rabbitmqctl node that serves ``amqp`` (``None``: rabbitmqctl's default)."""
    store: str = "nx"
    spill_after: float = 1.0
    fault_seconds: float = 4.0
    """How long a fault is held, on average (each is drawn between half and 1.5 times it)."""
    up_seconds: float = 6.0
    """How long each cycle runs without a fault after its fault, recovery included."""
    heartbeat: int = 1
    """The producer's AMQP heartbeat: how soon it notices a half-open connection."""
    close_timeout: float = 0.2
    """close(timeout) of the producer a close-reopen fault closes under load."""
    recover_timeout: float = 30.0
    drain_timeout: float = 120.0
    idle_seconds: float = 3.0
    """After the last cycle, how long the queue must stay quiet before the final count."""
    work_dir: Path = field(default_factory=lambda: Path("soak-out"))


@dataclass(slots=True)
class CycleResult:
    """What one cycle did, for the progress line and the JSON file."""

    number: int
    kind: str
    seconds: float
    recovered_after: float | None = None
    """Seconds from the end of the fault until the producer confirmed again and its store
    answered (``None``: not within ``recover_timeout``, a stall)."""
    stored: int | None = None
    """Messages in the store at the end of the cycle."""
    note: str = ""
    """What the fault met (connections cut, messages stored by a close)."""


@dataclass(slots=True)
class Outcome:
    """The run's result: the report, and whether it ended cleanly."""

    report: Report
    cycles: list[CycleResult]
    drained: bool
    """After the last cycle the store emptied and the queue went quiet, within bounds."""
    restored: bool
    """The broker and the store were put back after every fault."""
    exported: int
    """Messages producers wrote to a fallback file (their store failed at close)."""
    queue: str
    store: str
    stored_left: int | None
    stalls: list[str]
    redelivered: int
    """Deliveries the consumer got again after its own ack was lost (not duplicates)."""


def via_proxy(url: str, port: int, heartbeat: int) -> str:
    """``url`` aimed at 127.0.0.1:``port`` instead, with ``heartbeat`` in its query."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "heartbeat"]
    query.append(("heartbeat", str(heartbeat)))
    return urlunsplit((parts.scheme, netloc, parts.path or "/", urlencode(query), ""))


class Consumer:
    """Reads the soak's queue and counts deliveries by id, reconnecting whenever it drops.

    It keeps its own plain connection open (every 0.5 s until it is back) rather than
    trusting a robust one to restore the consumer: one restore that fails while the
    broker is still starting would leave the queue without a consumer.

    A message the broker redelivers (its ``redelivered`` flag set) after this consumer
    already counted it is the consumer's own doing (an ack lost with the connection), not
    the producer's: it is counted apart, in ``redelivered``.
    """

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.counts: Counter[str] = Counter()
        self.redelivered = 0
        self.reconnections = 0
        self.last = 0.0
        self._conn: aio_pika.abc.AbstractConnection | None = None
        self._consuming = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        """Declare the queue and start consuming; raise if that fails within ``timeout``."""
        self._task = asyncio.create_task(self._serve())
        try:
            await asyncio.wait_for(self._consuming.wait(), timeout)
        except TimeoutError:
            raise RuntimeError(f"cannot consume from {self.url}: see soak.log") from None
        self.last = asyncio.get_running_loop().time()

    async def _serve(self) -> None:
        while True:
            try:
                await self._consume_until_closed()
            except (
                aio_pika.exceptions.AMQPError,
                aio_pika.exceptions.ChannelInvalidStateError,
                OSError,
                TimeoutError,
            ) as exc:
                log.info("consumer: %r; reconnecting", exc)
            except Exception:
                # Supervision: whatever went wrong, the consumer must come back.
                log.exception("consumer failed; reconnecting")
            await asyncio.sleep(0.5)  # the reconnection interval
            self.reconnections += 1

    async def _consume_until_closed(self) -> None:
        conn = await aio_pika.connect(self.url, timeout=10)
        gone = asyncio.Event()
        try:
            conn.close_callbacks.add(lambda *_: gone.set())
            channel = await conn.channel()
            channel.close_callbacks.add(lambda *_: gone.set())
            await channel.set_qos(prefetch_count=500)
            queue = await channel.declare_queue(self.queue, durable=True)
            await queue.consume(self._on_message)
            self._conn = conn
            self._consuming.set()
            await gone.wait()
            log.info("consumer: connection or channel closed")
        finally:
            self._conn = None
            self._consuming.clear()
            with contextlib.suppress(aio_pika.exceptions.AMQPError, OSError, RuntimeError):
                await conn.close()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        message_id = message.message_id or ""
        if message.redelivered and message_id in self.counts:
            self.redelivered += 1
        else:
            self.counts[message_id] += 1
        self.last = asyncio.get_running_loop().time()
        try:
            await message.ack()
        except (aio_pika.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.debug("ack of %s failed (it will be redelivered): %s", message_id, exc)

    async def ready(self) -> int:
        """Messages waiting in the queue, not yet delivered."""
        if self._conn is None:
            raise ConnectionError("the consumer is reconnecting")
        channel = await self._conn.channel()
        try:
            queue = await channel.declare_queue(self.queue, passive=True)
            assert queue.declaration_result.message_count is not None
            return queue.declaration_result.message_count
        finally:
            await channel.close()

    async def wait_idle(self, idle: float, timeout: float) -> bool:
        """Wait until nothing is ready and nothing arrived for ``idle`` seconds."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            quiet = loop.time() - self.last
            if quiet >= idle:
                try:
                    if await self.ready() == 0:
                        return True
                except (aio_pika.exceptions.AMQPError, OSError, RuntimeError) as exc:
                    log.debug("queue depth unknown: %s", exc)
            await asyncio.sleep(max(0.1, min(idle - quiet, 1.0)))
        return False

    async def close(self, delete: bool = True) -> None:
        """Stop consuming; delete the queue (over a connection of its own)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if delete:
            conn = await aio_pika.connect(self.url, timeout=10)
            try:
                channel = await conn.channel()
                await channel.queue_delete(self.queue)
            finally:
                await conn.close()


class Load:
    """publish() at a steady rate to whichever producer is current, timing every call.

    Each accepted id is filed under ``kind``, the fault kind of the current cycle.
    """

    def __init__(self, producer: Producer, routing_key: str, rate: float) -> None:
        self.producer = producer
        self.routing_key = routing_key
        self.interval = 1.0 / rate
        self.kind = WARM_UP
        self.cycle = 0
        self.accepted: dict[str, str] = {}
        self.refused: Counter[str] = Counter()
        self.longest: dict[str, float] = {}
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self._stop.is_set():
            behind = loop.time() - (start + n * self.interval)
            if behind < 0:
                await asyncio.sleep(-behind)  # pacing, not synchronisation
            elif behind > 1.0:
                start = loop.time() - n * self.interval  # a stalled loop: no burst after it
            kind = self.kind
            began = time.perf_counter()
            try:
                message_id = await self.producer.publish(
                    {"n": n, "cycle": self.cycle}, routing_key=self.routing_key
                )
            except (BufferFull, ProducerClosed) as exc:
                self.refused[kind] += 1
                log.debug("publish refused: %r", exc)
            else:
                self.accepted[message_id] = kind
            took = time.perf_counter() - began
            if took > self.longest.get(kind, -1.0):
                self.longest[kind] = took
            n += 1
            if behind >= 0:
                await asyncio.sleep(0)  # let the producer's tasks run between calls


class Soak:
    """One run of the soak, from the first publish to the final count."""

    def __init__(
        self,
        options: SoakOptions,
        plan: list[Cycle],
        *,
        kinds: Sequence[str],
        seed: int,
        command: str,
        progress: TextIO | None = None,
    ) -> None:
        self.o = options
        self.plan = plan
        self.kinds = tuple(kinds)
        self.seed = seed
        self.command = command
        self.progress = progress
        self.queue = f"soak-{os.urandom(4).hex()}"
        self.broker = Broker(options.node)
        target = urlsplit(options.amqp)
        self.proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
        self.store = SoakStore(options.store, options.work_dir)
        self.consumer = Consumer(options.amqp, self.queue)
        self.producers: list[Producer] = []
        self.producer_url = ""
        self.results: list[CycleResult] = []
        self.stalls: list[str] = []
        self.restored = True
        self.where = "warm-up"
        """Where the run is, for stall reports: a cycle and its fault kind, or a phase."""
        self._closing: set[asyncio.Future[None]] = set()

    # -- producers --------------------------------------------------------------

    def _new_producer(self) -> Producer:
        fallback = self.o.work_dir / "fallback"
        fallback.mkdir(parents=True, exist_ok=True)
        producer = Producer(
            self.producer_url,
            store=self.store.new_store(),
            spill_after=self.o.spill_after,
            fallback_dir=fallback,
        )
        self.producers.append(producer)
        return producer

    async def _reopen(self, load: Load, seconds: float) -> str:
        """Close the current producer under load; a new one on the same store takes over.

        The broker answers the old producer ``seconds`` late for a moment first (the proxy
        delays its confirms), so the close finds messages in flight and must store them.
        """
        old = load.producer
        self.proxy.lag(seconds)
        await self._hold(min(1.0, seconds / 2))
        new = self._new_producer()
        await new.start()
        load.producer = new
        before = old.stats()
        await self._close(old, self.o.close_timeout)
        after = old.stats()
        return (
            f"closed with {before.buffered} in memory: {after.spilled - before.spilled} "
            f"stored, {after.exported - before.exported} to a file"
        )

    async def _close(self, producer: Producer, timeout: float) -> None:
        """``close(timeout)``, waited for ``timeout`` + :data:`CLOSE_MARGIN` seconds at most.

        A close that takes longer is reported as a stall and left to go on (shielded:
        cancelling it could lose what it is storing).
        """
        closing = asyncio.ensure_future(producer.close(timeout=timeout))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        try:
            await asyncio.wait_for(asyncio.shield(closing), timeout + CLOSE_MARGIN)
        except TimeoutError:
            number = self.producers.index(producer) + 1
            self._stall(
                f"close(timeout={timeout:g}) of producer {number} did not return within "
                f"{timeout + CLOSE_MARGIN:g}s: {producer.stats()}"
            )

    def _stall(self, text: str) -> None:
        stall = f"{self.where}, seed {self.seed}: {text}"
        self.stalls.append(stall)
        log.warning("stall: %s", stall)

    # -- faults -----------------------------------------------------------------

    async def _hold(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the fault's duration, by design

    async def _apply(self, cycle: Cycle, load: Load) -> str:
        """Apply ``cycle``'s fault, hold it, and mend it (also when interrupted).

        Returns a note on what the fault met, for the progress line.
        """
        kind, seconds = cycle.kind, cycle.seconds
        note = ""
        if kind in (BROKER, ALARM, BROKER_AND_STORE):
            try:
                if kind == ALARM:
                    await self.broker.raise_alarm()
                else:
                    await self.broker.stop()
                if kind == BROKER_AND_STORE:
                    await self.store.break_(kind)
                await self._hold(seconds)
            finally:
                try:
                    await self.store.restore()
                finally:
                    await self.broker.restore()
        elif kind in (STORE_KILL, STORE_FREEZE, STORE_LOCK):
            try:
                await self.store.break_(kind)
                await self._hold(seconds)
            finally:
                await self.store.restore()
        elif kind == CUT:
            # A flapping link: every open connection is reset, once a second.
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            cuts = 0
            while (left := end - loop.time()) > 0:
                cuts += self.proxy.cut()
                await self._hold(min(1.0, left))
            note = f"{cuts} connections cut"
        elif kind == HALF_OPEN:
            # The dead links stay dead; only the heartbeat tells the producer.
            note = f"{self.proxy.blackhole()} connections black-holed"
            await self._hold(seconds)
        elif kind == CLOSE_REOPEN:
            note = await self._reopen(load, seconds)
            await self._hold(max(0.0, seconds - min(1.0, seconds / 2)))
        else:
            raise ValueError(f"unknown fault kind {kind!r}")
        if note:
            log.info("cycle %d (%s): %s", cycle.number, kind, note)
        return note

    async def _recovered(self, producer: Producer, since: ProducerStats) -> float | None:
        """Seconds until ``producer`` confirms anew, is unblocked and its store answers."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        while (waited := loop.time() - began) < self.o.recover_timeout:
            s = producer.stats()
            settled = s.confirmed + s.replayed > since.confirmed + since.replayed
            if settled and s.connected and not s.blocked and s.store_ok:
                return waited
            await asyncio.sleep(0.05)
        return None

    # -- the run ----------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self.progress is not None:
            print(text, file=self.progress, flush=True)

    async def _cycle(self, cycle: Cycle, load: Load) -> CycleResult:
        loop = asyncio.get_running_loop()
        load.kind, load.cycle = cycle.kind, cycle.number
        self.where = f"cycle {cycle.number} ({cycle.kind})"
        began = loop.time()
        note = await self._apply(cycle, load)
        fault_end = loop.time()
        producer = load.producer
        result = CycleResult(cycle.number, cycle.kind, round(fault_end - began, 2), note=note)
        result.recovered_after = await self._recovered(producer, producer.stats())
        if result.recovered_after is None:
            self._stall(f"no recovery within {self.o.recover_timeout:g}s: {producer.stats()}")
        rest = self.o.up_seconds - (loop.time() - fault_end)
        if rest > 0:
            await asyncio.sleep(rest)  # the up period, by design
        result.stored = await self.store.count()
        s = producer.stats()
        recovered = (
            "STALLED"
            if result.recovered_after is None
            else f"recovered {result.recovered_after:4.1f}s"
        )
        self._say(
            f"[{cycle.number:>4}/{len(self.plan)}] {cycle.kind:<13} {result.seconds:4.1f}s "
            f"{recovered}  accepted {len(load.accepted):>7}  "
            f"delivered {len(self.consumer.counts):>7}  in memory {s.buffered:>5}  "
            f"stored {'?' if result.stored is None else result.stored:>5}  "
            f"longest publish() {format_duration(max(load.longest.values(), default=None))}"
            + (f"  ({note})" if note else "")
        )
        return result

    async def _wait_store_empty(self, timeout: float) -> int | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            left = await self.store.count()
            if left == 0 or loop.time() >= end:
                return left
            await asyncio.sleep(0.5)

    async def _drain(self, load: Load) -> tuple[bool, int | None]:
        """Close the producer, replay what is stored, and wait for the queue to go quiet."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.o.drain_timeout
        producer = load.producer
        self.where = "final drain"
        self._say("draining: flush, replay what is stored, close")
        await producer.flush(timeout=self.o.drain_timeout)
        left = await self._wait_store_empty(max(0.0, end - loop.time()))
        await self._close(producer, 10.0)
        left = await self.store.count()
        if left:
            # What the close stored (or what stayed leased) is replayed by a fresh producer.
            self._say(f"{left} messages left in the store: replaying them")
            replayer = self._new_producer()
            await replayer.start()
            try:
                left = await self._wait_store_empty(max(0.0, end - loop.time()))
            finally:
                await self._close(replayer, 10.0)
            left = await self.store.count()
        idle = await self.consumer.wait_idle(
            self.o.idle_seconds, max(self.o.idle_seconds + 5.0, end - loop.time())
        )
        return left == 0 and idle, left

    async def run(self) -> Outcome:
        """Run the plan; the broker and the store are always put back, even on cancel."""
        drained = False
        stored_left: int | None = None
        load: Load | None = None
        try:
            await self.store.start()
            await self.proxy.start()
            self.producer_url = via_proxy(self.o.amqp, self.proxy.port, self.o.heartbeat)
            await self.consumer.start()
            producer = self._new_producer()
            await producer.start()
            self._say(
                f"soak: seed {self.seed}, {len(self.plan)} cycles, {self.o.rate:g} msg/s, "
                f"queue {self.queue}, store {self.store.label}, node "
                f"{self.o.node or '(default)'}, files in {self.o.work_dir}"
            )
            load = Load(producer, self.queue, self.o.rate)
            publisher = asyncio.create_task(load.run())
            try:
                await asyncio.sleep(self.o.up_seconds)  # the warm-up, by design
                for cycle in self.plan:
                    self.results.append(await self._cycle(cycle, load))
            finally:
                load.stop()
                await publisher
            drained, stored_left = await self._drain(load)
        except RestoreFailed as exc:
            self.restored = False
            log.error("could not restore: %s; the soak stops here", exc)
        finally:
            await self._cleanup()
        return self._outcome(load, drained, stored_left)

    async def _cleanup(self) -> None:
        """Put the broker and the store back, then close everything the run opened."""
        self.where = "cleanup"
        for restore in (self.store.restore, self.broker.restore):
            try:
                await restore()
            except RestoreFailed as exc:
                self.restored = False
                log.error("could not restore: %s", exc)
        for producer in self.producers:
            await self._close(producer, 5.0)
        await self.proxy.close()
        try:
            await self.consumer.close(delete=True)
        except (aio_pika.exceptions.AMQPError, OSError) as exc:
            log.error("could not delete the queue %s: %s", self.queue, exc)
        await self.store.stop()

    def _outcome(self, load: Load | None, drained: bool, stored_left: int | None) -> Outcome:
        kinds = [WARM_UP, *self.kinds]
        cycles = Counter(r.kind for r in self.results)
        report = reconcile(
            load.accepted if load else {},
            self.consumer.counts,
            kinds=kinds,
            cycles=cycles,
            refused=load.refused if load else {},
            longest=load.longest if load else {},
            seed=self.seed,
            command=self.command,
        )
        return Outcome(
            report=report,
            cycles=self.results,
            drained=drained,
            restored=self.restored,
            exported=sum(p.stats().exported for p in self.producers),
            queue=self.queue,
            store=self.store.label,
            stored_left=stored_left,
            stalls=self.stalls,
            redelivered=self.consumer.redelivered,
        )
