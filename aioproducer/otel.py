"""OpenTelemetry tracing for the producer (the ``otel`` extra: ``pip install aioproducer[otel]``).

:func:`tracing` is a middleware: at ``publish()`` it starts a PRODUCER span, a child
of the caller's current span, and injects its context into the message's headers
(W3C ``traceparent``, and ``tracestate``/``baggage`` when set, through the globally
configured propagator), so a consumer can continue the trace. The span ends when
the message settles: confirmed by the broker, stored, or dead; or at once, with
the error, when publish() refuses the message. ::

    from aioproducer import Producer
    from aioproducer.otel import tracing

    producer = Producer(url, middleware=[tracing()])

Only this module imports ``opentelemetry``; ``import aioproducer`` never does.
"""

from __future__ import annotations

import os

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import __version__
from ._outgoing import Finish, Middleware, Outgoing
from ._settlement import Settlement

__all__ = ["tracing"]


def tracing(tracer_provider: trace.TracerProvider | None = None) -> Middleware:
    """A middleware that traces each message from publish() to its settlement.

    Spans follow OpenTelemetry's messaging conventions: named ``publish
    <exchange>`` (``amq.default`` for the default exchange), with
    ``messaging.system`` ``rabbitmq``, the destination, routing key, message and
    correlation ids, and ``aioproducer.settlement`` once settled (a DEAD message,
    or one refused at publish(), sets the span's status to error).
    """
    tracer = trace.get_tracer("aioproducer", __version__, tracer_provider=tracer_provider)

    def middleware(outgoing: Outgoing) -> Finish:
        if outgoing.message_id is None:
            # Named now, so the span can carry the id the message will have.
            outgoing.message_id = os.urandom(16).hex()
        exchange = outgoing.exchange or "amq.default"
        span = tracer.start_span(
            f"publish {exchange}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "publish",
                "messaging.operation.name": "publish",
                "messaging.destination.name": exchange,
                "messaging.rabbitmq.destination.routing_key": outgoing.routing_key,
                "messaging.message.id": str(outgoing.message_id),
            },
        )
        if outgoing.correlation_id is not None:
            span.set_attribute("messaging.message.conversation_id", str(outgoing.correlation_id))
        headers = dict(outgoing.headers) if outgoing.headers is not None else {}
        propagate.inject(headers, context=trace.set_span_in_context(span))
        outgoing.headers = headers

        def finish(outcome: Settlement | BaseException | None) -> None:
            if isinstance(outcome, BaseException):
                span.record_exception(outcome)
                span.set_status(Status(StatusCode.ERROR, type(outcome).__name__))
            elif outcome is None:
                span.set_status(Status(StatusCode.ERROR, "producer closed before it settled"))
            else:
                span.set_attribute("aioproducer.settlement", outcome.value)
                if outcome is Settlement.DEAD:
                    span.set_status(Status(StatusCode.ERROR, "dead after max_attempts"))
            span.end()

        return finish

    return middleware
