"""A consumer that counts what arrives and de-duplicates it by ``message_id``.

As a program, ``python -m demo_app.consumer`` reads a queue until SIGINT or SIGTERM,
prints the counts now and then and at exit, and can write every id it saw to a file
for reconciliation. As a library, :class:`DedupConsumer` is what the outage
experiment uses to check that every accepted message arrived::

    async with DedupConsumer(amqp_url, "orders") as consumer:
        ...
        await consumer.wait_for(ids, timeout=60)
        await consumer.drain()
        print(consumer.counts())

Counting rules: ``total`` is every delivery; ``unique`` the distinct message ids;
``duplicates`` the deliveries of an id seen before that the broker did *not* flag as
redelivered, i.e. copies the producer published more than once; ``redelivered`` the
broker's own re-deliveries of a copy this consumer had not acknowledged (after a lost
connection), which say nothing about the producer. Messages without an id are counted
in ``without_id`` only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from ._config import QUEUE_TYPES, split_urls
from ._topology import declare

log = logging.getLogger("demo_app.consumer")


@dataclass(frozen=True, slots=True)
class Counts:
    """What a :class:`DedupConsumer` has received so far."""

    total: int
    """Every delivery, copies included."""
    unique: int
    """Distinct message ids."""
    duplicates: int
    """Deliveries of an already seen id that the broker did not flag as redelivered."""
    redelivered: int
    """Deliveries of an already seen id that the broker flagged as redelivered."""
    without_id: int
    """Deliveries without a message id (not de-duplicated)."""

    def __str__(self) -> str:
        return (
            f"total={self.total} unique={self.unique} duplicates={self.duplicates} "
            f"redelivered={self.redelivered} without_id={self.without_id}"
        )


class _Waiter:
    __slots__ = ("done", "missing")

    def __init__(self, missing: set[str]) -> None:
        self.missing = missing
        self.done = asyncio.get_running_loop().create_future()


class DedupConsumer:
    """Consume ``queue``, acknowledging each message after counting it.

    ``declare`` declares the queue first (durable, of ``queue_type``; bound to
    ``exchange`` by ``routing_key`` when an exchange is given), as the demo app does. The connection
    is robust: it survives broker restarts and consumes again afterwards.
    """

    def __init__(
        self,
        amqp_url: str,
        queue: str,
        *,
        exchange: str = "",
        routing_key: str | None = None,
        declare: bool = True,
        queue_type: str | None = None,
        prefetch: int = 500,
    ) -> None:
        self.amqp_url = amqp_url
        self.queue = queue
        self.exchange = exchange
        self.routing_key = queue if routing_key is None else routing_key
        self._declare = declare
        self._queue_type = queue_type
        self._prefetch = prefetch
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._deliveries: dict[str, int] = {}
        self._redeliveries: dict[str, int] = {}
        self._first_seen: dict[str, float] = {}
        self._total = 0
        self._duplicates = 0
        self._redelivered = 0
        self._without_id = 0
        self._waiters: list[_Waiter] = []

    async def __aenter__(self) -> DedupConsumer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self, *, connect_timeout: float | None = None) -> None:
        """Connect (retrying while the broker is down, up to ``connect_timeout`` seconds,
        forever when ``None``), declare the queue and start consuming."""
        self._connection = await _connect(self.amqp_url, connect_timeout)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        # Consume from the queue object the declaration returns: a robust channel
        # restores that one, and its consumer, after a reconnection.
        if self._declare:
            queue = await declare(
                channel,
                exchange=self.exchange,
                queue=self.queue,
                routing_key=self.routing_key,
                queue_type=self._queue_type,
            )
        else:
            queue = await channel.declare_queue(self.queue, passive=True)
        await queue.consume(self._on_message)
        self._channel = channel
        log.info("consuming %r", self.queue)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        # Acknowledge first and count after: a message whose ack could not be sent is
        # delivered again and counted then, never twice.
        try:
            await message.ack()
        except aio_pika.exceptions.AMQPError as exc:
            log.debug("ack failed (%s); the broker will deliver it again", exc)
            return
        self._record(message.message_id, redelivered=bool(message.redelivered))

    def _record(self, message_id: str | None, *, redelivered: bool) -> None:
        self._total += 1
        if not message_id:
            self._without_id += 1
            return
        seen = self._deliveries.get(message_id, 0)
        self._deliveries[message_id] = seen + 1
        if seen:
            if redelivered:
                self._redelivered += 1
                self._redeliveries[message_id] = self._redeliveries.get(message_id, 0) + 1
            else:
                self._duplicates += 1
            return
        self._first_seen[message_id] = time.time()
        for waiter in self._waiters:
            waiter.missing.discard(message_id)
            if not waiter.missing and not waiter.done.done():
                waiter.done.set_result(None)

    def counts(self) -> Counts:
        return Counts(
            total=self._total,
            unique=len(self._deliveries),
            duplicates=self._duplicates,
            redelivered=self._redelivered,
            without_id=self._without_id,
        )

    def deliveries(self, message_id: str) -> int:
        """How many times ``message_id`` arrived (0: never)."""
        return self._deliveries.get(message_id, 0)

    def redeliveries(self, message_id: str) -> int:
        """How many of those arrivals were the broker's redeliveries of a seen copy."""
        return self._redeliveries.get(message_id, 0)

    def first_seen(self, message_id: str) -> float | None:
        """Wall-clock time ``message_id`` first arrived."""
        return self._first_seen.get(message_id)

    @property
    def seen(self) -> Collection[str]:
        """Every message id received so far."""
        return self._deliveries.keys()

    async def wait_for(self, ids: Iterable[str], timeout: float | None = None) -> set[str]:
        """Wait until every id in ``ids`` arrived, at most ``timeout`` seconds.

        Returns the ids still missing: empty when all arrived.
        """
        waiter = _Waiter({i for i in ids if i not in self._deliveries})
        if not waiter.missing:
            return set()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.done), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.remove(waiter)
        return set(waiter.missing)

    async def drain(self, timeout: float = 60.0) -> None:
        """Stop consuming, then read what is left in the queue until it is empty.

        Call it once nothing publishes to the queue any more: afterwards the counts
        cover every copy the broker held. Waits up to ``timeout`` seconds for a
        connection lost to a broker restart to come back.
        """
        if self._connection is None:
            raise RuntimeError("start() first")
        await asyncio.wait_for(self._connection.connected.wait(), timeout)
        if self._channel is not None:
            # Closing the channel returns any prefetched, unacknowledged message to the queue.
            await self._channel.close()
            self._channel = None
        channel = await self._connection.channel()
        try:
            queue = await channel.get_queue(self.queue, ensure=False)
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                self._record(message.message_id, redelivered=bool(message.redelivered))
        finally:
            await channel.close()

    async def delete_queue(self) -> None:
        """Delete the queue (for throwaway queues, such as the experiment's)."""
        if self._connection is None:
            raise RuntimeError("start() first")
        await asyncio.wait_for(self._connection.connected.wait(), 60.0)
        channel = await self._connection.channel()
        try:
            await channel.queue_delete(self.queue)
        finally:
            await channel.close()

    def write_ids(self, path: str | os.PathLike[str]) -> int:
        """Write every id seen to ``path``, sorted, one per line; return how many."""
        ids = sorted(self._deliveries)
        Path(path).write_text("".join(f"{i}\n" for i in ids))
        return len(ids)

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            await connection.close()


