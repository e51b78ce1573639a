"""The Google stand-in refuses as Google does: disabled APIs, and callers the IAM simulation does
not grant (tests/delivery/fake_google.py). Fast: no process, no job; the identity table is the
one tests/infra's simulation computes from both programs under mocks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from scripts.preflight import BOOTSTRAP_APIS
from tests.delivery.fake_google import Authorizer, FakeGoogle, simulated_iam, unsigned_jwt

PROJECT = "flightpipe-dev"
SERVICE = f"projects/{PROJECT}/locations/us-central1/services/flightpipe-api"
DEPLOYER = f"flightpipe-deployer@{PROJECT}.iam.gserviceaccount.com"
PREVIEWER = f"flightpipe-previewer@{PROJECT}.iam.gserviceaccount.com"
API_ACCOUNT = f"flightpipe-api@{PROJECT}.iam.gserviceaccount.com"
PROD_DEPLOYER = "flightpipe-deployer@flightpipe-prod.iam.gserviceaccount.com"
SECRET = f"projects/{PROJECT}/secrets/flightpipe-e2e-api-key"


@pytest.fixture(scope="module")
def iam() -> Authorizer:
    return simulated_iam()


@pytest.fixture
def fake(iam: Authorizer) -> FakeGoogle:
    google = FakeGoogle(authorize=iam)
    google.revisions[SERVICE] = ["rev-1", "rev-2"]
    google.secrets[SECRET] = "k"
    return google


def call(
    fake: FakeGoogle, method: str, path: str, caller: str | None, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer at:{caller}"} if caller else {}
    return fake.route(method, path, body or {}, caller, headers)


def error_info(payload: dict[str, Any]) -> dict[str, Any]:
    (info,) = [
        d for d in payload["error"]["details"] if d["@type"].endswith("google.rpc.ErrorInfo")
    ]
    return dict(info)


def test_a_call_to_an_api_the_project_has_not_enabled_is_refused_with_service_disabled(
    fake: FakeGoogle,
) -> None:
    fake.enabled_apis[PROJECT] = set(BOOTSTRAP_APIS)  # bootstrapped, never deployed
    status, payload = call(fake, "GET", f"/v2/{SERVICE}", DEPLOYER)
    assert status == 403
    assert payload["error"]["status"] == "PERMISSION_DENIED"
    assert (
        "Cloud Run Admin API has not been used in project flightpipe-dev"
        in (payload["error"]["message"])
    )
    info = error_info(payload)
    assert info["reason"] == "SERVICE_DISABLED"
    assert info["domain"] == "googleapis.com"
    assert info["metadata"]["service"] == "run.googleapis.com"
    assert info["metadata"]["consumer"] == f"projects/{PROJECT}"
    # The same project answers the APIs it has enabled (IAM Credentials: the bootstrap's).
    path = f"/v1/projects/-/serviceAccounts/{DEPLOYER}:generateIdToken"
    assert call(fake, "POST", path, DEPLOYER, {"audience": "https://api"})[0] == 200


def test_the_deployer_may_make_every_call_of_the_pipeline(fake: FakeGoogle) -> None:
    assert call(fake, "GET", f"/v2/{SERVICE}", DEPLOYER) == (
        200,
        {"trafficStatuses": [{"revision": "rev-1", "percent": 100}]},
    )
    status, _ = call(fake, "GET", f"/v1/{SECRET}/versions/latest:access", DEPLOYER)
    assert status == 200
    path = f"/v1/projects/-/serviceAccounts/{DEPLOYER}:generateIdToken"
    assert call(fake, "POST", path, DEPLOYER, {"audience": "https://api"})[0] == 200
    traffic = {"traffic": [{"revision": "rev-1", "percent": 100}]}
    assert call(fake, "PATCH", f"/v2/{SERVICE}", DEPLOYER, traffic)[0] == 200


@pytest.mark.parametrize(
    ("caller", "method", "path", "permission"),
    [
        # The previewer reads Cloud Run but may not shift traffic.
        (PREVIEWER, "PATCH", f"/v2/{SERVICE}", "run.services.update"),
        # The API's runtime account reads its own key secret, not the plain e2e key.
        (
            API_ACCOUNT,
            "GET",
            f"/v1/{SECRET}/versions/latest:access",
            "secretmanager.versions.access",
        ),
        # Prod's deployer holds nothing in the dev project.
        (PROD_DEPLOYER, "GET", f"/v2/{SERVICE}", "run.services.get"),
        # Nobody mints ID tokens for another account.
        (
            DEPLOYER,
            "POST",
            f"/v1/projects/-/serviceAccounts/{API_ACCOUNT}:generateIdToken",
            "iam.serviceAccounts.getOpenIdToken",
        ),
    ],
    ids=["previewer-shifts-traffic", "api-reads-e2e-key", "prod-deployer-in-dev", "id-token"],
)
def test_a_caller_the_iam_simulation_does_not_grant_is_refused_with_permission_denied(
    fake: FakeGoogle, caller: str, method: str, path: str, permission: str
) -> None:
    body = {"traffic": [{"revision": "rev-1", "percent": 100}]} if method == "PATCH" else {}
    status, payload = call(fake, method, path, caller, body)
    assert status == 403, payload
    assert payload["error"]["status"] == "PERMISSION_DENIED"
    assert f"Permission '{permission}' denied" in payload["error"]["message"]
    info = error_info(payload)
    assert info["reason"] == "IAM_PERMISSION_DENIED"
    assert info["metadata"]["permission"] == permission
    assert not fake._serving, "a refused PATCH changed nothing"


def test_without_a_token_every_api_call_is_unauthenticated(fake: FakeGoogle) -> None:
    assert call(fake, "GET", f"/v2/{SERVICE}", None)[0] == 401


def test_a_service_that_does_not_exist_is_404_to_a_caller_who_may_read_it(
    fake: FakeGoogle,
) -> None:
    status, payload = call(fake, "GET", f"/v2/{SERVICE}-other", DEPLOYER)
    assert status == 404 and payload["error"]["status"] == "NOT_FOUND"


@pytest.fixture
def served(fake: FakeGoogle) -> Iterator[str]:
    server, url = fake.start()
    try:
        yield url
    finally:
        server.shutdown()


def test_over_http_the_refusal_is_recorded_with_its_caller(fake: FakeGoogle, served: str) -> None:
    fake.enabled_apis[PROJECT] = set(BOOTSTRAP_APIS)
    response = requests.get(
        f"{served}/v2/{SERVICE}", headers={"Authorization": f"Bearer at:{DEPLOYER}"}, timeout=10
    )
    assert response.status_code == 403
    assert response.json()["error"]["details"][1]["reason"] == "SERVICE_DISABLED"
    assert [(c.method, c.path, c.caller) for c in fake.calls] == [
        ("GET", f"/v2/{SERVICE}", DEPLOYER)
    ]


PROVIDER = (
    # pragma: allowlist nextline secret
    "projects/123456789012/locations/global/workloadIdentityPools/gitlab/providers/gitlab-oidc"
)


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        (f"//iam.googleapis.com/{PROVIDER}", True),
        (f"https://iam.googleapis.com/{PROVIDER}", True),
        ("https://gitlab.com", False),  # the issuer: every GitLab relying party's audience
        (f"//iam.googleapis.com/{PROVIDER}-other", False),
    ],
)
def test_sts_takes_only_tokens_for_the_providers_own_name(
    fake: FakeGoogle, aud: str, accepted: bool
) -> None:
    body = {
        "subject_token": unsigned_jwt({"aud": aud}),
        "audience": f"//iam.googleapis.com/{PROVIDER}",
    }
    status, payload = fake.route("POST", "/v1/token", body, None, {})
    assert (status, payload.get("error")) == ((200, None) if accepted else (400, "invalid_grant"))
