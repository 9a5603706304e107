"""Fixtures for tests against the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from aioproducer import Backoff, Producer, SQLiteStore, Store
from tests.broker import AMQP_URL
from tests.proxy import TcpProxy

ProducerFactory = Callable[..., Producer]

#: Quick retries, so the fault tests recover within seconds.
FAST = {
    "spill_after": 1.0,
    "replay_interval": 0.2,
    "confirm_timeout": 2.0,
    "reconnect_backoff": Backoff(base=0.05, cap=0.5),
    "retry_backoff": Backoff(base=0.1, cap=0.5),
    "store_backoff": Backoff(base=0.05, cap=0.5),
}


@pytest.fixture
async def make_producer(tmp_path: Path) -> AsyncIterator[ProducerFactory]:
    """Build producers with quick retries on a store in ``tmp_path``; all closed at the end."""
    made: list[Producer] = []

    def make(
        url: str | Sequence[str] = AMQP_URL, *, store: Store | None = None, **kwargs: Any
    ) -> Producer:
        options: dict[str, Any] = {**FAST, "fallback_dir": tmp_path, **kwargs}
        producer = Producer(url, store=store or SQLiteStore(tmp_path / "spill.db"), **options)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        await producer.close(timeout=5)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


def proxied_url(proxy: TcpProxy, *, heartbeat: int | None = None) -> str:
    url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    return url if heartbeat is None else f"{url}?heartbeat={heartbeat}"
