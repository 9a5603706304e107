"""A small TCP proxy in front of the broker, to cut connections or make them half-open."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

#: Basic.Publish: AMQP class 60, method 40.
_BASIC_PUBLISH = b"\x00\x3c\x00\x28"


class PublishCounter:
    """Counts the Basic.Publish frames in a client's byte stream to the broker.

    AMQP 0-9-1 framing: an 8-byte protocol header, then frames of type (1 byte),
    channel (2), size (4), payload (size bytes) and an end octet.
    """

    def __init__(self) -> None:
        self.publishes = 0
        self._data = bytearray()
        self._header_seen = False

    def feed(self, data: bytes) -> None:
        buffer = self._data
        buffer += data
        if not self._header_seen:
            if len(buffer) < 8:
                return
            del buffer[:8]
            self._header_seen = True
        while len(buffer) >= 7:
            size = int.from_bytes(buffer[3:7], "big")
            if len(buffer) < 7 + size + 1:
                return
            if buffer[0] == 1 and buffer[7:11] == _BASIC_PUBLISH:
                self.publishes += 1
            del buffer[: 7 + size + 1]


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    dead: bool = False
    lag: float = 0.0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    sent: PublishCounter = field(default_factory=PublishCounter)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the broker.

    ``cut()`` resets every open connection at once (both sides see it closed).
    ``lag()`` delays what the broker sends (its confirms) on open connections.
    ``blackhole()`` makes every open connection silently drop all traffic in both
    directions, closes included, like a network path that died: neither side is told,
    and only heartbeats can notice. New connections are not affected.
    ``publishes`` counts the Basic.Publish frames clients sent through it.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5672) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._closed_publishes = 0
        self.accepted = 0
        #: When set, a connection goes silent (as ``blackhole()``) at its first publish,
        #: which never reaches the broker.
        self.freeze_on_publish = False

    @property
    def publishes(self) -> int:
        """Basic.Publish frames clients have sent through the proxy so far."""
        return self._closed_publishes + sum(link.sent.publishes for link in self._links)

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
            asyncio.create_task(self._pump(link, reader, up_writer, counter=link.sent)),
            asyncio.create_task(self._pump(link, up_reader, writer, lagging=True)),
        ]

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        lagging: bool = False,
        counter: PublishCounter | None = None,
    ) -> None:
        delayed: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        deliverer = None
        if lagging:
            deliverer = asyncio.create_task(self._deliver(link, delayed, writer))
            link.tasks.append(deliverer)  # cancelled with the pumps on close()
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                if counter is not None:
                    counter.feed(data)
                    if counter.publishes and self.freeze_on_publish:
                        link.dead = True
                if deliverer is not None:
                    # Simulated latency: each chunk goes out ``lag`` after it came in.
                    delayed.put_nowait((loop.time() + link.lag, data))
                elif not link.dead:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        if deliverer is not None:
            delayed.put_nowait((0.0, b""))
            await deliverer
        if not link.dead:
            link.abort()
            self._forget(link)

    def _forget(self, link: _Link) -> None:
        if link in self._links:
            self._links.discard(link)
            self._closed_publishes += link.sent.publishes

    async def _deliver(
        self, link: _Link, delayed: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (item := await delayed.get())[1]:
                due, data = item
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if not link.dead:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass

    def cut(self) -> int:
        """Reset every open connection; return how many."""
        links = list(self._links)
        for link in links:
            link.dead = False
            link.abort()
            self._forget(link)
        return len(links)

    def lag(self, seconds: float) -> int:
        """Delay everything the broker sends on open connections by ``seconds``."""
        for link in self._links:
            link.lag = seconds
        return len(self._links)

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
