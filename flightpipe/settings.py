"""Configuration: environment variables read once at start-up, validated, failing loudly.

Every variable the services read is a field of `Settings`; its environment name is the field name
in UPPER_SNAKE (`ENV_VARS` lists them; the Pulumi program injects exactly these names and a test
checks that). A missing or contradictory setting raises `ConfigError` with one line naming the
variable, which the entrypoints print on stderr before exiting non-zero.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Literal

import limits
import msgspec


class ConfigError(Exception):
    """A setting is missing, malformed or contradicts another one."""


BrokerKind = Literal["embedded", "pubsub"]
WarehouseKind = Literal["duckdb", "bigquery"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
TraceExporter = Literal["none", "console", "gcp"]
Positive = Annotated[int, msgspec.Meta(ge=1)]


def _env_name(field: str) -> str:
    # PORT, GOOGLE_CLOUD_PROJECT and PUBSUB_EMULATOR_HOST are platform names and keep them.
    if field in {"port", "google_cloud_project", "pubsub_emulator_host"}:
        return field.upper()
    return f"FLIGHTPIPE_{field.upper()}"


class Settings(msgspec.Struct, frozen=True, kw_only=True, rename=_env_name):
    """Everything a flightpipe process can be told, with defaults for the embedded stack."""

    broker: BrokerKind = "embedded"
    warehouse: WarehouseKind = "duckdb"
    data_dir: str = "data"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
    log_level: LogLevel = "INFO"
    # Names shared with the cloud resources (the Pulumi program creates them).
    google_cloud_project: str | None = None
    pubsub_emulator_host: str | None = None
    topic: str = "flights"
    subscription: str = "flights-subscriber"
    dead_letter_topic: str = "flights-dead-letter"
    dead_letter_subscription: str = "flights-dead-letter-inspect"
    dataset: str = "flights"
    bigquery_location: str = "US"
    bigquery_max_bytes_billed: Positive = 1_000_000_000
    # DuckDB's buffer pool (e.g. "96MB", "1GB"); empty: 96MB for the subscriber service (bounded
    # memory next to a large backlog), 1GB where the API's queries run (serve, the API service).
    duckdb_memory_limit: Annotated[str, msgspec.Meta(pattern=r"^(|\d+(\.\d+)?\s*[KMGT]i?B)$")] = ""
    # DuckDB's worker threads per process. One: the batch writes and the API's small queries
    # spend more CPU coordinating threads than they gain (docs/benchmarks.md), and
    # the pipeline's other threads and processes need the machine's other cores.
    duckdb_threads: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    # Subscriber tuning.
    batch_size: Positive = 10_000
    max_inflight_messages: Positive = 20_000
    max_inflight_bytes: Positive = 64 * 1024 * 1024
    # Pub/Sub accepts 10-600 s; the embedded broker also takes 1-9 s (the fault tests use that
    # to make "an outage longer than deadline x attempts" last seconds instead of minutes).
    ack_deadline_seconds: Annotated[int, msgspec.Meta(ge=1, le=600)] = 60
    max_delivery_attempts: Annotated[int, msgspec.Meta(ge=5, le=100)] = 5
    shutdown_grace_seconds: Annotated[float, msgspec.Meta(ge=0.5, le=60)] = 8.0
    # The longest pause between two attempts of a failed write (exponential backoff with full
    # jitter up to this): it bounds how long ingestion lags behind the end of an outage.
    retry_max_seconds: Annotated[float, msgspec.Meta(ge=0.05, le=300)] = 10.0
    # One attempt of a warehouse write (BigQuery insertAll) gives up after this; the subscriber
    # retries, keeping the leases, so a hanging warehouse never holds a batch unleased.
    write_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=600)] = 60.0
    # API.
    # Granian's request threads per API process. DuckDB pages are CPU-bound and DuckDB gives the
    # GIL back while it runs, so a few threads keep both cores busy without queueing behind
    # each other (bench/api.py, docs/benchmarks.md). BigQuery requests
    # wait on the network instead: the Pulumi program sets this to Cloud Run's concurrency.
    http_threads: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4
    # `flightpipe serve` (waitress): open connections at most, and how long an idle or stalled
    # one is kept. Idle connections cost no thread in waitress, only a file descriptor.
    http_connection_limit: Annotated[int, msgspec.Meta(ge=10, le=100_000)] = 1000
    http_idle_timeout_seconds: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 30.0
    # The API (either server): CSV/NDJSON exports streaming at once (more get 503 + Retry-After);
    # 0 means a quarter of FLIGHTPIPE_HTTP_THREADS (at least 1): an export's CSV encoding holds the
    # GIL, so each export admitted at once makes the small requests beside it wait longer
    # (flightpipe_api/exports.py, docs/architecture.md "Hot paths").
    http_max_exports: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    query_timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    api_keys: str = ""
    api_rate_limit: str = "1200/minute"  # per API key, per instance (limits notation)
    # Failed key checks allowed per client address before it gets 429 without any key check.
    api_auth_failure_limit: str = "20/minute"
    api_cache_ttl_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0  # 0: no cache
    # How often the cache reads the ingest watermark: on BigQuery each read is a billed query of
    # `publish_time` over all history (docs/cost.md). 5 s matches the responses' max-age=5.
    api_cache_check_seconds: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    trace_exporter: TraceExporter = "none"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def duckdb_path(self) -> Path:
        return self.data_path / "warehouse.duckdb"

    @property
    def broker_path(self) -> Path:
        return self.data_path / "broker.sqlite3"


_KEY_HASH: Final = re.compile(r"sha256:([0-9a-f]{64})")


def parse_api_keys(raw: str) -> frozenset[str]:
    """The hex digests listed in FLIGHTPIPE_API_KEYS; ConfigError unless every item is one.

    Blank means no keys (authentication off). Anything else must be a comma-separated list of
    `sha256:<64 hex digits>` with no empty item: `",,,"` or a stray comma is a mistake in the
    secret, and reading it as "no keys" would silently turn authentication off.
    """
    if not raw.strip():
        return frozenset()
    hashes: set[str] = set()
    for position, item in enumerate((part.strip() for part in raw.split(",")), start=1):
        if not item:
            raise ConfigError(f"FLIGHTPIPE_API_KEYS: item {position} is empty")
        match = _KEY_HASH.fullmatch(item.lower())
        if match is None:
            raise ConfigError(
                f"FLIGHTPIPE_API_KEYS: item {position} is not sha256:<64 hex digits>"
                " (list hashes, never plain keys)"
            )
        hashes.add(match.group(1))
    return frozenset(hashes)


ENV_VARS: Final[tuple[str, ...]] = tuple(
    _env_name(f.name) for f in msgspec.structs.fields(Settings)
)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read the settings from the environment (or `environ`), then apply explicit overrides."""
    env = os.environ if environ is None else environ
    raw: dict[str, object] = {name: env[name] for name in ENV_VARS if env.get(name, "") != ""}
    for field, value in overrides.items():
        if value is not None:
            raw[_env_name(field)] = value
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        # msgspec says e.g. "Expected `int` >= 1 - at `$.FLIGHTPIPE_BATCH_SIZE`".
        raise ConfigError(f"invalid configuration: {exc}") from None
    _check_consistency(settings)
    return settings


