"""aioproducer.prometheus: the collector's values after a known sequence of events."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from aioproducer import SQLiteStore
from aioproducer.prometheus import register_collector
from tests.waiting import wait_until

from .conftest import ProducerFactory

pytestmark = pytest.mark.broker

CLOSED_PORT = "amqp://guest:guest@127.0.0.1:1/"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_counters_gauges_and_settle_histogram_after_confirms_returns_and_dead(
    make_producer: ProducerFactory, queue: str
) -> None:
    producer = make_producer(max_attempts=1)
    registry = CollectorRegistry()
    collector = register_collector(producer, registry, backlog_interval=0.05)
    await producer.start()
    for n in range(5):
        await producer.publish({"n": n}, routing_key=queue)
    for n in range(2):  # unroutable: returned once, then kept as dead (max_attempts=1)
        await producer.publish({"n": n}, routing_key=f"{queue}-nowhere")
    assert await producer.flush(timeout=30)
    await wait_until(lambda: producer.stats().dead == 2, what="two dead messages")
    await wait_until(
        lambda: collector.backlog is not None and collector.backlog.dead == 2,
        what="the background backlog refresh",
    )
    samples = scrape(registry)
    assert samples["aioproducer_messages_accepted_total", ()] == 7
    assert samples["aioproducer_messages_confirmed_total", ()] == 5
    assert samples["aioproducer_publishes_returned_total", ()] == 2
    assert samples["aioproducer_messages_dead_total", ()] == 2
    assert samples["aioproducer_publishes_nacked_total", ()] == 0
    assert samples["aioproducer_buffered", ()] == 0
    assert samples["aioproducer_buffered_bytes", ()] == 0
    assert samples["aioproducer_in_flight", ()] == 0
    assert samples["aioproducer_connected", ()] == 1
    assert samples["aioproducer_blocked", ()] == 0
    assert samples["aioproducer_store_backlog", ()] == 2
    assert samples["aioproducer_store_backlog_by_state", (("state", "dead"),)] == 2
    assert samples["aioproducer_settle_seconds_count", (("outcome", "confirmed"),)] == 5
    assert samples["aioproducer_settle_seconds_count", (("outcome", "dead"),)] == 2
    assert samples["aioproducer_settle_seconds_count", (("outcome", "stored"),)] == 0
    assert (
        samples["aioproducer_settle_seconds_bucket", (("le", "+Inf"), ("outcome", "confirmed"))]
        == 5
    )
    assert samples["aioproducer_settle_seconds_sum", (("outcome", "confirmed"),)] > 0
    await producer.close()
    await collector.stop()


async def test_stored_messages_and_store_errors_without_a_broker(
    make_producer: ProducerFactory, tmp_path: Path
) -> None:
    producer = make_producer(CLOSED_PORT, spill_after=0.2, store=SQLiteStore(tmp_path / "s.db"))
    await producer.start()
    registry = CollectorRegistry()
    collector = register_collector(producer, registry, backlog_interval=0.05)
    for n in range(3):
        await producer.publish({"n": n}, routing_key="q")
    await wait_until(lambda: producer.stats().spilled == 3, what="three stored messages")
    await wait_until(
        lambda: collector.backlog is not None and collector.backlog.total == 3,
        what="the background backlog refresh",
    )
    samples = scrape(registry)
    assert samples["aioproducer_messages_spilled_total", ()] == 3
    assert samples["aioproducer_connected", ()] == 0
    assert samples["aioproducer_store_backlog", ()] == 3
    assert samples["aioproducer_store_backlog_by_state", (("state", "due"),)] == 3
    assert samples["aioproducer_settle_seconds_count", (("outcome", "stored"),)] == 3
    # Each is settled once: no second settle when the store's copy is deleted later.
    assert (
        sum(v for (name, _), v in samples.items() if name == "aioproducer_settle_seconds_count")
        == 3
    )
    await producer.close()
    await collector.stop()
