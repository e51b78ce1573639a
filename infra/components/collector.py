"""The metrics collector next to each Cloud Run container: what it scrapes and how it labels.

Why not Managed Service for Prometheus's Cloud Run sidecar (`run-gmp-sidecar`), which this
program ran before: its labels come only from the *services* container contract. At the newest
source upstream (GoogleCloudPlatform/run-gmp-sidecar @ 056abb4, VERSION 1.8.0,
confgenerator/util.go `fetchMetadata` and confgenerator/config.go `endpointScrapeConfig`) it sets
`namespace` and the `service_name`/`revision_name`/`configuration_name` labels from `K_SERVICE`,
`K_REVISION` and `K_CONFIGURATION`, and nothing else. A worker pool is given `CLOUD_RUN_WORKER_POOL`
and `CLOUD_RUN_REVISION` instead (not a Google document: seen in public worker-pool samples), so
the subscriber's series would carry an empty namespace; no upstream source or doc reachable here
says the sidecar supports worker pools (the 1.9.x tags the registry lists have no source in the
repository), so the subscriber's metrics path could not rest on it.

Instead both resources run the Google-Built OpenTelemetry Collector (`otelcol-google`) with a
config this module writes, passed in the `OTELCOL_CONFIG` variable (`--config=env:...`): the
prometheus receiver scrapes the app's `/metrics`, the `resource` processor sets the
`prometheus_target` labels explicitly and the `googlemanagedprometheus` exporter writes them to
Managed Service for Prometheus. What that gives, from source:
* components: GoogleCloudPlatform/opentelemetry-operations-collector @ tag v0.134.0,
  google-built-opentelemetry-collector/manifest.yaml lists prometheusreceiver, resourceprocessor,
  resourcedetectionprocessor, transformprocessor, batchprocessor, the googlemanagedprometheus
  exporter and the `env` config provider; its Dockerfile's CMD is `--config=...`, which Cloud
  Run's `args` replaces (the ENTRYPOINT keeps its feature gates).
* labels: opentelemetry-operations-go exporter/collector/googlemanagedprometheus/
  monitoredresource.go (`MapToPrometheusTarget`) builds the `prometheus_target` resource from the
  resource attributes `location`, `cluster`, `namespace` (taken first), `service.name` (the
  scrape job: `job`) and `service.instance.id` (`instance`). So every series of this program has
  resource.type="prometheus_target", location=<region>, cluster="__run__" (the value the GMP
  sidecar uses for Cloud Run), namespace=<the Cloud Run resource's name>, job=<the same name>.
  The dashboards and alerts filter on exactly these (`RESOURCE_TYPE`, `namespace`).
* instance: the receiver names the instance after the target (`127.0.0.1:<port>`), the same on
  every instance, so two instances would write the same series. It is replaced by, first found:
  the `service_instance_id` label of the app's `target_info` (the receiver turns target_info's
  labels into resource attributes: open-telemetry/opentelemetry-specification
  specification/compatibility/prometheus_and_openmetrics.md, "Resource Attributes"), an id the
  process draws at start; else the `gcp` detector's instance id (`faas.instance`, or `faas.id`
  as this collector's contrib names it), read from the metadata server. The detector finds that
  id on a Cloud Run service (it keys on K_CONFIGURATION) but not on a worker pool at this
  version: worker pools came in opentelemetry-operations-go detectors/gcp v1.33.0 (commit
  12f7c671, newer than collector 0.134.0), and contrib's gcp processor
  (processor/resourcedetectionprocessor/internal/gcp/gcp.go @ 893ef38) maps no worker-pool
  platform. Google's own worker-pool sidecar relies on the detector's id too
  (GoogleCloudPlatform/run-gmp-sidecar confgenerator/testdata/builtin-workerpool @ 184a364). So
  the subscriber's series are told apart by its `target_info` id.
"""

from __future__ import annotations

import json
from typing import Any, Final

