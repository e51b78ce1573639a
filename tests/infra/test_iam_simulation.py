"""IAM simulation: every call in the table is covered by a grant the two programs declare.

For each stack (dev, prod) and ingest mode, the main program and that stack's bootstrap run under
mocks; their IAM member resources become bindings (tests/infra/iam_model.py); every call of
tests/infra/iam_calls.py must be granted, by a predefined role holding the permission, at the
resource it acts on or above. The permissions granted that no call needs are reported per
identity in build/iam-surplus.md, written by every run (docs/iam-surplus.md is a snapshot of it).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import celpy
import grants
import pytest

from tests.infra.iam_calls import (
    LOCAL_ONLY_RPCS,
    RESOURCE_TYPES,
    RPC_PERMISSIONS,
    STATIC_CALLS,
    Call,
)
from tests.infra.iam_model import (
    CUSTOM_ROLE,
    Binding,
    bindings,
    bootstrap_for,
    granting,
    iam_resources,
    predefined_role_permissions,
    resource_limit,
    role_permissions,
)
from tests.infra.program import INGEST_MODES, PROJECT_NUMBER, STACKS, Graph, graph_for

REPO = Path(__file__).resolve().parents[2]
CASES = [(s, m) for s in STACKS for m in INGEST_MODES]
ACCOUNT = "gcp:serviceaccount/account:Account"
PROJECT_MEMBER = "gcp:projects/iAMMember:IAMMember"
# Permissions no identity CI can impersonate may hold unconditioned: each lets it widen its own
# trust or power (set a policy above its resources, edit the pool, mint keys, edit roles).
SELF_WIDENING = re.compile(
    r"^(resourcemanager\.projects\.setIamPolicy|iam\.serviceAccounts\.setIamPolicy"
    r"|iam\.serviceAccountKeys\.create|iam\.roles\.(create|update)"
    r"|iam\.googleapis\.com/workloadIdentityPool(s|Providers)\.(create|update|delete|undelete|setIamPolicy)"
    r"|storage\.buckets\.(setIamPolicy|update|delete)|cloudkms\.cryptoKeys\.setIamPolicy)$"
)


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


@pytest.mark.parametrize(("stack", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_every_call_in_the_table_is_granted_at_its_resource_or_above(stack: str, mode: str) -> None:
    resolved, found = all_calls(stack, mode)
    missing = [
        f"{c.identity}: {c.permission} on {scope} ({c.step})"
        for c, member, scope in resolved
        if not granting(
            found, member, c.permission, scope, frozenset(c.grants) if c.grants else None
        )
    ]
    assert not missing, "calls no grant covers:\n" + "\n".join(missing)


def test_every_permission_in_the_table_exists_in_a_predefined_role() -> None:
    known = set().union(*role_permissions().values())
    perms = {c.permission for c in STATIC_CALLS}
    perms |= {
        p
        for t in RESOURCE_TYPES.values()
        for p in (*t.create, *t.get, *t.update, *t.delete, *t.iam_set)
    }
    perms |= {p for p, _, _ in RPC_PERMISSIONS.values()}
    assert not sorted(perms - known)


@pytest.mark.parametrize(("stack", "mode"), CASES, ids=[f"{s}-{m}" for s, m in CASES])
def test_project_level_roles_the_program_grants_are_exactly_the_shared_list(
    stack: str, mode: str
) -> None:
    main = graph_for(stack, mode)
    project = {r.inputs["role"] for r in main.of_type("gcp:projects/iAMMember:IAMMember")}
    others = {r.inputs["role"] for r in iam_resources(main)} - project
    assert project == set(grants.PROJECT_GRANTED_ROLES)  # every stack traces to Cloud Trace
    assert others <= set(grants.RESOURCE_GRANTED_ROLES)


def test_resource_level_roles_in_the_shared_list_are_all_used() -> None:
    used = {r.inputs["role"] for s, m in CASES for r in iam_resources(graph_for(s, m))}
    assert set(grants.RESOURCE_GRANTED_ROLES) <= used


def test_deployer_grant_condition_lists_exactly_the_programs_project_roles() -> None:
    (limited,) = [
        r
        for r in bootstrap_for("dev").of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["role"] == grants.DEPLOYER_CONDITIONED_ROLE
    ]
    expression = limited.inputs["condition"]["expression"]
    assert expression.startswith("api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])")
    assert set(re.findall(r"'(roles/[^']+)'", expression)) == set(grants.PROJECT_GRANTED_ROLES)


@pytest.mark.parametrize("stack", STACKS)
def test_the_limited_deployer_cannot_grant_owner_or_itself_more(stack: str) -> None:
    boot = bootstrap_for(stack)
    found = bindings(boot)
    deployer = f"serviceAccount:{boot.exports['deployer_service_account']}"
    for role in (
        "roles/owner",
        "roles/editor",
        "roles/resourcemanager.projectIamAdmin",
        "roles/iam.serviceAccountTokenCreator",
    ):
        assert not granting(
            found, deployer, "resourcemanager.projects.setIamPolicy", "project", frozenset({role})
        )
    assert granting(
        found,
        deployer,
        "resourcemanager.projects.setIamPolicy",
        "project",
        frozenset({"roles/bigquery.jobUser"}),
    )


@pytest.mark.parametrize("stack", STACKS)
def test_no_identity_ci_can_impersonate_holds_an_unconditioned_self_widening_permission(
    stack: str,
) -> None:
    boot = bootstrap_for(stack)
    ci = {f"serviceAccount:{boot.exports['deployer_service_account']}"}
    if boot.exports.get("previewer_service_account"):
        ci.add(f"serviceAccount:{boot.exports['previewer_service_account']}")
    found = [b for s, m in CASES if s == stack for b in bindings(graph_for(s, m), boot)]
    roles = role_permissions()  # after bindings(): it registers the graphs' custom roles
    bad = {
        f"{b.member} {b.role} at {b.scope}: {p}"
        for b in found
        if b.member in ci and b.condition is None
        for p in roles[b.role]
        if SELF_WIDENING.match(p)
    }
    assert not bad, sorted(bad)
    unconditioned = {b.role for b in found if b.member in ci and b.condition is None}
    assert not unconditioned & {
        "roles/owner",
        "roles/editor",
        "roles/resourcemanager.projectIamAdmin",
        "roles/iam.serviceAccountAdmin",
        "roles/iam.workloadIdentityPoolAdmin",
        "roles/iam.securityAdmin",
        "roles/iam.serviceAccountTokenCreator",
    }


@pytest.mark.parametrize("stack", STACKS)
def test_previewer_holds_no_write_permission(stack: str) -> None:
    boot = bootstrap_for(stack)
    if not boot.exports.get("previewer_service_account"):
        return
    member = f"serviceAccount:{boot.exports['previewer_service_account']}"
    write = re.compile(
        r"\.(create|update|delete|setIamPolicy|publish|consume|useToEncrypt|add|destroy|enable|disable|actAs|getAccessToken|signBlob|signJwt|updateData)$"
    )
    roles = role_permissions()
    bad = {
        f"{b.role}: {p}"
        for b in bindings(boot)
        if b.member == member
        for p in roles[b.role]
        if write.search(p)
    }
    assert not bad, sorted(bad)


def test_every_rpc_method_in_the_table_needs_a_permission_its_identity_is_granted() -> None:
    """RPC -> permission rows are real table rows: the identity has that call in STATIC_CALLS."""
    table = {(c.identity, c.permission) for c in STATIC_CALLS}
    assert not [m for m, (p, _, who) in RPC_PERMISSIONS.items() if (who, p) not in table]
    assert not set(RPC_PERMISSIONS) & set(LOCAL_ONLY_RPCS)


def _ci_members(boot: Graph) -> dict[str, str]:
    """Member -> identity name, for every identity CI can impersonate in this bootstrap, and the
    federated principal sets CI's tokens become."""
    pool = boot.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool").outputs["name"]
    ci = {
        f"serviceAccount:{boot.exports['deployer_service_account']}": "deployer",
        f"principalSet://iam.googleapis.com/{pool}/attribute.access/deploy": "gitlab-deploy",
    }
    if boot.exports.get("previewer_service_account"):
        ci[f"serviceAccount:{boot.exports['previewer_service_account']}"] = "previewer"
        ci[f"principalSet://iam.googleapis.com/{pool}/attribute.access/preview"] = "gitlab-preview"
    return ci


