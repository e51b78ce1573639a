"""The world the pipeline's Google Cloud jobs start from: what docs/deploying.md leaves, and fakes.

`build_world(clone, base)` runs the deploy guide as written in `clone` (tests/delivery/guide.py):
the stack files it committed, the stacks in the buckets, the GitLab variables it printed. Around
that: a recording fake Google project (tests/delivery/fake_google.py) whose identity table is
every binding the two programs declare for those stacks, holding the bootstrap's resources, each
Cloud Run service's revisions and the e2e key; Google's Pub/Sub emulator; and the variables that
point the jobs' scripts and stand-ins there. The "deployed" API is a real `flightpipe serve` on the
emulator whose API keys are the hash of the key the fake Secret Manager holds, started only while
a job calls it (`World.deployed_api`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts.preflight import ENDPOINTS
from tests.delivery.ci_local import UV_CACHE
from tests.delivery.fake_google import Authorizer, FakeGoogle, unsigned_jwt
from tests.delivery.guide import GuideRun, Operator, run_guide
from tests.infra.gitlab_tokens import policy_access
from tests.infra.iam_model import BOOTSTRAP, Binding, bindings, granting
from tests.infra.program import INFRA, OPERATOR_CONFIG, run_program
from tests.processes import Serve
from tests.pubsub_emulator import running_emulator

if str(BOOTSTRAP) not in sys.path:
    sys.path.insert(0, str(BOOTSTRAP))
from trust import TrustPolicy  # infra/bootstrap is not a package

E2E_KEY = "stand-in-e2e-key-" + hashlib.sha256(b"flightpipe").hexdigest()[:16]
ENVIRONMENTS = {
    "dev": {"project": "flightpipe-dev", "bucket": "gs://flightpipe-dev-pulumi-state"},
    "prod": {"project": "flightpipe-prod", "bucket": "gs://flightpipe-prod-pulumi-state"},
}
GITLAB_PROJECT_ID = "4242"  # the project_id claim of the tokens below
# The owner's values for docs/deploying.md, which sets up this world (tests/delivery/guide.py):
# the fake organisation's group and channel, the ones the Pulumi mocks know to exist.
ANALYST_GROUP = OPERATOR_CONFIG["prod"]["flightpipe:analystGroup"]
(PROD_CHANNEL,) = json.loads(OPERATOR_CONFIG["prod"]["flightpipe:notificationChannels"])
OPERATORS = [
    Operator("dev", "flightpipe-dev", GITLAB_PROJECT_ID, ANALYST_GROUP),
    Operator("prod", "flightpipe-prod", GITLAB_PROJECT_ID, ANALYST_GROUP, PROD_CHANNEL),
]


def account(project: str, name: str) -> str:
    return f"flightpipe-{name}@{project}.iam.gserviceaccount.com"


def kms(project: str) -> str:
    return (
        f"gcpkms://projects/{project}/locations/us-central1/keyRings/flightpipe-pulumi/"
        "cryptoKeys/stack-secrets"
    )


def reserved_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from bind(0) is in the ephemeral range, the one every outgoing connection on the host
    draws its local port from: between the pick and the stand-in's own bind (or
    while it is stopped between jobs) one of them can take it. Below the range nothing but an
    explicit bind can.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class World:
    clone: Path
    google: FakeGoogle
    google_url: str
    standin_log: Path
    variables: dict[str, str]
    base: Path
    emulator: str
    ports: dict[str, int]
    key_hash: str
    guide: GuideRun  # the owner's set-up: GitLab variables per scope, the buckets' stacks

    def log(self) -> list[dict[str, Any]]:
        lines = self.standin_log.read_text().splitlines() if self.standin_log.exists() else []
        return [json.loads(line) for line in lines]

    def calls(self, job: str, since: int = 0) -> list[dict[str, Any]]:
        """The stand-ins' calls of `job`, from the `since`-th logged call on."""
        return [e for e in self.log()[since:] if e["env"].get("CI_JOB_NAME") == job]

    def use_project(self, env: str) -> None:
        """Resource Manager knows the job's project by the number its WIF provider names.

        Only the job's: the bootstrap ran under the infra tests' mocks, whose getProject answers
        one number for every project (tests/infra/program.py PROJECT_NUMBER), and the fake
        resolves a project number in a path (the provider's) to one project id.
        """
        provider = self.guide.variables[env]["GCP_WIF_PROVIDER"]
        self.google.project_numbers = {ENVIRONMENTS[env]["project"]: provider.split("/")[1]}

    def env_variables(
        self, env: str, claims: dict[str, str], *, wants: str, gate: str | None = None
    ) -> dict[str, str]:
        """The env's CI/CD variables as the guide printed them, and the job's GitLab ID token.

        `claims`: the token GitLab issues the job (tests/infra/gitlab_tokens.py), with this
        world's project id and the job's `id_tokens: aud:`, the provider's own name, which is all
        the stand-in STS checks. The provider's condition and mapping are checked here instead:
        the bootstrap's trust rules (infra/bootstrap/trust.py) for the config the guide committed,
        its deployGate replaced by `gate` where given, must map the token to `wants` (`deploy` or
        `preview`).
        """
        variables = dict(self.guide.variables[env])
        audience = f"//iam.googleapis.com/{variables['GCP_WIF_PROVIDER']}"
        payload = {**claims, "project_id": GITLAB_PROJECT_ID, "aud": audience}
        boot_file = self.clone / "infra" / "bootstrap" / f"Pulumi.{env}.yaml"
        config = {
            key.split(":", 1)[1]: str(value)
            for key, value in yaml.safe_load(boot_file.read_text())["config"].items()
        }
        if gate:
            config["deployGate"] = gate
        policy = TrustPolicy.from_config(config.get)
        got = policy_access(policy.attribute_condition, policy.attribute_mapping, payload)
        assert got == wants, (
            f"the {env} provider maps this token to {got!r}, not {wants!r}: {payload}"
        )
        return {**variables, "GITLAB_OIDC_TOKEN": unsigned_jwt(payload)}

    @contextmanager
    def deployed_api(self, env: str) -> Iterator[Serve]:
        """The env's "deployed" API, a real `flightpipe serve` on the emulator, while a job runs.

        Started only around the jobs that call it (post-deploy tests, deploy-prod) and stopped
        after them: an idle `flightpipe serve` keeps working against the emulator, and the other
        jobs would share the CPU with it.
        """
        facts = ENVIRONMENTS[env]
        serve = Serve(
            self.base / f"serve-{env}",
            {
                "FLIGHTPIPE_BROKER": "pubsub",
                "PUBSUB_EMULATOR_HOST": self.emulator,
                "GOOGLE_CLOUD_PROJECT": facts["project"],
                "FLIGHTPIPE_API_KEYS": self.key_hash,
            },
        )
        serve.port = self.ports[env]  # the URL the stack outputs name
        serve.base_url = f"http://127.0.0.1:{serve.port}"
        serve.start()
        try:
            yield serve
        finally:
            serve.stop()


