"""compose.yaml: valid against the compose-spec schema, and safe by construction.

Ports are published on 127.0.0.1 only, images are pinned, credentials come from .env
(of which .env.example names every variable), MongoDB runs with access control, and
the cluster profile runs three clustered RabbitMQ nodes with a quorum queue.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
CLUSTER_CONF = ROOT / "compose" / "rabbitmq-cluster.conf"

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?error}``, or ``$NAME``; not ``$$``.
_VARIABLE = re.compile(r"(?<!\$)\$(?:\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}|([A-Za-z_][A-Za-z0-9_]*))")
#: A value that is nothing but variable references (and ":" between user and password).
_ONLY_VARIABLES = re.compile(r"^(?:\$\{[A-Za-z_][A-Za-z0-9_]*(?::[?-][^}]*)?\}|:)+$")
_SECRET_NAME = re.compile(r"PASS|SECRET|COOKIE|TOKEN|USER", re.IGNORECASE)
#: name:X.Y.Z, optionally with a variant suffix (-management, -slim-bookworm).
_PINNED = re.compile(r"^[a-z0-9./-]+:\d+\.\d+\.\d+(?:-[a-z0-9.-]+)?$")


def load() -> dict[str, Any]:
    document = YAML(typ="safe").load(COMPOSE)
    assert isinstance(document, dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    found = load()["services"]
    assert isinstance(found, dict)
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in env.items()}


def example_values() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def test_valid_against_the_compose_spec_schema() -> None:
    # check-jsonschema ships the compose-spec schema (vendor.compose-spec).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ports_are_published_on_localhost_only() -> None:
    published = {name: service.get("ports", []) for name, service in services().items()}
    assert published["app"] and published["rabbitmq"] and published["mongo"]
    for name, ports in published.items():
        for port in ports:
            assert isinstance(port, str), f"{name}: write ports as HOST:PORT:PORT strings"
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"


def test_images_are_pinned() -> None:
    for name, service in services().items():
        image = service["image"]
        if "build" in service:
            assert image == "aioproducer-demo:local", name
            continue
        assert _PINNED.match(image), f"{name}: {image} is not pinned to X.Y.Z"
    dockerfile = (ROOT / "Dockerfile").read_text()
    [base] = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert _PINNED.match(base), f"Dockerfile: {base} is not pinned to X.Y.Z"


def test_no_credentials_are_written_in_compose() -> None:
    for name, service in services().items():
        for key, value in environment(service).items():
            if _SECRET_NAME.search(key):
                assert _ONLY_VARIABLES.match(value), f"{name}: {key} is written in compose.yaml"
            for url in value.split(","):
                parts = urlsplit(url.strip())
                if parts.scheme and "@" in parts.netloc:
                    userinfo = parts.netloc.rsplit("@", 1)[0]
                    assert _ONLY_VARIABLES.match(userinfo), f"{name}: {key} has credentials"


def test_credentials_must_be_set() -> None:
    """No default password: compose refuses to start until .env sets them."""
    text = COMPOSE.read_text()
    for variable in ("RABBITMQ_USER", "RABBITMQ_PASSWORD", "MONGO_ROOT_USER",
                     "MONGO_ROOT_PASSWORD", "RABBITMQ_ERLANG_COOKIE"):  # fmt: skip
        assert "${" + variable + ":?" in text
        assert "${" + variable + ":-" not in text


def test_mongodb_runs_with_access_control() -> None:
    mongo = services()["mongo"]
    env = environment(mongo)
    assert _ONLY_VARIABLES.match(env["MONGO_INITDB_ROOT_USERNAME"])
    assert _ONLY_VARIABLES.match(env["MONGO_INITDB_ROOT_PASSWORD"])
    command = mongo["command"]
    # A key file turns on access control (and is what a replica set with it needs).
    assert "--keyFile" in command
    assert "--noauth" not in command
    for app in ("app", "app-cluster"):
        url = urlsplit(environment(services()[app])["MONGO_URL"])
        assert url.username and url.password, f"{app} logs in to MongoDB"
        assert "authSource=admin" in url.query


def test_env_example_names_every_variable_and_holds_no_secret() -> None:
    referenced = {a or b for a, b in _VARIABLE.findall(COMPOSE.read_text())}
    assert {"RABBITMQ_PASSWORD", "MONGO_ROOT_PASSWORD"} <= referenced
    example = example_values()
    assert referenced - example.keys() == set()
    for name, value in example.items():
        if _SECRET_NAME.search(name) and not name.endswith("_USER"):
            assert value == "", f".env.example sets {name}: secrets belong in .env only"


def test_env_is_kept_out_of_git_and_the_image() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_cluster_profile_runs_three_nodes_and_a_quorum_queue() -> None:
    all_services = services()
    nodes = {name: s for name, s in all_services.items() if name.startswith("rabbitmq-")}
    assert sorted(nodes) == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    conf = CLUSTER_CONF.read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    for n, (name, node) in enumerate(sorted(nodes.items()), start=1):
        assert node["profiles"] == ["cluster"]
        assert node["hostname"] == name
        assert f"cluster_formation.classic_config.nodes.{n} = rabbit@{name}" in conf
        assert (
            "./compose/rabbitmq-cluster.conf:/etc/rabbitmq/conf.d/20-cluster.conf:ro"
            in (node["volumes"])
        )
        # One cookie for all: the nodes of a cluster must share it.
        assert environment(node)["RABBITMQ_ERLANG_COOKIE"].startswith("${RABBITMQ_ERLANG_COOKIE:?")
    app = all_services["app-cluster"]
    assert app["profiles"] == ["cluster"]
    env = environment(app)
    hosts = [urlsplit(url.strip()).hostname for url in env["AMQP_URL"].split(",")]
    assert hosts == ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
    assert env["AMQP_QUEUE_TYPE"] == "quorum"
    assert environment(all_services["consumer-cluster"])["AMQP_QUEUE_TYPE"] == "quorum"
    # The single-node stack stays the default.
    for name in ("rabbitmq", "mongo", "app", "consumer"):
        assert "profiles" not in all_services[name]


def test_compose_env_writes_every_secret(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    script = ROOT / "scripts" / "compose-env"
    subprocess.run([script, target], check=True, capture_output=True, timeout=30)
    written = dict(
        line.split("=", 1)
        for line in target.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert written.keys() == example_values().keys()
    assert all(written.values())
    secrets = [written[name] for name in ("RABBITMQ_PASSWORD", "MONGO_ROOT_PASSWORD")]
    assert len(set(secrets)) == 2
    assert all(re.fullmatch(r"[0-9a-f]{32}", secret) for secret in secrets)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    # Never over an existing file.
    again = subprocess.run([script, target], capture_output=True, timeout=30)
    assert again.returncode != 0
    assert (
        dict(
            line.split("=", 1)
            for line in target.read_text().splitlines()
            if line and not line.startswith("#")
        )
        == written
    )


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_accepts_it(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    subprocess.run([ROOT / "scripts" / "compose-env", env_file], check=True, timeout=30)
    base = ["docker-compose", "--project-directory", str(ROOT), "-f", str(COMPOSE)]
    for profile in ([], ["--profile", "cluster"]):
        done = subprocess.run(
            [*base, "--env-file", str(env_file), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    # Without .env, compose refuses rather than start with empty passwords.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = subprocess.run(
        [*base, "--env-file", str(empty), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "set in .env" in refused.stderr
