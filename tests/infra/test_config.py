"""infra/config.py: the documentation's example values never deploy, and the error is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

import config  # noqa: E402

GROUP = "group:flight-analysts@acme-flights.dev"
# pragma: allowlist nextline secret
CHANNEL = "projects/acme-flights-prod/notificationChannels/8264519037712834"


class _NoResources(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        raise AssertionError("config.load() declares no resource")

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        raise AssertionError("config.load() invokes nothing")


def _load(stack: str, **values: Any) -> config.StackConfig:
    pulumi.runtime.set_mocks(_NoResources(), project="flightpipe", stack=stack, preview=False)
    settings = {"gcp:project": f"acme-flights-{stack}"}
    for key, value in values.items():
        settings[f"flightpipe:{key}"] = value if isinstance(value, str) else json.dumps(value)
    pulumi.runtime.set_all_config(settings, [])
    return config.load()


def test_real_values_load() -> None:
    loaded = _load("prod", analystGroup=GROUP, notificationChannels=[CHANNEL])
    assert loaded.analyst_group == GROUP
    assert loaded.notification_channels == (CHANNEL,)


@pytest.mark.parametrize("group", ["group:flight-analysts@example.com", "user:someone@EXAMPLE.org"])
def test_an_example_analyst_group_is_refused_in_one_line(group: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        _load("dev", analystGroup=group)
    message = str(refused.value)
    assert "analystGroup" in message and "example" in message and "\n" not in message
    # A RunError ends `pulumi up` with this line alone, without a stack trace.
    assert isinstance(refused.value, pulumi.RunError)


def test_an_analyst_group_that_is_no_iam_member_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="expected an IAM member"):
        _load("dev", analystGroup="flight-analysts@acme-flights.dev")


def test_the_example_notification_channel_is_refused() -> None:
    # pragma: allowlist nextline secret
    example = "projects/flightpipe-prod/notificationChannels/1234567890123456789"
    with pytest.raises(config.ConfigError, match=r"notificationChannels.*example id"):
        _load("prod", analystGroup=GROUP, notificationChannels=[example])


def test_a_channel_that_is_not_a_channel_name_is_refused() -> None:
    with pytest.raises(config.ConfigError, match="notificationChannels"):
        _load("prod", analystGroup=GROUP, notificationChannels=["1234"])


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_committed_stack_files_hold_no_example_group_or_channel(stack: str) -> None:
    """The operator's values come from docs/deploying.md step 3, not from the repository."""
    main = yaml.safe_load((INFRA / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert not {"flightpipe:analystGroup", "flightpipe:notificationChannels"} & set(main)
    boot = yaml.safe_load((INFRA / "bootstrap" / f"Pulumi.{stack}.yaml").read_text())["config"]
    assert "flightpipe-bootstrap:gitlabProjectId" not in boot
