"""Leave a backlog in a store: a producer pointed at a closed port accepts messages, then closes.

Nothing reaches a broker, so close() stores every message. Some of them may go to an
exchange that does not exist (``--to-missing``), which a replay then keeps as dead.

    .venv/bin/python -m bench.backlog --sqlite /tmp/spill.db -n 10000 --queue orders
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

from aioproducer import MongoStore, Producer, SQLiteStore, Store

CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/"


async def make_backlog(
    store: Store,
    count: int,
    *,
    routing_keys: list[str],
    to_missing: int = 0,
    missing_exchange: str = "billing.gone",
) -> list[str]:
    """Accept ``count`` messages (and ``to_missing`` to a missing exchange); return their ids."""
    # Nothing is ever confirmed here, so every message is stored on its deadline,
    # moments after it was accepted; close() then has nothing left to store.
    producer = Producer(
        CLOSED_PORT_URL,
        store=store,
        spill_after=0.05,
        max_buffer=count + to_missing + 1,
        connect_timeout=1.0,
    )
    await producer.start()
    ids = [
        await producer.publish(
            {"n": n, "note": "backlog"}, routing_key=routing_keys[n % len(routing_keys)]
        )
        for n in range(count)
    ]
    ids += [
        await producer.publish({"n": n}, exchange=missing_exchange, routing_key="invoices")
        for n in range(to_missing)
    ]
    flushed = await producer.flush(timeout=120)
    await producer.close(timeout=1.0)
    stats = producer.stats()
    if not flushed or stats.spilled != len(ids):
        raise RuntimeError(f"only {stats.spilled} of {len(ids)} messages reached the store")
    return ids


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", metavar="PATH")
    where.add_argument("--mongo", metavar="URL")
    parser.add_argument("--database", default="aioproducer")
    parser.add_argument("--collection", default="spill")
    parser.add_argument("-n", "--count", type=int, default=10_000)
    parser.add_argument("--queue", action="append", help="routing key(s), round robin")
    parser.add_argument("--to-missing", type=int, default=0)
    args = parser.parse_args()
    # The closed port is the point: keep the connection chatter out of the output.
    for name in ("aio_pika", "aiormq", "aioproducer.connection"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    store: Store = (
        SQLiteStore(args.sqlite)
        if args.sqlite
        else MongoStore.from_url(args.mongo, args.database, args.collection, clock=time.time)
    )
    started = time.perf_counter()
    ids = await make_backlog(
        store, args.count, routing_keys=args.queue or ["orders"], to_missing=args.to_missing
    )
    print(f"stored {len(ids)} messages in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    asyncio.run(main())
