"""aioproducer.otel: trace context in the headers, a span from publish() to settlement."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aioproducer import BufferFull, Outgoing, Settlement
from aioproducer.otel import tracing
from aioproducer.testing import FakeProducer


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def traceparent(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_the_span_is_a_child_of_the_callers_and_its_context_is_in_the_headers(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = provider.get_tracer("app")
    async with FakeProducer(middleware=[tracing(provider)]) as producer:
        with tracer.start_as_current_span("handle request"):
            message_id = await producer.publish(
                {"n": 1}, routing_key="orders", headers={"tenant": "acme"}, correlation_id="c-1"
            )
            assert producer.published[0].headers is not None
            assert len(exporter.get_finished_spans()) == 0  # not settled yet
        assert await producer.settled(message_id, timeout=1) is Settlement.CONFIRMED
        assert await producer.flush(1)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    publish, parent = spans["publish amq.default"], spans["handle request"]
    headers = producer.published[0].headers
    assert headers == {"tenant": "acme", "traceparent": traceparent(publish)}
    assert publish.parent is not None and publish.parent.span_id == parent.context.span_id
    assert publish.kind is SpanKind.PRODUCER
    assert publish.attributes is not None
    assert dict(publish.attributes) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "publish",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "amq.default",
        "messaging.rabbitmq.destination.routing_key": "orders",
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": "c-1",
        "aioproducer.settlement": "confirmed",
    }
    assert publish.status.status_code is StatusCode.UNSET


async def test_each_message_of_a_batch_gets_its_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with FakeProducer(exchange="shop", middleware=[tracing(provider)]) as producer:
        ids = await producer.publish_many([b"a", Outgoing(b"b", message_id="own")])
        assert await producer.flush(1)
    spans = exporter.get_finished_spans()
    sent = [str(s.attributes["messaging.message.id"]) for s in spans if s.attributes]
    assert sorted(sent) == sorted(ids)
    assert {s.name for s in spans} == {"publish shop"}
    assert [m.headers and m.headers["traceparent"] for m in producer.published] == [
        traceparent(s) for s in spans
    ]


async def test_a_refused_or_dead_message_ends_its_span_in_error(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with FakeProducer(middleware=[tracing(provider)]) as producer:
        producer.fail_with(BufferFull(10))
        with pytest.raises(BufferFull):
            await producer.publish(b"x")
        producer.fail_with(None)
        producer.settle_as = Settlement.DEAD
        await producer.publish(b"y")
        assert await producer.flush(1)
    refused, dead = exporter.get_finished_spans()
    assert refused.status.status_code is StatusCode.ERROR
    assert [event.name for event in refused.events] == ["exception"]
    assert dead.status.status_code is StatusCode.ERROR
    assert dead.attributes is not None and dead.attributes["aioproducer.settlement"] == "dead"


def test_a_user_middleware_sees_and_changes_every_message() -> None:
    """The hook under tracing is public: a middleware of one's own."""
    seen: list[str] = []
    outcomes: list[object] = []

    def stamp(outgoing: Outgoing) -> None:
        seen.append(outgoing.routing_key)
        outgoing.headers = {**(outgoing.headers or {}), "x-app": "shop"}
        outgoing.app_id = "shop"

    def watch(outgoing: Outgoing) -> object:
        return outcomes.append

    async def scenario() -> FakeProducer:
        async with FakeProducer(middleware=[stamp, watch]) as producer:  # type: ignore[list-item]
            await producer.publish(b"x", routing_key="a")
            assert await producer.flush(1)
        return producer

    import asyncio

    producer = asyncio.run(scenario())
    assert seen == ["a"]
    message = producer.published[0]
    assert message.headers == {"x-app": "shop"}
    assert message.properties is not None and message.properties.app_id == "shop"
    assert outcomes == [Settlement.CONFIRMED]


def test_import_aioproducer_loads_neither_opentelemetry_nor_pydantic() -> None:
    code = (
        "import sys, aioproducer, aioproducer.testing\n"
        "print(','.join(m for m in ('opentelemetry', 'pydantic') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
