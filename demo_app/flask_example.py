"""A Flask app that publishes through :class:`aioproducer.ThreadedProducer`.

One producer per process: the module makes the ThreadedProducer object at import
(no thread, no connection), and the first request in each process starts it. So
under gunicorn, with ``--preload`` or without, every worker runs its own producer,
loop thread and connection, never one inherited from the master.

Serve it (in the project's venv, ``pip install -e '.[demo,flask]'``)::

    python -m demo_app.flask_example            # waitress, 32 threads; SIGTERM is graceful
    waitress-serve --threads 32 --listen 127.0.0.1:8000 demo_app.flask_example:app
    gunicorn --workers 4 --threads 8 --bind 127.0.0.1:8000 demo_app.flask_example:app
    gunicorn --preload --workers 4 --threads 8 --bind 127.0.0.1:8000 demo_app.flask_example:app

    curl -X POST -H 'Content-Type: application/json' -d '{"order": 1}' \\
        http://127.0.0.1:8000/messages

``POST /messages`` publishes the JSON body (``?routing_key=`` overrides the default,
within ``ALLOWED_ROUTING_KEYS``) and answers 202 ``{"message_id": ...}``; it refuses
what the Quart demo refuses: 415 unless the body is ``application/json``, 400 for a
body that is not strict JSON, 413 for one too large, 403 for a routing key not
allowed; 503 with ``Retry-After`` when memory is full and the store is behind, 503
while shutting down. ``GET /health`` gives the producer's stats. Settings are the
Quart demo's environment variables (``AMQP_URL``, ``SPILL_PATH``, ``MONGO_URL``,
``ROUTING_KEY``, ``ALLOWED_ROUTING_KEYS``, ``SPILL_AFTER``, ``MAX_BUFFER``, ``MAX_MESSAGE_SIZE``,
``CLOSE_TIMEOUT``, ``FALLBACK_DIR``, ``HOST``, ``PORT``); the queue named by
``ROUTING_KEY`` must exist (``python -m demo_app.consumer`` declares it).

At exit the producer closes by itself (``atexit``): it drains to the broker, stores
the rest, and writes a local file only if the store fails too. gunicorn ends its
workers that way on SIGTERM. ``waitress-serve`` leaves SIGTERM to Python's default,
which ends the process without ``atexit``: serve with ``python -m
demo_app.flask_example``, which calls :meth:`ThreadedProducer.close_on_sigterm`.
"""

from __future__ import annotations

import math
from typing import Any

from flask import Flask, Response, jsonify, request

from aioproducer import BufferFull, MessageTooLarge, ProducerClosed, ThreadedProducer

from ._app import make_store
from ._checks import Refusal, refuse_body, refuse_request, too_large
from ._config import Config


def make_producer(config: Config) -> ThreadedProducer:
    """The app's producer, not started: each process starts its own on first use."""
    return ThreadedProducer(
        config.amqp_url,
        # A callable: each process builds its own store (a fork cannot share one).
        store=lambda: make_store(config),
        exchange=config.exchange,
        spill_after=config.spill_after,
        max_buffer=config.max_buffer,
        max_message_size=config.max_message_size,
        fallback_dir=config.fallback_dir,
        close_timeout=config.close_timeout,
    )


def create_app(producer: ThreadedProducer, config: Config | None = None) -> Flask:
    """The Flask app, publishing through ``producer`` (started by the first request)."""
    cfg = config or Config()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_message_size

    def error(status: int, code: str, detail: str, **extra: Any) -> tuple[dict[str, Any], int]:
        return {"error": code, "detail": detail, **extra}, status

    def refused(refusal: Refusal) -> tuple[dict[str, Any], int]:
        return refusal.body(), refusal.status

    @app.errorhandler(413)
    def body_too_large(exc: Exception) -> tuple[dict[str, Any], int]:
        return refused(too_large(cfg))

    @app.after_request
    def no_sniffing(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.post("/messages")
    def publish() -> Response | tuple[dict[str, Any], int]:
        routing_key = request.args.get("routing_key", cfg.routing_key)
        refusal = refuse_request(cfg, request.mimetype, routing_key)
        if refusal is not None:
            return refused(refusal)
        raw = request.get_data(cache=False)
        refusal = refuse_body(raw)
        if refusal is not None:
            return refused(refusal)
        try:
            # start() is idempotent and cheap once running: the first request of each
            # process starts that process's producer.
            message_id = producer.start().publish(
                raw, routing_key=routing_key, content_type="application/json"
            )
        except MessageTooLarge as exc:
            return error(413, "message_too_large", str(exc), size=exc.size, limit=exc.limit)
        except BufferFull as exc:
            body, status = error(503, "buffer_full", str(exc), capacity=exc.capacity)
            response = jsonify(body)
            response.status_code = status
            response.headers["Retry-After"] = str(max(1, math.ceil(cfg.spill_after)))
            return response
        except ProducerClosed as exc:
            return error(503, "shutting_down", str(exc))
        except ValueError as exc:  # InvalidMessage: e.g. a routing key over 255 bytes
            return error(400, "invalid_message", str(exc))
        return {"message_id": message_id, "routing_key": routing_key}, 202

    @app.get("/health")
    def health() -> dict[str, Any]:
        stats = producer.stats()
        return {
            "state": stats.state.value,
            "connected": stats.connected,
            "accepted": stats.accepted,
            "confirmed": stats.confirmed,
            "spilled": stats.spilled,
            "replayed": stats.replayed,
            "buffered": stats.buffered,
            "last_error": stats.last_error,
        }

    return app


config = Config.from_env()
producer = make_producer(config)
app = create_app(producer, config)


def main() -> None:
    """Serve the app with waitress; SIGTERM closes the producer gracefully."""
    import waitress

    producer.close_on_sigterm()
    waitress.serve(app, host=config.host, port=config.port, threads=32)


if __name__ == "__main__":
    main()
