"""Fixtures for the demo app's tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from quart.typing import TestClientProtocol as Client

from demo_app import Config, create_app
from tests.broker import AMQP_URL


@pytest.fixture
def config(queue: str, tmp_path: Path) -> Config:
    """The app's settings for one test: the test's fresh queue, a store in ``tmp_path``."""
    return Config(
        amqp_url=AMQP_URL,
        routing_key=queue,
        spill_path=str(tmp_path / "spill.db"),
        fallback_dir=str(tmp_path),
        spill_after=1.0,
        close_timeout=5.0,
    )


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    """A test client of an app that is serving (its lifespan runs around the test)."""
    app = create_app(config)
    async with app.test_app() as test_app:
        yield test_app.test_client()


@pytest.fixture
def dead_amqp_url() -> Iterator[str]:
    """An AMQP URL where nothing listens: a port held bound, never listening, refuses."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"amqp://guest:guest@127.0.0.1:{port}/"
