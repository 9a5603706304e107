"""The demo app without a broker: it keeps accepting, spills, and answers 503 only when
memory is full and the store refuses too."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from aioproducer import Backlog, KeyCount, Message, Store, StoreError
from demo_app import Config, create_app, producer_of
from tests.waiting import wait_until


class RefusingStore:
    """A store whose database is down: every write fails."""

    max_body_size = 1 << 20

    def __init__(self) -> None:
        self.puts = 0

    async def put(self, messages: Sequence[Message]) -> None:
        self.puts += 1
        raise StoreError("the store is down (test stub)")

    async def claim(self, owner: str, *, limit: int, lease: float) -> list[Message]:
        raise StoreError("the store is down (test stub)")

    async def ack(self, message_ids: Sequence[str]) -> None:
        raise StoreError("the store is down (test stub)")

    async def release(self, owner: str, messages: Sequence[Message]) -> None:
        raise StoreError("the store is down (test stub)")

    async def count(self) -> int:
        raise StoreError("the store is down (test stub)")

    async def backlog(self) -> Backlog:
        raise StoreError("the store is down (test stub)")

    async def scan(self, *, dead: bool | None = None, batch: int = 500) -> AsyncIterator[Message]:
        raise StoreError("the store is down (test stub)")
        yield  # an async generator, like a store's

    async def get(self, message_id: str) -> Message | None:
        raise StoreError("the store is down (test stub)")

    async def by_key(self) -> list[KeyCount]:
        raise StoreError("the store is down (test stub)")

    async def requeue(
        self,
        message_ids: Sequence[str],
        *,
        exchange: str | None = None,
        routing_key: str | None = None,
    ) -> int:
        raise StoreError("the store is down (test stub)")

    async def purge_dead(self, message_ids: Sequence[str] | None = None) -> int:
        raise StoreError("the store is down (test stub)")

    async def close(self) -> None:
        return None


def test_refusing_store_is_a_store() -> None:
    assert isinstance(RefusingStore(), Store)


async def test_buffer_full_is_503_with_retry_after(dead_amqp_url: str, tmp_path: Path) -> None:
    store = RefusingStore()
    config = Config(
        amqp_url=dead_amqp_url,
        routing_key="nowhere",
        max_buffer=3,
        spill_after=0.1,
        close_timeout=0.1,
        fallback_dir=str(tmp_path),
    )
    app = create_app(config, store=store)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for n in range(3):
            response = await client.post("/messages", json={"n": n})
            assert response.status_code == 202
        await wait_until(lambda: store.puts > 0, what="a spill the store refuses")

        response = await client.post("/messages", json={"n": 3})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        body = await response.get_json()
        assert body["error"] == "buffer_full"
        assert body["capacity"] == 3

        health = await (await client.get("/health")).get_json()
        assert health["status"] == "disconnected"
        assert health["buffered"] == 3
        assert health["store_backlog"] is None
        assert "the store is down" in health["store_error"]
        assert producer_of(app).stats().accepted == 3
    # Closed with the store down: what was accepted went to a local file.
    assert unsent_files(tmp_path)


def unsent_files(folder: Path) -> list[Path]:
    return list(folder.glob("aioproducer-unsent-*.jsonl"))


async def test_without_a_broker_messages_are_accepted_and_spilled(
    dead_amqp_url: str, tmp_path: Path
) -> None:
    config = Config(
        amqp_url=dead_amqp_url,
        routing_key="nowhere",
        spill_path=str(tmp_path / "spill.db"),
        spill_after=0.1,
        close_timeout=0.1,
        fallback_dir=str(tmp_path),
    )
    app = create_app(config)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for n in range(20):
            response = await client.post("/messages", json={"n": n})
            assert response.status_code == 202
        producer = producer_of(app)
        await wait_until(lambda: producer.stats().spilled == 20, what="every message spilled")
        health = await (await client.get("/health")).get_json()
        assert health["status"] == "disconnected"
        assert health["store_backlog"] == 20
        assert health["counters"]["spilled"] == 20
