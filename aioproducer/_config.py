"""A producer's settings, checked once at construction, and the masking of secrets in text."""

from __future__ import annotations

import os
import re
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yarl

from ._backoff import Backoff
from ._message import check_name

#: RabbitMQ 4's default ``max_message_size``; earlier versions allow more.
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
#: Bytes of bodies and headers held in memory at most, by default.
DEFAULT_MAX_BUFFER_BYTES = 256 * 1024 * 1024
#: Default delays between reconnection attempts, retries of a message that failed
#: for a reason of its own, and attempts at a failing store.
DEFAULT_RECONNECT_BACKOFF = Backoff(base=0.1, cap=0.5)
DEFAULT_RETRY_BACKOFF = Backoff(base=1.0, cap=60.0)
DEFAULT_STORE_BACKOFF = Backoff(base=0.2, cap=10.0)

_SECRET_IN_URL = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def mask(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _SECRET_IN_URL.sub(r"\1***@", text)


def format_exception(exc: BaseException, *, with_text: bool = True) -> str:
    """``exc`` with its traceback, as text for a log line, URL passwords masked.

    ``with_text=False`` leaves out the exception's own text (which may quote a value
    of a message), keeping its type and where it was raised.
    """
    if with_text:
        return mask("".join(traceback.format_exception(exc)).rstrip())
    stack = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{stack}{type(exc).__qualname__}"


def check_url(url: object) -> str:
    """Return ``url`` if it is an AMQP URL a connection can be made from; else ValueError.

    The error text never holds the password.
    """
    if not isinstance(url, str):
        raise ValueError(f"the broker URL must be a str, not {type(url).__name__}")
    shown = mask(url)
    try:
        parsed = yarl.URL(url)
        port = parsed.port
    except ValueError as exc:
        raise ValueError(f"malformed broker URL {shown!r}: {mask(str(exc))}") from None
    if parsed.scheme not in ("amqp", "amqps"):
        raise ValueError(f"broker URL {shown!r} must start with amqp:// or amqps://")
    if not parsed.host:
        raise ValueError(f"broker URL {shown!r} has no host")
    if "," in parsed.host:
        raise ValueError(
            f"broker URL {shown!r} names several hosts in one URL; "
            "give one URL per node: a list, or URLs separated by commas"
        )
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"broker URL {shown!r} has port {port}, outside 1-65535")
    return url


_URL_SEPARATOR = re.compile(r"\s*,\s*(?=amqps?://)")


def split_urls(text: str) -> list[str]:
    """The URLs in ``text``, separated by commas (``"amqp://a/,amqp://b/"``).

    A comma splits only where the next URL begins (``amqp://`` or ``amqps://``), so
    a comma inside a password is kept.
    """
    return [part for part in _URL_SEPARATOR.split(text.strip()) if part]


def check_urls(urls: object) -> tuple[str, ...]:
    """The broker addresses in ``urls``, each checked; else ValueError.

    ``urls`` is one URL, several separated by commas, or a sequence of URLs (the
    nodes of one cluster). Addresses must differ and carry the same query options
    (``heartbeat`` and the like apply to the connection, whichever node it is to).
    """
    if isinstance(urls, str):
        addresses = split_urls(urls)
    elif isinstance(urls, Sequence) and not isinstance(urls, bytes | bytearray):
        addresses = list(urls)
    else:
        raise ValueError(
            f"the broker URL must be a str or a sequence of str, not {type(urls).__name__}"
        )
    if not addresses:
        raise ValueError("no broker URL given")
    for address in addresses:
        check_url(address)
    if len(set(addresses)) != len(addresses):
        raise ValueError("the broker URLs must differ: one is given twice")
    options = {yarl.URL(address).query_string for address in addresses}
    if len(options) > 1:
        raise ValueError(
            "the broker URLs must carry the same query options "
            f"(found {', '.join(sorted(repr(o) for o in options))})"
        )
    return tuple(addresses)


def check_fallback_dir(folder: str | os.PathLike[str]) -> Path:
    """Return ``folder`` as a Path if a file can be created in it now; else ValueError."""
    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"fallback_dir {str(path)!r} is not an existing folder")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"fallback_dir {str(path)!r} is not writable: {exc.strerror}") from None
    return path


@dataclass(frozen=True, slots=True)
class Settings:
    """Every option of a :class:`~aioproducer.Producer`, checked."""

    url: str | Sequence[str]
    exchange: str
    spill_after: float
    max_buffer: int
    max_buffer_bytes: int
    max_message_size: int
    max_in_flight: int
    high_water: float
    persistent: bool
    mandatory: bool
    lease: float
    replay_batch: int
    replay_interval: float
    confirm_timeout: float
    connect_timeout: float
    max_attempts: int | None
    reconnect_backoff: Backoff
    retry_backoff: Backoff
    store_backoff: Backoff
    fallback_dir: Path
    #: The broker addresses ``url`` names, checked (one or more).
    urls: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", check_urls(self.url))
        check_name(self.exchange, "exchange")
        for option, value in (
            ("spill_after", self.spill_after),
            ("lease", self.lease),
            ("replay_interval", self.replay_interval),
            ("confirm_timeout", self.confirm_timeout),
            ("connect_timeout", self.connect_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{option} must be positive")
        if self.lease <= self.confirm_timeout:
            raise ValueError("lease must be longer than confirm_timeout")
        if not 0 < self.high_water <= 1:
            raise ValueError("high_water is a fraction of max_buffer, above 0 and at most 1")
        for option, count in (
            ("max_buffer", self.max_buffer),
            ("max_buffer_bytes", self.max_buffer_bytes),
            ("max_message_size", self.max_message_size),
            ("max_in_flight", self.max_in_flight),
            ("replay_batch", self.replay_batch),
        ):
            if count < 1:
                raise ValueError(f"{option} must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1, or None for no limit")
