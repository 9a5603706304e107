"""Run a producer at a steady rate through broker outages and account for every message."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
from tqdm import tqdm

from aioproducer import BufferFull, Producer, SQLiteStore

from ..consumer import DedupConsumer

log = logging.getLogger("demo_app.experiment")

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


class ExperimentError(Exception):
    """The experiment could not run: a command failed, or the broker was not there."""


@dataclass(frozen=True, slots=True)
class ExperimentOptions:
    """What to run. Times are in seconds."""

    amqp_url: str = DEFAULT_AMQP_URL
    rate: float = 20.0
    """Messages per second publish() is called with."""
    outage: float = 10.0
    """How long the broker stays stopped in each cycle (after the stop command returned)."""
    up: float = 10.0
    """How long the broker runs before each outage."""
    cycles: int = 2
    stop_command: str = "rabbitmqctl stop_app"
    start_command: str = "rabbitmqctl start_app"
    store: str | None = None
    """A SQLite file, or a ``mongodb://`` URL; by default a fresh ``spill.db`` in ``out_dir``."""
    mongo_database: str = "aioproducer"
    mongo_collection: str = "experiment"
    out_dir: Path = Path("experiment-out")
    queue: str | None = None
    """The queue to publish to; by default a fresh one, deleted at the end."""
    exchange: str = ""
    """Publish through this direct exchange (declared, with the queue bound by its name)."""
    spill_after: float = 2.0
    max_buffer: int = 10_000
    recovery_timeout: float = 120.0
    """How long a recovery phase may wait for the outage's messages to arrive."""
    drain_timeout: float = 120.0
    """How long the end may wait for the store to empty and every message to arrive."""
    sample_interval: float = 0.1
    progress: bool = True
    plot: bool = True


@dataclass(slots=True)
class Send:
    """One publish() call."""

    seq: int
    t: float
    """Seconds since the start of the run."""
    latency: float
    """Seconds publish() took."""
    phase: int
    message_id: str | None
    """``None`` when publish() refused the message."""
    error: str | None = None


@dataclass(slots=True)
class Sample:
    """The producer, the store and the consumer at one moment."""

    t: float
    connected: bool
    blocked: bool
    buffered: int
    in_flight: int
    backlog: int | None
    accepted: int
    confirmed: int
    spilled: int
    replayed: int
    delivered: int


@dataclass(slots=True)
class Phase:
    """A stretch of the run: broker ``up``, ``down``, ``recovery`` after a restart, ``drain``."""

    name: str
    cycle: int
    start: float
    stats_start: dict[str, Any]
    end: float = 0.0
    stats_end: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name if self.name == "drain" else f"{self.cycle}: {self.name}"


@dataclass(slots=True)
class RawRun:
    """Everything a run recorded, for :mod:`._report` to turn into tables and a plot."""

    options: ExperimentOptions
    queue: str
    store: str
    phases: list[Phase]
    sends: list[Send]
    samples: list[Sample]
    deliveries: dict[str, int]
    """Copies of each sent message that arrived, not counting the broker's redeliveries."""
    recovery_seconds: list[float | None]
    drained: bool
    final_backlog: int | None
    started_at: float
    """Wall-clock start."""


def _stats(producer: Producer) -> dict[str, Any]:
    stats = producer.stats()
    return {name: getattr(stats, name) for name in stats.__dataclass_fields__}


async def run_command(command: str, *, timeout: float = 120.0) -> None:
    """Run ``command`` (split like a shell would, not run by one); raise if it fails."""
    argv = shlex.split(command)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as exc:
        raise ExperimentError(f"cannot run {command!r}: {exc}") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ExperimentError(f"{command!r} took over {timeout}s") from None
    if proc.returncode != 0:
        text = out.decode(errors="replace").strip()
        raise ExperimentError(f"{command!r} exited with {proc.returncode}: {text}")


def _make_store(options: ExperimentOptions) -> tuple[Any, str]:
    target = options.store
    if target and target.startswith(("mongodb://", "mongodb+srv://")):
        from aioproducer import MongoStore

        store = MongoStore.from_url(
            target, database=options.mongo_database, collection=options.mongo_collection
        )
        return store, f"MongoDB {options.mongo_database}.{options.mongo_collection}"
    if target is None:
        path = options.out_dir / "spill.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        target = str(path)
    return SQLiteStore(target), f"SQLite {target}"


