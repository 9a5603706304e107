"""What the demo apps (Quart and Flask alike) refuse to publish, and with which status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ._config import Config


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error response: ``{"error": code, "detail": detail, **extra}`` with ``status``."""

    status: int
    code: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def too_large(config: Config) -> Refusal:
    """A body over ``config.max_message_size``."""
    limit = config.max_message_size
    detail = f"body over the limit of {limit} bytes"
    return Refusal(413, "message_too_large", detail, {"limit": limit})


def refuse_request(config: Config, mimetype: str, routing_key: str) -> Refusal | None:
    """Why a ``POST /messages`` is refused before its body is read, if it is."""
    # A cross-site HTML form can send only form types and text/plain: requiring JSON
    # keeps other sites' pages from publishing through a visitor's browser.
    if mimetype != "application/json":
        return Refusal(415, "unsupported_media_type", "the body must be application/json")
    if not config.allows(routing_key):
        allowed = sorted({config.routing_key, *config.allowed_routing_keys})
        detail = f"routing key {routing_key[:64]!r} is not allowed here"
        return Refusal(403, "routing_key_not_allowed", detail, {"allowed": allowed})
    return None


def refuse_body(raw: bytes) -> Refusal | None:
    """Why ``raw`` is not a body to publish, if it is not: it must be strict UTF-8 JSON."""
    try:
        json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return Refusal(400, "invalid_json", "body is not UTF-8")
    except RecursionError:
        return Refusal(400, "invalid_json", "body is nested too deeply")
    except ValueError as exc:
        return Refusal(400, "invalid_json", f"body is not JSON: {exc}")
    return None


def _reject_constant(name: str) -> NoReturn:
    """``json.loads`` hook for NaN and the infinities, which JSON does not have."""
    raise ValueError(f"{name} is not JSON")
