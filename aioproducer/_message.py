"""The message record, its life, and the checks that make every accepted message carriable.

A message accepted by ``publish()`` is in exactly one :class:`State` at a time, and
moves only along :data:`MOVES`::

    MEMORY ──────────► IN_FLIGHT ──────────► CONFIRMED
      │ ▲                 │    │  ▲ (nack, return, lost: back to memory)
      │ └─────────────────┘    │
      │                        └──► STORED_IN_FLIGHT ──► CONFIRMED (the copy is deleted)
      │   (deadline passed while in flight: a copy is stored)  │
      ▼                                                        ▼ (nack, return, lost)
    STORED ◄───────────────────────────────────────────────────┘
      │  replay claims it, publishes it, deletes it after the confirm
      ├──► CONFIRMED
      └──► DEAD (max_attempts reached: kept in the store, never retried)
    MEMORY ──► DEAD (stored as dead straight from memory)

``MEMORY`` covers waiting to be published, held back after a failure of its own,
and being written to the store. ``CONFIRMED``, ``STORED`` and ``DEAD`` are where a
message ends as far as the producer that accepted it is concerned: settled.

Headers are checked, copied and encoded once, at ``publish()``, by the same
field-table encoder that writes them to the wire (:func:`prepare_headers`): what
the broker cannot carry is refused at the call, and a caller mutating its dict
afterwards cannot reach the buffered copy.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ._exceptions import InvalidMessage

Headers = dict[str, Any]

#: The most header bytes, as encoded on the wire, a message may carry. A content
#: header must fit in one AMQP frame (RabbitMQ's default ``frame_max`` is 128 KiB).
MAX_HEADERS_SIZE = 64 * 1024
#: How deeply tables and arrays may nest inside headers.
MAX_HEADERS_DEPTH = 32


class State(enum.Enum):
    """Where an accepted message is."""

    MEMORY = "memory"
    """In the buffer: waiting to be published, held back, or being written to the store."""
    IN_FLIGHT = "in_flight"
    """Published from memory; its confirm is not in yet."""
    STORED_IN_FLIGHT = "stored_in_flight"
    """A copy is stored (its deadline passed) while the publish may still be confirmed."""
    STORED = "stored"
    """Only in the store, to be replayed."""
    CONFIRMED = "confirmed"
    """Confirmed by the broker."""
    DEAD = "dead"
    """Kept in the store after ``max_attempts`` failures of its own; never retried."""


#: Every move a message can make. A move not listed here is a bug.
MOVES: dict[State, frozenset[State]] = {
    State.MEMORY: frozenset({State.IN_FLIGHT, State.STORED, State.DEAD}),
    State.IN_FLIGHT: frozenset({State.MEMORY, State.CONFIRMED, State.STORED_IN_FLIGHT}),
    State.STORED_IN_FLIGHT: frozenset({State.CONFIRMED, State.STORED}),
    State.STORED: frozenset({State.CONFIRMED, State.DEAD}),
    State.CONFIRMED: frozenset(),
    State.DEAD: frozenset(),
}


@dataclass(slots=True, eq=False)
class Message:
    """One accepted message, as published, buffered and stored.

    ``timestamp`` and ``due_at`` are wall-clock seconds since the epoch (they are
    shared between hosts through the store); ``deadline`` and ``not_before`` are
    monotonic-clock seconds and only mean something inside the process that
    accepted the message, as do ``channel_breaks`` (how many channel errors in a
    row it was in flight for), ``stored`` (a copy is in the store), ``copying``
    (a copy is being written), ``unstorable`` (the store refused it),
    ``headers_wire`` (the headers as encoded on the wire) and ``state``.

    ``attempts`` counts failures of the message's own (returned, nacked, broke its
    channel, refused by the broker), not lost connections. ``dead`` marks a message
    that reached the producer's ``max_attempts``: a store keeps it but never hands it
    out again. ``lease_token`` is set by :meth:`Store.claim` and names that one
    claim: :meth:`Store.release` acts only on messages whose lease still carries it.
    ``properties`` holds the AMQP properties the caller set beyond the usual ones
    (None when it set none). ``reported`` marks a message whose first settlement
    was told to ``on_settled``.
    """

    message_id: str
    body: bytes = field(repr=False)
    exchange: str
    routing_key: str
    content_type: str
    timestamp: float
    headers: Headers | None = field(default=None, repr=False)
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
    unstorable: bool = False
    headers_wire: bytes | None = field(default=None, repr=False)
    state: State = State.MEMORY
    properties: Properties | None = None
    reported: bool = False

    @property
    def size(self) -> int:
        """Bytes this message holds in memory, as counted against ``max_buffer_bytes``."""
        return len(self.body) + (len(self.headers_wire) if self.headers_wire else 0)

    def mandatory_or(self, default: bool) -> bool:
        """Whether to publish this message mandatory: its own setting, else ``default``."""
        extra = self.properties
        if extra is None or extra.mandatory is None:
            return default
        return extra.mandatory


@dataclass(frozen=True, slots=True)
class Properties:
    """The AMQP basic properties a message carries besides ``message_id``,
    ``timestamp``, ``content_type`` and headers; None where the caller set none.

    ``persistent`` and ``mandatory``, when set, override the producer's defaults for
    this message (None: the default of the producer that publishes it).
    """

    priority: int | None = None
    """0 to 255; queues declared with ``x-max-priority`` deliver higher first."""
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration: str | None = None
    """Per-message TTL in milliseconds, as the wire carries it: decimal digits."""
    type: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    """Checked by RabbitMQ against the connection's user."""
    content_encoding: str | None = None
    persistent: bool | None = None
    """Delivery mode 2 (True) or 1 (False)."""
    mandatory: bool | None = None
    """Return the message if no queue takes it (and retry it) rather than drop it."""


