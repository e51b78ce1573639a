"""What the Pulumi program hands each Cloud Run container, resolved the way Cloud Run resolves it.

`declared(graph)` turns every Cloud Run resource the program declares (services and worker pools)
into a `Declared`: its application container's environment as the process would see it (plain
values; secret references replaced by the payload of the secret version the program itself
creates; `PORT` where Cloud Run sets it), its command and args, container port, probe paths and
ports, and the collector's scrape target. `exact_environ(env)` makes that environment the whole
of `os.environ` for the duration, so the services' own `load_settings()` reads exactly it.

Cloud Run facts used here: a *service* sets `PORT` to the ingress container's port (Cloud Run's
container runtime contract); a worker pool serves no requests and the program sets no port.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.infra.program import Graph, Recorded

SERVICE = "gcp:cloudrunv2/service:Service"
WORKER_POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
SECRET = "gcp:secretmanager/secret:Secret"  # pragma: allowlist secret (a type token)
SECRET_VERSION = "gcp:secretmanager/secretVersion:SecretVersion"  # pragma: allowlist secret
# Kept from the test process: where Python and its packages are, nothing the services read.
_KEEP = ("PATH", "HOME", "LANG", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT")


@dataclass(frozen=True)
class Declared:
    """One Cloud Run container as the program declares it."""

    resource: str
    kind: str  # "service" or "worker-pool"
    name: str  # the Cloud Run resource's name
    container: str
    env: dict[str, str]
    container_port: int | None
    probes: dict[str, tuple[str, int]] = field(default_factory=dict)  # kind -> (path, port)
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    scrape: tuple[str, int, str] | None = None  # the collector's (host, port, path)


def _secret_payload(graph: Graph, ref: Mapping[str, Any]) -> str:
    """The payload Cloud Run would mount for a `secretKeyRef`, from what the program created."""
    wanted = str(ref["secret"]).rsplit("/", 1)[-1]
    secrets = [s for s in graph.of_type(SECRET) if s.inputs["secretId"] == wanted]
    assert secrets, f"secret {wanted} is not created by the program: its payload is unknown here"
    (secret,) = secrets
    versions = [
        v for v in graph.of_type(SECRET_VERSION) if v.inputs["secret"] == secret.outputs["__id"]
    ]
    assert versions, f"secret {wanted} has no version: Cloud Run refuses to start the revision"
    assert ref.get("version") in {"latest", str(len(versions))}, ref
    data = versions[-1].inputs["secretData"]
    # Secret outputs reach the mocks wrapped ({<sig>: <secret sig>, "value": ...}).
    return str(data["value"] if isinstance(data, dict) else data)


def _env(graph: Graph, container: Mapping[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("envs", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env[item["name"]] = _secret_payload(graph, item["valueSource"]["secretKeyRef"])
    return env


def _probe(container: Mapping[str, Any], key: str) -> tuple[str, int] | None:
    probe = container.get(key)
    if not probe:
        return None
    get = probe["httpGet"]
    return str(get.get("path", "/")), int(get["port"])


def _scrape(resource: Recorded) -> tuple[str, int, str] | None:
    from components import collector

    for c in resource.inputs["template"]["containers"]:
        if c["name"] == "collector":
            env = {e["name"]: e["value"] for e in c.get("envs", [])}
            return collector.scrape_target(json.loads(env[collector.CONFIG_ENV]))
    return None


def declared(graph: Graph) -> list[Declared]:
    """Every application container of every Cloud Run resource in `graph`."""
    found: list[Declared] = []
    for resource in graph.of_type(SERVICE, WORKER_POOL):
        kind = "service" if resource.type == SERVICE else "worker-pool"
        apps = [c for c in resource.inputs["template"]["containers"] if c["name"] != "collector"]
        for app in apps:
            port = int(app["ports"]["containerPort"]) if "ports" in app else None
            env = _env(graph, app)
            if kind == "service":
                assert "PORT" not in env, "PORT is Cloud Run's to set"
                env["PORT"] = str(port or 8080)
            probes = {
                k: p
                for k in ("startupProbe", "livenessProbe", "readinessProbe")
                if (p := _probe(app, k)) is not None
            }
            found.append(
                Declared(
                    resource=resource.name,
                    kind=kind,
                    name=str(resource.inputs["name"]),
                    container=str(app["name"]),
                    env=env,
                    container_port=port,
                    probes=probes,
                    command=tuple(app.get("commands", ())),
                    args=tuple(app.get("args", ())),
                    scrape=_scrape(resource),
                )
            )
    return found


@contextmanager
def exact_environ(env: Mapping[str, str], credentials: Path | None = None) -> Iterator[None]:
    """`os.environ` is `env` (plus the interpreter's own variables) inside the block.

    `credentials`: an Application Default Credentials file standing in for Cloud Run's metadata
    server (the only thing the container has that a test process lacks).
    """
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({k: v for k, v in saved.items() if k in _KEEP})
    os.environ.update(env)
    if credentials is not None:
        os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def external_account_file(directory: Path, token_url: str, audience: str, subject: str) -> Path:
    """An external-account ADC file whose subject token is `subject`, exchanged at `token_url`.

    google-auth loads it without a network or a key, and exchanges the token only when a call
    needs one (https://google.aip.dev/auth/4117#determining-the-subject-token-in-file-sourced-credentials).
    """
    token = directory / "subject-token"
    token.write_text(subject)
    path = directory / "adc.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": audience,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": token_url,
                "credential_source": {"file": str(token)},
            }
        )
    )
    return path


def stand_in_credentials(directory: Path) -> Path:
    """Credentials standing in for Cloud Run's metadata server: never exchanged here."""
    audience = (
        "//iam.googleapis.com/projects/0/locations/global/"
        "workloadIdentityPools/stand-in/providers/stand-in"
    )
    return external_account_file(
        directory, "https://sts.googleapis.com/v1/token", audience, "not-a-real-token"
    )
