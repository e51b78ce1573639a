"""`make security`'s secret scan passes the stack files docs/deploying.md has operators commit.

`pulumi stack init --secrets-provider gcpkms://...` writes `secretsprovider:` and `encryptedkey:`
(the stack's data key, encrypted by KMS) into Pulumi.<stack>.yaml, and step 3 commits them. The
scan must let exactly those two lines through and still catch a secret anywhere else.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOOK = Path(sys.executable).with_name("detect-secrets-hook")
KMS = "gcpkms://projects/acme/locations/us-central1/keyRings/flightpipe-pulumi/cryptoKeys/stack-secrets"
# pragma: allowlist nextline secret
DATA_KEY = "CiQAbHq8xHh3bGZ0b2tlbkZha2VEYXRhS2V5Rm9yVGVzdGluZ1B1cnBvc2VzT25seQ=="


def _scan(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(text)
    return subprocess.run(
        [str(HOOK), "--baseline", ".secrets.baseline", str(stack_file)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_committed_kms_lines_of_a_stack_file_pass(tmp_path: Path) -> None:
    text = f"secretsprovider: {KMS}\nencryptedkey: {DATA_KEY}\nconfig:\n  gcp:project: acme\n"
    result = _scan(tmp_path, text)
    assert result.returncode == 0, result.stdout


def test_a_secret_on_any_other_line_of_a_stack_file_is_still_caught(tmp_path: Path) -> None:
    text = f"encryptedkey: {DATA_KEY}\nconfig:\n  flightpipe:apiKey: {DATA_KEY}\n"
    result = _scan(tmp_path, text)
    assert result.returncode == 1
    assert "Pulumi.dev.yaml:3" in result.stdout and "Pulumi.dev.yaml:1" not in result.stdout