@contextmanager
def build_world(clone: Path, base: Path) -> Iterator[World]:
    """The world in `clone` (a fresh clone), its stand-ins' files under `base`."""
    # docs/deploying.md, run as written by the owner (bootstrap, stack init, config, commit):
    # the jobs start from the stack files it committed and the stacks it left in the buckets.
    guide = run_guide(clone, OPERATORS, base / "owner")
    google = FakeGoogle(authorize=_world_iam(clone))
    _seed_bootstrapped_projects(google, guide)
    server, url = google.start()
    for env, facts in ENVIRONMENTS.items():
        path = f"projects/{facts['project']}/locations/us-central1/services/flightpipe-api"
        google.revisions[path] = [
            f"flightpipe-api-{env}-00001-old",
            f"flightpipe-api-{env}-00002-new",
        ]
        google.secrets[f"projects/{facts['project']}/secrets/flightpipe-e2e-api-key"] = E2E_KEY
    (base / "emulator").mkdir()
    with running_emulator(base / "emulator") as emulator:
        ports = {env: reserved_port() for env in ENVIRONMENTS}
        outputs = {
            env: {
                "api_url": f"http://127.0.0.1:{ports[env]}",
                "api_service": "flightpipe-api",
                "topic": "flights",
                "e2e_api_key_secret": "flightpipe-e2e-api-key",  # pragma: allowlist secret
                "api_keys_secret": "flightpipe-api-keys",  # pragma: allowlist secret
            }
            for env in ENVIRONMENTS
        }
        (base / "outputs.json").write_text(json.dumps(outputs))
        standins = clone / "tests" / "delivery" / "standins"
        home = base / "home"
        home.mkdir()
        variables = {
            "PATH": f"{standins}:{os.environ['PATH']}",
            "HOME": str(home),
            "UV_CACHE_DIR": str(UV_CACHE),
            "STANDIN_DIR": str(standins),
            "STANDIN_LOG": str(base / "standins.jsonl"),
            "STANDIN_STATE": str(guide.state),
            "STANDIN_OUTPUTS": str(base / "outputs.json"),
            "GOOGLE_STS_URL": url,
            "GOOGLE_IAMCREDENTIALS_URL": url,
            "CLOUD_RUN_API": url,
            "SECRET_MANAGER_API": url,
            # scripts/preflight.py's endpoints, every one of them.
            **{variable: url for variable, _ in ENDPOINTS.values()},
            "PUBSUB_EMULATOR_HOST": emulator,
            "CI_DEFAULT_BRANCH": "main",
            "FLIGHTPIPE_E2E_DEADLINE_SECONDS": "60",
        }
        key_hash = "sha256:" + hashlib.sha256(E2E_KEY.encode()).hexdigest()
        try:
            yield World(
                clone,
                google,
                url,
                base / "standins.jsonl",
                variables,
                base,
                emulator,
                ports,
                key_hash,
                guide,
            )
        finally:
            server.shutdown()


