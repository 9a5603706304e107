"""A private three-node RabbitMQ cluster beside the system broker, for the failover tests.

Nodes ``cluster1@localhost`` … ``cluster3@localhost`` listen for AMQP on
127.0.0.1:5681-5683 (distribution ports 25681-25683) and keep their config, data and
logs under ``$AIOPRODUCER_CLUSTER_BASE`` (default ``/tmp/aioproducer-cluster``). The
system broker on 5672 is never touched. Each node runs in the foreground of its own
process group (``setsid``), so that a kill takes the whole node at once, as ``kill -9``
of a crashed host would. Run as root (the server drops to the ``rabbitmq`` user).

    python -m tests.cluster start|stop    # the same cluster by hand
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aioproducer import Producer

BASE = Path(os.environ.get("AIOPRODUCER_CLUSTER_BASE", "/tmp/aioproducer-cluster"))
#: Seconds a node may take to boot on a busy two-core machine.
BOOT_TIMEOUT = 120.0


#: The server script itself: Debian's /usr/sbin wrapper runs it under ``su``, which
#: starts a session of its own, out of reach of a kill of our process group.
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


@dataclass
class Node:
    """One node of the cluster and the process group it runs in (if it runs)."""

    name: str
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def base(self) -> Path:
        return BASE / self.name

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def environment(self) -> dict[str, str]:
        base = self.base
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            # An empty env file: the system one pins the node name.
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_DIST_PORT": str(self.port + 20000),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_PID_FILE": str(base / f"{self.name}.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "HOME": "/var/lib/rabbitmq",  # where the shared Erlang cookie lives
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def prepare(self, *, fresh: bool) -> None:
        """Write the node's files; ``fresh`` also wipes its data (a new, unclustered node)."""
        base = self.base
        if fresh and base.exists():
            shutil.rmtree(base)
        (base / "mnesia").mkdir(parents=True, exist_ok=True)
        (base / "log").mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (base / "rabbitmq-env.conf").write_text("")
        plugins = base / "enabled_plugins"
        if not plugins.exists():
            plugins.write_text("[].\n")
        shutil.chown(BASE, "rabbitmq", "rabbitmq")
        for path in [base, *base.rglob("*")]:
            shutil.chown(path, "rabbitmq", "rabbitmq")

    def spawn(self) -> None:
        """Start the node's server in its own process group; returns at once."""
        log = (self.base / "log" / "console.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [SERVER],
                user="rabbitmq",
                group="rabbitmq",
                extra_groups=[],
                env=self.environment(),
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.base / "pgid").write_text(str(self.process.pid))

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the node's log, for an error that needs them."""
        try:
            text = (self.base / "log" / f"{self.node}.log").read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    @property
    def pid_file(self) -> Path:
        return self.base / f"{self.name}.pid"

    def kill(self) -> None:
        """``kill -9`` the node's Erlang VM and its process group: a crash, nothing flushed."""
        process, self.process = self.process, None
        self._kill_on_file()
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill_leftover(self) -> None:
        """Kill a node an earlier run left behind (its pids are on file)."""
        self._kill_on_file()

    def _kill_on_file(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(self.pid_file.read_text().strip())
            # Only an Erlang VM: a stale file may name a pid reused since.
            if Path(f"/proc/{pid}/comm").read_text().startswith("beam"):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.killpg(int((self.base / "pgid").read_text().strip()), signal.SIGKILL)
        for path in (self.pid_file, self.base / "pgid"):
            path.unlink(missing_ok=True)


async def ctl(
    node: Node,
    *args: str,
    timeout: float = BOOT_TIMEOUT,
    offline: bool = False,
    tool: str = "rabbitmqctl",
) -> str:
    """Run ``rabbitmqctl -n NODE ARGS`` (or another CLI ``tool``); return its output.

    Raises if it fails. ``offline``: a command on the node's own files while it is
    down (``force_boot``), run with the node's environment so that it finds them.
    """
    proc = await asyncio.create_subprocess_exec(
        shutil.which(tool) or f"/usr/sbin/{tool}",
        "-n",
        node.node,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=node.environment() if offline else None,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        text = out.decode(errors="replace")
        raise RuntimeError(f"{tool} -n {node.node} {' '.join(args)} failed: {text}")
    return out.decode(errors="replace")


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def await_boot(node: Node, timeout: float = BOOT_TIMEOUT) -> None:
    """Wait until ``node`` takes AMQP connections; fail if its process exits first."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    # The AMQP listener opens last in the boot; polling it costs nothing, unlike
    # rabbitmqctl, which starts an Erlang VM per call.
    while not await _listening(node.port):
        if not node.running:
            raise RuntimeError(f"{node.node} exited while booting\n{node.log_tail()}")
        if loop.time() > end:
            raise RuntimeError(f"{node.node} did not boot within {timeout:g}s\n{node.log_tail()}")
        await asyncio.sleep(0.2)
    await ctl(node, "await_startup", "--timeout", str(int(timeout)))


class Cluster:
    """Three clustered nodes; a session's tests share it and leave it whole."""

    def __init__(self) -> None:
        self.nodes = [Node(f"cluster{n}", 5680 + n) for n in (1, 2, 3)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def by_url(self, masked: str | None) -> Node:
        """The node a producer's ``stats().broker`` names."""
        for node in self.nodes:
            if masked is not None and f":{node.port}/" in masked:
                return node
        raise LookupError(f"no node of the cluster serves {masked!r}")

    async def form(self) -> None:
        """Start three fresh nodes and join the second and third to the first."""
        for node in self.nodes:
            node.kill_leftover()
            node.prepare(fresh=True)
            node.spawn()
        await asyncio.gather(*(await_boot(node) for node in self.nodes))
        first = self.nodes[0]
        for node in self.nodes[1:]:
            await ctl(node, "stop_app")
            await ctl(node, "reset")
            await ctl(node, "join_cluster", first.node)
            await ctl(node, "start_app")
        await ctl(first, "await_online_nodes", "3")

    async def kill(self, node: Node) -> None:
        """Crash ``node``: SIGKILL to its whole process group."""
        node.kill()

    async def start(self, node: Node, *, force: bool = False) -> None:
        """Boot ``node`` again on its data; ``force`` lets it boot without its peers."""
        if node.running:
            return
        if force:
            # A node that was not the last to go down waits for its peers; after a
            # crash of the whole cluster, one node must be told to boot anyway.
            await ctl(node, "force_boot", offline=True)
        node.prepare(fresh=False)
        node.spawn()
        await await_boot(node)

    async def safe_to_stop(self, node: Node) -> None:
        """Wait until every quorum queue keeps its quorum without ``node``: the check a
        rolling restart makes before each stop."""
        await ctl(node, "await_online_quorum_plus_one", tool="rabbitmq-upgrade")

    async def stop(self, node: Node) -> None:
        """Stop ``node`` gracefully (``rabbitmqctl stop``)."""
        await ctl(node, "stop")
        if node.process is not None:
            await asyncio.to_thread(node.process.wait)
        node.process = None

    async def heal(self) -> None:
        """Bring every node back and wait until all three run clustered."""
        down = [node for node in self.nodes if not node.running]
        for node in down:
            node.prepare(fresh=False)
            node.spawn()
        await asyncio.gather(*(await_boot(node) for node in down))
        await ctl(self.nodes[0], "await_online_nodes", "3")

    def destroy(self) -> None:
        """Kill every node (never fails, never waits on the broker)."""
        for node in self.nodes:
            node.kill()


def more_confirms(producer: Producer, count: int) -> Callable[[], bool]:
    """A condition for :func:`wait_until`: ``count`` more confirms of live publishes.

    Live ones only: a live channel that the broker nacks for good while the replay
    channel drains the store would otherwise pass for a working one.
    """
    target = producer.stats().confirmed + count
    return lambda: producer.stats().confirmed >= target


def main() -> None:
    """``start`` or ``stop`` the cluster by hand (start leaves it running)."""
    action = sys.argv[1] if len(sys.argv) > 1 else ""
    cluster = Cluster()
    if action == "start":
        started = time.monotonic()
        asyncio.run(cluster.form())
        print(f"cluster up in {time.monotonic() - started:.0f}s: {','.join(cluster.urls)}")
        for node in cluster.nodes:
            if node.process is not None:
                # Detach: the nodes outlive this command; `stop` kills them by pgid.
                node.process.returncode = 0
    elif action == "stop":
        for node in cluster.nodes:
            node.kill_leftover()
    else:
        sys.exit("usage: python -m tests.cluster start|stop")


if __name__ == "__main__":
    main()
