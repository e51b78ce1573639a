"""No identity CI can become may grant a role outside the program's list or widen its trust.

Each test asks the reachability walk of tests/infra/iam_reach.py over the bindings both programs
declare (dev and prod, both ingest modes); the bite tests add one binding and watch the check fail.
"""

from __future__ import annotations

import re

import grants
import pytest

from tests.infra.iam_model import Binding, bindings, bootstrap_for, role_permissions
from tests.infra.iam_reach import ci_powers, effective, stack_bindings
from tests.infra.iam_resolve import CASES
from tests.infra.program import STACKS, graph_for

# Permissions no identity CI can impersonate may hold unconditioned: each lets it widen its own
# trust or power (set a policy above its resources, edit the pool, mint keys, edit roles).
SELF_WIDENING = re.compile(
    r"^(resourcemanager\.projects\.setIamPolicy|iam\.serviceAccounts\.setIamPolicy"
    r"|iam\.serviceAccountKeys\.create|iam\.roles\.(create|update)"
    r"|iam\.googleapis\.com/workloadIdentityPool(s|Providers)\.(create|update|delete|undelete|setIamPolicy)"
    r"|storage\.buckets\.(setIamPolicy|update|delete)|cloudkms\.cryptoKeys\.setIamPolicy)$"
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


@pytest.mark.parametrize("stack", STACKS)
def test_no_ci_identity_can_grant_or_widen_beyond_the_programs_list(stack: str) -> None:
    """From the principal sets GitLab's tokens become, follow every impersonation the bindings
    allow (getAccessToken, actAs, ...) to every identity CI can be; none may hold a setIamPolicy
    other than the deployer's one limited projectIamAdmin (whose listed roles count as held), a
    dataset's create/update/setIamPolicy, a pool or provider write, a role write, a key, or act as
    an account outside its calls (test_the_ci_check_fails_on_a_binding_that_widens: one case each).
    """
    reached, powers = ci_powers(stack)
    names = set(reached.values())
    boot = bootstrap_for(stack)
    expected = {"gitlab-deploy", "flightpipe-deployer", "flightpipe-api", "flightpipe-subscriber"}
    if boot.exports.get("previewer_service_account"):
        expected |= {"gitlab-preview", "flightpipe-previewer"}
    assert names == expected, "the identities CI can reach changed: review them"
    # Not vacuous: the search saw the deployer's limited grant and its self-grantable roles.
    deployer = f"serviceAccount:{boot.exports['deployer_service_account']}"
    held = {p for p, _, _ in effective(stack_bindings(stack), deployer)}
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
