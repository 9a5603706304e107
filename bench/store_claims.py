"""Claims of several replaying processes sharing one store, and a claim behind many
held-back messages.

``processes``: N processes, each with C claiming tasks, drain one MongoDB collection
(nx-27017 started here unless ``--mongo URL`` is given) as replayers do: claim, ack,
again. Prints messages per second and the claims that came back empty while the
store still held messages::

    .venv/bin/python -m bench.store_claims processes --messages 4000

``sqlite-held``: the time of one SQLite claim of 100 due messages behind 200,000
messages that are held back (due in an hour) and accepted earlier::

    .venv/bin/python -m bench.store_claims sqlite-held --held 200000

Both use only the store API, so they also run on earlier versions of the library
(put its package first on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aioproducer import Message, SQLiteStore
from aioproducer._stores import _mongo
from tests.stores._workers import replay_until_drained
from tests.stores.backends import StoreSpec
from tests.stores.nx import NxServer


def _without_id_in_the_index() -> None:
    """Versions whose claim index held ``_id`` cannot insert on nx-27017; the key
    bought nothing, so it is dropped for them."""
    keys = getattr(_mongo, "CLAIM_INDEX_KEYS", [])
    _mongo.CLAIM_INDEX_KEYS = [key for key in keys if key[0] != "_id"]


def _replayer(
    spec: StoreSpec,
    owner: str,
    start: multiprocessing.synchronize.Barrier,
    out: str,
    claimers: int,
    limit: int,
) -> None:
    _without_id_in_the_index()
    replay_until_drained(spec, owner, start, out, claimers, limit)


def _messages(n: int, *, timestamp: float, due_at: float, prefix: str) -> list[Message]:
    return [
        Message(
            message_id=f"{prefix}-{i:07d}",
            body=b"x" * 256,
            exchange="",
            routing_key="orders",
            content_type="application/octet-stream",
            timestamp=timestamp + i / 1e6,
            due_at=due_at,
        )
        for i in range(n)
    ]


async def _fill_mongo(url: str, database: str, n: int) -> None:
    _without_id_in_the_index()
    store = _mongo.MongoStore.from_url(url, database, "spill", clock=time.time)
    try:
        now = time.time()
        batch = _messages(n, timestamp=now - 60, due_at=now - 1, prefix="m")
        for start in range(0, n, 500):
            await store.put(batch[start : start + 500])
    finally:
        await store.close()


def processes(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.mongo
        if url is None:
            server = NxServer(Path(tmp) / "nx-27017")
            server.start()
            url = server.url
        database = f"bench_{os.urandom(4).hex()}"
        try:
            asyncio.run(_fill_mongo(url, database, args.messages))
            spec = ("mongo", url, database, "spill", "host-clock")
            context = multiprocessing.get_context("spawn")
            start = context.Barrier(args.processes)
            outs = [Path(tmp) / f"out-{i}.json" for i in range(args.processes)]
            procs = [
                context.Process(
                    target=_replayer,
                    args=(spec, f"proc-{i}", start, str(out), args.claimers, args.limit),
                )
                for i, out in enumerate(outs)
            ]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join()
            figures: list[dict[str, Any]] = [json.loads(out.read_text()) for out in outs]
        finally:
            if server is not None:
                server.kill()
    total = sum(f["messages"] for f in figures)
    seconds = max(f["seconds"] for f in figures)
    empty = sum(f["empty"] for f in figures)
    claims = sum(f["claims"] for f in figures)
    print(
        f"{args.processes} processes x {args.claimers} claimers, limit {args.limit}: "
        f"{total} messages in {seconds:.2f} s = {total / seconds:.0f} msg/s; "
        f"{claims} claims, {empty} empty while messages were held"
    )


async def sqlite_held(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "spill.db")
        now = time.time()
        held = _messages(args.held, timestamp=now - 3600, due_at=now + 3600, prefix="h")
        for start in range(0, len(held), 5000):
            await store.put(held[start : start + 5000])
        del held
        await store.put(_messages(100 * args.rounds, timestamp=now, due_at=now, prefix="d"))
        times = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            got = await store.claim("bench", limit=100, lease=600.0)
            times.append((time.perf_counter() - began) * 1000)
            assert len(got) == 100
        await store.close()
    print(
        f"claim of 100 behind {args.held} held-back rows: "
        f"median {statistics.median(times):.2f} ms, "
        f"max {max(times):.2f} ms over {args.rounds} claims"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("processes")
    p.add_argument("--mongo", default=None, help="a MongoDB URL instead of nx-27017")
    p.add_argument("--messages", type=int, default=4000)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--claimers", type=int, default=4)
    p.add_argument("--limit", type=int, default=20)
    s = sub.add_parser("sqlite-held")
    s.add_argument("--held", type=int, default=200_000)
    s.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    if args.command == "processes":
        processes(args)
    else:
        asyncio.run(sqlite_held(args))


if __name__ == "__main__":
    main()