def policy_powers(stack: str) -> dict[str, set[str]]:
    """Per CI identity: every permission it holds that edits an IAM policy or a dataset's access
    list, other than through the deployer's one conditioned projectIamAdmin binding (whose
    condition limits it to the program's roles): `<permission> (<role> at <scope>)`."""
    boot = bootstrap_for(stack)
    ci = _ci_members(boot)
    found = {b for s, m in CASES if s == stack for b in bindings(graph_for(s, m), boot)}
    roles = role_permissions()  # after bindings(): it registers the graphs' custom roles
    powers: dict[str, set[str]] = {name: set() for name in ci.values()}
    for b in found:
        if b.member not in ci or b.role == grants.DEPLOYER_CONDITIONED_ROLE:
            continue
        for perm in roles[b.role]:
            if perm.endswith(".setIamPolicy") or perm in grants.DATASET_ACL_PERMISSIONS:
                role = b.role.rsplit("/", 1)[-1]
                powers[ci[b.member]].add(f"{perm} ({role} at {b.scope})")
    return powers


@pytest.mark.parametrize("stack", STACKS)
def test_no_ci_identity_sets_an_iam_policy_but_the_documented_exceptions(stack: str) -> None:
    """Granting roles outside the program's list takes a setIamPolicy other than the project's
    conditioned one: CI's identities hold exactly the documented exceptions (grants.py: topics,
    subscriptions and Cloud Run services, whose resource names IAM Conditions cannot read).
    On the old design (pubsub/run/secretmanager/artifactregistry admin, bigquery.dataOwner)
    this fails with datasets', tables', secrets' and repositories' setIamPolicy besides."""
    powers = policy_powers(stack)
    held = {p.split(" ")[0] for p in powers["deployer"]}
    assert held == set(grants.RESOURCE_SET_IAM_EXCEPTIONS) | set(grants.DATASET_ACL_PERMISSIONS)
    assert not {name: held for name, held in powers.items() if name != "deployer" and held}
    # The only policies it sets directly are the resource-level grants the program still makes.
    for b in bindings(*(graph_for(stack, m) for m in INGEST_MODES)):
        if b.scope != "project" and b.condition is None:
            assert b.scope.split(":")[0] in {"topic", "subscription", "run-service"}, b


