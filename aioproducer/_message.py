"""The message record shared by the buffer, the stores and the AMQP link."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._exceptions import InvalidMessage

Headers = dict[str, Any]

_SCALARS = (str, int, float, bool, bytes, datetime, type(None))


@dataclass(slots=True, eq=False)
class Message:
    """One accepted message, as published, buffered and stored.

    ``timestamp`` and ``due_at`` are wall-clock seconds since the epoch (they are
    shared between hosts through the store); ``deadline`` and ``not_before`` are
    monotonic-clock seconds and only mean something inside the process that
    accepted the message, as do ``channel_breaks`` (how many channel errors in a
    row it was in flight for), ``stored`` (a copy is in the store) and ``copying``
    (a copy is being written).

    ``dead`` marks a message that reached the producer's ``max_attempts``: a store
    keeps it but never hands it out again. ``lease_token`` is set by
    :meth:`Store.claim` and names that one claim: :meth:`Store.release` acts only on
    messages whose lease still carries it.
    """

    message_id: str
    body: bytes
    exchange: str
    routing_key: str
    content_type: str
    timestamp: float
    headers: Headers | None = None
    attempts: int = 0
    last_error: str | None = None
    due_at: float = 0.0
    deadline: float = 0.0
    not_before: float = 0.0
    channel_breaks: int = 0
    stored: bool = False
    copying: bool = False
    dead: bool = False
    lease_token: str | None = None


def check_headers(headers: Headers) -> None:
    """Raise :class:`InvalidMessage` unless AMQP and the stores can carry ``headers``."""
    if not isinstance(headers, dict):
        raise InvalidMessage(f"headers must be a dict, not {type(headers).__name__}")
    _check_table(headers, "headers")


def _check_table(table: dict[Any, Any], where: str) -> None:
    for key, value in table.items():
        if not isinstance(key, str):
            raise InvalidMessage(f"{where} keys must be str, got {key!r}")
        if len(key.encode()) > 128:
            raise InvalidMessage(f"{where} key {key[:20]!r}... is over 128 bytes")
        _check_value(value, f"{where}[{key!r}]")


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, dict):
        _check_table(value, where)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]")
    else:
        raise InvalidMessage(
            f"{where} is a {type(value).__name__}; headers carry str, int, float, bool, "
            "bytes, datetime, None, and lists and dicts of those"
        )


def encode_headers(headers: Headers | None) -> str | None:
    """Headers as JSON text that :func:`decode_headers` turns back into equal values."""
    if headers is None:
        return None
    return json.dumps(_tag(headers), separators=(",", ":"))


def decode_headers(text: str | None) -> Headers | None:
    """The inverse of :func:`encode_headers`."""
    if text is None:
        return None
    value = _untag(json.loads(text))
    assert isinstance(value, dict)
    return value


def _tag(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, dict):
        return {"$d": {k: _tag(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [_tag(v) for v in value]
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict):
        if "$b" in value:
            return base64.b64decode(value["$b"])
        if "$t" in value:
            return datetime.fromisoformat(value["$t"])
        return {k: _untag(v) for k, v in value["$d"].items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value
