"""Errors raised by aioproducer.

Every error derives from :class:`ProducerError`::

    ProducerError
    ├── ProducerClosed          publish() before start() or after close()  (also RuntimeError)
    ├── BufferFull              max_buffer messages unsettled in memory     (also a capacity field)
    ├── MessageTooLarge         body over max_message_size                  (also ValueError)
    ├── BodyNotSerializable     body is not bytes, str or JSON-serialisable (also TypeError)
    ├── InvalidMessage          bad routing key, exchange, headers or id    (also ValueError)
    └── StoreError              a store operation failed                    (also OSError)

Errors from aio-pika, aiormq, aiosqlite and PyMongo never reach the caller of
``publish()``: the background tasks translate them into retries and log lines.
"""

from __future__ import annotations


class ProducerError(Exception):
    """Root of every error raised by aioproducer."""


class ProducerClosed(ProducerError, RuntimeError):
    """The producer is not started, or is closing or closed."""


class BufferFull(ProducerError):
    """``capacity`` messages are unsettled in memory and the store cannot take more yet."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"{capacity} messages are unsettled in memory; the store is behind")
        self.capacity = capacity


class MessageTooLarge(ProducerError, ValueError):
    """The serialised body is ``size`` bytes, over the ``limit``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message body is {size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class BodyNotSerializable(ProducerError, TypeError):
    """The body is neither bytes nor str, and JSON cannot encode it."""


class InvalidMessage(ProducerError, ValueError):
    """A routing key, exchange, header or message id that AMQP cannot carry."""


class StoreError(ProducerError, OSError):
    """A store operation failed; the cause is chained."""
