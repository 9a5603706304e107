"""The last resort on close: messages the store would not take, written to a local file.

One JSON object a line, the body in base64; ``python -m aioproducer import``
puts such a file into any store.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ._message import (
    Message,
    decode_headers,
    encode_headers,
    properties_from_dict,
    properties_to_dict,
)

log = logging.getLogger("aioproducer.spill")


def write_fallback(folder: Path, owner: str, messages: Sequence[Message]) -> Path | None:
    """Write ``messages`` to a new file in ``folder``, else in the system temp folder.

    The file is named by owner, time and a random suffix (never an existing one),
    created readable by its owner only, and fsynced with its folder. Returns its
    path, or None when neither folder could take it.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"aioproducer-unsent-{owner.replace(':', '-').replace('/', '-')}-{stamp}"
    for where in (folder, Path(tempfile.gettempdir())):
        path = where / f"{name}-{os.urandom(3).hex()}.jsonl"
        try:
            write_messages(path, messages)
        except OSError as exc:
            log.error(
                "writing %d messages to %s failed: %s", len(messages), path, exc.strerror or exc
            )
            continue
        return path
    return None


def write_messages(path: Path, messages: Iterable[Message]) -> int:
    """Write ``messages`` to a new file at ``path`` (mode 0600), fsync it and its folder."""
    count = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "w", encoding="utf-8", closefd=False) as out:
            for message in messages:
                out.write(json.dumps(_to_dict(message), separators=(",", ":")) + "\n")
                count += 1
            out.flush()
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return count


def read_messages(path: Path) -> Iterator[Message]:
    """The messages of a file written by :func:`write_messages`."""
    with open(path, encoding="utf-8") as src:
        for line in src:
            if line.strip():
                yield _from_dict(json.loads(line))


def _to_dict(message: Message) -> dict[str, object]:
    return {
        "message_id": message.message_id,
        "body": base64.b64encode(message.body).decode(),
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "content_type": message.content_type,
        "timestamp": message.timestamp,
        "headers": encode_headers(message.headers),
        "attempts": message.attempts,
        "last_error": message.last_error,
        "dead": message.dead,
        "properties": properties_to_dict(message.properties),
    }


def _from_dict(data: dict[str, object]) -> Message:
    headers = data["headers"]
    last_error = data["last_error"]
    timestamp = data["timestamp"]
    attempts = data["attempts"]
    if (
        not isinstance(timestamp, int | float)
        or not isinstance(attempts, int)
        or not isinstance(headers, str | None)
        or not isinstance(last_error, str | None)
    ):
        raise ValueError(f"bad record for message {data.get('message_id')!r}")
    return Message(
        message_id=str(data["message_id"]),
        body=base64.b64decode(str(data["body"])),
        exchange=str(data["exchange"]),
        routing_key=str(data["routing_key"]),
        content_type=str(data["content_type"]),
        timestamp=float(timestamp),
        headers=decode_headers(headers),
        attempts=attempts,
        last_error=last_error,
        dead=data.get("dead") is True,
        # Files written before properties were kept have no such field.
        properties=properties_from_dict(data.get("properties")),
    )
