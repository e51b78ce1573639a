"""The pipeline's jobs really run: gitlab-ci-local's shell executor on a fresh clone, cold cache.

`make ci-jobs` runs this file (it is not collected by `make test`: it runs gitlab-ci-local, which
runs `make test-delivery`, which would run it again). Two parts:

* the merge-request checks that need no cloud (`lint`, `security`, `unit-tests`,
  `integration-tests`) run from a fresh `git clone` with no `.venv` and no GitLab cache, each in
  its own copy (`--shell-isolation`), and must all pass. Each job finds on PATH only the tools
  its image has or its before_script installs (job_path), and a service's emulator where the
  service would be (job_services). The only warm thing is uv's download
  cache on this machine (`UV_CACHE_DIR`), which stands in for PyPI: what a cold cache costs in
  GitLab is downloads, what it can break is order, and order is what runs here.
* the jobs that talk to Google Cloud (`preview`, `deploy-dev`, `post-deploy-test-dev` and its
  rollback, `deploy-prod` from a protected tag and on Premium's protected environment) run
  their scripts unchanged, to their end, with `pulumi`, `curl` and `docker-buildx` replaced by
  recording stand-ins on PATH (tests/delivery/standins) and the Google HTTP endpoints by a
  recording fake project (tests/delivery/fake_google.py); the "deployed" API is a real
  `flightpipe serve` on Google's Pub/Sub emulator whose API keys are the hash of the key the fake
  Secret Manager holds. The world they start from is the one docs/deploying.md leaves, run as
  written (tests/delivery/guide.py): the stack files it committed, the stacks in the buckets, the
  GitLab variables it printed. Each job's ID token carries the claims GitLab gives that job and
  the provider's own audience, and the bootstrap's trust rules must map it to the job's account.
  The assertions read the recorded calls: login before stack select, the KMS secrets provider,
  the service account each job's credential impersonates, preflight passing before `up`, `up`
  before the outputs are read, the e2e test receiving its key, the rollback moving traffic to
  the revision recorded before the deploy.

Why one module: its tests share one clean clone, one gitlab-ci-local set-up, the stand-in
servers and the leftover-process check, in the order the pipeline runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from scripts.preflight import ENDPOINTS, REMOTE
from tests.delivery import leftovers
from tests.delivery.fake_google import Authorizer, FakeGoogle, unsigned_jwt
from tests.delivery.guide import GuideRun, Operator, run_guide
from tests.infra.gitlab_tokens import on_free, policy_access, tag_token, token
from tests.infra.iam_model import BOOTSTRAP, Binding, bindings, granting
from tests.infra.program import INFRA, OPERATOR_CONFIG, run_program
from tests.processes import Serve
from tests.pubsub_emulator import running_emulator

if str(BOOTSTRAP) not in sys.path:
    sys.path.insert(0, str(BOOTSTRAP))
from trust import TrustPolicy  # infra/bootstrap is not a package

REPO = Path(__file__).resolve().parents[2]
UV_CACHE = Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")
COLLECT_ONLY = "tests.delivery.collect_only"
MR_CHECKS = ("lint", "security", "unit-tests", "integration-tests")
JOB_TIMEOUT_S = 1800
# .gitlab-ci.yml minus `services:` (the shell executor has no containers; see _shell_file).
SHELL_FILE = ".gitlab-ci-shell.yml"
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
# What scripts/preflight.py prints a line for, in its order.
PREFLIGHT_CHECKS = (
    "config",
    "example values",
    "secrets provider",
    *(check.__name__.replace("_", " ") for check in REMOTE),
    "bootstrap outputs",
)


def _account(project: str, name: str) -> str:
    return f"flightpipe-{name}@{project}.iam.gserviceaccount.com"


def _kms(project: str) -> str:
    return (
        f"gcpkms://projects/{project}/locations/us-central1/keyRings/flightpipe-pulumi/"
        "cryptoKeys/stack-secrets"
    )


def _gitlab_ci_local() -> str:
    found = shutil.which("gitlab-ci-local")
    if found is None:
        pytest.fail("gitlab-ci-local is not installed: bash scripts/system-deps.sh", pytrace=False)
    return found


@dataclass
class Run:
    returncode: int
    output: str
    # Processes the job started that were still alive when it ended (killed since).
    leftovers: list[leftovers.Leftover] = field(default_factory=list)


def _run(clone: Path, jobs: list[str], variables: dict[str, str], *extra: str) -> Run:
    """Run `jobs` in one gitlab-ci-local pipeline, each in its own copy, from an empty cache.

    gitlab-ci-local keeps the `cache:` of earlier runs (.gitlab-ci-local/cache): dropping it makes
    every invocation start cold. Artifacts (the deploy job's dotenv) are kept, as GitLab keeps
    them for later jobs. CI_PROJECT_DIR: gitlab-ci-local's shell executor sets the container path
    (/builds/...) instead of the job's directory, so the jobs' `$CI_PROJECT_DIR/...` (pip cache,
    JUnit files) would land outside it; `.` is the job's directory, as on a GitLab runner.

    A GitLab runner tears a job's container down when the job ends; the shell executor does not.
    So gitlab-ci-local runs in a session of its own (killed as a group on timeout), every job
    carries a marker variable (tests/delivery/leftovers.py), and whatever still runs with it, or
    out of the job's directory, once gitlab-ci-local returned is listed in `Run.leftovers` and
    killed, so nothing of one job runs during the next (the caller asserts the list is empty).
    """
    shutil.rmtree(clone / ".gitlab-ci-local" / "cache", ignore_errors=True)
    run_id = leftovers.new_run_id()
    # GITLAB_CI: "true" in every GitLab job (https://docs.gitlab.com/ci/variables/predefined_variables/);
    # gitlab-ci-local sets "false" (firecow/gitlab-ci-local src/job.ts), and --variable wins.
    variables = {"CI_PROJECT_DIR": ".", "GITLAB_CI": "true", **variables, leftovers.MARKER: run_id}
    (job,) = jobs  # one PATH per invocation: the job's own (see job_path)
    variables["PATH"] = job_path(clone, job, variables.get("PATH", os.environ["PATH"]))
    argv = [_gitlab_ci_local(), "--force-shell-executor", "--shell-isolation", "--concurrency=1"]
    argv += ["--no-color", "--timestamps", f"--file={SHELL_FILE}", *extra]
    for key, value in variables.items():
        argv += ["--variable", f"{key}={value}"]
    started = time.monotonic()
    log_path = clone / f"gitlab-ci-local-{'-'.join(jobs)}.log"
    with log_path.open("w+") as log:
        proc = subprocess.Popen(
            [*argv, *jobs],
            cwd=clone,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
        log.seek(0)
        output = log.read()
    left = leftovers.outliving(run_id, [clone / ".gitlab-ci-local" / "builds" / j for j in jobs])
    leftovers.kill(left)
    took = time.monotonic() - started
    print(f"gitlab-ci-local {' '.join(jobs)}: rc={returncode} {took:.0f}s leftovers={len(left)}")
    return Run(returncode, output, left)


def _fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the committed tree: no .venv, no caches, no untracked files."""
    path = tmp_path_factory.mktemp("ci") / "flightpipe"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "checkout", "-q", head], cwd=path, check=True)
    # gitlab-ci-local derives CI_PROJECT_* from the origin remote: give it a GitLab-shaped one.
    remote = "git@gitlab.com:latam/flightpipe.git"
    subprocess.run(["git", "remote", "set-url", "origin", remote], cwd=path, check=True)
    assert not (path / ".venv").exists() and not (path / ".cache").exists()
    _shell_file(path)
    return path


