"""The metric-ready provider against a local stand-in for Cloud Monitoring and Google's STS.

The provider's own code path runs unchanged: `google.auth.default()` reads an external-account
credential file (the kind CI's workload identity federation writes) whose token URL is the
stand-in, exchanges its subject token there, and sends the bearer token to
`metricDescriptors.get` at the endpoint `FLIGHTPIPE_MONITORING_ENDPOINT` names.

What the stand-in does, as Google does:
* STS answers an RFC 8693 token exchange with `access_token`, `issued_token_type`, `token_type`
  and `expires_in` (https://cloud.google.com/iam/docs/reference/sts/rest/v1/TopLevel/token).
* `GET /v3/projects/<p>/metricDescriptors/<type>` takes the type with its slashes
  (googleapis/googleapis google/monitoring/v3/metric_service.proto@1346f5c:
  `get: "/v3/{name=projects/*/metricDescriptors/**}"`), answers 401 without a bearer token,
  404 until the type has been written, then 200 with the descriptor; 403 when the caller lacks
  `monitoring.metricDescriptors.get`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.delivery.json_http import JsonHandler, serve
from tests.infra.boot import external_account_file
from tests.infra.program import INFRA

from components.monitoring.ready import (  # isort: skip
    ENDPOINT_ENV,
    MetricNotReady,
    MetricReadyProvider,
)

METRIC = "prometheus.googleapis.com/flightpipe_messages_dead_lettered_total/counter"
TOKEN = "stand-in-access-token"


class StandIn(ThreadingHTTPServer):
    """Answers descriptor GETs from a script of status codes (the last one repeats)."""

    def __init__(self, script: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.paths: list[str] = []
        self.exchanges = 0


class _Handler(JsonHandler):
    server: StandIn

    def answer(self, method: str) -> None:
        if method == "POST":
            self._exchange()
        elif method == "GET":
            self._descriptor()
        else:
            super().answer(method)

    def _exchange(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        form = self.rfile.read(length).decode()
        if self.path != "/token" or "subject_token=subject" not in form:
            self.send_json(400, {"error": "invalid_request"})
            return
        self.server.exchanges += 1
        self.send_json(
            200,
            {
                "access_token": TOKEN,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )

    def _descriptor(self) -> None:
        prefix = "/v3/projects/p/metricDescriptors/"
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.send_json(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
            return
        if not self.path.startswith(prefix):
            self.send_json(404, {"error": {"code": 404, "message": "no such method"}})
            return
        self.server.paths.append(self.path)
        script = self.server.script
        status = script.pop(0) if len(script) > 1 else script[0]
        metric = self.path.removeprefix(prefix)
        if status == 200:
            self.send_json(200, {"name": self.path.removeprefix("/v3/"), "type": metric})
        elif status == 404:
            self.send_json(404, {"error": {"code": 404, "message": "Could not find descriptor"}})
        else:
            self.send_json(status, {"error": {"code": status, "message": "denied"}})


@pytest.fixture
def stand_in(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StandIn]:
    server = StandIn(list(request.param))
    url = serve(server)
    audience = "//iam.googleapis.com/locations/global/workloadIdentityPools/x"
    credentials = external_account_file(tmp_path, f"{url}/token", audience, "subject")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
        env.setenv(ENDPOINT_ENV, url)
        yield server
    server.shutdown()
    server.server_close()


def props(timeout_s: float = 5, poll_s: float = 0.05) -> dict[str, Any]:
    return {
        "project": "p",
        "metricType": METRIC,
        "exporter": "flightpipe-subscriber",
        "timeoutSeconds": timeout_s,
        "pollSeconds": poll_s,
    }


@pytest.mark.parametrize("stand_in", [[404, 404, 200]], indirect=True)
def test_waits_through_404s_until_the_descriptor_exists(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    result = MetricReadyProvider().create(props())
    assert result.id == f"p/{METRIC}"
    assert stand_in.paths == [f"/v3/projects/p/metricDescriptors/{METRIC}"] * 3
    assert stand_in.exchanges == 1
    said = capsys.readouterr().err
    assert f"waiting for Cloud Monitoring to receive {METRIC}" in said
    assert f"metric {METRIC} is in Cloud Monitoring" in said


@pytest.mark.parametrize("stand_in", [[404]], indirect=True)
def test_a_metric_that_never_arrives_fails_after_the_deadline_saying_what_to_check(
    stand_in: StandIn,
) -> None:
    with pytest.raises(MetricNotReady) as failure:
        MetricReadyProvider().create(props(timeout_s=0.3, poll_s=0.05))
    message = str(failure.value)
    assert METRIC in message and "flightpipe-subscriber" in message
    assert "re-run `pulumi up`" in message and "last answer: 404" in message
    assert "\n" not in message
    assert 2 <= len(stand_in.paths) <= 8


@pytest.mark.parametrize("stand_in", [[403]], indirect=True)
def test_a_refusal_fails_at_once_naming_the_permission(stand_in: StandIn) -> None:
    with pytest.raises(MetricNotReady, match=r"monitoring\.metricDescriptors\.get"):
        MetricReadyProvider().create(props())
    assert len(stand_in.paths) == 1


def test_without_credentials_it_fails_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
        with pytest.raises(MetricNotReady, match="no Google credentials"):
            MetricReadyProvider().create(props())


@pytest.mark.parametrize("stand_in", [[404]], indirect=True)
def test_an_optional_wait_that_runs_out_goes_on_and_asks_again_next_time(
    stand_in: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = MetricReadyProvider()
    optional = {**props(timeout_s=0.3, poll_s=0.05), "required": False}
    created = provider.create(optional)
    assert created.outs is not None and created.outs["received"] is False
    assert "next `pulumi up` asks again" in capsys.readouterr().err
    again = provider.diff("id", created.outs, optional)
    assert again.changes and not again.replaces  # an update, which polls once more
    with pytest.raises(MetricNotReady):  # the same wait, required, fails the deploy
        provider.create({**optional, "required": True})


@pytest.mark.parametrize("stand_in", [[403]], indirect=True)
def test_an_optional_wait_still_fails_on_a_refusal(stand_in: StandIn) -> None:
    with pytest.raises(MetricNotReady, match=r"monitoring\.metricDescriptors\.get"):
        MetricReadyProvider().create({**props(), "required": False})


def test_only_another_metric_type_or_project_waits_again() -> None:
    provider = MetricReadyProvider()
    old = {**props(), "received": True}
    assert not provider.diff("id", old, {**old, "timeoutSeconds": 60}).changes
    renamed = provider.diff("id", old, {**old, "metricType": METRIC.replace("total", "count")})
    assert renamed.changes and renamed.replaces == ["metricType"]


@pytest.mark.parametrize("stand_in", [[404, 200]], indirect=True)
def test_the_provider_as_pulumi_stores_it_runs_in_a_fresh_process_from_infra(
    stand_in: StandIn,
) -> None:
    # Pulumi pickles the provider into the state (pulumi.dynamic.dynamic.serialize_provider) and
    # its Python dynamic-provider host unpickles it from the program's directory.
    from pulumi.dynamic.dynamic import serialize_provider

    blob = serialize_provider(MetricReadyProvider())
    code = (
        "import base64, json, sys, dill\n"
        "provider = dill.loads(base64.b64decode(sys.stdin.readline()))\n"
        "print(provider.create(json.loads(sys.stdin.readline())).id)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=INFRA,
        input=f"{blob}\n{json.dumps(props())}\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"p/{METRIC}"
    assert len(stand_in.paths) == 2
    assert base64.b64decode(blob)  # what the state holds is the pickled provider
