"""Serving the demo app with Hypercorn, with a graceful stop on SIGINT or SIGTERM.

On either signal Hypercorn stops accepting connections, lets open requests finish,
and then runs the app's shutdown, where the producer drains to the broker and
stores what is left.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from quart import Quart

from ._config import Config

log = logging.getLogger("demo_app")


def hypercorn_config(config: Config, *, bind: str | None = None) -> HypercornConfig:
    """Hypercorn settings for ``config``: one bind, access log on stdout, a read timeout,
    a shutdown long enough for the producer to drain."""
    hconfig = HypercornConfig()
    host = f"[{config.host}]" if ":" in config.host else config.host
    hconfig.bind = [bind or f"{host}:{config.port}"]
    # Hypercorn's loggers go through the logging configuration, like every other logger.
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.accesslog = (
        logging.getLogger("hypercorn.access") if os.environ.get("ACCESS_LOG") else None
    )
    # A client that stops sending mid-request (or never starts) is cut off.
    hconfig.read_timeout = config.read_timeout
    hconfig.graceful_timeout = 5.0
    hconfig.shutdown_timeout = config.close_timeout + 15.0
    return hconfig


async def serve(
    app: Quart,
    config: Config,
    *,
    bind: str | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns, by default until SIGINT or SIGTERM."""
    if shutdown_trigger is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _on_signal, signum, stop)
        shutdown_trigger = stop.wait
    hconfig = hypercorn_config(config, bind=bind)
    log.info("listening on %s", ", ".join(hconfig.bind))
    await hypercorn_serve(app, hconfig, shutdown_trigger=shutdown_trigger)


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    log.info("%s: shutting down", signal.Signals(signum).name)
    stop.set()
