"""The call table resolved for one stack and ingest mode: each call's member and resource.

`all_calls(stack, mode)` runs the main program and that stack's bootstrap under mocks, fills each
call's scope template with the names they declare (tests/infra/iam_calls.py), adds what `pulumi up`
asks of the deployer (and a refresh of the previewer) for every resource the main program declares,
and returns the calls with every binding both programs make (tests/infra/iam_model.py).
"""

from __future__ import annotations

from typing import Any

from tests.infra.iam_calls import RESOURCE_TYPES, STATIC_CALLS, Call
from tests.infra.iam_model import Binding, bindings, bootstrap_for, iam_resources
from tests.infra.program import INGEST_MODES, PROJECT_NUMBER, STACKS, Graph, graph_for

CASES = [(s, m) for s in STACKS for m in INGEST_MODES]
ACCOUNT = "gcp:serviceaccount/account:Account"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"


def _context(main: Graph, boot: Graph) -> dict[str, str]:
    accounts = {r.inputs["accountId"]: r.outputs["email"] for r in main.of_type(ACCOUNT)}
    accounts |= {r.inputs["accountId"]: r.outputs["email"] for r in boot.of_type(ACCOUNT)}
    e = main.exports
    return {
        "topic": e["topic"],
        "subscription": e["subscription"],
        "dead_letter_topic": e["dead_letter_topic"],
        "dataset": e["dataset"],
        "table": e["table"],
        "view": e["view"],
        "api_service": e["api_service"],
        "api_keys_secret": e["api_keys_secret"],
        "e2e_key_secret": e.get("e2e_api_key_secret") or "flightpipe-e2e-api-key",
        "repository": "flightpipe",
        "api_sa": accounts["flightpipe-api"],
        "subscriber_sa": accounts.get("flightpipe-subscriber", ""),
        "deployer_sa": accounts["flightpipe-deployer"],
        "previewer_sa": accounts.get("flightpipe-previewer", ""),
        "state_bucket": boot.exports["state_url"].removeprefix("gs://"),
        "kms_key": "flightpipe-pulumi/stack-secrets",
    }


def _members(main: Graph, boot: Graph, ctx: dict[str, str]) -> dict[str, str | None]:
    pool = boot.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool").outputs["name"]
    agents = {
        r.inputs["service"]: r.outputs["member"]
        for r in main.of_type("gcp:projects/serviceIdentity:ServiceIdentity")
    }
    # Cloud Monitoring's notification agent signs the uptime checks' tokens; where the program
    # does not declare its ServiceIdentity, its documented address.
    uptime = agents.get("monitoring.googleapis.com") or (
        f"serviceAccount:service-{PROJECT_NUMBER}"
        "@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
    )

    def sa(email: str) -> str | None:
        return f"serviceAccount:{email}" if email else None

    return {
        "api": sa(ctx["api_sa"]),
        "subscriber": sa(ctx["subscriber_sa"]),
        "pubsub-agent": agents["pubsub.googleapis.com"],
        "uptime-agent": uptime,
        "deployer": sa(ctx["deployer_sa"]),
        "post-deploy-test": sa(ctx["deployer_sa"]),
        "previewer": sa(ctx["previewer_sa"]),
        "gitlab-deploy": f"principalSet://iam.googleapis.com/{pool}/attribute.access/deploy",
        "gitlab-preview": f"principalSet://iam.googleapis.com/{pool}/attribute.access/preview"
        if ctx["previewer_sa"]
        else None,
    }


# Resource type -> (scope kind, the inputs that name it); anything else lives at project level.
_SCOPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "gcp:pubsub/topic:Topic": ("topic", ("name",)),
    "gcp:pubsub/subscription:Subscription": ("subscription", ("name",)),
    "gcp:bigquery/dataset:Dataset": ("dataset", ("datasetId",)),
    "gcp:bigquery/table:Table": ("table", ("datasetId", "tableId")),
    "gcp:secretmanager/secret:Secret": ("secret", ("secretId",)),
    "gcp:secretmanager/secretVersion:SecretVersion": ("secret", ("secret",)),
    "gcp:artifactregistry/repository:Repository": ("repository", ("repositoryId",)),
    "gcp:cloudrunv2/service:Service": ("run-service", ("name",)),
    "gcp:cloudrunv2/workerPool:WorkerPool": ("run-workerpool", ("name",)),
}


