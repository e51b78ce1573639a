"""Settings: read once from the environment, validated, one clear line per problem."""

from __future__ import annotations

import pytest

from flightpipe.settings import ENV_VARS, ConfigError, load_settings


def test_defaults_run_the_embedded_stack() -> None:
    s = load_settings({})
    assert (s.broker, s.warehouse, s.port) == ("embedded", "duckdb", 8080)
    assert (s.topic, s.subscription, s.dead_letter_topic, s.dataset) == (
        "flights",
        "flights-subscriber",
        "flights-dead-letter",
        "flights",
    )


def test_values_come_from_upper_snake_environment_names() -> None:
    s = load_settings({"FLIGHTPIPE_BATCH_SIZE": "250", "PORT": "9000", "FLIGHTPIPE_TOPIC": "t"})
    assert (s.batch_size, s.port, s.topic) == (250, 9000, "t")
    assert "FLIGHTPIPE_BATCH_SIZE" in ENV_VARS and "PORT" in ENV_VARS


def test_explicit_overrides_win_over_the_environment() -> None:
    s = load_settings({"FLIGHTPIPE_DATA_DIR": "/a"}, data_dir="/b")
    assert s.data_dir == "/b"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FLIGHTPIPE_BATCH_SIZE": "zero"}, "FLIGHTPIPE_BATCH_SIZE"),
        ({"FLIGHTPIPE_BATCH_SIZE": "0"}, "FLIGHTPIPE_BATCH_SIZE"),
        ({"PORT": "70000"}, "PORT"),
        ({"FLIGHTPIPE_BROKER": "kafka"}, "FLIGHTPIPE_BROKER"),
        ({"FLIGHTPIPE_BROKER": "pubsub"}, "GOOGLE_CLOUD_PROJECT"),
        ({"FLIGHTPIPE_WAREHOUSE": "bigquery"}, "GOOGLE_CLOUD_PROJECT"),
        ({"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}, "PUBSUB_EMULATOR_HOST"),
        ({"FLIGHTPIPE_DEAD_LETTER_TOPIC": "flights"}, "FLIGHTPIPE_DEAD_LETTER_TOPIC"),
    ],
)
def test_a_bad_or_contradictory_setting_is_one_line_naming_it(
    env: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert named in message
    assert "\n" not in message


def test_empty_values_mean_unset() -> None:
    assert load_settings({"FLIGHTPIPE_TOPIC": ""}).topic == "flights"


def test_a_short_ack_deadline_is_for_the_embedded_broker_only() -> None:
    assert load_settings({"FLIGHTPIPE_ACK_DEADLINE_SECONDS": "2"}).ack_deadline_seconds == 2
    with pytest.raises(ConfigError, match="FLIGHTPIPE_ACK_DEADLINE_SECONDS must be 10-600"):
        load_settings(
            {
                "FLIGHTPIPE_BROKER": "pubsub",
                "GOOGLE_CLOUD_PROJECT": "p",
                "FLIGHTPIPE_ACK_DEADLINE_SECONDS": "5",
            }
        )
