"""nx-27017, a MongoDB wire-protocol server backed by SQLite, run for the tests.

It is not MongoDB: no authentication, no replica set, write concerns ignored, no
16 MiB document limit, no update pipelines (so no ``$$NOW`` leases), no ``_id``
inside a compound index, and index names are its own. It lets the real PyMongo
driver path run on a bare machine, and can be killed, frozen and restarted.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.net import free_port

NX_NAME = "mongo-wire(nx-27017)"


def nx_executable() -> str | None:
    """The ``nx-27017`` command of this environment, if installed."""
    beside = Path(sys.executable).parent / "nx-27017"
    return str(beside) if beside.exists() else shutil.which("nx-27017")


class NxServer:
    """One nx-27017 process on a free port, its data in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        executable = nx_executable()
        if executable is None:
            raise RuntimeError("nx-27017 is not installed: pip install nx-27017")
        self.executable = executable
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait, at most ``timeout`` seconds, until it accepts."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.data_dir / "server.log"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.executable,
                    "--data-dir",
                    str(self.data_dir / "data"),
                    "-p",
                    str(self.port),
                    "--log-file",
                    str(log),
                    "--pid-file",
                    str(self.data_dir / "server.pid"),
                ],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        end = time.monotonic() + timeout
        while not self._accepts():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.proc.returncode}; see {log}")
            if time.monotonic() > end:
                self.kill()
                raise RuntimeError(f"nx-27017 did not listen on {self.port} in {timeout}s")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.proc is not None and self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        """Kill the server (thawed first, so that it can die), and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.frozen:
            os.kill(proc.pid, signal.SIGCONT)
            self.frozen = False
        proc.kill()
        proc.wait(timeout=30)

    def restart(self) -> None:
        """Kill and start again, on the same port and data."""
        self.kill()
        self.start()
