"""Errors raised by aioproducer.

Every error derives from :class:`ProducerError`::

    ProducerError
    ├── ProducerClosed          publish() before start() or after close()  (also RuntimeError)
    ├── BufferFull              max_buffer messages, or max_buffer_bytes, unsettled in memory
    ├── MessageTooLarge         body over max_message_size                  (also ValueError)
    ├── BodyNotSerializable     body is not bytes, str or JSON-serialisable (also TypeError)
    ├── InvalidMessage          bad routing key, exchange, headers, id or property (also ValueError)
    ├── UnknownMessage          settled() for an id not unsettled in memory (also LookupError)
    └── StoreError              a store operation failed                    (also OSError)
        ├── StoreUnavailable    the store did not answer in time or is unreachable: retry later
        └── StoreRejected       the store refused these messages for what they are: isolate them

Errors from aio-pika, aiormq, aiosqlite and PyMongo never reach the caller of
``publish()``: the background tasks translate them into retries and log lines.
"""

from __future__ import annotations


class ProducerError(Exception):
    """Root of every error raised by aioproducer."""


class ProducerClosed(ProducerError, RuntimeError):
    """The producer is not started, or is closing or closed."""


class BufferFull(ProducerError):
    """Memory holds ``capacity`` messages, or ``max_bytes`` bytes, and the store is behind."""

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        if max_bytes is None:
            text = f"{capacity} messages are unsettled in memory; the store is behind"
        else:
            text = f"{max_bytes} bytes of messages are unsettled in memory; the store is behind"
        super().__init__(text)
        self.capacity = capacity
        self.max_bytes = max_bytes


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


class UnknownMessage(ProducerError, LookupError):
    """``settled()`` was asked about an id that is not in memory: unknown, or already settled."""

    def __init__(self, message_id: str) -> None:
        super().__init__(
            f"message {message_id!r} is not unsettled in this producer: unknown, or already "
            "settled (call settled() right after publish())"
        )
        self.message_id = message_id


class StoreError(ProducerError, OSError):
    """A store operation failed; the cause is chained.

    The text is short and carries counts and codes, never a body or a header value.
    """


class StoreUnavailable(StoreError):
    """The store could not be reached, or did not answer in time: the same call may work later."""


class StoreRejected(StoreError):
    """The store refused the messages of this call for what they are.

    Retrying the same batch fails again; the producer splits it until the message
    the store cannot hold is isolated, and keeps that one in memory.
    """
