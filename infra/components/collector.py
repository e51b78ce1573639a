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
  every instance; the `gcp` resource detector's instance id (`faas.instance`, or the older
  `faas.id`) replaces it where the detector finds one. Whether it finds one on a worker pool is
  NOT established here; without it two subscriber instances write the same series.
"""

from __future__ import annotations

import json
from typing import Any, Final

# Tag 0.134.0 pinned by digest. The digest is the one Google publishes for this tag
# (opentelemetry-operations-collector, branch `vsa` @ d4e7e50,
# google-built-opentelemetry-collector/VSA/README.md and the signed attestation
# VSA/0.134.0/sha256:934bda3b....intoto.jsonl, whose resourceUri names the
# `google-cloud-opentelemetry-collector-standard` repository path). It could not be pulled or
# checked against the registry from this machine.
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
# The detector's per-instance ids, newest semantic-convention name first.
_INSTANCE_ATTRIBUTES: Final = ("faas.instance", "faas.id")


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


def container(app_container: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The collector sidecar, started after `app_container` (container dependencies).

    Started after the app so its first scrape finds /metrics. 1 vCPU / 512 MiB are Cloud Run's
    per-container defaults, written down so the instance's total size is visible here.
    """
    return {
        "name": "collector",
        "image": COLLECTOR_IMAGE,
        "args": list(ARGS),
        # JSON is YAML: the env provider parses the value as a YAML document.
        "envs": [{"name": CONFIG_ENV, "value": json.dumps(cfg, sort_keys=True)}],
        "depends_ons": [app_container],
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
    }
