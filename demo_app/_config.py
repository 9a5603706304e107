"""The demo app's settings, read from environment variables."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class ConfigError(ValueError):
    """An environment variable is set to something the demo app cannot use."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the demo app needs to know, with the defaults of a laptop run.

    Build it with :meth:`from_env`, or directly in tests.
    """

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    """``AMQP_URL``: the RabbitMQ broker; the nodes of a cluster as several URLs
    separated by commas (the producer fails over between them)."""
    mongo_url: str | None = None
    """``MONGO_URL``: when set, spilled messages go to MongoDB instead of SQLite."""
    mongo_database: str = "aioproducer"
    """``MONGO_DATABASE``."""
    mongo_collection: str = "spill"
    """``MONGO_COLLECTION``."""
    spill_path: str = "demo-spill.db"
    """``SPILL_PATH``: the SQLite file used when ``MONGO_URL`` is unset."""
    exchange: str = ""
    """``EXCHANGE``: where messages are published; ``""`` is the default exchange."""
    routing_key: str = "demo"
    """``ROUTING_KEY``: the default routing key, and the name of the queue the app declares."""
    allowed_routing_keys: frozenset[str] = frozenset()
    """``ALLOWED_ROUTING_KEYS``: comma-separated keys that ``?routing_key=`` may name
    besides ``ROUTING_KEY`` (always allowed); any other is refused with 403."""
    queue_type: str | None = None
    """``AMQP_QUEUE_TYPE``: ``classic`` or ``quorum``, the type the queue is declared
    with; unset declares it without one, so the broker's default applies."""
    spill_after: float = 5.0
    """``SPILL_AFTER``: seconds a message may wait in memory before it is stored."""
    max_buffer: int = 10_000
    """``MAX_BUFFER``: messages held in memory at most."""
    max_message_size: int = 1_048_576
    """``MAX_MESSAGE_SIZE``: the largest request body published, in bytes."""
    close_timeout: float = 10.0
    """``CLOSE_TIMEOUT``: seconds the producer may spend draining at shutdown."""
    fallback_dir: str = "."
    """``FALLBACK_DIR``: where the producer writes what it could not store at shutdown."""
    host: str = "127.0.0.1"
    """``HOST``: the address Hypercorn listens on."""
    port: int = 8000
    """``PORT``."""
    tick_seconds: float | None = None
    """``TICK_SECONDS``: publish a tick message this often; unset or 0 turns it off."""
    read_timeout: int = 30
    """``READ_TIMEOUT``: seconds Hypercorn waits for a client to send more of a request
    before it closes the connection."""

    def allows(self, routing_key: str) -> bool:
        """Whether a request may publish with ``routing_key``."""
        return routing_key == self.routing_key or routing_key in self.allowed_routing_keys

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker addresses in :attr:`amqp_url`, one per node."""
        return split_urls(self.amqp_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read the settings from ``environ`` (``os.environ`` by default).

        Empty variables count as unset. Raises :class:`ConfigError` naming the
        variable and the value it could not use.
        """
        env = os.environ if environ is None else environ
        default = cls()

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def parse(name: str, convert: Callable[[str], T], fallback: T) -> T:
            raw = get(name)
            return fallback if raw is None else convert_named(name, raw, convert)

        tick = parse("TICK_SECONDS", _non_negative_float, 0.0)
        return cls(
            amqp_url=parse("AMQP_URL", _amqp_urls, default.amqp_url),
            mongo_url=get("MONGO_URL"),
            mongo_database=get("MONGO_DATABASE") or default.mongo_database,
            mongo_collection=get("MONGO_COLLECTION") or default.mongo_collection,
            spill_path=get("SPILL_PATH") or default.spill_path,
            # EXCHANGE may be set to "" on purpose: read it without the "empty is unset" rule.
            exchange=env.get("EXCHANGE", default.exchange).strip(),
            routing_key=parse("ROUTING_KEY", _routing_key, default.routing_key),
            allowed_routing_keys=parse(
                "ALLOWED_ROUTING_KEYS", _routing_keys, default.allowed_routing_keys
            ),
            queue_type=parse("AMQP_QUEUE_TYPE", _queue_type, default.queue_type),
            spill_after=parse("SPILL_AFTER", _positive_float, default.spill_after),
            max_buffer=parse("MAX_BUFFER", _positive_int, default.max_buffer),
            max_message_size=parse("MAX_MESSAGE_SIZE", _positive_int, default.max_message_size),
            close_timeout=parse("CLOSE_TIMEOUT", _positive_float, default.close_timeout),
            fallback_dir=get("FALLBACK_DIR") or default.fallback_dir,
            host=get("HOST") or default.host,
            port=parse("PORT", _port, default.port),
            tick_seconds=tick or None,
            read_timeout=parse("READ_TIMEOUT", _positive_int, default.read_timeout),
        )


def convert_named(name: str, raw: str, convert: Callable[[str], T]) -> T:
    try:
        return convert(raw)
    except ValueError as exc:
        shown = _MASK.sub(r"\1***@", raw)
        raise ConfigError(f"{name}={shown!r}: {exc}") from None


#: A comma separates two broker URLs only where the next one begins (a password may
#: hold a comma).
_URL_START = re.compile(r"\s*,\s*(?=amqps?://)")
_MASK = re.compile(r"(\bamqps?://[^:/@\s]*:)[^@\s]*@")


def split_urls(raw: str) -> tuple[str, ...]:
    """The broker URLs in a comma-separated ``AMQP_URL``, one per node."""
    return tuple(url.strip() for url in _URL_START.split(raw.strip()))


def _amqp_urls(raw: str) -> str:
    urls = _URL_START.split(raw)
    for url in urls:
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise ValueError("not a URL") from None
        if parts.scheme not in ("amqp", "amqps"):
            raise ValueError("each URL must start with amqp:// or amqps://")
        if not host or "," in host:
            raise ValueError("each URL must name one host")
    return ",".join(urls)


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _positive_float(raw: str) -> float:
    value = _number(raw)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = _number(raw)
    if value < 0:
        raise ValueError("must be 0 (off) or more")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("not a whole number") from None
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("not a port number") from None
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _routing_key(raw: str) -> str:
    if len(raw.encode()) > 255:
        raise ValueError("is over 255 bytes, the AMQP limit")
    return raw


def _routing_keys(raw: str) -> frozenset[str]:
    keys = [key.strip() for key in raw.split(",")]
    if "" in keys:
        raise ValueError("an empty routing key in the list")
    for key in keys:
        try:
            _routing_key(key)
        except ValueError as exc:
            raise ValueError(f"{key[:20]!r}... {exc}") from None
    return frozenset(keys)


#: The queue types the demo's consumer can read from like a classic queue.
QUEUE_TYPES = ("classic", "quorum")


def _queue_type(raw: str) -> str:
    if raw not in QUEUE_TYPES:
        raise ValueError(f"must be one of {', '.join(QUEUE_TYPES)}")
    return raw
