"""Bodies to bytes: the default serializer, and the shape of a custom one.

A serializer takes a body and returns its bytes and their content type. The default,
:func:`json_serializer`, sends bytes as they are, str as UTF-8 text and anything else
as JSON, encoding the types web code passes around: datetime, date, time, UUID,
Decimal, Enum, dataclasses, and pydantic models (when pydantic is in use; it is
never imported here).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Protocol

from ._exceptions import BodyNotSerializable


class Serializer(Protocol):
    """Turns a body into ``(bytes, content_type)``; raises for a body it cannot encode."""

    def __call__(self, body: Any, /) -> tuple[bytes, str]: ...


#: What goes out as it is, whatever the serializer.
_BYTES_LIKE = (bytes, bytearray, memoryview)
BYTES_TYPE = "application/octet-stream"
TEXT_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"


def _default(value: Any) -> Any:
    """What JSON cannot encode by itself, as values it can."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"a {type(value).__name__} is not JSON-serialisable")


_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
).encode


def encode_text(text: str) -> bytes:
    """``text`` as UTF-8; :class:`BodyNotSerializable` for a lone surrogate."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise BodyNotSerializable("body is not valid Unicode (a lone surrogate)") from None


def json_serializer(body: Any) -> tuple[bytes, str]:
    """The default serializer: bytes as is, str as UTF-8, anything else as JSON.

    Raises :class:`~aioproducer.BodyNotSerializable` for what it cannot encode.
    """
    if isinstance(body, _BYTES_LIKE):
        return bytes(body), BYTES_TYPE
    if isinstance(body, str):
        return encode_text(body), TEXT_TYPE
    try:
        text = _encode(body)
    except (TypeError, ValueError, RecursionError) as exc:
        raise BodyNotSerializable(f"body is not JSON-serialisable: {exc}") from exc
    return encode_text(text), JSON_TYPE
