"""A Quart app that publishes HTTP requests to RabbitMQ through :mod:`aioproducer`.

``create_app()`` builds it; ``python -m demo_app`` serves it with Hypercorn;
``python -m demo_app.consumer`` reads what it published; ``python -m demo_app.experiment``
measures what happens to messages across broker outages.
"""

from ._app import create_app, producer_of
from ._config import Config, ConfigError
from ._serve import serve

__all__ = ["Config", "ConfigError", "create_app", "producer_of", "serve"]
