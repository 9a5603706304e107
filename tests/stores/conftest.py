"""Fixtures for the store contract suite: every store, on a fresh backing each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aioproducer._message import Message
from aioproducer._stores._base import Store

from .backends import (
    MONGO_BACKEND,
    Backend,
    FakeClock,
    mongo_backend_line,
    open_mongo_backend,
    open_sqlite_backend,
)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(mongo_backend_line())


@pytest.fixture
def clock() -> FakeClock:
    """The wall clock of every store a test makes; it moves only when told to."""
    return FakeClock()


@pytest.fixture(params=["sqlite", MONGO_BACKEND])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Backend]:
    opened = (
        open_sqlite_backend(tmp_path / "spill.db", clock)
        if request.param == "sqlite"
        else open_mongo_backend(clock)
    )
    async with opened as backend:
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


@pytest.fixture
async def mongo_backend(clock: FakeClock) -> AsyncIterator[Backend]:
    """The MongoDB backend alone: the real server if configured, else the stand-in."""
    async with open_mongo_backend(clock) as backend:
        yield backend
