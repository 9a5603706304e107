"""Command line: ``python -m aioproducer``, for stores and the files written on close.

python -m aioproducer count  --sqlite spill.db
python -m aioproducer import aioproducer-unsent-host-1234-ab12cd-...jsonl --sqlite spill.db
python -m aioproducer import FILE --mongo mongodb://db/ --database aioproducer --collection spill
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ._fallback import read_messages
from ._stores._base import Store
from ._stores._sqlite import SQLiteStore


def _store(args: argparse.Namespace) -> Store:
    if args.mongo:
        from ._stores._mongo import MongoStore

        return MongoStore.from_url(args.mongo, database=args.database, collection=args.collection)
    return SQLiteStore(args.sqlite)


async def _import(args: argparse.Namespace) -> int:
    messages = list(read_messages(Path(args.file)))
    now = time.time()
    for message in messages:
        message.due_at = now
    store = _store(args)
    try:
        for start in range(0, len(messages), 500):
            await store.put(messages[start : start + 500])
        total = await store.count()
    finally:
        await store.close()
    print(f"imported {len(messages)} messages from {args.file}; the store holds {total}")
    return 0


async def _count(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        print(await store.count())
    finally:
        await store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m aioproducer", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser(
        "import", help="put a file written on close into a store, to be replayed"
    )
    importing.add_argument("file", help="an aioproducer-unsent-*.jsonl file")
    counting = commands.add_parser("count", help="how many messages a store holds")
    for sub in (importing, counting):
        where = sub.add_mutually_exclusive_group()
        where.add_argument("--sqlite", default="aioproducer-spill.db", help="SQLite store file")
        where.add_argument("--mongo", metavar="URL", help="MongoDB URL (MongoStore)")
        sub.add_argument("--database", default="aioproducer")
        sub.add_argument("--collection", default="spill")
    args = parser.parse_args(argv)
    run = _import if args.command == "import" else _count
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