#: The names of :class:`Properties`' fields, in their order.
PROPERTY_NAMES = tuple(Properties.__dataclass_fields__)
_SHORT_STRINGS = ("correlation_id", "reply_to", "type", "app_id", "user_id", "content_encoding")
#: The longest per-message TTL RabbitMQ accepts, in milliseconds (2**32 - 1).
MAX_EXPIRATION = 2**32 - 1


def check_properties(values: Mapping[str, Any], users: frozenset[str]) -> Properties | None:
    """Check the properties ``values`` names (None: not set); return them, or None if none is.

    ``users`` are the user names the producer connects as: RabbitMQ refuses a
    ``user_id`` other than the connection's (a channel error), so it is refused here.
    Raises :class:`InvalidMessage` naming the first bad value.
    """
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in Properties.__dataclass_fields__:
            raise InvalidMessage(f"no message property {name!r}")
        if name in _SHORT_STRINGS:
            checked[name] = check_name(value, name)
        elif name == "priority":
            if type(value) is not int or not 0 <= value <= 255:
                raise InvalidMessage(f"priority must be an int from 0 to 255, not {value!r}")
            checked[name] = value
        elif name == "expiration":
            checked[name] = _expiration(value)
        else:  # persistent, mandatory
            if not isinstance(value, bool):
                raise InvalidMessage(f"{name} must be a bool, not {type(value).__name__}")
            checked[name] = value
    if not checked:
        return None
    user = checked.get("user_id")
    if user is not None and user not in users:
        raise InvalidMessage(
            f"user_id {user!r} is not the user the producer connects as "
            f"({', '.join(sorted(users))}): RabbitMQ would refuse the message"
        )
    return Properties(**checked)


def _expiration(value: object) -> str:
    """A TTL as the wire's decimal milliseconds: from an int of ms, a timedelta or digits."""
    if isinstance(value, timedelta):
        millis = value // timedelta(milliseconds=1)
        if value % timedelta(milliseconds=1):
            raise InvalidMessage("expiration must be a whole number of milliseconds")
    elif type(value) is int:
        millis = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        millis = int(value)
    else:
        raise InvalidMessage(
            "expiration must be an int of milliseconds, a timedelta or a str of digits, "
            f"not {type(value).__name__}"
        )
    if not 0 <= millis <= MAX_EXPIRATION:
        raise InvalidMessage(f"expiration must be 0 to {MAX_EXPIRATION} ms, not {millis}")
    return str(millis)


