"""The store under the soak: SQLite files, or MongoStore on an nx-27017 server it runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aioproducer import MongoStore, SQLiteStore, Store, StoreError
from tests.net import free_port

from ._faults import NxServer, RestoreFailed, SQLiteLock
from ._plan import BROKER_AND_STORE, STORE_FREEZE, STORE_KILL, STORE_LOCK

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

log = logging.getLogger("soak.store")

MONGO_TIMEOUT_MS = 5_000
"""PyMongo's operation timeout for the soak's client: bounds each call to a frozen server."""


def nx_executable() -> str:
    """The nx-27017 command beside this Python, or on PATH."""
    beside = Path(sys.executable).parent / "nx-27017"
    found = str(beside) if beside.exists() else shutil.which("nx-27017")
    if found is None:
        raise FileNotFoundError("nx-27017 is not installed: pip install nx-27017")
    return found


class SoakStore:
    """Makes the stores of a run, and breaks and mends what is behind them.

    Every producer of the run gets a fresh store object on the same database
    (a producer closes its store when it closes).
    """

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind = kind
        self.folder = folder
        self.path = folder / "spill.db"
        self._lock = SQLiteLock(self.path)
        self._server: NxServer | None = None
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._database = f"soak_{os.urandom(4).hex()}"
        if kind not in ("nx", "sqlite"):
            raise ValueError(f"unknown store {kind!r}")

    @property
    def label(self) -> str:
        if self._server is not None:
            return f"MongoStore on nx-27017 {self._server.url} ({self._database}.spill)"
        return f"SQLiteStore {self.path}"

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "sqlite":
            return
        from pymongo import AsyncMongoClient

        self._server = NxServer(nx_executable(), self.folder / "nx-27017", free_port())
        await self._server.start()
        self._client = AsyncMongoClient(
            self._server.url, timeoutMS=MONGO_TIMEOUT_MS, appname="aioproducer-soak"
        )

    def new_store(self) -> Store:
        if self._client is None:
            # Unavailable means locked for longer than this, not slow.
            return SQLiteStore(self.path, busy_timeout=1.0)
        # nx-27017 runs no update pipelines: leases on this host's clock, not the server's.
        return MongoStore(self._client[self._database]["spill"], clock=time.time)

    async def count(self, timeout: float = 10.0) -> int | None:
        """Messages in the store, or ``None`` when it cannot tell within ``timeout``."""
        store = self.new_store()
        try:
            return await asyncio.wait_for(store.count(), timeout)
        except (TimeoutError, StoreError) as exc:
            log.debug("store count failed: %s", exc)
            return None
        finally:
            with contextlib.suppress(TimeoutError, StoreError):
                await asyncio.wait_for(store.close(), timeout)

    async def break_(self, kind: str) -> None:
        """Make the store unavailable the way ``kind`` says."""
        if kind == STORE_LOCK or (kind == BROKER_AND_STORE and self._server is None):
            await self._lock.lock()
        elif self._server is None:
            raise ValueError(f"{kind} needs --store nx")
        elif kind in (STORE_KILL, BROKER_AND_STORE):
            await self._server.kill()
        elif kind == STORE_FREEZE:
            self._server.freeze()
        else:
            raise ValueError(f"{kind} is not a store fault")

    async def restore(self) -> None:
        """Unlock, thaw or restart; raise :class:`RestoreFailed` if it cannot."""
        await self._lock.restore()
        if self._server is not None:
            try:
                await self._server.restore()
            except OSError as exc:
                raise RestoreFailed(f"nx-27017: {exc}") from exc

    async def stop(self) -> None:
        await self._lock.restore()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._server is not None:
            await self._server.stop()
