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
    UnknownMessage,
)
from ._message import Message, Properties
from ._outgoing import Finish, Middleware, Outgoing
from ._producer import Producer, ProducerState, ProducerStats
from ._serializer import Serializer, json_serializer
from ._settlement import SettledHook, Settlement
from ._stores._base import Backlog, KeyCount, Store
from ._stores._mongo import MongoStore
from ._stores._sqlite import SQLiteStore
from ._threaded import ThreadedProducer

__all__ = [
    "Backlog",
    "Backoff",
    "BodyNotSerializable",
    "BufferFull",
    "Finish",
    "InvalidMessage",
    "KeyCount",
    "Message",
    "MessageTooLarge",
    "Middleware",
    "MongoStore",
    "Outgoing",
    "Producer",
    "ProducerClosed",
    "ProducerError",
    "ProducerState",
    "ProducerStats",
    "Properties",
    "SQLiteStore",
    "Serializer",
    "SettledHook",
    "Settlement",
    "Store",
    "StoreError",
    "StoreRejected",
    "StoreUnavailable",
    "ThreadedProducer",
    "UnknownMessage",
    "json_serializer",
]

__version__ = "0.1.0"
