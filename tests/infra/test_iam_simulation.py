"""IAM simulation: every call in the table is covered by a grant the two programs declare.

For each stack (dev, prod) and ingest mode, the main program and that stack's bootstrap run under
mocks; their IAM member resources become bindings (tests/infra/iam_model.py); every call of
tests/infra/iam_calls.py must be granted, by a predefined role holding the permission, at the
resource it acts on or above. The permissions granted that no call needs are reported per
identity in build/iam-surplus.md, written by every run (docs/iam-surplus.md is a snapshot of it,
and a test fails when the snapshot is stale).

What CI can do beyond the program's list: from GitLab's federated principals, every identity
reachable by impersonation through the declared bindings (`reach_and_powers`), with the roles a
grant-limited projectIamAdmin may give itself counted as held; none may hold a widening
permission (`widening`) or act as an account outside its calls.

Why one module of ~800 lines: every test here asks one question of the same model (the two
programs' bindings under mocks, the call table, the reachability walk) through the same helpers;
the bite tests sit next to the checks they prove can fail.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import celpy
import grants
import pytest
from celpy.adapter import json_to_cel

from tests.infra.iam_calls import (
    LOCAL_ONLY_RPCS,
    RESOURCE_TYPES,
    RPC_PERMISSIONS,
    STATIC_CALLS,
    Call,
)
from tests.infra.iam_model import (
    CUSTOM_ROLE,
    GRANT_LIMIT,
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
def test_every_grant_of_the_program_is_project_level_and_in_the_shared_list(
    stack: str, mode: str
) -> None:
    """No resource-level grant is left (no resource's setIamPolicy for the deployer to need)."""
    main = graph_for(stack, mode)
    project = {r.inputs["role"] for r in main.of_type(PROJECT_MEMBER)}
    others = sorted(r.name for r in iam_resources(main) if r.type != PROJECT_MEMBER)
    assert project == set(grants.granted_roles(main.config["gcp:project"]))
    assert not others


def test_deployer_grant_condition_lists_exactly_the_programs_project_roles() -> None:
    (limited,) = [
        r
        for r in bootstrap_for("dev").of_type("gcp:projects/iAMMember:IAMMember")
        if r.inputs["role"] == grants.DEPLOYER_CONDITIONED_ROLE
    ]
    expression = limited.inputs["condition"]["expression"]
    assert expression.startswith("api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', [])")
    listed = set(re.findall(r"'((?:roles|projects)/[^']+)'", expression)) - {
        "iam.googleapis.com/modifiedGrantsByRole"
    }
    assert listed == set(grants.granted_roles("flightpipe-dev"))


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
    """The federated principal sets CI's tokens become (member -> identity name): where the
    search for what CI can reach starts."""
    pool = boot.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool").outputs["name"]
    ci = {f"principalSet://iam.googleapis.com/{pool}/attribute.access/deploy": "gitlab-deploy"}
    if boot.exports.get("previewer_service_account"):
        ci[f"principalSet://iam.googleapis.com/{pool}/attribute.access/preview"] = "gitlab-preview"
    return ci


# What lets a member act as, or become, a service account (on that account's policy, or on the
# project's, where it covers every account of the project).
IMPERSONATION = frozenset(
    {
        "iam.serviceAccounts.actAs",
        "iam.serviceAccounts.getAccessToken",
        "iam.serviceAccounts.getOpenIdToken",
        "iam.serviceAccounts.implicitDelegation",
        "iam.serviceAccounts.signBlob",
        "iam.serviceAccounts.signJwt",
    }
)
_POOL_WRITE = re.compile(r"^iam\.googleapis\.com/(workload|workforce)\w*\.(?!get|list|search)\w+$")
_ROLE_WRITE = re.compile(r"^iam\.roles\.(create|update|delete|undelete)$")
# projectIamAdmin's Principal Access Boundary bindings: a boundary only narrows what a principal
# may reach, never grants (IAM's "Principal access boundary policies" overview); with none in
# this project there is nothing to remove. Listed per identity in the report, not a failure.
NARROWING_ONLY = frozenset(
    {
        "resourcemanager.projects.createPolicyBinding",
        "resourcemanager.projects.deletePolicyBinding",
        "resourcemanager.projects.updatePolicyBinding",
    }
)


def widening(permission: str) -> bool:
    """A permission that grants roles, edits a role, a pool or a provider, or mints keys."""
    return (
        permission.endswith(".setIamPolicy")
        or permission in grants.DATASET_ACCESS_PERMISSIONS
        or permission == "iam.serviceAccountKeys.create"
        or bool(_POOL_WRITE.match(permission) or _ROLE_WRITE.match(permission))
    )


def effective(found: set[Binding], member: str) -> list[tuple[str, str, str]]:
    """(permission, scope, how) for everything `member` holds or can give itself.

    A binding limited by `modifiedGrantsByRole` lets its holder grant each listed role to anyone,
    itself included, at project level with no condition: its holder holds every listed role's
    permissions too. Its own setIamPolicy is that limited power, and is left out."""
    roles = role_permissions()
    held = []
    for b in found:
        if b.member != member:
            continue
        limit = GRANT_LIMIT.match(b.condition or "")
        if limit:
            for role in re.findall(r"'([^']+)'", limit.group(1)):
                held += [(p, "project", f"self-granted {role}") for p in roles[role]]
        elif b.condition is not None and resource_limit(b.condition) is None:
            raise AssertionError(f"{b.resource}: condition the check cannot evaluate")
        held += [
            (p, b.scope, b.role.rsplit("/", 1)[-1])
            for p in roles[b.role]
            if not (limit and p == "resourcemanager.projects.setIamPolicy")
        ]
    return held


def reach_and_powers(
    found: set[Binding], start: dict[str, str], needed: set[tuple[str, str]]
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Every identity reachable from `start` by impersonation, and what each may do that no
    identity CI reaches may: widening permissions, impersonating an account it has no call to
    act as or become (`needed`: (member, account email) from the call table), or impersonating
    every account of the project."""
    reached = dict(start)
    queue = list(start)
    powers: dict[str, set[str]] = {}
    while queue:
        member = queue.pop()
        bad = powers.setdefault(member, set())
        for perm, scope, how in effective(found, member):
            where = f"{perm} ({how} at {scope})"
            if widening(perm):
                bad.add(where)
            if perm not in IMPERSONATION:
                continue
            if not scope.startswith("service-account:"):
                bad.add(where + ": every account of the project")
                continue
            account = scope.removeprefix("service-account:")
            if (member, account) not in needed:
                bad.add(where + ": an account it has no call to act as")
            target = f"serviceAccount:{account}"
            if target not in reached:
                reached[target] = account.split("@")[0]
                queue.append(target)
    return reached, powers


def _stack_bindings(stack: str) -> set[Binding]:
    boot = bootstrap_for(stack)
    return {b for m in INGEST_MODES for b in bindings(graph_for(stack, m), boot)}


def _needed_accounts(stack: str) -> set[tuple[str, str]]:
    """(member, account) for every call of the table that acts as or becomes an account."""
    return {
        (member, scope.removeprefix("service-account:"))
        for m in INGEST_MODES
        for c, member, scope in all_calls(stack, m)[0]
        if c.permission in IMPERSONATION and scope.startswith("service-account:")
    }


def ci_powers(
    stack: str, extra: tuple[Binding, ...] = ()
) -> tuple[dict[str, str], dict[str, set[str]]]:
    """What CI can reach in `stack` and the widening powers of each, from the bindings the two
    programs declare (plus `extra`, for the tests that prove the check bites)."""
    found = _stack_bindings(stack) | set(extra)
    return reach_and_powers(found, _ci_members(bootstrap_for(stack)), _needed_accounts(stack))


@pytest.mark.parametrize("stack", STACKS)
def test_no_ci_identity_can_grant_or_widen_beyond_the_programs_list(stack: str) -> None:
    """#15's last Done-when clause. From the principal sets GitLab's tokens become, follow every
    impersonation the bindings allow (getAccessToken, actAs, ...) to every identity CI can be;
    none may hold a setIamPolicy other than the deployer's one limited projectIamAdmin (whose
    listed roles count as held), a dataset's create/update/setIamPolicy, a pool or provider
    write, a role write, a key, or act as an account outside its calls. The design before this
    change held pubsub.topics/subscriptions and run.services setIamPolicy, bigquery.datasets.
    create/update and serviceAccountUser on the project: each is a case of
    test_the_ci_check_fails_on_a_binding_that_widens."""
    reached, powers = ci_powers(stack)
    names = set(reached.values())
    boot = bootstrap_for(stack)
    expected = {"gitlab-deploy", "flightpipe-deployer", "flightpipe-api", "flightpipe-subscriber"}
    if boot.exports.get("previewer_service_account"):
        expected |= {"gitlab-preview", "flightpipe-previewer"}
    assert names == expected, "the identities CI can reach changed: review them"
    # Not vacuous: the search saw the deployer's limited grant and its self-grantable roles.
    deployer = f"serviceAccount:{boot.exports['deployer_service_account']}"
    held = {p for p, _, _ in effective(_stack_bindings(stack), deployer)}
    assert {"pubsub.topics.publish", "bigquery.tables.create", "run.services.update"} <= held
    assert not {who: sorted(bad) for who, bad in powers.items() if bad}


@pytest.mark.parametrize(
    ("role", "scope", "why"),
    [
        ("roles/pubsub.admin", "topic:flights", "pubsub.topics.setIamPolicy"),
        ("roles/run.admin", "run-service:flightpipe-api", "run.services.setIamPolicy"),
        ("roles/bigquery.dataOwner", "dataset:flights", "bigquery.datasets.update"),
        ("roles/iam.serviceAccountUser", "project", "every account of the project"),
        ("roles/iam.workloadIdentityPoolAdmin", "project", "workloadIdentityPoolProviders.update"),
        ("roles/iam.roleAdmin", "project", "iam.roles.update"),
    ],
)
def test_the_ci_check_fails_on_a_binding_that_widens(role: str, scope: str, why: str) -> None:
    """The check bites: one extra binding of the deployer's is enough to fail it."""
    boot = bootstrap_for("dev")
    deployer = f"serviceAccount:{boot.exports['deployer_service_account']}"
    _, powers = ci_powers("dev", (Binding(scope, role, deployer, None, "extra"),))
    assert any(why in p for p in powers[deployer]), sorted(powers[deployer])


def test_the_ci_check_follows_impersonation_and_self_grants() -> None:
    """Powers two steps away count: the deployer acting as an account that may set a topic's
    policy, or a grant limit that lists a role holding bigquery.datasets.create."""
    boot = bootstrap_for("dev")
    deployer = f"serviceAccount:{boot.exports['deployer_service_account']}"
    api = f"serviceAccount:{boot.exports['runtime_service_accounts']['api']}"
    _, powers = ci_powers("dev", (Binding("topic:flights", "roles/pubsub.admin", api, None, "x"),))
    assert any("pubsub.topics.setIamPolicy" in p for p in powers[api])
    listing = grants.grant_limit_condition(("roles/bigquery.dataEditor",))
    limited = Binding("project", grants.DEPLOYER_CONDITIONED_ROLE, deployer, listing, "x")
    _, powers = ci_powers("dev", (limited,))
    assert any(p.startswith("bigquery.datasets.create (self-granted") for p in powers[deployer])
    # Another account of the project, which no call of the deployer acts as.
    other = "service-account:flightpipe-other@flightpipe-dev.iam.gserviceaccount.com"
    token = Binding(other, "roles/iam.serviceAccountTokenCreator", deployer, None, "x")
    _, powers = ci_powers("dev", (token,))
    assert any("no call to act as" in p for p in powers[deployer])


def narrowing_powers(stack: str) -> dict[str, set[str]]:
    """Per CI identity: the Principal Access Boundary binding permissions it holds (reported)."""
    reached, _ = ci_powers(stack)
    found = _stack_bindings(stack)
    return {
        name: {
            f"{p} ({how} at {scope})"
            for p, scope, how in effective(found, member)
            if p in NARROWING_ONLY
        }
        for member, name in reached.items()
    }


def test_no_resource_level_grant_where_a_conditioned_project_grant_can_do() -> None:
    """Datasets and secrets are granted at project level with a resource condition; the main
    program declares no dataset and no account (the bootstrap's, infra/grants.py)."""
    for s, m in CASES:
        main = graph_for(s, m)
        assert not main.of_type(
            "gcp:bigquery/datasetIamMember:DatasetIamMember",
            "gcp:secretmanager/secretIamMember:SecretIamMember",
            "gcp:pubsub/topicIAMMember:TopicIAMMember",
            "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
            "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
            "gcp:bigquery/dataset:Dataset",
            ACCOUNT,
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
    assert not {p for p in perms if p.endswith(".setIamPolicy")}
    assert not perms & set(grants.DATASET_ACCESS_PERMISSIONS)
    assert not {p for p in perms if "TagBinding" in p or ".ssh" in p}
    for stack in STACKS:
        boot = bootstrap_for(stack)
        (role,) = [
            r
            for r in boot.of_type(CUSTOM_ROLE)
            if r.inputs["roleId"] == grants.DEPLOYER_CUSTOM_ROLE_ID
        ]
        assert set(role.inputs["permissions"]) == perms
        bound = {r.inputs["role"] for r in boot.of_type(PROJECT_MEMBER)}
        assert not bound & set(grants.DEPLOYER_REPLACED_ROLES)
        assert f"projects/{role.inputs['project']}/roles/{grants.DEPLOYER_CUSTOM_ROLE_ID}" in bound


@pytest.mark.parametrize("stack", STACKS)
def test_the_deployer_reads_only_the_secrets_the_program_writes(stack: str) -> None:
    """Its own bindings give the deployer a secret's payload on the program's two secrets only:
    no project-wide versions.access (the custom role's, before), so an e2e-key grant means
    something. (The roles it may grant itself are `effective`'s concern: the known limit of
    docs/deploying.md, modifiedGrantsByRole checks roles, not members or conditions.)"""
    boot = bootstrap_for(stack)
    deployer = f"serviceAccount:{boot.exports['deployer_service_account']}"
    found = _stack_bindings(stack)
    roles = role_permissions()  # after bindings(): it registers the graphs' custom roles
    readable = {
        b.scope
        for b in found
        if b.member == deployer and "secretmanager.versions.access" in roles[b.role]
    }
    assert readable == {f"secret:{s}" for s in grants.DEPLOYER_READ_SECRET_IDS}
    other = "secret:another-systems-secret"
    assert not granting(list(found), deployer, "secretmanager.versions.access", other)
    # The program's secrets are exactly the ones listed (an unlisted one would fail its deploy).
    for mode in INGEST_MODES:
        e = graph_for(stack, mode).exports
        assert {e["api_keys_secret"], e["e2e_api_key_secret"]} == set(
            grants.DEPLOYER_READ_SECRET_IDS
        )


def test_table_writer_role_is_part_of_data_editor_and_cannot_make_a_dataset() -> None:
    """The role the writers get in place of dataEditor: which the deployer may grant itself."""
    editor = predefined_role_permissions()["roles/bigquery.dataEditor"]
    perms = set(grants.TABLE_WRITER_PERMISSIONS)
    assert perms <= editor
    assert not {p for p in perms if widening(p)}
    assert "bigquery.datasets.create" in editor  # why dataEditor is not granted
    for stack in STACKS:
        (role,) = [
            r
            for r in bootstrap_for(stack).of_type(CUSTOM_ROLE)
            if r.inputs["roleId"] == grants.TABLE_WRITER_ROLE_ID
        ]
        assert set(role.inputs["permissions"]) == perms


def test_the_dataset_is_the_bootstraps_with_an_explicit_access_list_and_protected() -> None:
    """BigQuery gives a dataset created without `access` its creator as OWNER (grants.py)."""
    for stack in STACKS:
        boot = bootstrap_for(stack)
        dataset = boot.one("gcp:bigquery/dataset:Dataset")
        assert dataset.inputs["accesses"] == [{"role": "OWNER", "specialGroup": "projectOwners"}]
        assert dataset.inputs["deleteContentsOnDestroy"] is False
        main = graph_for(stack, "subscriber")
        assert dataset.inputs["datasetId"] == main.exports["dataset"]
        # The services query in the main stack's location (FLIGHTPIPE_BIGQUERY_LOCATION).
        assert dataset.inputs["location"] == main.config["flightpipe:datasetLocation"]
    # Mocks do not see resource options: read them from the source (a replace or delete of a
    # protected resource fails the update instead of dropping the data).
    source = (REPO / "infra" / "bootstrap" / "__main__.py").read_text()
    call = source[source.index("dataset = gcp.bigquery.Dataset(") :]
    call = call[: call.index("\n)\n")]
    assert "opts=kept" in call
    assert "kept = pulumi.ResourceOptions(depends_on=apis, protect=True)" in source


def test_resource_condition_is_exact_about_children() -> None:
    """`startsWith(N + '/')`: a sibling secret `...-plain` is not under `...`."""

    def evaluate(expression: str, activation: dict[str, Any]) -> bool:
        env = celpy.Environment()
        program = env.program(env.compile(expression))
        return bool(program.evaluate({k: json_to_cel(v) for k, v in activation.items()}))

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
        project = graph_for(stack, mode).config["gcp:project"]
        for c, _, scope in resolved:
            name = "deployer" if c.identity == "post-deploy-test" else c.identity
            needed.setdefault(name, set()).add(c.permission)
            # One line per call over both stacks: the project id as a placeholder.
            where = scope.replace(project, "<project>")
            covered.setdefault(name, set()).add(f"{c.permission} on {where}")
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
    narrowing: dict[str, dict[str, list[str]]] = {}
    reachable: dict[str, list[str]] = {}
    for stack in STACKS:
        reached, held = ci_powers(stack)
        for member, bad in held.items():
            for power in bad:
                powers.setdefault(member, {}).setdefault(power, []).append(stack)
        for name in reached.values():
            reachable.setdefault(name, []).append(stack)
        for name, held_narrowing in narrowing_powers(stack).items():
            for power in held_narrowing:
                narrowing.setdefault(name, {}).setdefault(power, []).append(stack)
    lines += [
        "## What CI can reach",
        "",
        "Identities reachable from GitLab's federated principals by impersonation (getAccessToken,",
        "actAs, ...), followed through the bindings both programs declare"
        " (`test_no_ci_identity_can_grant_or_widen_beyond_the_programs_list`):",
        "",
        *[f"- {name} ({', '.join(st)})" for name, st in sorted(reachable.items())],
        "",
        "Powers to grant roles outside the program's list or to change trust: "
        + (
            "; ".join(f"`{p}`" for held in powers.values() for p in held)
            if any(powers.values())
            else "none."
        ),
        "",
        "Held with projectIamAdmin and reported, not counted as widening (a Principal Access",
        "Boundary binding only narrows what a principal may reach; none exists in the project):",
        "",
        *[
            f"- {name}: `{p}` ({', '.join(st)})"
            for name, found in sorted(narrowing.items())
            for p, st in sorted(found.items())
        ],
        "",
    ]
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
        lines += [
            "",
            "<details><summary>calls covered (permission on resource)</summary>",
            "",
            *[f"- `{c}`" for c in sorted(covered.get(name, ()))],
            "",
            "</details>",
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


def test_the_documented_report_is_the_current_one() -> None:
    """docs/iam-surplus.md is what the simulation reports today (copy build/iam-surplus.md)."""
    assert (REPO / "docs" / "iam-surplus.md").read_text() == surplus_report(), (
        "docs/iam-surplus.md is stale: cp build/iam-surplus.md docs/iam-surplus.md"
    )
