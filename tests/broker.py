"""Test helpers that drive the real RabbitMQ broker on this machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aio_pika

AMQP_URL = os.environ.get("AIOPRODUCER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl`` and return its output; raise if it fails."""
    exe = _rabbitmqctl_exe()
    proc = await asyncio.create_subprocess_exec(
        exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.decode(errors='replace')}")
    return out.decode(errors="replace")


def _rabbitmqctl_exe() -> str:
    return shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


@dataclass
class Repairs:
    """``rabbitmqctl`` commands that put the broker back as a fault block found it.

    A fault block registers its repair before it breaks anything and settles it once
    its own ``finally`` has restored the broker. A repair still owed after a test (a
    test timeout interrupted the block's event loop, so its ``finally`` never ran) is
    run synchronously by the ``broker_repaired`` fixture, which a timeout cannot skip.
    """

    owed: dict[int, list[tuple[str, ...]]] = field(default_factory=dict)
    _next: int = 0

    def owe(self, *commands: tuple[str, ...]) -> int:
        self._next += 1
        self.owed[self._next] = list(commands)
        return self._next

    def settle(self, token: int) -> None:
        self.owed.pop(token, None)

    def run_owed(self, timeout: float = 120.0) -> list[tuple[str, ...]]:
        """Run every repair still owed, newest first; return the commands run."""
        ran: list[tuple[str, ...]] = []
        for token in sorted(self.owed, reverse=True):
            for command in self.owed.pop(token):
                subprocess.run(
                    [_rabbitmqctl_exe(), *command], check=True, capture_output=True, timeout=timeout
                )
                ran.append(command)
        return ran


#: The repairs owed by the fault blocks of this test process.
REPAIRS = Repairs()

_START = (("start_app",), ("await_startup",))


async def stop_broker() -> None:
    await rabbitmqctl("stop_app")


async def start_broker() -> None:
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """Stop the broker's app for the body of the block; it is always started again
    (by the block itself, or by the ``broker_repaired`` fixture after a test timeout)."""
    token = REPAIRS.owe(*_START)
    await stop_broker()
    try:
        yield
    finally:
        await start_broker()
        REPAIRS.settle(token)


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

    The watermark in force before is read first and set again afterwards (by the block
    itself, or by the ``broker_repaired`` fixture after a test timeout).
    """
    before = await read_watermark()
    token = REPAIRS.owe(("set_vm_memory_high_watermark", *before))
    await rabbitmqctl("set_vm_memory_high_watermark", "0.000001")
    try:
        yield
    finally:
        await rabbitmqctl("set_vm_memory_high_watermark", *before)
        REPAIRS.settle(token)


_WATERMARK = "vm_memory_monitor:get_vm_memory_high_watermark()."


async def read_watermark() -> list[str]:
    """The memory watermark in force, as ``set_vm_memory_high_watermark`` arguments."""
    return watermark_args(await rabbitmqctl("eval", _WATERMARK))


def broker_health() -> tuple[bool, list[str] | None]:
    """Synchronously: whether the broker's app runs, and its memory watermark (None if
    it could not be read)."""
    exe = _rabbitmqctl_exe()
    try:
        running = subprocess.run(
            [exe, "eval", "rabbit:is_running()."], capture_output=True, text=True, timeout=60
        )
        watermark = subprocess.run(
            [exe, "eval", _WATERMARK], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False, None
    up = running.returncode == 0 and running.stdout.strip().endswith("true")
    try:
        args = watermark_args(watermark.stdout) if watermark.returncode == 0 else None
    except ValueError:
        args = None
    return up, args


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

    Once every id was seen, the rest of the queue is read too (a consumer's
    unacknowledged prefetch goes back to the queue first), so a duplicate enqueued
    by then is in the result however late it came. Fails with the ids still missing
    when ``timeout`` passes first.
    """
    got: list[Received] = []
    seen: set[str] = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=100)
        q = await channel.get_queue(queue, ensure=False)
        async with q.iterator() as it:
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
                await message.ack()
                got.append(received)
                seen.add(received.message_id)
    finally:
        # Closing the channel puts its unacknowledged prefetch back in the queue.
        await channel.close()
    return got + await drain(connection, queue)
