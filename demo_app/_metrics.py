"""Prometheus metrics read from a producer's ``stats()`` snapshot at scrape time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from aioproducer import ProducerState, ProducerStats

PREFIX = "aioproducer"

#: Monotonic counters of ``stats()``: the metric name (``_total`` is added) and its help.
COUNTERS: dict[str, tuple[str, str]] = {
    "accepted": ("messages_accepted", "Messages publish() accepted."),
    "confirmed": ("messages_confirmed", "Messages the broker confirmed straight from memory."),
    "spilled": ("messages_spilled", "Messages written to the durable store."),
    "replayed": ("messages_replayed", "Messages the broker confirmed after replay from the store."),
    "returned": ("publishes_returned", "Publishes the broker returned as unroutable (retried)."),
    "nacked": ("publishes_nacked", "Publishes the broker nacked (retried)."),
    "channel_errors": ("publishes_channel_errors", "Publishes caught by a channel-level error."),
    "retried": ("publishes_retried", "Publishes retried after a lost connection or no confirm."),
    "exported": ("messages_exported", "Messages written to a local file on close."),
    "store_errors": ("store_errors", "Store operations that failed (each is retried)."),
    "connections": ("connections", "AMQP connections made, the first one included."),
}

#: Point-in-time values of ``stats()``: the metric name and its help.
GAUGES: dict[str, tuple[str, str]] = {
    "buffered": ("buffered", "Messages in memory and not yet settled, in flight included."),
    "in_flight": ("in_flight", "Messages published and awaiting their confirm."),
    "held": ("held", "Messages kept back after a nack, return or channel error."),
    "connected": ("connected", "1 while the AMQP connection is up."),
    "blocked": ("blocked", "1 while the broker blocks the connection (a resource alarm)."),
    "store_ok": ("store_ok", "1 while the store's last operation succeeded."),
}


class ProducerCollector(Collector):
    """A custom collector over one producer; register it in a per-app registry.

    ``stats`` returns the producer's snapshot (or ``None`` before it exists);
    ``backlog`` counts the store. The store is asynchronous and ``collect()`` is
    not, so the scrape handler awaits :meth:`refresh` first and ``collect()``
    reports the count it read.
    """

    def __init__(
        self,
        stats: Callable[[], ProducerStats | None],
        backlog: Callable[[], Awaitable[int]],
    ) -> None:
        self._stats = stats
        self._backlog = backlog
        self._store_backlog: int | None = None
        self._store_errors = 0

    async def refresh(self) -> None:
        """Read the store's backlog for the next :meth:`collect`."""
        try:
            self._store_backlog = await self._backlog()
        except Exception:
            self._store_backlog = None
            self._store_errors += 1

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        for field, (name, help_text) in COUNTERS.items():
            value = float(getattr(stats, field))
            yield CounterMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        for field, (name, help_text) in GAUGES.items():
            value = float(getattr(stats, field))
            yield GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)
        state = StateSetMetricFamily(f"{PREFIX}_state", "Where the producer is in its life.")
        state.add_metric([], {s.value: s is stats.state for s in ProducerState})
        yield state
        if self._store_backlog is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_store_backlog",
                "Messages held in the durable store, waiting to be replayed.",
                value=float(self._store_backlog),
            )
        yield CounterMetricFamily(
            f"{PREFIX}_store_count_errors",
            "Scrapes at which the store could not be counted.",
            value=float(self._store_errors),
        )
