"""Fixtures for the store tests: every store, on a fresh backing each test.

MongoDB runs as nx-27017 (one server per test module for the contract suite, one
per test where a test kills, freezes or restarts it), and as a real server too
when ``AIOPRODUCER_TEST_MONGO_URL`` is set.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aioproducer._message import Message
from aioproducer._stores._base import Store

from .backends import (
    MONGO_BACKENDS,
    MONGO_NX,
    MONGO_REAL,
    MONGO_URL,
    Backend,
    FakeClock,
    mongo_backend_line,
    open_mongo_backend,
    open_sqlite_backend,
)
from .nx import NxServer, nx_executable

#: Figures the tests measure (never assert): the longest store call seen, by case.
FIGURES: dict[str, float] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(mongo_backend_line())
    for name, value in sorted(FIGURES.items()):
        terminalreporter.write_line(f"store figure: {name} = {value:g}")


@pytest.fixture
def figures() -> dict[str, float]:
    """Record a figure: the largest value given under one name is reported."""
    return FIGURES


def _need_nx() -> None:
    if nx_executable() is None:
        pytest.skip(f"{MONGO_NX}: pip install nx-27017")


@pytest.fixture(scope="module")
def nx_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NxServer]:
    """One nx-27017 server for a test module; each test uses a database of its own."""
    _need_nx()
    server = NxServer(tmp_path_factory.mktemp("nx-27017"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


def collect_driver_leaks() -> None:
    """Collect, with their warning ignored, the sockets PyMongo's async driver leaks.

    The driver leaks the socket of a connect it cancels (PYTHON-5867): closing a
    client while its monitor connects, or a server killed or frozen mid-connect. The
    socket's ResourceWarning comes whenever it is collected, which under
    warnings-as-errors fails whatever test runs then; collected here, after each
    store test, it is reported nowhere.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture(autouse=True)
def driver_leaks_collected() -> Iterator[None]:
    yield
    collect_driver_leaks()


@pytest.fixture
def nx_server(tmp_path: Path) -> Iterator[NxServer]:
    """An nx-27017 server of this test's own, to kill, freeze or restart."""
    _need_nx()
    server = NxServer(tmp_path / "nx-27017")
    server.start()
    try:
        yield server
    finally:
        server.kill()
        collect_driver_leaks()


@pytest.fixture
def clock() -> FakeClock:
    """The wall clock of every store a test makes; it moves only when told to."""
    return FakeClock()


async def _open(
    request: pytest.FixtureRequest, name: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    if name == "sqlite":
        opened = open_sqlite_backend(tmp_path / "spill.db", clock)
    elif name == MONGO_REAL:
        assert MONGO_URL is not None
        opened = open_mongo_backend(MONGO_REAL, MONGO_URL, clock)
    else:
        server: NxServer = request.getfixturevalue("nx_module")
        opened = open_mongo_backend(MONGO_NX, server.url, clock)
    async with opened as backend:
        yield backend


@pytest.fixture(params=["sqlite", *MONGO_BACKENDS])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    async for backend in _open(request, request.param, tmp_path, clock):
        yield backend


@pytest.fixture(params=MONGO_BACKENDS)
async def mongo_backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    """A MongoDB backend alone: nx-27017, and the real server if configured."""
    async for backend in _open(request, request.param, tmp_path, clock):
        yield backend


@pytest.fixture
async def store(backend: Backend) -> Store:
    return backend.make()


class Messages:
    """Builds messages with unique ids, accepted at the backend clock's time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.prefix = os.urandom(4).hex()
        self.serial = 0

    def __call__(self, **fields: Any) -> Message:
        self.serial += 1
        values: dict[str, Any] = {
            "message_id": f"{self.prefix}-{self.serial:05d}",
            "body": f"body {self.serial}".encode(),
            "exchange": "",
            "routing_key": "orders",
            "content_type": "application/octet-stream",
            "timestamp": self.clock() + self.serial / 1000,
        }
        values.update(fields)
        return Message(**values)

    def many(self, n: int, **fields: Any) -> list[Message]:
        return [self(**fields) for _ in range(n)]


@pytest.fixture
def messages(clock: FakeClock) -> Messages:
    return Messages(clock)
