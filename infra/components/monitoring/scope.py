"""What every part of one environment's monitoring shares: its inputs, labels and parent."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.monitoring import metrics as m
from components.monitoring.ready import MetricReady


@dataclass(frozen=True)
class MonitoringArgs:
    """What the monitoring of one environment watches."""

    project: pulumi.Input[str]
    env: str
    api_service_name: pulumi.Input[str]
    api_host: pulumi.Input[str]  # host of the API's URL; a full `https://...` URL is accepted
    subscription_name: pulumi.Input[str]
    dead_letter_topic_name: pulumi.Input[str]
    # Where the API service lives: the uptime check's service agent is granted run.invoker there.
    api_location: pulumi.Input[str]
    dead_letter_subscription_name: pulumi.Input[str] | None = None
    notification_channels: Sequence[pulumi.Input[str]] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    subscriber_service_name: pulumi.Input[str] | None = None
    # False when Pub/Sub's BigQuery subscription ingests: no subscriber exports the custom metrics.
    has_subscriber: bool = True

    def __post_init__(self) -> None:
        if self.env == "prod" and not self.notification_channels:
            raise ValueError(
                "config notificationChannels: prod needs at least one notification channel "
                "(projects/<project>/notificationChannels/<id>): its alerts would reach nobody"
            )
        if self.has_subscriber and self.subscriber_service_name is None:
            raise ValueError(
                "has_subscriber needs subscriber_service_name (its metrics' namespace)"
            )


@dataclass(frozen=True)
class Scope:
    """The component's name, inputs and child options, handed to each part it declares."""

    name: str
    args: MonitoringArgs
    parent: pulumi.Resource
    depends_on: list[Any]
    # One MetricReady per custom metric type read, made on first use (`after`).
    ready: dict[str, MetricReady] = field(default_factory=dict)

    @property
    def child(self) -> pulumi.ResourceOptions:
        # Children do not inherit the component's depends_on (e.g. the Monitoring API enabled).
        return pulumi.ResourceOptions(parent=self.parent, depends_on=self.depends_on or None)

    def after(self, *metric_types: str) -> pulumi.ResourceOptions:
        """Child options that also wait until Cloud Monitoring has every custom type read.

        Google's own metric types (`metrics.BUILT_IN_PREFIXES`) need no wait.
        """
        waits = [
            self.metric_ready(t) for t in metric_types if not t.startswith(m.BUILT_IN_PREFIXES)
        ]
        return pulumi.ResourceOptions(
            parent=self.parent, depends_on=[*self.depends_on, *waits] or None
        )

    def metric_ready(self, metric_type: str, *, required: bool = True) -> MetricReady:
        """The wait for `metric_type`, which names (and so follows) the service exporting it.

        `required=False`: the wait never fails the deploy (ready.py); read `.received`."""
        if metric_type not in self.ready:
            exporter = m.EXPORTED_BY[metric_type]
            service = (
                self.args.api_service_name
                if exporter == m.API
                else self.args.subscriber_service_name
            )
            if service is None or (exporter == m.SUBSCRIBER and not self.args.has_subscriber):
                raise ValueError(f"{metric_type}: no {exporter} exports it in this stack")
            slug = metric_type.removeprefix("prometheus.googleapis.com/").replace("_", "-")
            self.ready[metric_type] = MetricReady(
                f"{self.name}-metric-ready-{slug.replace('/', '-')}",
                project=self.args.project,
                metric_type=metric_type,
                exporter=service,
                required=required,
                opts=self.child,
            )
        return self.ready[metric_type]

    @property
    def labels(self) -> dict[str, str]:
        return {
            **self.args.labels,
            "env": self.args.env,
            "app": "flightpipe",
            "managed-by": "pulumi",
        }

    @property
    def api(self) -> dict[str, pulumi.Input[str]]:
        """The API's Cloud Run revisions (Google's run metrics)."""
        return {"service_name": self.args.api_service_name}

    @property
    def subscriber_namespace(self) -> dict[str, pulumi.Input[str]]:
        """The subscriber's scraped series (the collector's namespace label)."""
        return {"namespace": self.args.subscriber_service_name or ""}
