"""A trace context injected at publish() arrives in the headers a consumer reads."""

from __future__ import annotations

import aio_pika
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aioproducer import Settlement
from aioproducer.otel import tracing
from tests.broker import wait_for_ids
from tests.integration.conftest import ProducerFactory

pytestmark = pytest.mark.broker


async def test_the_consumer_reads_the_publish_spans_traceparent(
    make_producer: ProducerFactory, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    producer = make_producer(middleware=[tracing(provider)])
    await producer.start()
    with provider.get_tracer("app").start_as_current_span("request"):
        message_id = await producer.publish({"n": 1}, routing_key=queue, headers={"k": "v"})
    assert await producer.settled(message_id, timeout=30) is Settlement.CONFIRMED
    (received,) = await wait_for_ids(amqp, queue, {message_id})
    spans = {span.name: span for span in exporter.get_finished_spans()}
    context = spans["publish amq.default"].get_span_context()
    assert context is not None
    assert received.headers == {
        "k": "v",
        "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-"
        f"{context.trace_flags:02x}",
    }
    assert spans["publish amq.default"].parent == spans["request"].get_span_context()
