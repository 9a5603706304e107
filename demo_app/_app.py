"""The Quart app: an HTTP front for one :class:`aioproducer.Producer`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from quart import Quart, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from aioproducer import (
    BufferFull,
    MessageTooLarge,
    Producer,
    ProducerClosed,
    SQLiteStore,
    Store,
)
from aioproducer.prometheus import register_collector

from ._checks import Refusal, refuse_body, refuse_request, too_large
from ._config import Config
from ._topology import declare_once, declare_until_done

log = logging.getLogger("demo_app")

#: Monotonic counters of ``stats()`` that /health reports under ``counters``.
_COUNTERS = (
    "accepted", "confirmed", "spilled", "replayed", "returned", "nacked",
    "channel_errors", "retried", "exported", "store_errors", "connections",
)  # fmt: skip

#: How long /health and /metrics wait for the store to count its backlog.
_COUNT_TIMEOUT = 2.0

_STATIC = Path(__file__).parent / "static"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(page: str) -> str:
    """The policy for ``page``: nothing from another origin, only its own inline scripts
    (by hash), requests to its own origin only, never framed."""
    digests = [hashlib.sha256(script.encode()).digest() for script in _INLINE_SCRIPT.findall(page)]
    hashes = " ".join(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests)
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + (hashes or "'none'"),
            # The page's <style> and the style attributes its script writes.
            "style-src 'unsafe-inline'",
            "img-src 'self'",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


#: Headers on every HTML response, beside its Content-Security-Policy.
HTML_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def make_store(config: Config) -> Store:
    """The store ``config`` asks for: MongoDB when ``MONGO_URL`` is set, else SQLite."""
    if config.mongo_url:
        from aioproducer import MongoStore

        return MongoStore.from_url(
            config.mongo_url,
            database=config.mongo_database,
            collection=config.mongo_collection,
            serverSelectionTimeoutMS=5000,
        )
    return SQLiteStore(config.spill_path)


class _State:
    """What the request handlers share with the app's lifespan."""

    producer: Producer | None = None
    started_at: float = 0.0


def producer_of(app: Quart) -> Producer:
    """The producer of a serving demo app."""
    producer = app.extensions.get("aioproducer")
    if not isinstance(producer, Producer):
        raise RuntimeError("the app is not serving")
    return producer