def properties_to_dict(properties: Properties | None) -> dict[str, Any] | None:
    """The properties set, as a JSON-ready dict (None if there are none)."""
    if properties is None:
        return None
    return {
        name: value for name in PROPERTY_NAMES if (value := getattr(properties, name)) is not None
    }


def properties_from_dict(data: object) -> Properties | None:
    """The inverse of :func:`properties_to_dict`, checking every value (no ``user_id`` check)."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise InvalidMessage(f"properties must be a mapping, not {type(data).__name__}")
    user = data.get("user_id")
    return check_properties(data, frozenset({user}) if isinstance(user, str) else frozenset())


def encode_properties(properties: Properties | None) -> str | None:
    """The properties set, as JSON text for a store column (None if there are none)."""
    data = properties_to_dict(properties)
    return None if data is None else json.dumps(data, separators=(",", ":"))


def decode_properties(text: str | None) -> Properties | None:
    """The inverse of :func:`encode_properties`."""
    return None if text is None else properties_from_dict(json.loads(text))


# -- names ---------------------------------------------------------------------------


def check_name(value: object, what: str, *, empty: bool = True) -> str:
    """Return ``value`` if AMQP can carry it as a short string (UTF-8, 255 bytes at most)."""
    if type(value) is str and len(value) <= 255 and value.isascii() and (empty or value):
        return value
    if not isinstance(value, str):
        raise InvalidMessage(f"{what} must be a str, not {type(value).__name__}")
    if not empty and not value:
        raise InvalidMessage(f"{what} must not be empty")
    if len(_utf8(value, what)) > 255:
        raise InvalidMessage(f"{what} is over 255 bytes")
    return str(value)


def _utf8(text: str, where: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise InvalidMessage(f"{where} is not valid Unicode (a lone surrogate)") from None


# -- headers: check, copy and encode in one walk ---------------------------------------

_U8 = struct.Struct(">B")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_DECIMAL = struct.Struct(">Bi")

#: The latest AMQP timestamp readers take as seconds: pamqp (under aio-pika and aiormq)
#: reads any larger value as milliseconds, so a later datetime would arrive changed.
_LATEST_TIMESTAMP = 2**32 - 1

_ACCEPTED = (
    "headers carry str, int (64-bit), float, Decimal, bool, bytes, datetime, None, "
    "and lists, tuples and dicts of those"
)


def prepare_headers(headers: Mapping[str, Any]) -> tuple[Headers, bytes]:
    """Check ``headers``; return a deep copy of them and their AMQP field-table encoding.

    The copy holds what the wire carries, so it survives the stores and a replay
    unchanged: tuples become lists, bytes-like values ``bytes``, and a datetime the
    whole UTC second the AMQP timestamp holds (a naive one is taken as UTC).
    Raises :class:`InvalidMessage` naming the first value AMQP cannot carry.
    """
    if not isinstance(headers, Mapping):
        raise InvalidMessage(f"headers must be a mapping, not {type(headers).__name__}")
    copy, wire = _table(headers, "headers", 0)
    if len(wire) > MAX_HEADERS_SIZE:
        raise InvalidMessage(
            f"headers are {len(wire)} bytes on the wire, over the limit of {MAX_HEADERS_SIZE}"
        )
    return copy, wire


def encode_headers_wire(headers: Headers) -> bytes:
    """The field-table encoding of headers already checked by :func:`prepare_headers`."""
    return _table(headers, "headers", 0)[1]


def _table(table: Mapping[Any, Any], where: str, depth: int) -> tuple[Headers, bytes]:
    if depth > MAX_HEADERS_DEPTH:
        raise InvalidMessage(f"{where} nests deeper than {MAX_HEADERS_DEPTH} levels")
    copy: Headers = {}
    parts: list[bytes] = []
    for key, value in table.items():
        if not isinstance(key, str):
            raise InvalidMessage(f"{where} keys must be str, not {type(key).__name__}")
        name = _utf8(key, f"a key in {where}")
        if len(name) > 128:
            raise InvalidMessage(f"a key in {where} is over 128 bytes")
        item, wire = _value(value, f"{where}[{key[:40]!r}]", depth)
        copy[str(key)] = item
        parts.append(_U8.pack(len(name)) + name + wire)
    body = b"".join(parts)
    return copy, _U32.pack(len(body)) + body


def _value(value: Any, where: str, depth: int) -> tuple[Any, bytes]:
    if value is None:
        return None, b"V"
    if isinstance(value, bool):
        return bool(value), b"t\x01" if value else b"t\x00"
    if isinstance(value, int):
        number = int(value)
        if -128 <= number <= 127:
            return number, b"b" + _I8.pack(number)
        if -32768 <= number <= 32767:
            return number, b"s" + _I16.pack(number)
        if -(2**31) <= number < 2**31:
            return number, b"I" + _I32.pack(number)
        if -(2**63) <= number < 2**63:
            return number, b"l" + _I64.pack(number)
        raise InvalidMessage(f"{where} is an int outside the signed 64-bit range")
    if isinstance(value, float):
        double = float(value)
        if not math.isfinite(double):
            # RabbitMQ before rabbitmq-server#14209 closes the whole connection on one.
            raise InvalidMessage(f"{where} is a float that is not finite (NaN or infinity)")
        return double, b"d" + _F64.pack(double)
    if isinstance(value, str):
        data = _utf8(value, where)
        return str(value), b"S" + _U32.pack(len(data)) + data
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data, b"x" + _U32.pack(len(data)) + data
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        seconds = int(moment.timestamp())
        if not 0 <= seconds <= _LATEST_TIMESTAMP:
            raise InvalidMessage(f"{where} is a datetime outside 1970-01-01 to 2106-02-07 (UTC)")
        return datetime.fromtimestamp(seconds, UTC), b"T" + _U64.pack(seconds)
    if isinstance(value, Decimal):
        return value, b"D" + _decimal(value, where)
    if isinstance(value, Mapping):
        table, wire = _table(value, where, depth + 1)
        return table, b"F" + wire
    if isinstance(value, list | tuple):
        if depth + 1 > MAX_HEADERS_DEPTH:
            raise InvalidMessage(f"{where} nests deeper than {MAX_HEADERS_DEPTH} levels")
        items: list[Any] = []
        parts: list[bytes] = []
        for index, element in enumerate(value):
            item, wire = _value(element, f"{where}[{index}]", depth + 1)
            items.append(item)
            parts.append(wire)
        body = b"".join(parts)
        return items, b"A" + _U32.pack(len(body)) + body
    raise InvalidMessage(f"{where} is a {type(value).__name__}; {_ACCEPTED}")


def _decimal(value: Decimal, where: str) -> bytes:
    """AMQP's decimal: a scale (0-255 digits after the point) and a signed 32-bit mantissa."""
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise InvalidMessage(f"{where} is a Decimal that is not finite")
    scale = max(0, -exponent)
    mantissa = int(value.scaleb(scale))
    if scale > 255 or not -(2**31) <= mantissa < 2**31:
        raise InvalidMessage(f"{where} is a Decimal outside AMQP's 32-bit mantissa and scale")
    return _DECIMAL.pack(scale, mantissa)


# -- headers in the stores: JSON that gives back equal values -------------------------


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
    if isinstance(value, Decimal):
        return {"$n": str(value)}
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
        if "$n" in value:
            return Decimal(value["$n"])
        return {k: _untag(v) for k, v in value["$d"].items()}
    if isinstance(value, list):
        return [_untag(v) for v in value]
    return value
