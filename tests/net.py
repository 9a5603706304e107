"""Local TCP ports for tests: one nothing listens on, and one that accepts connections and
never says a word (a frozen server)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


def free_port() -> int:
    """A TCP port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Silent:
    """A server on ``port`` that accepts connections and never answers."""

    port: int
    #: One writer per connection accepted so far.
    accepted: list[asyncio.StreamWriter] = field(default_factory=list)


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[Silent]:
    """Serve a :class:`Silent` server for the block; its connections closed after."""
    accepted: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield Silent(server.sockets[0].getsockname()[1], accepted)
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