@pytest.fixture
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone for one test (the merge-request checks run on the tree exactly as committed)."""
    return _fresh_clone(tmp_path_factory)


def _shell_file(clone: Path) -> None:
    """Write .gitlab-ci.yml without its `services:`, the one change the shell executor needs.

    gitlab-ci-local starts service containers with Docker even under --force-shell-executor, and
    this machine has no Docker engine. The services are the Pub/Sub emulator (job_services starts
    it outside the job) and BuildKit (the builder is a stand-in here). Everything
    else, scripts, rules, variables, needs, artifacts, is the file as committed.
    """
    config = yaml.safe_load((clone / ".gitlab-ci.yml").read_text())
    removed = [
        name for name, job in config.items() if isinstance(job, dict) and job.pop("services", None)
    ]
    assert set(removed) == {"integration-tests", ".pulumi"}, removed
    (clone / SHELL_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


# ---- each job's tools: its image's and what its before_script installs, nothing more ---------

# Tools this host has that the jobs' image lacks: python:3.11-slim-bookworm is debian:bookworm-slim
# plus Python, whose build tools (gcc, make, wget) are purged again
# (docker-library/python@025fb340 3.11/slim-bookworm/Dockerfile). A job that calls one of them
# without installing it first fails in GitLab, so it must fail here too.
IMAGE_LACKS: Final = frozenset(
    {
        *("gcloud", "java", "node", "npm", "npx", "gitlab-ci-local"),
        *("promtool", "prometheus", "chromium", "rsync", "wrk", "pulumi", "docker"),
        *("gcc", "cc", "c++", "g++", "make", "git", "curl", "wget", "jq", "uv", "hadolint"),
    }
)
# What each before_script step puts on PATH when missing (each script's `command -v` checks).
# system-deps.sh installs gitlab-ci-local only where npm exists, and the image has no npm.
INSTALLS: Final = {
    "scripts/ci_bootstrap.sh": frozenset({"make", "git", "curl"}),
    "scripts/system-deps.sh": frozenset({"rsync", "promtool", "prometheus", "chromium", "wrk"}),
    "scripts/ci_pulumi_cli.sh": frozenset({"pulumi"}),
}
STANDINS = Path("tests") / "delivery" / "standins"


def job_config(config: dict[str, Any], job: str) -> dict[str, Any]:
    """`job` with its `extends` merged in and `default:`'s before_script/services where unset."""

    def resolve(name: str) -> dict[str, Any]:
        entry: dict[str, Any] = dict(config[name])
        parents = entry.pop("extends", [])
        merged: dict[str, Any] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            merged |= resolve(parent)
        return merged | entry

    merged = resolve(job)
    for key in ("before_script", "services"):
        merged.setdefault(key, config.get("default", {}).get(key, []))
    return merged


