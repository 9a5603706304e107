"""The demo app's endpoints, through Quart's test client, against the real broker."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aio_pika.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families
from quart.typing import TestClientProtocol as Client

from demo_app import Config, create_app, producer_of
from demo_app.consumer import DedupConsumer
from tests.broker import AMQP_URL, wait_for_ids
from tests.waiting import wait_until

pytestmark = pytest.mark.broker


async def json_of(response: Any) -> dict[str, Any]:
    body = await response.get_json()
    assert isinstance(body, dict)
    return body


async def test_post_publishes_the_json_body(
    client: Client, amqp: aio_pika.abc.AbstractRobustConnection, queue: str
) -> None:
    response = await client.post("/messages", json={"order": 1, "note": "ünïcode"})
    assert response.status_code == 202
    message_id = (await json_of(response))["message_id"]

    [received] = await wait_for_ids(amqp, queue, {message_id}, timeout=30)
    assert json.loads(received.body) == {"order": 1, "note": "ünïcode"}
    assert received.content_type == "application/json"
    assert received.delivery_mode == 2


@pytest.fixture
async def other_queue(amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[str]:
    name = f"test-{os.urandom(6).hex()}"
    channel = await amqp.channel()
    await channel.declare_queue(name, durable=True)
    try:
        yield name
    finally:
        await channel.queue_delete(name)
        await channel.close()


async def test_routing_key_can_be_overridden_within_the_allowlist(
    config: Config,
    amqp: aio_pika.abc.AbstractRobustConnection,
    other_queue: str,
) -> None:
    allowing = Config(**{**_fields(config), "allowed_routing_keys": frozenset({other_queue})})
    app = create_app(allowing)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.post(
            "/messages", json=[1, 2, 3], query_string={"routing_key": other_queue}
        )
        assert response.status_code == 202
        body = await json_of(response)
        assert body["routing_key"] == other_queue
        [received] = await wait_for_ids(amqp, other_queue, {body["message_id"]}, timeout=30)
        assert json.loads(received.body) == [1, 2, 3]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"{not json", "body is not JSON"),
        (b"", "body is not JSON"),
        (b'{"a": "\xff"}', "body is not UTF-8"),
    ],
)
async def test_bad_json_is_400(client: Client, data: bytes, detail: str) -> None:
    response = await client.post(
        "/messages", data=data, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    body = await json_of(response)
    assert body["error"] == "invalid_json"
    assert body["detail"].startswith(detail)


async def test_routing_key_outside_the_allowlist_is_403(client: Client) -> None:
    response = await client.post("/messages", json={}, query_string={"routing_key": "k" * 300})
    assert response.status_code == 403
    assert (await json_of(response))["error"] == "routing_key_not_allowed"


async def test_oversized_body_is_413(config: Config) -> None:
    app = create_app(Config(**{**_fields(config), "max_message_size": 64}))
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.post("/messages", json={"pad": "x" * 100})
        assert response.status_code == 413
        body = await json_of(response)
        assert body["error"] == "message_too_large"
        assert body["limit"] == 64
        assert body["size"] > 64

        # Far past the limit, the body is not even read: still a 413 with the limit.
        response = await client.post("/messages", json={"pad": "x" * 200_000})
        assert response.status_code == 413
        body = await json_of(response)
        assert (body["error"], body["limit"]) == ("message_too_large", 64)
        assert producer_of(app).stats().accepted == 0


def _fields(config: Config) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


async def test_health_reports_the_producer(config: Config) -> None:
    app = create_app(config)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        producer = producer_of(app)
        await wait_until(lambda: producer.stats().connected, what="the producer's connection")
        response = await client.post("/messages", json={"n": 1})
        assert response.status_code == 202
        assert await producer.flush(timeout=30)

        response = await client.get("/health")
        assert response.status_code == 200
        health = await json_of(response)
    assert health["status"] == "connected"
    assert health["state"] == "running"
    assert health["connected"] is True
    assert health["blocked"] is False
    assert health["buffered"] == 0
    assert health["in_flight"] == 0
    assert health["store_backlog"] == 0
    assert health["store_error"] is None
    assert health["counters"]["accepted"] == 1
    assert health["counters"]["confirmed"] == 1
    assert health["counters"]["spilled"] == 0
    assert {"replayed", "returned", "nacked", "connections"} <= health["counters"].keys()


async def test_metrics_are_prometheus_text(config: Config) -> None:
    app = create_app(config)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        producer = producer_of(app)
        for n in range(3):
            assert (await client.post("/messages", json={"n": n})).status_code == 202
        not_json = await client.post(
            "/messages", data=b"nope", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        assert await producer.flush(timeout=30)

        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.content_type.startswith("text/plain")
        text = await response.get_data(as_text=True)

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["aioproducer_messages_accepted_total", ()] == 3
    assert samples["aioproducer_messages_confirmed_total", ()] == 3
    assert samples["aioproducer_messages_spilled_total", ()] == 0
    assert samples["aioproducer_buffered", ()] == 0
    assert samples["aioproducer_connected", ()] == 1
    assert samples["aioproducer_store_backlog", ()] == 0
    assert samples["aioproducer_state", (("aioproducer_state", "running"),)] == 1
    assert samples["demo_publish_requests_total", (("outcome", "accepted"),)] == 3
    assert samples["demo_publish_requests_total", (("outcome", "invalid_json"),)] == 1


async def test_dashboard_page_is_self_contained(client: Client) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.content_type.startswith("text/html")
    page = await response.get_data(as_text=True)
    assert 'id="chart"' in page
    # No CDN, no external asset: nothing is fetched from another origin.
    assert "http://" not in page
    assert "https://" not in page
    assert "<script src" not in page
    assert '<link rel="stylesheet"' not in page


@pytest.fixture
async def quorum_name(amqp: aio_pika.abc.AbstractRobustConnection) -> AsyncIterator[str]:
    """A queue name nothing has declared yet; the queue is deleted afterwards."""
    name = f"test-quorum-{os.urandom(6).hex()}"
    try:
        yield name
    finally:
        channel = await amqp.channel()
        await channel.queue_delete(name)
        await channel.close()


async def test_queue_type_from_the_config_is_declared(
    config: Config, amqp: aio_pika.abc.AbstractRobustConnection, quorum_name: str
) -> None:
    quorum = Config(**{**_fields(config), "routing_key": quorum_name, "queue_type": "quorum"})
    app = create_app(quorum)
    async with (
        app.test_app() as test_app,
        DedupConsumer(AMQP_URL, quorum_name, queue_type="quorum") as consumer,
    ):
        response = await test_app.test_client().post("/messages", json={"n": 1})
        assert response.status_code == 202
        message_id = (await json_of(response))["message_id"]
        # The consumer declared the same queue, of the same type, and reads it.
        assert await consumer.wait_for({message_id}, timeout=30) == set()

    # The queue is a quorum queue: declaring it as a classic one is refused.
    channel = await amqp.channel()
    with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed, match="x-queue-type"):
        await channel.declare_queue(
            quorum_name, durable=True, arguments={"x-queue-type": "classic"}
        )