def _engine_config(stack_file: Path) -> dict[str, str]:
    """A stack file's config as the engine hands it to the program (structured values as JSON)."""
    raw = yaml.safe_load(stack_file.read_text())["config"]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def _world_iam(clone: Path) -> Authorizer:
    """Who may do what in the fake projects: every binding the two programs declare for the
    stacks the guide committed (the IAM simulation of tests/infra, on this world's values)."""
    per_project: dict[str, list[Binding]] = {}
    for operator in OPERATORS:
        main_file = clone / "infra" / f"Pulumi.{operator.env}.yaml"
        boot_file = clone / "infra" / "bootstrap" / f"Pulumi.{operator.env}.yaml"
        main = run_program(
            INFRA / "__main__.py", "flightpipe", operator.env, _engine_config(main_file)
        )
        boot = run_program(
            BOOTSTRAP / "__main__.py",
            "flightpipe-bootstrap",
            operator.env,
            _engine_config(boot_file),
        )
        per_project.setdefault(operator.project, []).extend(bindings(main, boot))

    def authorize(member: str, permission: str, scope: str, project: str) -> bool:
        return bool(granting(per_project.get(project, []), member, permission, scope))

    return authorize


def _seed_bootstrapped_projects(google: FakeGoogle, guide: GuideRun) -> None:
    """The fake projects hold what the guide's bootstrap created and its operator named.

    Read from the GitLab variables the guide printed (the bootstrap's outputs): the state
    bucket, the stacks' KMS key, the WIF provider; plus the operator's group and channel, which
    exist in the fake organisation (tests/infra/program.py EXISTING_PRINCIPALS/CHANNELS).
    """
    for operator in OPERATORS:
        variables = guide.variables[operator.env]
        bucket = variables["PULUMI_BACKEND_URL"].removeprefix("gs://")
        google.buckets[bucket] = operator.project
        google.crypto_keys.add(variables["PULUMI_SECRETS_PROVIDER"].removeprefix("gcpkms://"))
        google.wif_providers.add(variables["GCP_WIF_PROVIDER"])
        google.groups.add(operator.analyst_group.removeprefix("group:"))
        if operator.notification_channel:
            google.notification_channels.add(operator.notification_channel)