def _resource_scope(r: Any) -> str:
    if r.type == ACCOUNT:
        return f"service-account:{r.outputs['email']}"
    if r.type not in _SCOPES:
        return "project"
    kind, names = _SCOPES[r.type]
    return f"{kind}:" + "/".join(str(r.inputs[n]).rsplit("/", 1)[-1] for n in names)


def deployer_calls(main: Graph) -> list[Call]:
    """What `pulumi up` asks of the deployer for every resource the main program declares."""
    found: list[Call] = []
    iam = {id(r) for r in iam_resources(main)}
    scopes = {b.resource: b.scope for b in bindings(main)}
    for r in main.resources:
        if r.type.startswith("flightpipe:"):
            continue  # component resources: no API behind them
        assert r.type in RESOURCE_TYPES, f"{r.type} ({r.name}) is not in tests/infra/iam_calls.py"
        kind = RESOURCE_TYPES[r.type]
        # A project-level grant edits the project's policy, whatever resource it is limited to.
        scope = (
            "project"
            if r.type == PROJECT_MEMBER
            else scopes[r.name]
            if id(r) in iam
            else _resource_scope(r)
        )
        for perm in kind.create:
            # Creating a topic is a permission on the project; attaching on the topic itself.
            target = (
                f"topic:{str(r.inputs['topic']).rsplit('/', 1)[-1]}"
                if perm == "pubsub.topics.attachSubscription"
                else "project"
            )
            found.append(Call("deployer", perm, target, f"create {r.name}"))
        for perm in (*kind.get, *kind.update, *kind.delete):
            found.append(Call("deployer", perm, scope, f"read/update/delete {r.name}"))
        for perm in kind.iam_set:
            found.append(
                Call(
                    "deployer",
                    perm,
                    scope,
                    f"grant {r.inputs['role']} ({r.name})",
                    grants=(r.inputs["role"],),
                )
            )
        if r.type in ("gcp:cloudrunv2/service:Service", "gcp:cloudrunv2/workerPool:WorkerPool"):
            runs_as = r.inputs["template"]["serviceAccount"]
            found.append(
                Call(
                    "deployer",
                    "iam.serviceAccounts.actAs",
                    f"service-account:{runs_as}",
                    f"deploy {r.name} as {runs_as}",
                )
            )
    return found


def previewer_refresh_calls(main: Graph) -> list[Call]:
    """`pulumi preview --refresh` reads every resource (and IAM policy) the program declares."""
    scopes = {b.resource: b.scope for b in bindings(main)}
    iam = {id(r) for r in iam_resources(main)}
    return [
        Call(
            "previewer",
            perm,
            "project"
            if r.type == PROJECT_MEMBER
            else scopes[r.name]
            if id(r) in iam
            else _resource_scope(r),
            f"refresh {r.name}",
        )
        for r in main.resources
        if not r.type.startswith("flightpipe:")
        for perm in RESOURCE_TYPES[r.type].get
        if perm != "secretmanager.versions.access"  # a preview never needs a secret's payload
    ]


def all_calls(stack: str, mode: str) -> tuple[list[tuple[Call, str, str]], list[Binding]]:
    """(call, member, scope) for every call that applies to this stack, and every binding."""
    main, boot = graph_for(stack, mode), bootstrap_for(stack)
    ctx = _context(main, boot)
    members = _members(main, boot, ctx)
    calls = [c for c in STATIC_CALLS if c.mode in (None, mode)]
    calls += deployer_calls(main)
    if members["previewer"]:
        calls += previewer_refresh_calls(main)
    resolved = []
    for call in calls:
        member = members[call.identity]
        if member is None:
            continue  # an identity this stack does not have (no previewer in prod)
        resolved.append((call, member, call.scope.format(**ctx)))
    return resolved, bindings(main, boot)
