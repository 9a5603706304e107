"""compose.yaml's cluster profile, run on this machine's RabbitMQ without Docker.

Three private nodes start with compose/rabbitmq-cluster.conf, its node names
(``rabbit@rabbitmq-N``) mapped to local ones. They must form one cluster by themselves;
the demo app, with ``AMQP_QUEUE_TYPE=quorum``, declares its queue on it as a quorum
queue replicated on all three; and the messages it published are still read from
another node once the first one stops.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo_app import Config, create_app, producer_of
from demo_app.consumer import DedupConsumer
from tests.net import free_port

CONF = Path(__file__).resolve().parents[2] / "compose" / "rabbitmq-cluster.conf"

pytestmark = [
    pytest.mark.fault,
    pytest.mark.skipif(
        shutil.which("rabbitmq-server") is None or os.geteuid() != 0,
        reason="needs rabbitmq-server, started as root (it drops to the rabbitmq user)",
    ),
]


@dataclass
class Node:
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"


def ctl(tool: str, node: Node, *args: str) -> str:
    done = subprocess.run(
        [tool, "-n", node.name, *args], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def cluster() -> Iterator[list[Node]]:
    # Not under pytest's tmp_path: the nodes run as the rabbitmq user, who cannot enter it.
    root = Path(tempfile.mkdtemp(prefix="aioproducer-cluster-"))
    shutil.chown(root, "rabbitmq", "rabbitmq")
    tag = os.urandom(3).hex()
    nodes = [Node(f"aioproducer-cluster-{tag}-{n}@localhost", free_port()) for n in (1, 2, 3)]
    names = {f"rabbit@rabbitmq-{n}": node.name for n, node in enumerate(nodes, start=1)}
    conf = re.sub(r"rabbit@rabbitmq-\d", lambda m: names[m.group(0)], CONF.read_text())
    assert conf != CONF.read_text()
    started: list[tuple[Node, Path]] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for node in nodes:
            base = root / node.name.partition("@")[0]
            (base / "log").mkdir(parents=True)
            (base / "rabbitmq.conf").write_text(
                f"listeners.tcp.local = 127.0.0.1:{node.port}\nloopback_users = none\n" + conf
            )
            (base / "enabled_plugins").write_text("[].\n")
            (base / "rabbitmq-env.conf").write_text("")
            shutil.chown(base, "rabbitmq", "rabbitmq")
            for path in base.rglob("*"):
                shutil.chown(path, "rabbitmq", "rabbitmq")
            env = {
                **os.environ,
                "RABBITMQ_NODENAME": node.name,
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
                "RABBITMQ_DIST_PORT": str(free_port()),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_PID_FILE": str(base / "node.pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "ERL_FLAGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            }
            with open(base / "log" / "console.log", "wb") as console:
                server = subprocess.Popen(
                    ["rabbitmq-server"],
                    cwd=base,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            servers.append(server)
            started.append((node, base))
        for node, base in started:
            # Waits for the pid file, then for the node to finish booting.
            ctl("rabbitmqctl", node, "wait", str(base / "node.pid"), "--timeout", "150")
        yield nodes
    finally:
        for node, _ in started:
            subprocess.run(
                ["rabbitmqctl", "-n", node.name, "stop"], capture_output=True, timeout=120
            )
        for server in servers:
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


async def test_three_nodes_cluster_and_a_quorum_queue_outlives_one(
    cluster: list[Node], tmp_path: Path
) -> None:
    first, _, third = cluster
    status = json.loads(ctl("rabbitmqctl", first, "cluster_status", "--formatter", "json"))
    assert sorted(status["running_nodes"]) == sorted(node.name for node in cluster)

    queue = f"test-quorum-{os.urandom(4).hex()}"
    config = Config.from_env(
        {
            "AMQP_URL": first.url,
            "AMQP_QUEUE_TYPE": "quorum",
            "ROUTING_KEY": queue,
            "SPILL_PATH": str(tmp_path / "spill.db"),
            "FALLBACK_DIR": str(tmp_path),
        }
    )
    app = create_app(config)
    ids: set[str] = set()
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for n in range(20):
            response = await client.post("/messages", json={"n": n})
            assert response.status_code == 202
            ids.add((await response.get_json())["message_id"])
        assert await producer_of(app).flush(timeout=60)
        assert producer_of(app).stats().confirmed == 20

    members = json.loads(
        ctl("rabbitmq-queues", first, "quorum_status", queue, "--formatter", "json")
    )
    assert sorted(member["Node Name"] for member in members) == sorted(n.name for n in cluster)

    ctl("rabbitmqctl", first, "stop_app")
    async with DedupConsumer(third.url, queue, queue_type="quorum") as consumer:
        assert await consumer.wait_for(ids, timeout=60) == set()
