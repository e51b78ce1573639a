"""The IAM simulation: every grant both programs declare, and whether it covers a call.

`bindings(graph)` turns each IAM member resource recorded under mocks (project, bucket, KMS key,
service account, secret, topic, subscription, dataset, Cloud Run service, repository) into a
`Binding` at a scope; `covers(bindings, member, permission, scope)` says whether a predefined role
(tests/infra/data/gcp-iam-roles.json) holding `permission` is granted to `member` at `scope` or at
a parent of it (IAM policies inherit downwards: table < dataset < project). A binding with a
condition counts only where the simulation can evaluate the condition: the one condition form
the programs use, `api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([...])`,
holds for a call when every role it grants is listed (and, as Google documents, for calls that
grant nothing, where the attribute is absent and defaults to `[]`). The main program's
project-level grants limited to one resource (`grants.resource_condition`:
`resource.service == S && (resource.name == N || resource.name.startsWith(N + '/'))`) count as a
binding at that resource (a dataset, which its tables inherit, or a secret), since the condition
holds exactly for N and the names under it. Any other condition fails the test that meets it,
rather than being guessed.

Custom roles (`gcp.projects.IAMCustomRole`, the deployer's) are read from the recorded graph:
their permissions are the ones the bootstrap declares, bound by `projects/<p>/roles/<id>`.

`run_bootstrap(stack)` runs infra/bootstrap/__main__.py under the same mocks as the main program
(tests/infra/program.py).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from tests.infra.program import INFRA, Graph, Recorded, run_program

BOOTSTRAP = INFRA / "bootstrap"
GITLAB_PROJECT_ID = "12345678"  # the GitLab project the test bootstraps trust
ROLES_FILE = Path(__file__).resolve().parent / "data" / "gcp-iam-roles.json"
PROJECT = "project"
GRANT_LIMIT = re.compile(
    r"^api\.getAttribute\('iam\.googleapis\.com/modifiedGrantsByRole', \[\]\)"
    r"\.hasOnly\(\[((?:'[^']+'(?:, )?)*)\]\)$"
)


_RESOURCE_LIMIT = re.compile(r"^resource\.service == '([a-z.]+)' && \((.+)\)$")
_NAME_ALTERNATIVE = re.compile(
    r"^resource\.name == '([^']+)' \|\| resource\.name\.startsWith\('\1/'\)$"
)
# Full resource name (as IAM Conditions read it) -> the simulation's scope.
_CONDITION_SCOPES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("bigquery.googleapis.com", re.compile(r"^projects/[^/]+/datasets/([^/]+)$"), "dataset"),
    ("secretmanager.googleapis.com", re.compile(r"^projects/[^/]+/secrets/([^/]+)$"), "secret"),
)
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"


@cache
def predefined_role_permissions() -> dict[str, frozenset[str]]:
    """Predefined role -> its permissions (the dataset's snapshot)."""
    roles = json.loads(ROLES_FILE.read_text())["roles"]
    return {name: frozenset(role["permissions"]) for name, role in roles.items()}


_CUSTOM_ROLES: dict[str, frozenset[str]] = {}


def role_permissions() -> dict[str, frozenset[str]]:
    """Role -> its permissions: the predefined roles, and the custom roles of graphs seen."""
    return predefined_role_permissions() | _CUSTOM_ROLES


def custom_roles(graph: Graph) -> dict[str, frozenset[str]]:
    """`projects/<p>/roles/<id>` -> permissions, for every custom role the graph declares."""
    return {
        f"projects/{r.inputs['project']}/roles/{r.inputs['roleId']}": frozenset(
            r.inputs["permissions"]
        )
        for r in graph.of_type(CUSTOM_ROLE)
    }


def resource_limit(condition: str | None) -> str | None:
    """The scope a resource-limited project grant applies to, or None for another condition."""
    if condition is None:
        return None
    match = _RESOURCE_LIMIT.match(condition)
    if not match:
        return None
    service, body = match.groups()
    parts = body.split(" || ")
    pairs = [" || ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    scopes = set()
    for pair in pairs:
        alternative = _NAME_ALTERNATIVE.match(pair)
        if not alternative:
            raise AssertionError(f"cannot evaluate resource condition {condition!r}")
        scopes.add(_place(service, alternative.group(1)))
    if len(scopes) != 1:
        raise AssertionError(f"a resource condition names more than one resource: {condition!r}")
    return scopes.pop()


def _place(service: str, name: str) -> str:
    for svc, pattern, kind in _CONDITION_SCOPES:
        found = pattern.match(name)
        if svc == service and found:
            return f"{kind}:{found.group(1)}"
    raise AssertionError(f"resource condition on a name the simulation cannot place: {name!r}")


@dataclass(frozen=True)
class Binding:
    scope: str
    role: str
    member: str
    condition: str | None
    resource: str  # the recorded resource's name, for messages

    def applies(self, grants: frozenset[str] | None) -> bool:
        """Whether the condition holds for a call that grants `grants` (None: grants nothing)."""
        if self.condition is None or resource_limit(self.condition) is not None:
            return True  # a resource limit is applied by placing the binding at that resource
        match = GRANT_LIMIT.match(self.condition)
        if not match:
            raise AssertionError(f"{self.resource}: cannot evaluate condition {self.condition!r}")
        allowed = {r.strip("'") for r in match.group(1).split(", ") if r}
        return grants is None or grants <= allowed


def parents(scope: str) -> list[str]:
    """`scope` and every scope whose policy it inherits, nearest first."""
    chain = [scope]
    kind, _, name = scope.partition(":")
    if kind == "table":
        chain.append("dataset:" + name.split("/")[0])
    if scope != PROJECT:
        chain.append(PROJECT)
    return chain


# IAM member resource type -> (scope kind, the input naming the resource it edits).
_IAM_SCOPES: dict[str, tuple[str, str]] = {
    "gcp:serviceaccount/iAMMember:IAMMember": ("service-account", "serviceAccountId"),
    "gcp:storage/bucketIAMMember:BucketIAMMember": ("bucket", "bucket"),
    "gcp:secretmanager/secretIamMember:SecretIamMember": ("secret", "secretId"),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": ("topic", "topic"),
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": ("subscription", "subscription"),
    "gcp:bigquery/datasetIamMember:DatasetIamMember": ("dataset", "datasetId"),
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": ("run-service", "name"),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": ("repository", "repository"),
}


def _scope(r: Recorded, by_id: dict[str, Recorded]) -> str:
    if r.type == "gcp:projects/iAMMember:IAMMember":
        return PROJECT
    if r.type == "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember":
        key = by_id[str(r.inputs["cryptoKeyId"])]
        ring = by_id[str(key.inputs["keyRing"])]
        return f"kms-key:{ring.inputs['name']}/{key.inputs['name']}"
    if r.type not in _IAM_SCOPES:
        raise AssertionError(f"IAM resource type {r.type} has no scope in the simulation: add it")
    kind, key_input = _IAM_SCOPES[r.type]
    return f"{kind}:" + str(r.inputs[key_input]).rsplit("/", 1)[-1]


def iam_resources(graph: Graph) -> list[Recorded]:
    return [r for r in graph.resources if "role" in r.inputs and "member" in r.inputs]


def bindings(*graphs: Graph) -> list[Binding]:
    """Every grant the graphs declare, at its scope."""
    found = []
    for graph in graphs:
        _CUSTOM_ROLES.update(custom_roles(graph))
        by_id = {r.outputs["__id"]: r for r in graph.resources}
        for r in iam_resources(graph):
            condition = (r.inputs.get("condition") or {}).get("expression")
            scope = resource_limit(condition) or _scope(r, by_id)
            found.append(Binding(scope, r.inputs["role"], r.inputs["member"], condition, r.name))
    return found


def granting(
    found: list[Binding],
    member: str,
    permission: str,
    scope: str,
    grants: frozenset[str] | None = None,
) -> list[Binding]:
    """The bindings that give `member` `permission` at `scope` (directly or inherited)."""
    roles = role_permissions()
    chain = parents(scope)
    return [
        b
        for b in found
        if b.member == member
        and b.scope in chain
        and permission in roles.get(b.role, frozenset())
        and b.applies(grants)
    ]


def run_bootstrap(stack: str) -> Graph:
    """Execute infra/bootstrap/__main__.py for `stack` under mocks; return what it declared."""
    raw = yaml.safe_load((BOOTSTRAP / f"Pulumi.{stack}.yaml").read_text())["config"]
    config = {k: v if isinstance(v, str) else yaml.safe_dump(v).strip() for k, v in raw.items()}
    # Each owner sets their GitLab project's id (docs/deploying.md step 2); the tests use one.
    config.setdefault("flightpipe-bootstrap:gitlabProjectId", GITLAB_PROJECT_ID)
    if str(BOOTSTRAP) not in sys.path:
        sys.path.insert(0, str(BOOTSTRAP))
    return run_program(BOOTSTRAP / "__main__.py", "flightpipe-bootstrap", stack, config)


_BOOTSTRAP_CACHE: dict[str, Graph] = {}


def bootstrap_for(stack: str) -> Graph:
    if stack not in _BOOTSTRAP_CACHE:
        _BOOTSTRAP_CACHE[stack] = run_bootstrap(stack)
    return _BOOTSTRAP_CACHE[stack]
