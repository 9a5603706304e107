"""The demo app while the broker is stopped: POST /messages keeps answering 202, and
every message arrives once the broker is back."""

from __future__ import annotations

import pytest

from demo_app import Config, create_app, producer_of
from tests.broker import broker_stopped, connection, wait_for_ids
from tests.waiting import store_is_empty, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.fault]


# Bounds: waits 60+60 and the app's, the broker's stop and start 180.
@pytest.mark.timeout(360)
async def test_app_keeps_accepting_while_the_broker_is_stopped(config: Config, queue: str) -> None:
    app = create_app(config)
    ids: set[str] = set()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        producer = producer_of(app)

        async def post(n: int) -> None:
            response = await client.post("/messages", json={"n": n})
            assert response.status_code == 202
            ids.add((await response.get_json())["message_id"])

        await post(0)
        async with broker_stopped():
            await wait_until(lambda: not producer.stats().connected, what="the disconnect")
            for n in range(1, 31):
                await post(n)
            await wait_until(
                lambda: producer.stats().spilled > 0, what="a spill while the broker is down"
            )
            health = await (await client.get("/health")).get_json()
            assert health["status"] == "disconnected"
            assert health["store_backlog"] > 0

        await wait_until(store_is_empty(producer.store), timeout=60, what="the replay")
        async with connection() as conn:
            received = await wait_for_ids(conn, queue, ids, timeout=60)
    assert {r.message_id for r in received} == ids
