"""Prometheus metrics for a producer, registered in one call.

Needs the ``prometheus`` extra (``pip install 'aioproducer[prometheus]'``); nothing
else in aioproducer imports this module or prometheus_client::

    from prometheus_client import REGISTRY
    from aioproducer.prometheus import register_collector

    await producer.start()
    collector = register_collector(producer, registry=REGISTRY)

Counters and gauges are read from :meth:`Producer.stats` at scrape time. The store's
backlog needs an asynchronous store call and ``collect()`` is synchronous, so a
small background task refreshes it every ``backlog_interval`` seconds while the
producer runs (``aioproducer_store_backlog_age_seconds`` says how old the value
is). The task starts when :func:`register_collector` is called inside a running
event loop, or on the first scrape made from the event loop's thread; with
``prometheus_client.start_http_server`` (scrapes on another thread) call
:meth:`ProducerCollector.start` from the loop. The accept-to-settle histogram
counts each message accepted after registration once, when it is first settled:
confirmed, stored, or kept as dead. While connected, ``aioproducer_broker_info``
names the broker node in its ``url`` label (it changes when the producer fails over).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

from ._buffer import Observer
from ._message import Message, State
from ._producer import Producer, ProducerState
from ._stores._base import Backlog

__all__ = ["DEFAULT_BUCKETS", "ProducerCollector", "register_collector"]

log = logging.getLogger("aioproducer.metrics")

#: Upper bounds, in seconds, of the accept-to-settle histogram's buckets.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

#: Counters of ``stats()``: the metric name (``_total`` is added) and its help.
COUNTERS: dict[str, tuple[str, str]] = {
    "accepted": ("messages_accepted", "Messages publish() accepted."),
    "confirmed": ("messages_confirmed", "Messages the broker confirmed straight from memory."),
    "spilled": ("messages_spilled", "Messages written to the durable store."),
    "replayed": ("messages_replayed", "Messages the broker confirmed after replay from the store."),
    "returned": ("publishes_returned", "Publishes the broker returned as unroutable (retried)."),
    "nacked": ("publishes_nacked", "Publishes the broker nacked (retried)."),
    "dead": ("messages_dead", "Messages kept in the store as dead after max_attempts."),
    "store_errors": ("store_errors", "Store operations that failed (each is retried)."),
    "channel_errors": ("publishes_channel_errors", "Publishes caught by a channel-level error."),
    "retried": ("publishes_retried", "Publishes retried after a lost connection or no confirm."),
    "exported": ("messages_exported", "Messages written to a local file on close."),
    "connections": ("connections", "AMQP connections made, the first one included."),
}

#: Gauges of ``stats()``: the metric name and its help.
GAUGES: dict[str, tuple[str, str]] = {
    "buffered": ("buffered", "Messages in memory and not yet settled, in flight included."),
    "buffered_bytes": ("buffered_bytes", "Bytes of bodies and headers held in memory."),
    "in_flight": ("in_flight", "Messages published and awaiting their confirm."),
    "held": ("held", "Messages kept back after a nack, return or channel error."),
    "connected": ("connected", "1 while the AMQP connection is up."),
    "blocked": ("blocked", "1 while the broker blocks the connection (a resource alarm)."),
    "store_ok": ("store_ok", "1 while the store's last operation succeeded."),
}

#: How a message settles, by the state it first settles in.
_SETTLED = {
    State.CONFIRMED: "confirmed",
    State.STORED: "stored",
    State.STORED_IN_FLIGHT: "stored",
    State.DEAD: "dead",
}


class _Histogram:
    """Bucket counts and a sum, for one label value."""

    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size
        self.sum = 0.0


class ProducerCollector(Collector):
    """The metrics of one producer; see the module's docstring."""

    def __init__(
        self,
        producer: Producer,
        *,
        prefix: str = "aioproducer",
        backlog_interval: float = 15.0,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        if backlog_interval <= 0:
            raise ValueError("backlog_interval must be positive")
        self.producer = producer
        self.prefix = prefix
        self.backlog_interval = backlog_interval
        self.buckets = tuple(sorted(buckets))
        self.backlog: Backlog | None = None
        self._backlog_at: float | None = None
        self._backlog_errors = 0
        self._accepted: dict[str, float] = {}
        self._settle: dict[str, _Histogram] = {
            how: _Histogram(len(self.buckets) + 1) for how in ("confirmed", "stored", "dead")
        }
        self._task: asyncio.Task[None] | None = None
        self._hook()

    # -- the settle hook ------------------------------------------------------------

    def _hook(self) -> None:
        """Chain :meth:`observe` onto the producer's observer of message moves."""
        producer = self.producer
        previous: Observer | None = producer._observer

        def observe(message: Message, state: State) -> None:
            if previous is not None:
                previous(message, state)
            self.observe(message, state)

        producer._observer = observe
        context = producer._context
        if context is not None:
            context.buffer.observer = observe

    def observe(self, message: Message, state: State) -> None:
        """Note a move of ``message``: its accept time, or its first settle time."""
        if state is State.MEMORY:
            self._accepted.setdefault(message.message_id, time.monotonic())
            return
        how = _SETTLED.get(state)
        if how is None:
            return
        accepted = self._accepted.pop(message.message_id, None)
        if accepted is None:
            return
        seconds = time.monotonic() - accepted
        histogram = self._settle[how]
        histogram.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        histogram.sum += seconds

    # -- the store backlog ----------------------------------------------------------

    async def refresh_backlog(self) -> None:
        """Read the store's backlog now, for the next scrapes."""
        try:
            backlog = await self.producer.store.backlog()
        except Exception as exc:
            self._backlog_errors += 1
            log.debug("reading the store backlog failed: %s", type(exc).__name__)
            return
        self.backlog = backlog
        self._backlog_at = time.monotonic()

    def start(self) -> None:
        """Start refreshing the backlog in the background; call it from the event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._refresh_while_running(), name="aioproducer-metrics-backlog"
            )

    async def stop(self) -> None:
        """Stop the background refresh (it also stops by itself once the producer closes)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_while_running(self) -> None:
        running = (ProducerState.NEW, ProducerState.RUNNING)
        while self.producer.stats().state in running:
            await self.refresh_backlog()
            if self.producer.stats().state not in running:
                # The producer closed its store meanwhile: do not leave it open again.
                await self.producer.store.close()
                return
            await asyncio.sleep(self.backlog_interval)

    # -- collect --------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no loop in this thread
                self.start()
        prefix = self.prefix
        stats = self.producer.stats()
        for field, (name, help_text) in COUNTERS.items():
            value = float(getattr(stats, field))
            yield CounterMetricFamily(f"{prefix}_{name}", help_text, value=value)
        for field, (name, help_text) in GAUGES.items():
            value = float(getattr(stats, field))
            yield GaugeMetricFamily(f"{prefix}_{name}", help_text, value=value)
        state = StateSetMetricFamily(f"{prefix}_state", "Where the producer is in its life.")
        state.add_metric([], {s.value: s is stats.state for s in ProducerState})
        yield state
        if stats.broker is not None:
            broker = InfoMetricFamily(
                f"{prefix}_broker", "The broker node connected to (password masked)."
            )
            broker.add_metric([], {"url": stats.broker})
            yield broker
        backlog = self.backlog
        if backlog is not None and self._backlog_at is not None:
            yield GaugeMetricFamily(
                f"{prefix}_store_backlog",
                "Messages held in the store (refreshed in the background).",
                value=float(backlog.total),
            )
            by_state = GaugeMetricFamily(
                f"{prefix}_store_backlog_by_state",
                "Messages held in the store, by state.",
                labels=["state"],
            )
            for name in ("due", "leased", "held", "dead"):
                by_state.add_metric([name], float(getattr(backlog, name)))
            yield by_state
            yield GaugeMetricFamily(
                f"{prefix}_store_backlog_age_seconds",
                "Seconds since the store backlog was last read.",
                value=time.monotonic() - self._backlog_at,
            )
        yield CounterMetricFamily(
            f"{prefix}_store_backlog_errors",
            "Background reads of the store backlog that failed.",
            value=float(self._backlog_errors),
        )
        settle = HistogramMetricFamily(
            f"{prefix}_settle_seconds",
            "Seconds from publish() to a message's settling: confirmed, stored or dead.",
            labels=["outcome"],
        )
        for how, histogram in self._settle.items():
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip([*self.buckets, float("inf")], histogram.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            settle.add_metric([how], buckets, sum_value=histogram.sum)
        yield settle


def register_collector(
    producer: Producer,
    registry: CollectorRegistry = REGISTRY,
    *,
    prefix: str = "aioproducer",
    backlog_interval: float = 15.0,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> ProducerCollector:
    """Register a :class:`ProducerCollector` for ``producer`` in ``registry``; return it.

    Called inside a running event loop, it also starts the background refresh of
    the store backlog.
    """
    collector = ProducerCollector(
        producer, prefix=prefix, backlog_interval=backlog_interval, buckets=buckets
    )
    registry.register(collector)
    with contextlib.suppress(RuntimeError):
        collector.start()
    return collector
