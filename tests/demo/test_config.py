"""The demo app's settings, read from the environment."""

from __future__ import annotations

import pytest

from demo_app import Config, ConfigError


def test_defaults_when_nothing_is_set() -> None:
    config = Config.from_env({})
    assert config == Config()
    assert config.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert config.mongo_url is None
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    assert config.tick_seconds is None


def test_every_variable_is_read() -> None:
    config = Config.from_env(
        {
            "AMQP_URL": "amqp://u:p@rabbit:5672/vh",
            "MONGO_URL": "mongodb://mongo:27017/?replicaSet=rs0",
            "MONGO_DATABASE": "db",
            "MONGO_COLLECTION": "coll",
            "SPILL_PATH": "/data/spill.db",
            "EXCHANGE": "events",
            "ROUTING_KEY": "orders",
            "SPILL_AFTER": "2.5",
            "MAX_BUFFER": "500",
            "MAX_MESSAGE_SIZE": "4096",
            "CLOSE_TIMEOUT": "3",
            "FALLBACK_DIR": "/data",
            "HOST": "0.0.0.0",
            "PORT": "9000",
            "TICK_SECONDS": "2",
        }
    )
    assert config == Config(
        amqp_url="amqp://u:p@rabbit:5672/vh",
        mongo_url="mongodb://mongo:27017/?replicaSet=rs0",
        mongo_database="db",
        mongo_collection="coll",
        spill_path="/data/spill.db",
        exchange="events",
        routing_key="orders",
        spill_after=2.5,
        max_buffer=500,
        max_message_size=4096,
        close_timeout=3.0,
        fallback_dir="/data",
        host="0.0.0.0",
        port=9000,
        tick_seconds=2.0,
    )


def test_empty_values_count_as_unset_and_tick_zero_is_off() -> None:
    config = Config.from_env({"MONGO_URL": "", "PORT": " ", "TICK_SECONDS": "0"})
    assert config.mongo_url is None
    assert config.port == 8000
    assert config.tick_seconds is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SPILL_AFTER", "soon", "SPILL_AFTER='soon': not a number"),
        ("SPILL_AFTER", "0", "SPILL_AFTER='0': must be greater than 0"),
        ("SPILL_AFTER", "nan", "must be a finite number"),
        ("MAX_BUFFER", "1.5", "MAX_BUFFER='1.5': not a whole number"),
        ("MAX_BUFFER", "-1", "must be greater than 0"),
        ("PORT", "70000", "PORT='70000': must be between 0 and 65535"),
        ("TICK_SECONDS", "-2", "TICK_SECONDS='-2': must be 0 (off) or more"),
        ("ROUTING_KEY", "k" * 256, "over 255 bytes"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + name) as caught:
        Config.from_env({name: value})
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_routing_key_allowlist_queue_type_and_read_timeout() -> None:
    config = Config.from_env(
        {
            "ROUTING_KEY": "orders",
            "ALLOWED_ROUTING_KEYS": "invoices, refunds",
            "AMQP_QUEUE_TYPE": "quorum",
            "READ_TIMEOUT": "12",
        }
    )
    assert config.allowed_routing_keys == frozenset({"invoices", "refunds"})
    assert config.queue_type == "quorum"
    assert config.read_timeout == 12
    assert [config.allows(key) for key in ("orders", "invoices", "refunds", "other")] == [
        True,
        True,
        True,
        False,
    ]


def test_by_default_only_the_configured_routing_key_is_allowed() -> None:
    config = Config.from_env({"ROUTING_KEY": "orders"})
    assert config.allows("orders")
    assert not config.allows("demo")
    assert not config.allows("")
    assert config.queue_type is None


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ALLOWED_ROUTING_KEYS", "a,,b", "an empty routing key"),
        ("ALLOWED_ROUTING_KEYS", "a," + "k" * 256, "over 255 bytes"),
        ("AMQP_QUEUE_TYPE", "stream", "must be one of classic, quorum"),
        ("READ_TIMEOUT", "0", "must be greater than 0"),
    ],
)
def test_bad_new_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + name) as caught:
        Config.from_env({name: value})
    assert message in str(caught.value)


def test_amqp_url_may_list_the_nodes_of_a_cluster() -> None:
    config = Config.from_env(
        {"AMQP_URL": "amqp://u:p,w@rabbit1:5672/ , amqp://u:p,w@rabbit2:5672/,amqps://u:p@r3/"}
    )
    assert config.amqp_urls == (
        "amqp://u:p,w@rabbit1:5672/",
        "amqp://u:p,w@rabbit2:5672/",
        "amqps://u:p@r3/",
    )
    assert Config().amqp_urls == ("amqp://guest:guest@127.0.0.1:5672/",)


def test_a_bad_amqp_url_is_named_without_its_password() -> None:
    with pytest.raises(ConfigError, match=r"^AMQP_URL=") as caught:
        Config.from_env({"AMQP_URL": "amqp://u:secret@rabbit1/,amqp://:5672/"})
    assert "secret" not in str(caught.value)
    with pytest.raises(ConfigError, match="start with amqp://"):
        Config.from_env({"AMQP_URL": "rabbit1:5672"})