def create_app(config: Config | None = None, *, store: Store | None = None) -> Quart:
    """Build the demo app from ``config`` (the environment when ``None``).

    ``store`` overrides the store ``config`` asks for (tests pass stubs). The producer
    lives in ``@app.while_serving``: started before the first request, drained and
    closed after the last; :func:`producer_of` returns it meanwhile.
    """
    cfg = Config.from_env() if config is None else config
    app = Quart(__name__, static_folder=str(_STATIC))
    # Read once and served from memory: a file opened per request could be left to the
    # garbage collector when a client hangs up mid-response.
    dashboard_html = (_STATIC / "dashboard.html").read_text()
    dashboard_csp = content_security_policy(dashboard_html)
    # Read bodies a little past the publish limit, so MessageTooLarge reports the real size.
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_message_size + 65_536
    app.config["DEMO"] = cfg
    state = _State()

    async def backlog() -> int:
        if state.producer is None:
            raise RuntimeError("producer not started")
        return await asyncio.wait_for(state.producer.store.count(), _COUNT_TIMEOUT)

    registry = CollectorRegistry()
    requests = Counter(
        "demo_publish_requests",
        "POST /messages requests, by outcome.",
        ["outcome"],
        registry=registry,
    )

    @app.while_serving
    async def lifespan() -> AsyncGenerator[None, None]:
        producer = Producer(
            cfg.amqp_url,
            exchange=cfg.exchange,
            store=store if store is not None else make_store(cfg),
            spill_after=cfg.spill_after,
            max_buffer=cfg.max_buffer,
            max_message_size=cfg.max_message_size,
            fallback_dir=cfg.fallback_dir,
        )
        await producer.start()
        collector = register_collector(producer, registry, backlog_interval=5.0)
        state.producer, state.started_at = producer, time.monotonic()
        app.extensions["aioproducer"] = producer
        app.extensions["aioproducer.metrics"] = collector
        tasks: list[asyncio.Task[None]] = []
        topology = (cfg.amqp_urls, cfg.exchange, cfg.routing_key)
        try:
            await declare_once(*topology, queue_type=cfg.queue_type)
        except Exception as exc:
            log.warning("broker unavailable at startup (%s); serving anyway", exc)
            declaring = declare_until_done(*topology, queue_type=cfg.queue_type)
            tasks.append(asyncio.create_task(declaring, name="demo-declare"))
        if cfg.tick_seconds:
            tasks.append(asyncio.create_task(_tick(producer, cfg), name="demo-ticker"))
        log.info("serving; publishing to %r via %r", cfg.routing_key, cfg.exchange or "(default)")
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("draining the producer (up to %.1fs)", cfg.close_timeout)
            await producer.close(timeout=cfg.close_timeout)
            await collector.stop()
            registry.unregister(collector)
            log.info("producer closed: %s", producer.stats())

    def error(status: int, code: str, detail: str, **extra: Any) -> Response:
        requests.labels(outcome=code).inc()
        body = json.dumps({"error": code, "detail": detail, **extra})
        return Response(body, status=status, content_type="application/json")

    def refused(refusal: Refusal) -> Response:
        return error(refusal.status, refusal.code, refusal.detail, **refusal.extra)

    @app.errorhandler(RequestEntityTooLarge)
    async def body_too_large(exc: RequestEntityTooLarge) -> Response:
        return refused(too_large(cfg))

    @app.after_request
    async def security_headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.mimetype == "text/html":
            response.headers["Content-Security-Policy"] = dashboard_csp
            response.headers.update(HTML_HEADERS)
        return response

    @app.post("/messages")
    async def publish() -> Response | tuple[dict[str, Any], int]:
        routing_key = request.args.get("routing_key", cfg.routing_key)
        refusal = refuse_request(cfg, request.mimetype, routing_key)
        if refusal is not None:
            return refused(refusal)
        raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        refusal = refuse_body(raw)
        if refusal is not None:
            return refused(refusal)
        producer = state.producer
        if producer is None:
            return error(503, "not_serving", "the producer is not running")
        try:
            message_id = await producer.publish(
                raw, routing_key=routing_key, content_type="application/json"
            )
        except MessageTooLarge as exc:
            return error(413, "message_too_large", str(exc), size=exc.size, limit=exc.limit)
        except BufferFull as exc:
            response = error(503, "buffer_full", str(exc), capacity=exc.capacity)
            response.headers["Retry-After"] = str(max(1, math.ceil(cfg.spill_after)))
            return response
        except ProducerClosed as exc:
            return error(503, "shutting_down", str(exc))
        except ValueError as exc:  # InvalidMessage: e.g. a routing key over 255 bytes
            return error(400, "invalid_message", str(exc))
        requests.labels(outcome="accepted").inc()
        return {"message_id": message_id, "routing_key": routing_key}, 202

    @app.get("/health")
    async def health() -> dict[str, Any]:
        producer = state.producer
        if producer is None:
            return {"status": "stopped"}
        stats = producer.stats()
        store_backlog: int | None = None
        store_error: str | None = None
        try:
            store_backlog = await backlog()
        except Exception as exc:
            store_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if stats.blocked:
            status = "blocked"
        elif stats.connected:
            status = "connected"
        else:
            status = "disconnected"
        return {
            "status": status,
            "state": stats.state.value,
            "connected": stats.connected,
            "blocked": stats.blocked,
            "buffered": stats.buffered,
            "in_flight": stats.in_flight,
            "held": stats.held,
            "store_ok": stats.store_ok,
            "store_backlog": store_backlog,
            "store_error": store_error,
            "counters": {name: getattr(stats, name) for name in _COUNTERS},
            "uptime_seconds": round(time.monotonic() - state.started_at, 3),
            "time": time.time(),
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        collector = app.extensions.get("aioproducer.metrics")
        if collector is not None:
            # Fresh at every scrape; the collector's own task refreshes it in between.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_COUNT_TIMEOUT):
                    await collector.refresh_backlog()
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def dashboard() -> Response:
        response = Response(dashboard_html, content_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return response

    return app


async def _tick(producer: Producer, cfg: Config) -> None:
    """Publish ``{"tick": n, "sent_at": ...}`` every ``cfg.tick_seconds``, on a fixed schedule."""
    assert cfg.tick_seconds
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    n = 0
    while True:
        next_at += cfg.tick_seconds
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        n += 1
        try:
            await producer.publish({"tick": n, "sent_at": time.time()}, routing_key=cfg.routing_key)
        except BufferFull:
            log.warning("tick %d refused: the buffer is full and the store behind", n)