async def _connect(amqp_url: str, timeout: float | None) -> aio_pika.abc.AbstractRobustConnection:
    """``connect_robust``, retried: its first attempt fails at once when the broker is down.

    ``amqp_url`` may list several nodes, comma-separated: each attempt tries the next.
    The robust connection then stays with the node that answered.
    """
    urls = split_urls(amqp_url)
    loop = asyncio.get_running_loop()
    end = None if timeout is None else loop.time() + timeout
    delay = 0.5
    attempt = 0
    while True:
        url = urls[attempt % len(urls)]
        attempt += 1
        try:
            return await aio_pika.connect_robust(url, timeout=5.0, reconnect_interval=1.0)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            if attempt % len(urls):
                continue  # the next node, at once
            if end is not None and loop.time() + delay > end:
                raise
            log.warning("cannot connect yet (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m demo_app.consumer",
        description="Consume a queue, de-duplicate by message_id and report the counts.",
    )
    p.add_argument(
        "--amqp-url",
        default=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="broker URL (env AMQP_URL)",
    )
    p.add_argument(
        "--queue",
        default=os.environ.get("QUEUE") or os.environ.get("ROUTING_KEY") or "demo",
        help="queue to consume (env QUEUE, else ROUTING_KEY; default demo)",
    )
    p.add_argument(
        "--exchange",
        default=os.environ.get("EXCHANGE", ""),
        help="bind the queue to this direct exchange by the queue's name (env EXCHANGE)",
    )
    p.add_argument(
        "--no-declare", action="store_true", help="do not declare the queue; it must exist"
    )
    p.add_argument(
        "--queue-type",
        choices=QUEUE_TYPES,
        default=os.environ.get("AMQP_QUEUE_TYPE") or None,
        help="declare the queue with this x-queue-type (env AMQP_QUEUE_TYPE, as the app)",
    )
    p.add_argument(
        "--report-every",
        type=float,
        default=float(os.environ.get("REPORT_EVERY", "10")),
        metavar="SECONDS",
        help="print the counts this often (env REPORT_EVERY; 0: only at exit)",
    )
    p.add_argument(
        "--ids-out",
        type=Path,
        default=os.environ.get("IDS_OUT") or None,
        metavar="FILE",
        help="at exit, write every message id seen to FILE, one per line (env IDS_OUT)",
    )
    p.add_argument("--prefetch", type=int, default=500)
    return p


async def _run(args: argparse.Namespace) -> Counts:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    consumer = DedupConsumer(
        args.amqp_url,
        args.queue,
        exchange=args.exchange,
        declare=not args.no_declare,
        queue_type=args.queue_type,
        prefetch=args.prefetch,
    )
    starting = asyncio.create_task(consumer.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
    else:
        starting.result()
    try:
        last = (loop.time(), 0)
        while not stop.is_set():
            if args.report_every > 0:
                try:
                    await asyncio.wait_for(stop.wait(), args.report_every)
                except TimeoutError:
                    pass
            else:
                await stop.wait()
            now, counts = loop.time(), consumer.counts()
            rate = (counts.total - last[1]) / max(now - last[0], 1e-9)
            last = (now, counts.total)
            if not stop.is_set():
                print(f"{time.strftime('%H:%M:%S')} {counts} rate={rate:.1f}/s", flush=True)
    finally:
        stopping.cancel()
        await consumer.close()
    counts = consumer.counts()
    print(f"final: {counts}", flush=True)
    if args.ids_out is not None:
        n = consumer.write_ids(args.ids_out)
        print(f"wrote {n} ids to {args.ids_out}", flush=True)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