class _Run:
    def __init__(self, options: ExperimentOptions) -> None:
        self.o = options
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.phases: list[Phase] = []
        self.sends: list[Send] = []
        self.samples: list[Sample] = []
        self.publishing = True
        self.bar: tqdm[Any] | None = None
        self.plan_end = 0.0

    def now(self) -> float:
        return self.loop.time() - self.t0

    def begin(self, producer: Producer, name: str, cycle: int) -> None:
        t, stats = self.now(), _stats(producer)
        if self.phases:
            self.phases[-1].end, self.phases[-1].stats_end = t, stats
        self.phases.append(Phase(name, cycle, t, stats))
        log.info("phase %s at %.1fs", self.phases[-1].label, t)
        # Where the plan ends, seen from here: the progress bar's length.
        o = self.o
        later_cycles = (o.cycles - cycle) * (o.up + o.outage)
        left = {"up": o.up + o.outage, "down": o.outage, "recovery": 0.0, "drain": 0.0}[name]
        self.plan_end = t + left + later_cycles + (0.0 if name == "drain" else 1.0)

    def finish(self, producer: Producer) -> None:
        self.phases[-1].end, self.phases[-1].stats_end = self.now(), _stats(producer)

    async def publish_steadily(self, producer: Producer, routing_key: str) -> None:
        """Call publish() ``rate`` times a second on a fixed schedule until told to stop."""
        interval = 1.0 / self.o.rate
        start = self.loop.time()
        seq = 0
        while self.publishing:
            delay = start + seq * interval - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                if not self.publishing:
                    break
            t = self.now()
            body = {"seq": seq, "sent_at": time.time()}
            began = time.perf_counter()
            try:
                message_id: str | None = await producer.publish(body, routing_key=routing_key)
                error = None
            except BufferFull as exc:
                message_id, error = None, f"BufferFull: {exc}"
            latency = time.perf_counter() - began
            self.sends.append(Send(seq, t, latency, len(self.phases) - 1, message_id, error))
            seq += 1

    async def sample_forever(self, producer: Producer, consumer: DedupConsumer) -> None:
        while True:
            await self.sample(producer, consumer)
            await asyncio.sleep(self.o.sample_interval)

    async def sample(self, producer: Producer, consumer: DedupConsumer) -> Sample:
        try:
            backlog: int | None = await asyncio.wait_for(producer.store.count(), 5.0)
        except Exception as exc:
            log.debug("store count failed: %s", exc)
            backlog = None
        s = producer.stats()
        sample = Sample(
            t=self.now(),
            connected=bool(s.connected),
            blocked=bool(s.blocked),
            buffered=s.buffered,
            in_flight=s.in_flight,
            backlog=backlog,
            accepted=s.accepted,
            confirmed=s.confirmed,
            spilled=s.spilled,
            replayed=s.replayed,
            delivered=consumer.counts().unique,
        )
        self.samples.append(sample)
        self.show(sample)
        return sample

    def show(self, sample: Sample) -> None:
        if self.bar is None:
            return
        # The bar counts seconds against the plan, re-planned at each phase: the broker's
        # commands, the recoveries and the drain take what they take.
        self.bar.total = max(round(self.plan_end), round(sample.t + 0.5))
        self.bar.set_description(f"[{self.phases[-1].label}]" if self.phases else "[start]", False)
        self.bar.set_postfix(
            sent=len(self.sends),
            link="up" if sample.connected else "down",
            memory=sample.buffered,
            store="?" if sample.backlog is None else sample.backlog,
            delivered=sample.delivered,
            refresh=False,
        )
        self.bar.update(round(sample.t - self.bar.n, 3))

    async def wait_backlog_empty(self, producer: Producer, timeout: float) -> int | None:
        """Wait for the store to hold nothing; return the last count (``None``: unreadable)."""
        end = self.loop.time() + timeout
        while True:
            try:
                count: int | None = await asyncio.wait_for(producer.store.count(), 5.0)
            except Exception:
                count = None
            if count == 0 or self.loop.time() >= end:
                return count
            await asyncio.sleep(self.o.sample_interval)

    def accepted_ids(self) -> list[str]:
        return [s.message_id for s in self.sends if s.message_id is not None]