def test_no_resource_level_grant_where_a_conditioned_project_grant_can_do() -> None:
    """Datasets and secrets are granted at project level with a resource condition."""
    for s, m in CASES:
        main = graph_for(s, m)
        assert not main.of_type(
            "gcp:bigquery/datasetIamMember:DatasetIamMember",
            "gcp:secretmanager/secretIamMember:SecretIamMember",
        )
        limited = [
            r
            for r in main.of_type(PROJECT_MEMBER)
            if r.inputs.get("condition") and resource_limit(r.inputs["condition"]["expression"])
        ]
        assert {r.inputs["role"] for r in limited} >= {
            "roles/bigquery.dataViewer",
            "roles/secretmanager.secretAccessor",
        }


def test_deployer_custom_role_is_the_shared_list_and_a_subset_of_the_replaced_roles() -> None:
    predefined = predefined_role_permissions()
    replaced = set().union(*(predefined[r] for r in grants.DEPLOYER_REPLACED_ROLES))
    perms = set(grants.DEPLOYER_CUSTOM_ROLE_PERMISSIONS)
    assert len(perms) == len(grants.DEPLOYER_CUSTOM_ROLE_PERMISSIONS), "duplicates"
    assert not sorted(perms - replaced), "not in the roles it replaces (or misspelt)"
    assert {p for p in perms if p.endswith(".setIamPolicy")} == set(
        grants.RESOURCE_SET_IAM_EXCEPTIONS
    )
    assert not {p for p in perms if "TagBinding" in p or ".ssh" in p}
    for stack in STACKS:
        boot = bootstrap_for(stack)
        (role,) = boot.of_type(CUSTOM_ROLE)
        assert set(role.inputs["permissions"]) == perms
        bound = {r.inputs["role"] for r in boot.of_type(PROJECT_MEMBER)}
        assert not bound & set(grants.DEPLOYER_REPLACED_ROLES)
        assert f"projects/{role.inputs['project']}/roles/{grants.DEPLOYER_CUSTOM_ROLE_ID}" in bound


