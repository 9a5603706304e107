"""The Flask example's answers, through Flask's test client, with no broker listening."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from aioproducer import ThreadedProducer
from demo_app import Config
from demo_app.flask_example import create_app, make_producer


@pytest.fixture
def flask_config(dead_amqp_url: str, tmp_path: Path) -> Config:
    return Config(
        amqp_url=dead_amqp_url,
        allowed_routing_keys=frozenset({"orders"}),
        spill_path=str(tmp_path / "spill.db"),
        fallback_dir=str(tmp_path),
        spill_after=60.0,
        max_buffer=2,
        max_message_size=100,
        close_timeout=1.0,
    )


@pytest.fixture
def producer(flask_config: Config) -> Iterator[ThreadedProducer]:
    made = make_producer(flask_config)
    yield made
    made.close(timeout=1.0)


@pytest.fixture
def client(producer: ThreadedProducer, flask_config: Config) -> FlaskClient:
    return create_app(producer, flask_config).test_client()


def test_first_request_starts_the_producer_and_is_accepted(
    client: FlaskClient, producer: ThreadedProducer
) -> None:
    answer = client.post("/messages?routing_key=orders", json={"order": 1})
    assert answer.status_code == 202
    assert answer.json is not None and answer.json["routing_key"] == "orders"
    assert producer.stats().accepted == 1
    health = client.get("/health").json
    assert health is not None
    # The broker is on a closed port: the latest connection error may change any moment.
    last_error = health.pop("last_error")
    assert last_error is None or ":***@" in last_error
    assert health == {
        "state": "running",
        "connected": False,
        "accepted": 1,
        "confirmed": 0,
        "spilled": 0,
        "replayed": 0,
        "buffered": 1,
    }


def test_bad_bodies_are_refused(client: FlaskClient, producer: ThreadedProducer) -> None:
    not_json = client.post("/messages", data=b"{nope", content_type="application/json")
    assert not_json.status_code == 400
    assert not_json.json is not None and not_json.json["error"] == "invalid_json"
    too_large = client.post("/messages", json={"pad": "x" * 200})
    assert too_large.status_code == 413
    assert too_large.json is not None and too_large.json["error"] == "message_too_large"
    assert producer.stats().accepted == 0


def test_full_memory_is_503_with_retry_after_and_closed_is_503(
    client: FlaskClient, producer: ThreadedProducer
) -> None:
    for n in range(2):
        assert client.post("/messages", json={"n": n}).status_code == 202
    full = client.post("/messages", json={"n": 2})
    assert full.status_code == 503
    assert full.headers["Retry-After"] == "60"
    assert full.json is not None and full.json["error"] == "buffer_full"
    producer.close(timeout=1.0)
    closed = client.post("/messages", json={"n": 3})
    assert closed.status_code == 503
    assert closed.json is not None and closed.json["error"] == "shutting_down"


def test_it_refuses_what_the_quart_demo_refuses(
    client: FlaskClient, producer: ThreadedProducer, flask_config: Config
) -> None:
    form = client.post("/messages", data={"order": "1"})
    assert (form.status_code, form.json and form.json["error"]) == (415, "unsupported_media_type")
    other_key = client.post("/messages?routing_key=secret", json={})
    assert other_key.status_code == 403
    assert other_key.json is not None and other_key.json["allowed"] == ["demo", "orders"]
    nan = client.post("/messages", data=b"[NaN]", content_type="application/json")
    assert (nan.status_code, nan.json and nan.json["error"]) == (400, "invalid_json")
    assert nan.headers["X-Content-Type-Options"] == "nosniff"
    roomy = replace(flask_config, max_message_size=100_000)
    deep = (
        create_app(producer, roomy)
        .test_client()
        .post("/messages", data=b"[" * 40_000 + b"]" * 40_000, content_type="application/json")
    )
    assert deep.status_code == 400
    assert deep.json == {"error": "invalid_json", "detail": "body is nested too deeply"}
    assert producer.stats().accepted == 0
