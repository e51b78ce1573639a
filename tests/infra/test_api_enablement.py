"""A resource may only be created once the Google API that manages it is enabled in the project.

Google refuses a call to an API the project has not enabled with 403 `SERVICE_DISABLED`
("... API has not been used in project ... before or it is disabled"; Google's "Enable and
disable services", https://cloud.google.com/service-usage/docs/enable-disable), so on an empty
project `pulumi up` fails at the first resource whose API is enabled by nothing that runs before
it. The engine orders creation by the dependencies the SDK sends (`Graph.depends_on`), so for
every resource of both programs the rule below asks: is a `gcp.projects.Service` for its API
among what it waits for, or was that API enabled by the bootstrap, which runs first
(docs/deploying.md), or is it on by default?
"""

from __future__ import annotations

import pytest

from tests.infra.iam_model import bootstrap_for
from tests.infra.program import STACKS, Graph, Recorded

SERVICE = "gcp:projects/service:Service"

# Which API each resource type's provider calls: the host of the provider's REST endpoint
# (hashicorp/terraform-provider-google `google/transport/config.go`, DefaultBasePaths; the
# pulumi-gcp 8.41.1 resources are generated from that provider).
API_OF_MODULE = {
    "artifactregistry": "artifactregistry.googleapis.com",
    "bigquery": "bigquery.googleapis.com",
    "cloudrunv2": "run.googleapis.com",
    "iam": "iam.googleapis.com",  # workload identity pools and providers
    "kms": "cloudkms.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
    "pubsub": "pubsub.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",  # pragma: allowlist secret
    "serviceaccount": "iam.googleapis.com",
    "storage": "storage.googleapis.com",
}
API_OF_TYPE = {
    SERVICE: "serviceusage.googleapis.com",
    # services.generateServiceIdentity is a Service Usage (v1beta1) method.
    "gcp:projects/serviceIdentity:ServiceIdentity": "serviceusage.googleapis.com",
    # Project IAM policy reads and writes go to Resource Manager (projects.setIamPolicy).
    "gcp:projects/iAMMember:IAMMember": "cloudresourcemanager.googleapis.com",
    "gcp:projects/iAMCustomRole:IAMCustomRole": "iam.googleapis.com",
    # The images are pushed to `<region>-docker.pkg.dev`, Artifact Registry.
    "docker-build:index:Image": "artifactregistry.googleapis.com",
}
# Google's "Enabled services" page (https://cloud.google.com/service-usage/docs/enabled-service,
# "Services enabled by default") lists more, but only for projects created in the console or with
# gcloud; Service Usage itself is the one every enablement needs, so it alone is assumed.
ON_BY_DEFAULT = frozenset({"serviceusage.googleapis.com"})


def api_of(resource: Recorded) -> str | None:
    """The API `resource`'s provider calls; None for components (no API of their own)."""
    if resource.type in API_OF_TYPE:
        return API_OF_TYPE[resource.type]
    package, _, rest = resource.type.partition(":")
    if package == "gcp":
        module = rest.split("/", 1)[0]
        assert module in API_OF_MODULE, f"map {resource.type} to the API it calls"
        return API_OF_MODULE[module]
    if package == "docker-build":
        raise AssertionError(f"map {resource.type} to the API it calls")
    return None  # flightpipe:* components, pulumi-python:dynamic (its provider says its own)


def enabled(graph: Graph) -> set[str]:
    return {str(r.inputs["service"]) for r in graph.of_type(SERVICE)}


def not_enabled_first(graph: Graph, already: frozenset[str] = frozenset()) -> list[str]:
    """Each resource whose API no Service it waits for (nor `already`, nor default) enables."""
    found = []
    for resource in graph.resources:
        api = api_of(resource)
        if api is None or api in ON_BY_DEFAULT | already:
            continue
        before = {str(r.inputs["service"]) for r in graph.depends_on(resource) if r.type == SERVICE}
        if api not in before:
            found.append(f"{resource.type} {resource.name}: {api} not enabled before it")
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_the_bootstrap_enables_each_api_before_its_first_resource(stack: str) -> None:
    assert not_enabled_first(bootstrap_for(stack)) == []


def test_each_resource_of_the_program_waits_for_its_api(graph: Graph) -> None:
    after_bootstrap = frozenset(enabled(bootstrap_for(graph.stack)))
    assert not_enabled_first(graph, after_bootstrap) == []


def test_the_rule_refuses_a_resource_created_before_its_api(graph: Graph) -> None:
    """The same graph with the topic's dependencies cut: the rule must name the topic."""
    topic = next(r for r in graph.resources if r.type == "gcp:pubsub/topic:Topic")
    cut = Graph(
        graph.stack,
        graph.config,
        [
            Recorded(r.type, r.name, r.inputs, r.outputs, r.urn, frozenset()) if r is topic else r
            for r in graph.resources
        ],
    )
    assert not_enabled_first(cut) == [
        f"gcp:pubsub/topic:Topic {topic.name}: pubsub.googleapis.com not enabled before it"
    ]
