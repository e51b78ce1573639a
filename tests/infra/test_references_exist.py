"""The program grants to and notifies only what exists: the refusals Google makes (a member that
is no group or user of the organisation, a notification channel that is not the project's) are
enforced by the mocks (tests/infra/program.py `refuse_unknown_references`), so a stack holding a
value that exists nowhere fails here as `pulumi up` would fail against Google.
"""

from __future__ import annotations

import json

import pytest

from tests.infra.program import run_stack


def test_the_operators_values_deploy() -> None:
    assert run_stack("prod").of_type("gcp:monitoring/alertPolicy:AlertPolicy")


def test_a_grant_to_a_group_that_does_not_exist_fails_the_update() -> None:
    with pytest.raises(Exception, match=r"Group analysts@acme-flights\.dev does not exist"):
        run_stack("dev", analystGroup="group:analysts@acme-flights.dev")


def test_an_alert_policy_on_a_channel_that_does_not_exist_fails_the_update() -> None:
    channel = "projects/flightpipe-prod/notificationChannels/1"
    with pytest.raises(Exception, match="Notification channel not found"):
        run_stack("prod", notificationChannels=json.dumps([channel]))
