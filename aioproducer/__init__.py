"""aioproducer: publish to RabbitMQ from asyncio web services without ever blocking.

``await producer.publish()`` is an in-memory hand-off. A background task delivers
over one robust connection with publisher confirms; what is not confirmed within
``spill_after`` seconds is stored durably (SQLite or MongoDB) and replayed once the
broker is back. Every accepted message ends confirmed by the broker or stored.
"""

from ._backoff import Backoff
from ._exceptions import (
    BodyNotSerializable,
    BufferFull,
    InvalidMessage,
    MessageTooLarge,
    ProducerClosed,
    ProducerError,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from ._message import Message
from ._producer import Producer, ProducerState, ProducerStats
from ._stores._base import Backlog, KeyCount, Store
from ._stores._mongo import MongoStore
from ._stores._sqlite import SQLiteStore
from ._threaded import ThreadedProducer

__all__ = [
    "Backlog",
    "Backoff",
    "BodyNotSerializable",
    "BufferFull",
    "InvalidMessage",
    "KeyCount",
    "Message",
    "MessageTooLarge",
    "MongoStore",
    "Producer",
    "ProducerClosed",
    "ProducerError",
    "ProducerState",
    "ProducerStats",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "ThreadedProducer",
]

__version__ = "0.1.0"
