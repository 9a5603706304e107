"""Fixtures shared by every test: the real broker, random queues, temporary stores."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from tests.broker import AMQP_URL
from tests.stores.backends import mongo_backend_line


def pytest_report_header() -> str:
    """Say up front which MongoDB the Mongo tests use: a real server or the stand-in."""
    return mongo_backend_line()


@pytest.fixture
def amqp_url() -> str:
    return AMQP_URL


@pytest.fixture
async def amqp() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    """A robust connection the test itself uses to declare and read queues."""
    connection = await aio_pika.connect_robust(AMQP_URL, reconnect_interval=0.5)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def queue(amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[str]:
    """A fresh durable queue with a random name, bound to the default exchange.

    Durable, so it survives the broker restarts of the fault tests; deleted afterwards.
    """
    name = f"test-{os.urandom(6).hex()}"
    channel = await amqp.channel()
    await channel.declare_queue(name, durable=True)
    try:
        yield name
    finally:
        try:
            await channel.queue_delete(name)
        finally:
            await channel.close()


@pytest.fixture
def spill_path(tmp_path: Path) -> Path:
    return tmp_path / "spill.db"