def _check_consistency(s: Settings) -> None:
    if s.broker == "pubsub" and not s.google_cloud_project:
        raise ConfigError("FLIGHTPIPE_BROKER=pubsub needs GOOGLE_CLOUD_PROJECT")
    if s.warehouse == "bigquery" and not s.google_cloud_project:
        raise ConfigError("FLIGHTPIPE_WAREHOUSE=bigquery needs GOOGLE_CLOUD_PROJECT")
    if s.pubsub_emulator_host and s.broker != "pubsub":
        raise ConfigError(
            "PUBSUB_EMULATOR_HOST is set but FLIGHTPIPE_BROKER is not 'pubsub'; "
            "set FLIGHTPIPE_BROKER=pubsub or unset PUBSUB_EMULATOR_HOST"
        )
    if s.topic == s.dead_letter_topic:
        raise ConfigError("FLIGHTPIPE_DEAD_LETTER_TOPIC must differ from FLIGHTPIPE_TOPIC")
    if s.broker == "pubsub" and s.ack_deadline_seconds < 10:
        raise ConfigError("FLIGHTPIPE_ACK_DEADLINE_SECONDS must be 10-600 with Pub/Sub")
    parse_api_keys(s.api_keys)
    for name, value in (
        ("FLIGHTPIPE_API_RATE_LIMIT", s.api_rate_limit),
        ("FLIGHTPIPE_API_AUTH_FAILURE_LIMIT", s.api_auth_failure_limit),
    ):
        try:
            # The `limits` notation ("1200/minute", "10 per 2 hours"), checked here so a typo
            # fails at start-up in every entrypoint, not at the API's first request.
            limits.parse_many(value)
        except ValueError:
            raise ConfigError(f"{name}: expected e.g. 1200/minute, got {value!r}") from None
    if s.batch_size > s.max_inflight_messages:
        raise ConfigError("FLIGHTPIPE_BATCH_SIZE must not exceed FLIGHTPIPE_MAX_INFLIGHT_MESSAGES")
