"""Test helpers that drive the real RabbitMQ broker on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika

AMQP_URL = os.environ.get("AIOPRODUCER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl`` and return its output; raise if it fails."""
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    proc = await asyncio.create_subprocess_exec(
        exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.decode(errors='replace')}")
    return out.decode(errors="replace")


async def stop_broker() -> None:
    await rabbitmqctl("stop_app")


async def start_broker() -> None:
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """Stop the broker's app for the body of the block; it is always started again."""
    await stop_broker()
    try:
        yield
    finally:
        await start_broker()


def watermark_args(text: str) -> list[str]:
    """``rabbitmqctl set_vm_memory_high_watermark`` arguments that restore the value
    ``vm_memory_monitor:get_vm_memory_high_watermark()`` printed as ``text``.

    ``0.4`` gives ``["0.4"]``; ``{absolute,1073741824}`` gives ``["absolute",
    "1073741824"]``; ``{relative,0.6}`` gives ``["0.6"]``.
    """
    value = text.strip().splitlines()[-1].strip() if text.strip() else ""
    tagged = re.fullmatch(r"\{\s*(absolute|relative)\s*,\s*\"?([^\"}]+?)\"?\s*\}", value)
    if tagged:
        kind, amount = tagged.groups()
        return ["absolute", amount] if kind == "absolute" else [amount]
    try:
        float(value)
    except ValueError:
        raise ValueError(f"cannot read a memory watermark from {text!r}") from None
    return [value]


@contextlib.asynccontextmanager
async def memory_alarm() -> AsyncIterator[None]:
    """Raise the broker's memory alarm (publishers get Connection.Blocked) for the block.

    The watermark in force before is read first and set again afterwards.
    """
    before = watermark_args(
        await rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
    )
    await rabbitmqctl("set_vm_memory_high_watermark", "0.000001")
    try:
        yield
    finally:
        await rabbitmqctl("set_vm_memory_high_watermark", *before)


@contextlib.asynccontextmanager
async def connection() -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A plain connection to the broker, for reading test queues after an outage."""
    conn = await aio_pika.connect(AMQP_URL)
    try:
        yield conn
    finally:
        await conn.close()


@dataclass
class Received:
    """A message read back from a test queue."""

    message_id: str
    body: bytes
    content_type: str | None
    delivery_mode: int | None
    headers: dict[str, object]
    timestamp: object
    exchange: str
    routing_key: str
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: float | None = None
    """In seconds, as aio-pika reads the wire's milliseconds."""
    type: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    content_encoding: str | None = None


def _received(message: aio_pika.abc.AbstractIncomingMessage) -> Received:
    return Received(
        message_id=message.message_id or "",
        body=message.body,
        content_type=message.content_type,
        delivery_mode=int(message.delivery_mode) if message.delivery_mode else None,
        headers=dict(message.headers or {}),
        timestamp=message.timestamp,
        exchange=message.exchange or "",
        routing_key=message.routing_key or "",
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        expiration=(
            float(message.expiration) if isinstance(message.expiration, int | float) else None
        ),
        type=message.type,
        app_id=message.app_id,
        user_id=message.user_id,
        content_encoding=message.content_encoding,
    )


async def drain(connection: aio_pika.abc.AbstractConnection, queue: str) -> list[Received]:
    """Everything currently in ``queue``, acknowledged and removed."""
    channel = await connection.channel()
    try:
        q = await channel.get_queue(queue, ensure=False)
        out: list[Received] = []
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            out.append(_received(message))
        return out
    finally:
        await channel.close()


async def wait_for_ids(
    connection: aio_pika.abc.AbstractConnection,
    queue: str,
    expected: set[str],
    *,
    timeout: float = 60.0,
) -> list[Received]:
    """Read ``queue`` until every id in ``expected`` arrived; return all that arrived.

    Fails with the ids still missing when ``timeout`` passes first.
    """
    got: list[Received] = []
    seen: set[str] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    channel = await connection.channel()
    try:
        q = await channel.get_queue(queue, ensure=False)
        async with q.iterator(no_ack=True) as it:
            while not expected <= seen:
                remaining = end - loop.time()
                if remaining <= 0:
                    missing = expected - seen
                    raise AssertionError(f"{len(missing)} of {len(expected)} ids never arrived")
                try:
                    message = await asyncio.wait_for(it.__anext__(), remaining)
                except TimeoutError:
                    continue
                received = _received(message)
                got.append(received)
                seen.add(received.message_id)
    finally:
        await channel.close()
    return got
