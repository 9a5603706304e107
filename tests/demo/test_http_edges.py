"""The demo app's edges over real HTTP: Hypercorn on a localhost port, a plain h11 client.

The broker is an address where nothing listens: every request here is refused or
accepted before any delivery, so none of them needs RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h11
import pytest

from demo_app import Config, create_app, producer_of, serve
from demo_app._serve import hypercorn_config

JSON = ("Content-Type", "application/json")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


@dataclass
class Server:
    port: int
    config: Config
    accepted: Any  # () -> int, the producer's accepted count

    async def request(
        self,
        method: str,
        target: str,
        *,
        headers: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        content_length: int | None = None,
    ) -> Reply:
        """One request on a connection of its own; ``content_length`` larger than the
        body announces more than is sent."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        client = h11.Connection(h11.CLIENT)
        length = len(body) if content_length is None else content_length
        all_headers = [("Host", "127.0.0.1"), ("Connection", "close"), *headers]
        if method == "POST":
            all_headers.append(("Content-Length", str(length)))
        try:
            writer.write(
                client.send(h11.Request(method=method, target=target, headers=all_headers))
            )
            if body:
                writer.write(client.send(h11.Data(data=body)))
            if content_length is None:
                writer.write(client.send(h11.EndOfMessage()))
            await writer.drain()
            response: h11.Response | None = None
            chunks: list[bytes] = []
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await asyncio.wait_for(reader.read(65536), 30))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        assert response is not None
        headers_out = {name.decode().lower(): value.decode() for name, value in response.headers}
        return Reply(response.status_code, headers_out, b"".join(chunks))

    async def publish(self, body: bytes, *, routing_key: str | None = None) -> Reply:
        target = "/messages" if routing_key is None else f"/messages?routing_key={routing_key}"
        return await self.request("POST", target, headers=[JSON], body=body)


@pytest.fixture
def edge_config(dead_amqp_url: str, tmp_path: Path) -> Config:
    return Config(
        amqp_url=dead_amqp_url,
        routing_key="orders",
        allowed_routing_keys=frozenset({"invoices"}),
        spill_path=str(tmp_path / "spill.db"),
        fallback_dir=str(tmp_path),
        max_message_size=100_000,
        close_timeout=1.0,
        read_timeout=1,
    )


@pytest.fixture
async def server(edge_config: Config) -> AsyncIterator[Server]:
    """The app served by Hypercorn on a free localhost port, for the length of the test."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    app = create_app(edge_config)
    stop = asyncio.Event()
    serving = asyncio.create_task(
        serve(app, edge_config, bind=f"fd://{sock.detach()}", shutdown_trigger=stop.wait)
    )
    try:
        yield Server(port, edge_config, lambda: producer_of(app).stats().accepted)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)


async def test_a_json_body_is_accepted(server: Server) -> None:
    reply = await server.publish(b'{"order": 1}')
    assert reply.status == 202
    assert reply.json()["routing_key"] == "orders"
    assert server.accepted() == 1


async def test_oversized_body_is_413(server: Server) -> None:
    # Read, then refused by publish() for its size.
    reply = await server.publish(json.dumps({"pad": "x" * 100_000}).encode())
    assert reply.status == 413
    assert reply.json()["error"] == "message_too_large"
    assert reply.json()["limit"] == 100_000
    # Announced far over the limit: refused before the body is read (only part is sent).
    reply = await server.request(
        "POST", "/messages", headers=[JSON], body=b'{"pad": "', content_length=10_000_000
    )
    assert reply.status == 413
    assert reply.json()["error"] == "message_too_large"
    assert server.accepted() == 0


async def test_deeply_nested_json_is_400(server: Server) -> None:
    depth = 40_000  # within the size limit, far past any recursion limit
    reply = await server.publish(b"[" * depth + b"]" * depth)
    assert reply.status == 400
    assert reply.json() == {"error": "invalid_json", "detail": "body is nested too deeply"}
    assert server.accepted() == 0


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_are_not_json(server: Server, constant: bytes) -> None:
    reply = await server.publish(b'{"x": ' + constant + b"}")
    assert reply.status == 400
    body = reply.json()
    assert body["error"] == "invalid_json"
    assert constant.decode() in body["detail"]
    assert server.accepted() == 0


@pytest.mark.parametrize(
    "content_type",
    [
        # What a cross-site HTML form can send without a preflight.
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/plain",
        None,
    ],
)
async def test_only_application_json_is_published(server: Server, content_type: str | None) -> None:
    headers = [] if content_type is None else [("Content-Type", content_type)]
    reply = await server.request("POST", "/messages", headers=headers, body=b'{"order": 1}')
    assert reply.status == 415
    assert reply.json()["error"] == "unsupported_media_type"
    assert server.accepted() == 0


async def test_json_with_a_charset_is_accepted(server: Server) -> None:
    reply = await server.request(
        "POST",
        "/messages",
        headers=[("Content-Type", "application/json; charset=utf-8")],
        body=b"[1]",
    )
    assert reply.status == 202


async def test_routing_keys_outside_the_allowlist_are_403(server: Server) -> None:
    assert (await server.publish(b"{}", routing_key="invoices")).status == 202
    assert (await server.publish(b"{}", routing_key="orders")).status == 202
    reply = await server.publish(b"{}", routing_key="amq.rabbitmq.trace")
    assert reply.status == 403
    assert reply.json()["error"] == "routing_key_not_allowed"
    assert reply.json()["allowed"] == ["invoices", "orders"]
    assert server.accepted() == 2


async def test_html_carries_security_headers(server: Server) -> None:
    reply = await server.request("GET", "/")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    policy = reply.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";")[0]
    assert "'sha256-" in policy
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "no-referrer"


async def test_json_responses_are_not_sniffed(server: Server) -> None:
    reply = await server.request("GET", "/health")
    assert reply.status == 200
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in reply.headers


async def test_a_stalled_request_is_cut_off(server: Server) -> None:
    """A client that announces a body and stops sending is disconnected after
    READ_TIMEOUT (1s here); without it Hypercorn would wait for ever."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    try:
        rest = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert rest == b""  # closed, and nothing published
    assert server.accepted() == 0


def test_hypercorn_gets_the_read_timeout(edge_config: Config) -> None:
    assert hypercorn_config(edge_config).read_timeout == 1
    assert hypercorn_config(replace(edge_config, read_timeout=45)).read_timeout == 45
