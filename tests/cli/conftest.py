"""Fixtures for the command-line tests: a store of each kind, named as the CLI names it.

SQLite (a file in ``tmp_path``) and MongoDB through PyMongo on nx-27017 (one server
for the module, a database per test); MongoDB leases run on the host's clock, which
is what nx-27017 supports.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aioproducer import MongoStore, SQLiteStore, Store
from aioproducer._cli import main
from tests.stores.nx import NxServer, nx_executable


@dataclass
class CliStore:
    """A store, as CLI arguments and as an object the test itself uses."""

    kind: str
    args: list[str]
    path: Path | None = None
    url: str = ""
    database: str = ""

    def open(self) -> Store:
        if self.path is not None:
            return SQLiteStore(self.path)
        return MongoStore.from_url(self.url, self.database, "spill", clock=time.time)


@dataclass
class Run:
    """What one CLI run printed and returned."""

    status: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture(scope="module")
def nx_cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NxServer]:
    if nx_executable() is None:
        pytest.skip("nx-27017: pip install nx-27017")
    server = NxServer(tmp_path_factory.mktemp("nx-27017"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["sqlite", "mongo"])
async def cli_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CliStore]:
    if request.param == "sqlite":
        path = tmp_path / "spill.db"
        store = SQLiteStore(path)
        await store.count()  # the CLI opens existing files only
        await store.close()
        yield CliStore("sqlite", ["--sqlite", str(path)], path=path)
        return
    server: NxServer = request.getfixturevalue("nx_cli")
    database = f"cli_{os.urandom(6).hex()}"
    yield CliStore(
        "mongo",
        ["--mongo", server.url, "--database", database, "--lease-clock", "host"],
        url=server.url,
        database=database,
    )
    from pymongo import AsyncMongoClient

    admin: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(server.url)
    try:
        await admin.drop_database(database)
    finally:
        await admin.close()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the CLI in a thread of its own (it runs its own event loop), capturing output."""

    async def run(*argv: str) -> Run:
        capsys.readouterr()
        status = await asyncio.to_thread(main, list(argv))
        captured = capsys.readouterr()
        return Run(status, captured.out, captured.err)

    return run
