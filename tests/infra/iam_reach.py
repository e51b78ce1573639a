"""What CI can reach: every identity GitLab's federated principals can become by impersonation.

From the principal sets CI's tokens become, `reach_and_powers` follows every impersonation the
declared bindings allow (getAccessToken, actAs, ...), counting the roles a grant-limited
projectIamAdmin may give itself as held, and reports per identity each widening permission
(`widening`) and each account it could act as without a call of the table needing it.
"""

from __future__ import annotations

import re

import grants

from tests.infra.iam_model import (
    GRANT_LIMIT,
    Binding,
    bindings,
    bootstrap_for,
    resource_limit,
    role_permissions,
)
from tests.infra.iam_resolve import all_calls
from tests.infra.program import INGEST_MODES, Graph, graph_for


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


def stack_bindings(stack: str) -> set[Binding]:
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
    found = stack_bindings(stack) | set(extra)
    return reach_and_powers(found, _ci_members(bootstrap_for(stack)), _needed_accounts(stack))


def narrowing_powers(stack: str) -> dict[str, set[str]]:
    """Per CI identity: the Principal Access Boundary binding permissions it holds (reported)."""
    reached, _ = ci_powers(stack)
    found = stack_bindings(stack)
    return {
        name: {
            f"{p} ({how} at {scope})"
            for p, scope, how in effective(found, member)
            if p in NARROWING_ONLY
        }
        for member, name in reached.items()
    }