def denied_tools(config: dict[str, Any], job: str) -> frozenset[str]:
    """The tools `job` must not find: what the image lacks and its before_script does not add."""
    installed: set[str] = set()
    for step in job_config(config, job)["before_script"]:
        for script, tools in INSTALLS.items():
            if script in str(step):
                installed |= tools
    return IMAGE_LACKS - installed


def job_path(clone: Path, job: str, path: str) -> str:
    """`path` for `job`: each directory mirrored by symlinks to its executables minus the denied.

    The stand-ins' directory stays as it is: those are the job's cloud tools on purpose.
    """
    config = yaml.safe_load((clone / ".gitlab-ci.yml").read_text())
    denied = denied_tools(config, job)
    root = clone.parent / "job-path" / job
    shutil.rmtree(root, ignore_errors=True)
    mirrored = []
    for i, directory in enumerate(d for d in path.split(os.pathsep) if d):
        source = Path(directory)
        if source.resolve() == (clone / STANDINS).resolve():
            mirrored.append(directory)
            continue
        if not source.is_dir():
            continue
        mirror = root / str(i)
        mirror.mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name not in denied and not entry.is_dir() and os.access(entry, os.X_OK):
                (mirror / entry.name).symlink_to(entry)
        mirrored.append(str(mirror))
    return os.pathsep.join(mirrored)


