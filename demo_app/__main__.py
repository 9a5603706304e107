"""``python -m demo_app``: serve the demo app with Hypercorn until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from ._app import create_app
from ._config import Config, ConfigError
from ._serve import serve


def main() -> int:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if level != "DEBUG":
        # aio-pika and aiormq log every reconnection attempt (aiormq at ERROR, with a
        # traceback); aioproducer.connection says the same once per change of state.
        for name in ("aio_pika", "aiormq"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"demo_app: bad configuration: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(create_app(config), config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
