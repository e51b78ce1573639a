"""scripts/cloud_run.py against the Google stand-in, through google-auth's real federation flow.

The first deploy reads the serving revision before `pulumi up` has enabled the Cloud Run Admin
API: Google's answer is 403 SERVICE_DISABLED, which means no service exists yet; any other
refusal fails with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.preflight import BOOTSTRAP_APIS
from tests.delivery.fake_google import Authorizer, FakeGoogle, credential_file, simulated_iam

REPO = Path(__file__).resolve().parents[2]
PROJECT = "flightpipe-dev"
SERVICE = f"projects/{PROJECT}/locations/us-central1/services/flightpipe-api"
DEPLOYER = f"flightpipe-deployer@{PROJECT}.iam.gserviceaccount.com"
API_ACCOUNT = f"flightpipe-api@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def iam() -> Authorizer:
    return simulated_iam(("dev",))


@pytest.fixture
def google(iam: Authorizer) -> Iterator[tuple[FakeGoogle, str]]:
    fake = FakeGoogle(authorize=iam)
    server, url = fake.start()
    try:
        yield fake, url
    finally:
        server.shutdown()


def serving_revision(url: str, account: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GOOGLE_APPLICATION_CREDENTIALS": str(credential_file(tmp_path, url, account)),
        "CLOUD_RUN_API": url,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
    }
    argv = ["--project", PROJECT, "--region", "us-central1", "--service", "flightpipe-api"]
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cloud_run.py"), "serving-revision", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_first_deploy_run_api_not_enabled_means_no_serving_revision(
    google: tuple[FakeGoogle, str], tmp_path: Path
) -> None:
    fake, url = google
    fake.enabled_apis[PROJECT] = set(BOOTSTRAP_APIS)  # bootstrapped, never deployed
    run = serving_revision(url, DEPLOYER, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "\n"
    (note,) = run.stderr.splitlines()
    assert "run.googleapis.com not enabled in projects/flightpipe-dev" in note
    (get,) = [c for c in fake.calls if c.path == f"/v2/{SERVICE}"]
    assert get.caller == DEPLOYER
    # After the first `pulumi up`: the API is enabled and the service serves a revision.
    fake.enabled_apis.pop(PROJECT)
    fake.revisions[SERVICE] = ["flightpipe-api-00001-abc", "flightpipe-api-00002-def"]
    run = serving_revision(url, DEPLOYER, tmp_path)
    assert (run.returncode, run.stdout) == (0, "flightpipe-api-00001-abc\n"), run.stderr


def test_any_other_refusal_fails_with_one_line_and_no_traceback(
    google: tuple[FakeGoogle, str], tmp_path: Path
) -> None:
    fake, url = google
    fake.revisions[SERVICE] = ["rev-1", "rev-2"]
    run = serving_revision(url, API_ACCOUNT, tmp_path)  # the API's account may not read services
    assert run.returncode == 1
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith("cloud_run.py serving-revision: GET Cloud Run service flightpipe-api")
    assert "403 IAM_PERMISSION_DENIED" in line and "run.services.get" in line