@contextmanager
def job_services(clone: Path, job: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """The job's Pub/Sub emulator service, started here, as the variables that name it.

    gitlab-ci-local's shell executor starts no service containers (see _shell_file), so the
    emulator runs outside the job and each job variable naming the service's alias (the
    `pubsub-emulator:8085` of FLIGHTPIPE_TEST_PUBSUB_EMULATOR_HOST) gets its real address.
    """
    config = job_config(yaml.safe_load((clone / ".gitlab-ci.yml").read_text()), job)
    aliases = {
        s["alias"]
        for s in config["services"]
        if isinstance(s, dict) and "pubsub" in s.get("command", []) and "alias" in s
    }
    named = {
        key: value
        for key, value in config.get("variables", {}).items()
        if str(value).partition(":")[0] in aliases
    }
    if not named:
        yield {}
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with running_emulator(data_dir) as host:
        yield dict.fromkeys(named, host)


def _assert_cold(run: Run, job: str) -> None:
    """The job found no cache and no .venv, made its own before using it, and left nothing."""
    assert "imported cache" not in run.output, f"{job} started from a cache"
    assert "installing locked dependencies into .venv" in run.output, job
    _assert_nothing_outlived(run, job)


def _assert_nothing_outlived(run: Run, job: str) -> None:
    """No process the job started was still running when it ended (they were killed since)."""
    assert not run.leftovers, f"{job} left processes running: " + "; ".join(
        f"{x.pid}: {x.cmdline[:200]}" for x in run.leftovers
    )


def _job_succeeded(run: Run, job: str) -> bool:
    """gitlab-ci-local's summary line for the job says PASS."""
    return re.search(rf"^\s*PASS\s+\[[^\]]*\]\s+{re.escape(job)}\s*$", run.output, re.M) is not None


# Each job's gitlab-ci-local run is bounded by JOB_TIMEOUT_S, not pytest's default timeout.
pytestmark = pytest.mark.timeout(4 * JOB_TIMEOUT_S)


# First, before any stand-in of the cloud jobs exists: the longest part (about 15 minutes on 2
# cores), run with nothing else of this file alive.
def test_merge_request_checks_pass_from_a_cold_cache(clone: Path) -> None:
    variables = {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "UV_CACHE_DIR": str(UV_CACHE),
        # Only a job with the emulator service (job_services) gets an emulator.
        "FLIGHTPIPE_TEST_PUBSUB_EMULATOR_HOST": "",
        # `make test` ran the suite once; here each job's pytest runs collect its selection only
        # (tests/delivery/collect_only.py): the jobs' own set-up, tools and markers are what the
        # rehearsal proves.
        "PYTHONPATH": ".",
        "PYTEST_PLUGINS": COLLECT_ONLY,
    }
    # Every job runs whatever an earlier one did, as in GitLab (they all have `needs: []`), so
    # one run names every failing job.
    failures: dict[str, str] = {}
    for job in MR_CHECKS:
        with job_services(clone, job, clone.parent / f"services-{job}") as services:
            run = _run(clone, [job], variables | services, "--unset-variable", "CI_COMMIT_BRANCH")
        try:
            _assert_cold(run, job)
            if job == "security" and not _pypi_json_api():
                _assert_only_the_audit_could_not_run(run)
                continue
            assert run.returncode == 0, run.output[-6000:]
            assert _job_succeeded(run, job), f"{job} did not finish:\n{run.output[-4000:]}"
            if job in ("unit-tests", "integration-tests"):
                collected = [
                    int(n) for n in re.findall(r"(\d+)(?:/\d+)? tests? collected", run.output)
                ]
                assert collected and min(collected) > 0, f"{job} selected no test"
                assert not re.search(r"\d+ passed", run.output), f"{job} ran tests again"
        except AssertionError as failed:
            failures[job] = str(failed)
    assert not failures, "\n\n".join(f"---- {job}:\n{why}" for job, why in failures.items())


# ---- jobs that reach Google Cloud, against stand-ins -----------------------------------------


def _reserved_port() -> int:
    """A free loopback port below the kernel's ephemeral range.

    A port from bind(0) is in the ephemeral range, the one every outgoing connection on this
    shared machine draws its local port from: between the pick and the stand-in's own bind (or
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

    @contextmanager
    def deployed_api(self, env: str) -> Iterator[Serve]:
        """The env's "deployed" API, a real `flightpipe serve` on the emulator, while a job runs.

        Started only around the jobs that call it (post-deploy tests, deploy-prod) and stopped
        after them: an idle `flightpipe serve` on the emulator uses ~40 % of a core, which the
        other jobs would otherwise share the machine with.
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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    clone = _fresh_clone(tmp_path_factory)
    base = tmp_path_factory.mktemp("standins")
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
        ports = {env: _reserved_port() for env in ENVIRONMENTS}
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


def _job_project(world: World, env: str) -> None:
    """Resource Manager knows the job's project by the number its WIF provider names.

    Only the job's: the bootstrap ran under the infra tests' mocks, whose getProject answers one
    number for every project (tests/infra/program.py PROJECT_NUMBER), and the fake resolves a
    project number in a path (the provider's) to one project id.
    """
    provider = world.guide.variables[env]["GCP_WIF_PROVIDER"]
    world.google.project_numbers = {ENVIRONMENTS[env]["project"]: provider.split("/")[1]}


def _env_variables(
    world: World, env: str, claims: dict[str, str], *, wants: str, gate: str | None = None
) -> dict[str, str]:
    """The env's CI/CD variables as the guide printed them, and the job's GitLab ID token.

    `claims`: the token GitLab issues the job (tests/infra/gitlab_tokens.py), with this world's
    project id and the job's `id_tokens: aud:`, the provider's own name, which is all the stand-in
    STS checks. The provider's condition and mapping are checked here instead: the bootstrap's
    trust rules (infra/bootstrap/trust.py) for the config the guide committed, its deployGate
    replaced by `gate` where given, must map the token to `wants` (`deploy` or `preview`).
    """
    variables = dict(world.guide.variables[env])
    audience = f"//iam.googleapis.com/{variables['GCP_WIF_PROVIDER']}"
    payload = {**claims, "project_id": GITLAB_PROJECT_ID, "aud": audience}
    boot_file = world.clone / "infra" / "bootstrap" / f"Pulumi.{env}.yaml"
    config = {
        key.split(":", 1)[1]: str(value)
        for key, value in yaml.safe_load(boot_file.read_text())["config"].items()
    }
    if gate:
        config["deployGate"] = gate
    policy = TrustPolicy.from_config(config.get)
    got = policy_access(policy.attribute_condition, policy.attribute_mapping, payload)
    assert got == wants, f"the {env} provider maps this token to {got!r}, not {wants!r}: {payload}"
    return {**variables, "GITLAB_OIDC_TOKEN": unsigned_jwt(payload)}


def _assert_preflight_passed(run: Run, env: str) -> None:
    """`make preflight ENV=<env>` ran every check green, before `pulumi up`.

    But the analyst group's, which preflight skips as the job's identity: neither program
    enables the Cloud Identity API, which a service account's lookup bills to its own project.
    """
    assert f"scripts/preflight.py {env}" in run.output, run.output[-6000:]
    for check in PREFLIGHT_CHECKS:
        found = re.search(rf"(?m)\b(ok|FAIL|skip) +{check}\b.*$", run.output)
        assert found, (check, run.output[-6000:])
        if check == "analyst group" and found.group(1) == "skip":
            assert "cloudidentity.googleapis.com is not enabled" in found.group(0), found.group(0)
        else:
            assert found.group(1) == "ok", found.group(0)
    preflight = run.output.index(f"scripts/preflight.py {env}")
    assert preflight < run.output.index(f"Updating ({env})"), "preflight runs before `pulumi up`"


def _pulumi(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if c["tool"] == "pulumi" and c["argv"] != ["version"]]


def _verb(call: dict[str, Any]) -> str:
    """`login gs://...`, `stack select`, `up`, `stack output`... (flags and values dropped)."""
    words, skip = [], False
    for arg in call["argv"]:
        if skip:
            skip = False
        elif arg in ("-C", "--cwd", "--stack", "-s", "--secrets-provider"):
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return " ".join(words[:2] if words[:1] in (["stack"], ["config"], ["login"]) else words[:1])


def _assert_state_and_identity(calls: list[dict[str, Any]], env: str, account: str) -> None:
    """Login to the env's bucket, then select the stack with the KMS provider, all as `account`."""
    facts = ENVIRONMENTS[env]
    pulumi = _pulumi(calls)
    assert not [c for c in pulumi if "error" in c], [c["error"] for c in pulumi if "error" in c]
    verbs = [_verb(c) for c in pulumi]
    assert verbs[0] == f"login {facts['bucket']}", verbs
    assert verbs[1] == "stack select", verbs
    select = pulumi[1]
    assert select["stack"] == env and select["secrets_provider"] == _kms(facts["project"])
    assert "PULUMI_CONFIG_PASSPHRASE" not in select["env"]
    for call in pulumi:
        assert call["identity"]["service_account"] == account, call
        assert call["identity"]["audience"].endswith("/providers/gitlab-oidc"), call


# The tokens GitLab Free issues each job (tests/infra/gitlab_tokens.py): a merge request's from an
# unprotected branch, main's, and a protected tag's.
MERGE_REQUEST_TOKEN = on_free(
    token(
        pipeline_source="merge_request_event",
        ref="feature/x",
        ref_path="refs/heads/feature/x",
        ref_protected="false",
        environment="dev",
    )
)
MAIN_DEV_TOKEN = on_free(token(environment="dev"))
PROD_TAG = "v1.2.3"
PROD_TAG_TOKEN = on_free(tag_token(PROD_TAG, environment="prod"))
# GitLab Premium: main's manual job on the protected environment `prod`.
PREMIUM_PROD_TOKEN = token(environment="prod", environment_protected="true")
MAIN_PIPELINE = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"}


def test_preview_runs_as_the_previewer_on_the_dev_stack(world: World) -> None:
    variables = {
        **world.variables,
        **_env_variables(world, "dev", MERGE_REQUEST_TOKEN, wants="preview"),
    }
    variables["CI_PIPELINE_SOURCE"] = "merge_request_event"
    run = _run(world.clone, ["preview"], variables, "--unset-variable", "CI_COMMIT_BRANCH")
    assert run.returncode == 0, run.output[-6000:]
    _assert_cold(run, "preview")
    calls = world.calls("preview")
    _assert_state_and_identity(calls, "dev", _account("flightpipe-dev", "previewer"))
    verbs = [_verb(c) for c in _pulumi(calls)]
    assert verbs[-1] == "preview", verbs
    assert not [v for v in verbs if v == "up"], "a preview must never update"
    builder = [c for c in calls if c["tool"] == "docker-buildx" and c["argv"][:1] == ["create"]]
    assert builder and builder[0]["endpoint"] == "tcp://buildkitd:1234"


def test_deploy_dev_then_post_deploy_test_pass_with_the_deployer_and_the_e2e_key(
    world: World,
) -> None:
    before = len(world.google.calls)
    _job_project(world, "dev")
    variables = {**world.variables, **_env_variables(world, "dev", MAIN_DEV_TOKEN, wants="deploy")}
    variables |= MAIN_PIPELINE
    run = _run(world.clone, ["deploy-dev"], variables)
    assert run.returncode == 0, run.output[-8000:]
    _assert_cold(run, "deploy-dev")
    _assert_preflight_passed(run, "dev")
    with world.deployed_api("dev"):
        run = _run(world.clone, ["post-deploy-test-dev"], variables)  # reads deploy-dev's dotenv
    assert run.returncode == 0, run.output[-8000:]
    _assert_cold(run, "post-deploy-test-dev")
    deployer = _account("flightpipe-dev", "deployer")
    deploy = world.calls("deploy-dev")
    _assert_state_and_identity(deploy, "dev", deployer)
    verbs = [_verb(c) for c in _pulumi(deploy)]
    assert "up" in verbs and "stack output" in verbs
    assert verbs.index("up") < verbs.index("stack output"), verbs  # outputs read after `up`
    (up,) = [c for c in _pulumi(deploy) if _verb(c) == "up"]
    assert up["cwd"].endswith("/infra") and up["env"]["BUILDX_BUILDER"] == "flightpipe-ci"
    calls = world.google.calls[before:]
    # Every Google call the jobs made was authorised by the deployer's federated token.
    api_calls = [c for c in calls if not c.path.endswith(("/token", ":generateAccessToken"))]
    assert api_calls and all(c.caller == deployer for c in api_calls), api_calls
    assert f"/v1/projects/-/serviceAccounts/{deployer}:generateAccessToken" in [
        c.path for c in calls
    ]
    id_tokens = [c for c in calls if c.path.endswith(":generateIdToken")]
    assert [c.path for c in id_tokens] == [
        f"/v1/projects/-/serviceAccounts/{deployer}:generateIdToken"
    ]
    assert (
        id_tokens[0].body["audience"]
        == json.loads((Path(world.variables["STANDIN_OUTPUTS"])).read_text())["dev"]["api_url"]
    )
    secret = [c for c in calls if c.path.endswith("versions/latest:access")]
    assert [c.path for c in secret] == [
        "/v1/projects/flightpipe-dev/secrets/flightpipe-e2e-api-key/versions/latest:access"
    ]
    assert not [c for c in calls if c.method == "PATCH"], "a passing test must not roll back"
    # The e2e test ran against the "deployed" API (it could only pass with the key).
    assert "1 passed" in run.output


def test_a_failing_post_deploy_test_rolls_the_api_back_and_fails_the_job(world: World) -> None:
    before = len(world.google.calls)
    project = ENVIRONMENTS["dev"]["project"]
    world.google.secrets[f"projects/{project}/secrets/flightpipe-e2e-api-key"] = "a-revoked-key"
    try:
        _job_project(world, "dev")
        token_variables = _env_variables(world, "dev", MAIN_DEV_TOKEN, wants="deploy")
        variables = {**world.variables, **token_variables, **MAIN_PIPELINE}
        variables["FLIGHTPIPE_E2E_DEADLINE_SECONDS"] = "5"
        with world.deployed_api("dev"):
            run = _run(world.clone, ["post-deploy-test-dev"], variables)
    finally:
        world.google.secrets[f"projects/{project}/secrets/flightpipe-e2e-api-key"] = E2E_KEY
    assert run.returncode != 0, "the job must fail after rolling back"
    _assert_cold(run, "post-deploy-test-dev")
    patches = [c for c in world.google.calls[before:] if c.method == "PATCH"]
    assert len(patches) == 1, [c.path for c in world.google.calls[before:]]
    assert (
        patches[0].path == f"/v2/projects/{project}/locations/us-central1/services/flightpipe-api"
    )
    assert patches[0].body["traffic"] == [
        {
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": "flightpipe-api-dev-00001-old",
            "percent": 100,
        }
    ]
    assert patches[0].caller == _account(project, "deployer")


def _deploy_prod(world: World, variables: dict[str, str], *extra: str) -> None:
    """deploy-prod runs to its end as the prod deployer on the prod stack: preflight, `up`, the
    post-deploy test with prod's e2e key."""
    before, logged = len(world.google.calls), len(world.log())
    _job_project(world, "prod")
    with world.deployed_api("prod"):
        run = _run(world.clone, ["deploy-prod"], {**world.variables, **variables}, *extra)
    assert run.returncode == 0, run.output[-8000:]
    assert _job_succeeded(run, "deploy-prod"), run.output[-4000:]
    _assert_cold(run, "deploy-prod")
    _assert_preflight_passed(run, "prod")
    deployer = _account("flightpipe-prod", "deployer")
    calls = world.calls("deploy-prod", since=logged)
    _assert_state_and_identity(calls, "prod", deployer)
    verbs = [_verb(c) for c in _pulumi(calls)]
    assert verbs.index("up") < verbs.index("stack output"), verbs
    google = world.google.calls[before:]
    assert google and all(
        c.caller == deployer
        for c in google
        if not c.path.endswith(("/token", ":generateAccessToken"))
    )
    assert any(
        c.path.endswith("flightpipe-prod/secrets/flightpipe-e2e-api-key/versions/latest:access")
        for c in google
    )
    assert "1 passed" in run.output


def test_deploy_prod_runs_by_itself_in_a_protected_tags_pipeline(world: World) -> None:
    """GitLab Free, the default gate: the tag's pipeline deploys prod, no one presses play."""
    variables = _env_variables(world, "prod", PROD_TAG_TOKEN, wants="deploy")
    variables |= {
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_TAG": PROD_TAG,
        "CI_COMMIT_REF_NAME": PROD_TAG,
        "CI_COMMIT_REF_PROTECTED": "true",
    }
    _deploy_prod(world, variables, "--unset-variable", "CI_COMMIT_BRANCH")


def test_deploy_prod_runs_when_played_on_premiums_protected_environment(world: World) -> None:
    """GitLab Premium (FLIGHTPIPE_PROD_GATE=environment, the bootstrap's deployGate too): main's
    pipeline, a manual job on the protected environment."""
    variables = _env_variables(
        world, "prod", PREMIUM_PROD_TOKEN, wants="deploy", gate="environment"
    )
    variables |= MAIN_PIPELINE | {"FLIGHTPIPE_PROD_GATE": "environment"}
    _deploy_prod(world, variables, "--manual", "deploy-prod")


def _pypi_json_api() -> bool:
    """Whether PyPI's per-release JSON API answers here for the locked versions pip-audit asks.

    pip-audit reads `https://pypi.org/pypi/<name>/<version>/json`; on this machine that answers
    404 for every release (the unversioned URL answers 200), so the probe asks exactly that.
    """
    lock = (REPO / "requirements" / "api.lock").read_text()
    name, version = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", lock, re.M)[0]
    url = f"https://pypi.org/pypi/{name}/{version}/json"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _assert_only_the_audit_could_not_run(run: Run) -> None:
    """`make security` ran bandit, detect-secrets and hadolint clean; pip-audit had no PyPI API.

    Without PyPI's JSON API (404 for every package on this machine) pip-audit --strict cannot
    audit anything, so the job fails at its last step whatever the code. Everything before it
    must have passed; the audit itself runs in GitLab, where PyPI answers.
    """
    out = run.output
    assert run.returncode != 0
    assert "Potential secrets about to be committed" not in out, out[-4000:]
    assert ".venv/bin/hadolint services/Dockerfile" in out
    assert "could not be audited" in out and "audit-deps] Error" in out, out[-4000:]
    assert "security-static] Error" not in out, out[-4000:]