@contextmanager
def _progress(enabled: bool, total: float) -> Iterator[tqdm[Any] | None]:
    if not enabled:
        yield None
        return
    bar = tqdm(
        total=round(total),
        dynamic_ncols=True,
        mininterval=0.5,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f}s{postfix}",
    )
    try:
        yield bar
    finally:
        bar.close()


async def run_experiment(options: ExperimentOptions) -> RawRun:
    """Run the experiment described by ``options`` and return what it recorded.

    The broker must be up at the start. It is started again (``start_command``)
    whatever happens during an outage, including cancellation.
    """
    if options.rate <= 0 or options.cycles < 0 or options.up < 0 or options.outage < 0:
        raise ValueError("rate must be > 0; cycles, up and outage >= 0")
    options.out_dir.mkdir(parents=True, exist_ok=True)
    queue = options.queue or f"experiment-{os.urandom(4).hex()}"
    routing_key = queue
    store, store_label = _make_store(options)
    started_at = time.time()

    consumer = DedupConsumer(options.amqp_url, queue, exchange=options.exchange)
    try:
        await consumer.start(connect_timeout=10.0)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        raise ExperimentError(f"the broker must be up to start: {exc}") from exc

    run = _Run(options)
    producer = Producer(
        options.amqp_url,
        exchange=options.exchange,
        store=store,
        spill_after=options.spill_after,
        max_buffer=options.max_buffer,
    )
    recovery_seconds: list[float | None] = []
    drained = False
    final_backlog: int | None = None
    try:
        await producer.start()
        run.begin(producer, "up", 1)
        planned = options.cycles * (options.up + options.outage)
        with _progress(options.progress, planned) as run.bar:
            publisher = asyncio.create_task(run.publish_steadily(producer, routing_key))
            sampler = asyncio.create_task(run.sample_forever(producer, consumer))
            try:
                for cycle in range(1, options.cycles + 1):
                    if cycle > 1:
                        run.begin(producer, "up", cycle)
                    await asyncio.sleep(options.up)
                    run.begin(producer, "down", cycle)
                    try:
                        await run_command(options.stop_command)
                        await asyncio.sleep(options.outage)
                    finally:
                        await run_command(options.start_command)
                    run.begin(producer, "recovery", cycle)
                    began = run.loop.time()
                    missing = await consumer.wait_for(
                        run.accepted_ids(), timeout=options.recovery_timeout
                    )
                    await run.wait_backlog_empty(
                        producer, max(0.0, options.recovery_timeout - (run.loop.time() - began))
                    )
                    recovery_seconds.append(None if missing else run.loop.time() - began)
                if options.cycles == 0:
                    await asyncio.sleep(options.up)
                run.begin(producer, "drain", options.cycles)
                run.publishing = False
                await publisher
                began = run.loop.time()
                await producer.flush(timeout=options.drain_timeout)
                final_backlog = await run.wait_backlog_empty(
                    producer, max(0.0, options.drain_timeout - (run.loop.time() - began))
                )
                missing = await consumer.wait_for(
                    run.accepted_ids(),
                    timeout=max(0.0, options.drain_timeout - (run.loop.time() - began)),
                )
                drained = final_backlog == 0 and not missing
                await run.sample(producer, consumer)
            finally:
                run.publishing = False
                for task in (publisher, sampler):
                    task.cancel()
                await asyncio.gather(publisher, sampler, return_exceptions=True)
        run.finish(producer)
    finally:
        await producer.close(timeout=30.0)
        try:
            # Nothing publishes any more: read every copy left in the queue.
            await consumer.drain()
        finally:
            try:
                if options.queue is None:
                    await consumer.delete_queue()
            finally:
                await consumer.close()

    ids = run.accepted_ids()
    deliveries = {i: consumer.deliveries(i) - consumer.redeliveries(i) for i in ids}
    return RawRun(
        options=options,
        queue=queue,
        store=store_label,
        phases=run.phases,
        sends=run.sends,
        samples=run.samples,
        deliveries=deliveries,
        recovery_seconds=recovery_seconds,
        drained=drained,
        final_backlog=final_backlog,
        started_at=started_at,
    )
