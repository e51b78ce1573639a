"""The harness: runs the Pulumi program under mocks and records every resource it declares.

`run_stack(stack, **overrides)` loads `infra/Pulumi.<stack>.yaml`, applies overrides (camelCase
keys of the `flightpipe` namespace), executes `infra/__main__.py` fresh inside a mocked runtime,
waits for every registration, and returns a `Graph`: each resource's type, name, inputs
(as the engine sees them, camelCase), what it waits for (`Graph.depends_on`) and the stack
outputs. The mocks only invent what a cloud provider would compute (ids, emails, URLs, image
digests); the program's inputs are untouched, so tests assert policies over what the program
really declares.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

INFRA = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

PROJECT_NUMBER = "123456789012"
STACKS = ("dev", "prod")
INGEST_MODES = ("subscriber", "bigquery-subscription")


# What docs/deploying.md has the operator set in each stack with `pulumi config set` (the stack
# files commit no example of it), as a fake organisation that has this group and these channels.
OPERATOR_CONFIG: dict[str, dict[str, str]] = {
    "dev": {"flightpipe:analystGroup": "group:flight-analysts@acme-flights.dev"},
    "prod": {
        "flightpipe:analystGroup": "group:flight-analysts@acme-flights.dev",
        "flightpipe:notificationChannels": json.dumps(
            # pragma: allowlist nextline secret
            ["projects/flightpipe-prod/notificationChannels/8264519037712834"]
        ),
    },
}
EXISTING_PRINCIPALS = frozenset({"group:flight-analysts@acme-flights.dev"})
EXISTING_CHANNELS = frozenset({"projects/flightpipe-prod/notificationChannels/8264519037712834"})


class GoogleRefusal(Exception):
    """What Google answers instead of creating the resource (the engine fails `pulumi up`)."""


def refuse_unknown_references(typ: str, inputs: dict[str, Any]) -> None:
    """Google refuses a grant to a group or user that does not exist, and an alert policy that
    notifies a channel that does not exist; the program must never ask for either."""
    member = str(inputs.get("member", ""))
    kind, _, email = member.partition(":")
    unknown = kind in ("group", "user") and member not in EXISTING_PRINCIPALS
    if typ.endswith("iAMMember:IAMMember") and unknown:
        # setIamPolicy: "Error 400: Group <email> does not exist., badRequest"
        # (terraform-google-modules/terraform-example-foundation#918).
        raise GoogleRefusal(f"Error 400: {kind.title()} {email} does not exist., badRequest")
    if typ == "gcp:monitoring/alertPolicy:AlertPolicy":
        for channel in inputs.get("notificationChannels") or ():
            if channel not in EXISTING_CHANNELS:
                # alertPolicies.create: hashicorp/terraform-provider-google#25878.
                raise GoogleRefusal(f"Error 404: Notification channel not found: {channel}")


@dataclass(frozen=True)
class Recorded:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    urn: str = ""
    # URNs the engine makes this resource wait for: explicit `depends_on` and input dependencies
    # (components expanded to their children), and its parent.
    waits_for: frozenset[str] = frozenset()


@dataclass
class Graph:
    """What one run of the program declared."""

    stack: str
    config: dict[str, str]
    resources: list[Recorded] = field(default_factory=list)
    exports: dict[str, Any] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def of_type(self, *types: str) -> list[Recorded]:
        return [r for r in self.resources if r.type in types]

    def one(self, type_: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {type_} {name or ''}, got {[r.name for r in found]}"
        return found[0]

    def ids(self, type_: str) -> set[str]:
        return {r.outputs["__id"] for r in self.of_type(type_)}

    def depends_on(self, resource: Recorded) -> list[Recorded]:
        """Every resource the engine creates before `resource`, directly or transitively.

        A child waits for its parent's registration, which waits for the parent's own
        dependencies (pulumi/runtime/resource.py@3.272.0 `_prepare_resource` awaits
        `depends_on` URNs, then `opts.parent.urn`), so parents count as edges.
        """
        by_urn = {r.urn: r for r in self.resources}
        seen: set[str] = set()
        todo = list(resource.waits_for)
        while todo:
            urn = todo.pop()
            if urn in seen or urn not in by_urn:
                continue
            seen.add(urn)
            todo.extend(by_urn[urn].waits_for)
        return [by_urn[u] for u in seen]


def _fake_outputs(typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The provider-computed fields the program reads, derived deterministically."""
    out = dict(inputs)
    project = inputs.get("project", "flightpipe-test")
    rid = f"{name}-id"
    if typ == "docker-build:index:Image":
        digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        repo = str(inputs["tags"][0]).rsplit(":", 1)[0]
        out |= {"digest": digest, "ref": f"{repo}@{digest}"}
    elif typ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        out |= {
            "email": email,
            "member": f"serviceAccount:{email}",
            "name": f"projects/{project}/serviceAccounts/{email}",
        }
    elif typ == "gcp:projects/serviceIdentity:ServiceIdentity":
        agent = inputs["service"].split(".")[0]
        # The monitoring service's agent is its notification agent (components/monitoring.py).
        agent = {"monitoring": "monitoring-notification"}.get(agent, agent)
        email = f"service-{PROJECT_NUMBER}@gcp-sa-{agent}.iam.gserviceaccount.com"
        out |= {"email": email, "member": f"serviceAccount:{email}"}
    elif typ == "gcp:pubsub/topic:Topic":
        rid = f"projects/{project}/topics/{inputs['name']}"
    elif typ == "gcp:pubsub/subscription:Subscription":
        rid = f"projects/{project}/subscriptions/{inputs['name']}"
    elif typ == "gcp:cloudrunv2/service:Service":
        out |= {"uri": f"https://{inputs['name']}-x7y2-uc.a.run.app"}
    elif typ == "gcp:secretmanager/secret:Secret":
        rid = f"projects/{project}/secrets/{inputs['secretId']}"
        out |= {"name": rid}
    elif typ == "gcp:iam/workloadIdentityPool:WorkloadIdentityPool":
        rid = (
            f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/"
            f"{inputs['workloadIdentityPoolId']}"
        )
        out |= {"name": rid}
    elif typ == "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider":
        rid = (
            f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/"
            f"{inputs['workloadIdentityPoolId']}/providers/"
            f"{inputs['workloadIdentityPoolProviderId']}"
        )
        out |= {"name": rid}
    elif typ == "pulumi-python:dynamic:Resource" and "metricType" in inputs:
        out |= {"received": True}  # components/monitoring/ready.py once the metric exists
    elif typ == "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig":
        out |= {"uptimeCheckId": f"{name}-check"}
    out.setdefault("name", name)
    return rid, out