# Tag 0.134.0 pinned by digest. The digest is the one Google publishes for this tag
# (GoogleCloudPlatform/opentelemetry-operations-collector@d4e7e50, branch `vsa`:
# google-built-opentelemetry-collector/VSA/README.md and the signed attestation
# VSA/0.134.0/sha256:934bda3b....intoto.jsonl, whose resourceUri names the
# `google-cloud-opentelemetry-collector-standard` repository path).
COLLECTOR_IMAGE: Final = (
    "us-docker.pkg.dev/cloud-ops-agents-artifacts/google-cloud-opentelemetry-collector/"
    "otelcol-google:0.134.0@sha256:934bda3bc2d79810c622d2deee6990b9f4bb8e3e40e6f41fd074110e4c17135f"
)
CONFIG_ENV: Final = "OTELCOL_CONFIG"
ARGS: Final = (f"--config=env:{CONFIG_ENV}",)
RESOURCE_TYPE: Final = "prometheus_target"
CLUSTER: Final = "__run__"
SCRAPE_INTERVAL: Final = "30s"
METRICS_PATH: Final = "/metrics"
# Each instance's id, first found wins: the app's own (target_info), then the detector's.
APP_INSTANCE_ATTRIBUTE: Final = "service_instance_id"
_INSTANCE_ATTRIBUTES: Final = (APP_INSTANCE_ATTRIBUTE, "faas.instance", "faas.id")


def config(*, project: str, location: str, namespace: str, port: int) -> dict[str, Any]:
    """The collector's configuration for one Cloud Run resource named `namespace`."""
    instance = [
        f'set(attributes["service.instance.id"], attributes["{a}"]) where attributes["{a}"] != nil'
        for a in reversed(_INSTANCE_ATTRIBUTES)
    ]
    labels = {"location": location, "cluster": CLUSTER, "namespace": namespace}
    return {
        "receivers": {
            "prometheus": {
                "config": {
                    "scrape_configs": [
                        {
                            "job_name": namespace,
                            "scrape_interval": SCRAPE_INTERVAL,
                            "metrics_path": METRICS_PATH,
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                        }
                    ]
                }
            }
        },
        "processors": {
            "resourcedetection": {"detectors": ["gcp"]},
            "resource": {
                "attributes": [
                    {"key": k, "value": v, "action": "upsert"} for k, v in labels.items()
                ]
            },
            "transform": {"metric_statements": [{"context": "resource", "statements": instance}]},
            "batch": {},
        },
        "exporters": {"googlemanagedprometheus": {"project": project}},
        "service": {
            "pipelines": {
                "metrics": {
                    "receivers": ["prometheus"],
                    "processors": ["resourcedetection", "resource", "transform", "batch"],
                    "exporters": ["googlemanagedprometheus"],
                }
            }
        },
    }


def scrape_target(cfg: dict[str, Any]) -> tuple[str, int, str]:
    """(host, port, path) the configuration scrapes (tests compare it with the app's port)."""
    (job,) = cfg["receivers"]["prometheus"]["config"]["scrape_configs"]
    ((target,),) = [g["targets"] for g in job["static_configs"]]
    host, _, port = str(target).rpartition(":")
    return host, int(port), str(job["metrics_path"])


def container(
    app_container: str, cfg: dict[str, Any], *, cpu_idle: bool | None = None
) -> dict[str, Any]:
    """The collector sidecar, started after `app_container` (container dependencies).

    Started after the app so its first scrape finds /metrics. 1 vCPU / 512 MiB are Cloud Run's
    per-container defaults, written down so the instance's total size is visible here.
    `cpu_idle`: a service's app container's own value. It is per container, and a container
    that sets `resources` without it gets `false` (pulumi/pulumi-gcp@v8.41.1
    sdk/python/pulumi_gcp/cloudrunv2/_inputs.py, ServiceTemplateContainerResourcesArgs.cpu_idle:
    "if resources is set, this field must be explicitly set to true"); a worker pool's
    containers have no such field (WorkerPoolTemplateContainerResourcesArgs: limits only).
    """
    resources: dict[str, Any] = {"limits": {"cpu": "1", "memory": "512Mi"}}
    if cpu_idle is not None:
        resources["cpu_idle"] = cpu_idle
    return {
        "name": "collector",
        "image": COLLECTOR_IMAGE,
        "args": list(ARGS),
        # JSON is YAML: the env provider parses the value as a YAML document.
        "envs": [{"name": CONFIG_ENV, "value": json.dumps(cfg, sort_keys=True)}],
        "depends_ons": [app_container],
        "resources": resources,
    }
