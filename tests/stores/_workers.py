"""Code that runs in child processes for the multi-process claim tests.

Kept apart from the test modules so a spawned child imports only what it needs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing.synchronize
from pathlib import Path

from aioproducer._stores._base import Store
from aioproducer._stores._mongo import MongoStore
from aioproducer._stores._sqlite import SQLiteStore

from .backends import MONGO_CLIENT_KWARGS, StoreSpec


def open_store(spec: StoreSpec) -> Store:
    kind, *args = spec
    if kind == "sqlite":
        (path,) = args
        return SQLiteStore(path)
    if kind == "mongo":
        url, database, collection = args
        return MongoStore.from_url(url, database, collection, **MONGO_CLIENT_KWARGS)
    raise ValueError(f"unknown store spec {spec!r}")


def claim_until_empty(
    spec: StoreSpec,
    owner: str,
    start: multiprocessing.synchronize.Barrier,
    out: str,
    limit: int,
) -> None:
    """Claim under a long lease until nothing is left; write the ids claimed to ``out``.

    The store is opened first, then all processes wait at ``start``, so that their
    claims overlap as much as they can.
    """
    claimed = asyncio.run(_claim_until_empty(spec, owner, start, limit))
    Path(out).write_text(json.dumps(claimed))


async def _claim_until_empty(
    spec: StoreSpec, owner: str, start: multiprocessing.synchronize.Barrier, limit: int
) -> list[str]:
    store = open_store(spec)
    claimed: list[str] = []
    try:
        await store.count()
        await asyncio.to_thread(start.wait, 60)
        while batch := await store.claim(owner, limit=limit, lease=600.0):
            claimed.extend(m.message_id for m in batch)
    finally:
        await store.close()
    return claimed
