"""IAM simulation: every call in the table is covered by a grant the two programs declare.

For each stack (dev, prod) and ingest mode, the main program and that stack's bootstrap run under
mocks; their IAM member resources become bindings (tests/infra/iam_model.py); every call of
tests/infra/iam_calls.py must be granted, by a predefined role holding the permission, at the
resource it acts on or above (tests/infra/iam_resolve.py). The grants themselves must be the
shared list of infra/grants.py, project-level, and no wider than the calls need. The permissions
granted that no call needs are reported per identity in build/iam-surplus.md, written by every run
(docs/iam-surplus.md is a snapshot of it, and a test fails when the snapshot is stale); what CI can
reach beyond the program's list is tests/infra/test_iam_ci_reach.py.
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

from tests.infra.iam_calls import LOCAL_ONLY_RPCS, RESOURCE_TYPES, RPC_PERMISSIONS, STATIC_CALLS
from tests.infra.iam_model import (
    CUSTOM_ROLE,
    bindings,
    bootstrap_for,
    granting,
    iam_resources,
    predefined_role_permissions,
    resource_limit,
    role_permissions,
)
from tests.infra.iam_reach import ci_powers, narrowing_powers, stack_bindings, widening
from tests.infra.iam_resolve import ACCOUNT, CASES, PROJECT_MEMBER, all_calls
from tests.infra.program import INGEST_MODES, STACKS, graph_for

REPO = Path(__file__).resolve().parents[2]


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


def test_every_rpc_method_in_the_table_needs_a_permission_its_identity_is_granted() -> None:
    """RPC -> permission rows are real table rows: the identity has that call in STATIC_CALLS."""
    table = {(c.identity, c.permission) for c in STATIC_CALLS}
    assert not [m for m, (p, _, who) in RPC_PERMISSIONS.items() if (who, p) not in table]
    assert not set(RPC_PERMISSIONS) & set(LOCAL_ONLY_RPCS)


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
    found = stack_bindings(stack)
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


@pytest.mark.parametrize("stack", STACKS)
def test_the_main_program_grants_the_deployer_nothing(stack: str) -> None:
    """Every grant of the deployer, the read of the plain e2e key included, is the bootstrap's:
    the program the deployer runs never grants its own identity anything."""
    deployer = f"serviceAccount:{bootstrap_for(stack).exports['deployer_service_account']}"
    for mode in INGEST_MODES:
        mine = [b.resource for b in bindings(graph_for(stack, mode)) if b.member == deployer]
        assert not mine, mine
