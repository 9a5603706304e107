"""Declare the exchange and queue the demo publishes to and consumes from."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

log = logging.getLogger("demo_app.topology")


async def declare(
    channel: aio_pika.abc.AbstractChannel,
    *,
    exchange: str,
    queue: str,
    routing_key: str,
    queue_type: str | None = None,
) -> aio_pika.abc.AbstractQueue:
    """Declare a durable ``queue`` and, unless ``exchange`` is the default one, a durable
    direct ``exchange`` with ``queue`` bound to it by ``routing_key``; return the queue.

    ``queue_type`` (``classic``, ``quorum``) becomes the queue's ``x-queue-type``; ``None``
    leaves the type to the broker's default. Idempotent: the app, the consumer and the
    experiment all call it with the same arguments. On a robust channel the declarations
    are repeated after every reconnection.
    """
    arguments: dict[str, Any] | None = {"x-queue-type": queue_type} if queue_type else None
    declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
    if exchange:
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.DIRECT, durable=True)
        await declared.bind(ex, routing_key=routing_key)
    return declared


async def declare_once(
    amqp_url: str | Sequence[str], exchange: str, queue: str, *, queue_type: str | None = None
) -> None:
    """Declare ``queue`` (bound to ``exchange`` by its own name) over a short-lived
    connection of its own, to the first of the ``amqp_url`` nodes that answers."""
    urls = [amqp_url] if isinstance(amqp_url, str) else list(amqp_url)
    if not urls:
        raise ValueError("no broker address to declare the queue on")
    for index, url in enumerate(urls):
        try:
            connection = await aio_pika.connect(url, timeout=5.0)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
            if index == len(urls) - 1:
                raise
            continue
        break
    try:
        channel = await connection.channel()
        await declare(
            channel, exchange=exchange, queue=queue, routing_key=queue, queue_type=queue_type
        )
    finally:
        await connection.close()


async def declare_until_done(
    amqp_url: str | Sequence[str],
    exchange: str,
    queue: str,
    *,
    queue_type: str | None = None,
    first_delay: float = 0.5,
    max_delay: float = 30.0,
) -> None:
    """:func:`declare_once`, retried with exponential backoff while the broker is down.

    Runs until it succeeds or is cancelled; meant for a background task so an app can
    start serving without a broker.
    """
    delay = first_delay
    while True:
        try:
            await declare_once(amqp_url, exchange, queue, queue_type=queue_type)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            log.warning("cannot declare queue %r yet (%s); retrying in %.1fs", queue, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
        else:
            log.info("declared queue %r (exchange %r)", queue, exchange or "(default)")
            return
