"""What the soak breaks and mends: the broker, its memory alarm and the store's server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
from pathlib import Path

from tests.broker import rabbitmqctl, watermark_args

log = logging.getLogger("soak.faults")


class RestoreFailed(RuntimeError):
    """The broker or the store could not be put back as it was."""


class Broker:
    """``rabbitmqctl`` on one node (``None``: the default node), remembering what it changed."""

    def __init__(self, node: str | None) -> None:
        self.node = node
        self._prefix = ["-n", node] if node else []
        self.stopped = False
        self._watermark: list[str] | None = None
        """The watermark to restore while an alarm is raised."""

    async def ctl(self, *args: str, timeout: float = 120.0) -> str:
        return await rabbitmqctl(*self._prefix, *args, timeout=timeout)

    async def stop(self) -> None:
        self.stopped = True
        await self.ctl("stop_app")

    async def start(self) -> None:
        await self.ctl("start_app")
        await self.ctl("await_startup")
        self.stopped = False

    async def watermark(self) -> list[str]:
        """The node's memory high watermark, as arguments that set it again."""
        out = await self.ctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
        return watermark_args(out)

    async def raise_alarm(self) -> None:
        self._watermark = await self.watermark()
        await self.ctl("set_vm_memory_high_watermark", "0.000001")

    async def clear_alarm(self) -> None:
        if self._watermark is None:
            return
        await self.ctl("set_vm_memory_high_watermark", *self._watermark)
        now = await self.watermark()
        if now != self._watermark:
            raise RestoreFailed(f"memory watermark is {now}, not {self._watermark}")
        self._watermark = None

    async def restore(self) -> None:
        """Put back whatever this object changed; raise :class:`RestoreFailed` if it can't."""
        try:
            if self.stopped:
                await self.start()
            await self.clear_alarm()
        except (RuntimeError, OSError, TimeoutError) as exc:
            raise RestoreFailed(f"broker {self.node or '(default node)'}: {exc}") from exc


class NxServer:
    """A MongoDB wire-protocol server (nx-27017, on SQLite) the soak runs, kills and freezes."""

    def __init__(self, executable: str, folder: Path, port: int) -> None:
        self.executable = executable
        self.folder = folder
        self.port = port
        self.url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        self._proc: asyncio.subprocess.Process | None = None
        self.frozen = False

    async def start(self, timeout: float = 30.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "server.out").open("ab") as out:
            self._proc = await asyncio.create_subprocess_exec(
                self.executable,
                "--data-dir",
                str(self.folder / "data"),
                "--port",
                str(self.port),
                "--log-file",
                str(self.folder / "server.log"),
                "--pid-file",
                str(self.folder / "server.pid"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # a Ctrl-C in the terminal is the soak's to handle
            )
        log.info("nx-27017 pid %d on port %d", self._proc.pid, self.port)
        await self._wait_listening(timeout)

    async def _wait_listening(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            if self._proc is None or self._proc.returncode is not None:
                raise RestoreFailed(f"nx-27017 exited; see {self.folder / 'server.out'}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > end:
                    raise RestoreFailed(f"nx-27017 not listening after {timeout}s") from None
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL: the server vanishes mid-operation, as in a crash."""
        if self._proc is not None and self.running:
            self._proc.kill()
            await self._proc.wait()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets open and answers nothing."""
        if self._proc is not None and self.running:
            os.kill(self._proc.pid, signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self._proc is not None and self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGCONT)
        self.frozen = False

    async def restore(self) -> None:
        """Thaw it, or start it again if it is gone."""
        self.thaw()
        if not self.running:
            await self.start()

    async def stop(self, timeout: float = 10.0) -> None:
        self.thaw()
        if self._proc is None or not self.running:
            return
        self._proc.terminate()
        try:
            await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()


class SQLiteLock:
    """Another connection's exclusive lock on an SQLite file: the store cannot write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    async def lock(self, timeout: float = 30.0) -> None:
        def take() -> sqlite3.Connection:
            conn = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("BEGIN EXCLUSIVE")
            except BaseException:
                conn.close()
                raise
            return conn

        self._conn = await asyncio.to_thread(take)

    async def unlock(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(conn.close)  # an open transaction is rolled back

    async def restore(self) -> None:
        try:
            await self.unlock()
        except sqlite3.Error as exc:
            raise RestoreFailed(f"SQLite lock on {self.path}: {exc}") from exc
