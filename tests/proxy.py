"""A small TCP proxy in front of the broker, to cut connections or make them half-open."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    dead: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the broker.

    ``cut()`` resets every open connection at once (both sides see it closed).
    ``blackhole()`` makes every open connection silently drop all traffic in both
    directions, closes included, like a network path that died: neither side is told,
    and only heartbeats can notice. New connections are not affected.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self.accepted = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(client=writer, upstream=up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                if not link.dead:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        if not link.dead:
            link.abort()
            self._links.discard(link)

    def cut(self) -> int:
        """Reset every open connection; return how many."""
        links = list(self._links)
        for link in links:
            link.dead = False
            link.abort()
        self._links.clear()
        return len(links)

    def blackhole(self) -> int:
        """Silently drop all traffic of every open connection; return how many."""
        for link in self._links:
            link.dead = True
        return len(self._links)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        links = list(self._links)
        self.cut()
        for link in links:
            for task in link.tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*link.tasks, return_exceptions=True)