class RecordingMonitor(MockMonitor):
    """MockMonitor that also records the URN and the dependencies the SDK sends per resource.

    The SDK sends, with each RegisterResource, `dependencies` (explicit `depends_on` and every
    input's resources, components expanded to their children) and `parent`
    (pulumi/runtime/resource.py@3.272.0 `_prepare_resource`): what the engine orders creation by.
    """

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        with self._lock:  # new_resource appends; pair that entry with this request's URN
            response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
            resources = self.recording.resources
            if request.type != "pulumi:pulumi:Stack" and resources:
                waits = {*request.dependencies, *([request.parent] if request.parent else [])}
                resources[-1] = replace(resources[-1], urn=response.urn, waits_for=frozenset(waits))
        return response


class RecordingMocks(pulumi.runtime.Mocks):
    """Records every resource; answers the few invokes the program makes."""

    def __init__(self) -> None:
        self.resources: list[Recorded] = []
        self.calls: list[str] = []  # invoke tokens, in the order the program made them

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        refuse_unknown_references(args.typ, dict(args.inputs))
        rid, outputs = _fake_outputs(args.typ, args.name, dict(args.inputs))
        self.resources.append(
            Recorded(args.typ, args.name, dict(args.inputs), outputs | {"__id": rid})
        )
        return rid, outputs

    def call(  # type: ignore[override]  # the runtime also accepts a bare dict
        self, args: pulumi.runtime.MockCallArgs
    ) -> dict[str, Any]:
        self.calls.append(args.token)
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": "fake-token", "project": "flightpipe-test"}
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": PROJECT_NUMBER, "projectId": "flightpipe-test"}
        raise AssertionError(f"unexpected invoke {args.token}: add it to the mocks")


def stack_config(stack: str, **overrides: str) -> dict[str, str]:
    """`Pulumi.<stack>.yaml`'s values as the engine passes them (strings), plus overrides."""
    raw = yaml.safe_load((INFRA / f"Pulumi.{stack}.yaml").read_text())["config"]
    # The CLI hands structured values (arrays, objects) to the program as JSON.
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    config |= OPERATOR_CONFIG[stack]
    for key, value in overrides.items():
        config[f"flightpipe:{key}"] = value
    return config


def run_stack(stack: str, **overrides: str) -> Graph:
    """Execute `infra/__main__.py` for `stack` under mocks; return everything it declared."""
    return run_program(INFRA / "__main__.py", "flightpipe", stack, stack_config(stack, **overrides))


def run_program(main: Path, project: str, stack: str, config: dict[str, str]) -> Graph:
    """Execute the Pulumi program `main` under recording mocks; return everything it declared."""
    mocks = RecordingMocks()
    runtime_settings.ROOT.set(None)  # a fresh Stack resource for this run
    pulumi.runtime.set_mocks(
        mocks, project=project, stack=stack, preview=False, monitor=RecordingMonitor(mocks)
    )
    pulumi.runtime.set_all_config(config, [])

    def program() -> None:
        runpy.run_path(str(main), run_name="__main__")

    _sync_await(run_pulumi_func(program))
    root = runtime_settings.get_root_resource()
    assert root is not None
    stack_outputs: dict[str, Any] = getattr(root, "outputs", {})
    exports = _sync_await(pulumi.Output.from_input(stack_outputs).future()) or {}
    return Graph(stack, config, list(mocks.resources), dict(exports), list(mocks.calls))


_CACHE: dict[tuple[str, str], Graph] = {}


def graph_for(stack: str, mode: str) -> Graph:
    """One run per (stack, ingest mode), shared by every test (the runs are deterministic)."""
    if (stack, mode) not in _CACHE:
        _CACHE[(stack, mode)] = run_stack(stack, ingestMode=mode)
    return _CACHE[(stack, mode)]