def test_resource_condition_is_exact_about_children() -> None:
    """`startsWith(N + '/')`: a sibling secret `...-plain` is not under `...`."""

    def evaluate(expression: str, activation: dict[str, Any]) -> bool:
        env = celpy.Environment()
        program = env.program(env.compile(expression))
        return bool(program.evaluate({k: celpy.json_to_cel(v) for k, v in activation.items()}))

    name = "projects/123/secrets/flightpipe-api-keys"
    by_id = "projects/flightpipe-dev/secrets/flightpipe-api-keys"
    expr = grants.resource_condition("secretmanager.googleapis.com", name, by_id)
    svc = "secretmanager.googleapis.com"
    for full in (name, by_id):
        assert evaluate(expr, {"resource": {"service": svc, "name": full}})
        assert evaluate(expr, {"resource": {"service": svc, "name": full + "/versions/3"}})
        assert not evaluate(expr, {"resource": {"service": svc, "name": full + "-plain"}})
    other = "projects/123/secrets/other"
    assert not evaluate(expr, {"resource": {"service": svc, "name": other}})
    assert not evaluate(expr, {"resource": {"service": "run.googleapis.com", "name": name}})
    with pytest.raises(ValueError, match="do not read"):
        grants.resource_condition("pubsub.googleapis.com", "projects/p/topics/t")


def surplus_report() -> str:
    """Per identity (over every stack and mode): granted permissions that no call needs."""
    granted: dict[str, set[str]] = {}
    needed: dict[str, set[str]] = {}
    covered: dict[str, set[str]] = {}
    for stack, mode in CASES:
        resolved, found = all_calls(stack, mode)
        roles = role_permissions()  # after bindings(): it registers the graphs' custom roles
        members = {member: c.identity for c, member, _ in resolved}
        for c, _, _ in resolved:
            name = "deployer" if c.identity == "post-deploy-test" else c.identity
            needed.setdefault(name, set()).add(c.permission)
            covered.setdefault(name, set()).add(f"{c.permission} on {c.scope}")
        for b in found:
            who = members.get(b.member)
            if who:
                name = "deployer" if who == "post-deploy-test" else who
                granted.setdefault(name, set()).update(roles[b.role])
    lines = [
        "# IAM simulation: calls covered and surplus permissions per identity",
        "",
        "Generated by tests/infra/test_iam_simulation.py over dev and prod, both ingest modes",
        "(`pytest tests/infra/test_iam_simulation.py` writes build/iam-surplus.md).",
        "Roles: tests/infra/data/gcp-iam-roles.json (iann0036/iam-dataset snapshot).",
        "",
    ]
    powers: dict[str, dict[str, list[str]]] = {}  # identity -> power -> stacks
    for stack in STACKS:
        for name, held in policy_powers(stack).items():
            for power in held:
                powers.setdefault(name, {}).setdefault(power, []).append(stack)
    for name in sorted(granted):
        surplus = sorted(granted[name] - needed.get(name, set()))
        lines += [
            f"## {name}",
            "",
            f"- calls covered: {len(covered.get(name, ()))}"
            f" (distinct permissions {len(needed.get(name, ()))})",
            f"- permissions granted: {len(granted[name])};"
            f" surplus (granted, no call needs): {len(surplus)}",
        ]
        if name in powers:
            lines += [
                "- remaining powers to grant roles outside the program's list (IAM policies or"
                " dataset access lists it can set other than through its conditioned"
                f" projectIamAdmin binding; infra/grants.py says why): {len(powers[name])}",
                *[f"  - `{p}` ({', '.join(st)})" for p, st in sorted(powers[name].items())],
            ]
        lines += [
            "",
            "<details><summary>surplus</summary>",
            "",
            *[f"- `{p}`" for p in surplus],
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def test_surplus_report_names_every_identity_and_is_written() -> None:
    """The closing note's figures: written to build/iam-surplus.md (FLIGHTPIPE_IAM_REPORT)."""
    report = surplus_report()
    for identity in ("api", "subscriber", "pubsub-agent", "uptime-agent", "deployer", "previewer"):
        assert f"## {identity}\n" in report
    path = Path(os.environ.get("FLIGHTPIPE_IAM_REPORT", REPO / "build" / "iam-surplus.md"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report)
    print(f"IAM surplus report: {path}")
