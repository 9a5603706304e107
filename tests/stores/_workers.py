"""Code that runs in child processes for the multi-process claim tests and figures.

Kept apart from the test modules so a spawned child imports only what it needs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing.synchronize
import time
from pathlib import Path
from typing import Any

from aioproducer._stores._base import Store
from aioproducer._stores._mongo import MongoStore
from aioproducer._stores._sqlite import SQLiteStore

from .backends import StoreSpec


def open_store(spec: StoreSpec) -> Store:
    kind, *args = spec
    if kind == "sqlite":
        (path,) = args
        return SQLiteStore(path)
    if kind == "mongo":
        url, database, collection, clock = args
        if clock == "server-clock":
            return MongoStore.from_url(url, database, collection)
        return MongoStore.from_url(url, database, collection, clock=time.time)
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


def replay_until_drained(
    spec: StoreSpec,
    owner: str,
    start: multiprocessing.synchronize.Barrier,
    out: str,
    claimers: int,
    limit: int,
) -> None:
    """Run ``claimers`` tasks that claim and ack, as replayers do, until the store is
    empty; write to ``out`` what they got: messages, claims, and empty claims made
    while messages were still held."""
    figures = asyncio.run(_replay_until_drained(spec, owner, start, claimers, limit))
    Path(out).write_text(json.dumps(figures))


async def _replay_until_drained(
    spec: StoreSpec,
    owner: str,
    start: multiprocessing.synchronize.Barrier,
    claimers: int,
    limit: int,
) -> dict[str, Any]:
    store = open_store(spec)
    figures = {"messages": 0, "claims": 0, "empty": 0, "seconds": 0.0}

    async def claimer() -> None:
        while True:
            batch = await store.claim(owner, limit=limit, lease=600.0)
            figures["claims"] += 1
            if batch:
                figures["messages"] += len(batch)
                await store.ack([m.message_id for m in batch])
            elif await store.count() == 0:
                return
            else:
                figures["empty"] += 1

    try:
        await store.count()
        await asyncio.to_thread(start.wait, 60)
        began = time.monotonic()
        await asyncio.gather(*(claimer() for _ in range(claimers)))
        figures["seconds"] = time.monotonic() - began
    finally:
        await store.close()
    return figures
