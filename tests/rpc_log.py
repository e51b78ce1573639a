"""Records the RPC methods the real Google clients send in tests (Pub/Sub gRPC, BigQuery REST).

Two small hooks feed it: `tests/pubsub_emulator.make_broker` builds its clients' gRPC channels
through `recording(grpc.insecure_channel)`, the emulator channel of the GAPIC clients (a
client interceptor that notes each method path, e.g.
`/google.pubsub.v1.Subscriber/Pull`), and the fake BigQuery endpoint of
tests/unit/fake_bigquery.py notes each request it serves (`record_rest`), named as
BigQuery's REST reference names the method (`bigquery.tabledata.insertAll`). The
test_rpc_permissions tests then require every recorded method to be in the IAM table
(tests/infra/iam_calls.py). Written by hand: grpc's interceptor API is the library part.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import grpc

RECORDED: set[str] = set()

# BigQuery v2 REST paths -> method names (https://cloud.google.com/bigquery/docs/reference/rest).
_REST = (
    (
        "POST",
        re.compile(r"^/bigquery/v2/projects/[^/]+/datasets/[^/]+/tables/[^/]+/insertAll$"),
        "bigquery.tabledata.insertAll",
    ),
    ("POST", re.compile(r"^/bigquery/v2/projects/[^/]+/queries$"), "bigquery.jobs.query"),
    (
        "GET",
        re.compile(r"^/bigquery/v2/projects/[^/]+/queries/[^/]+$"),
        "bigquery.jobs.getQueryResults",
    ),
    ("POST", re.compile(r"^/bigquery/v2/projects/[^/]+/jobs$"), "bigquery.jobs.insert"),
    ("GET", re.compile(r"^/bigquery/v2/projects/[^/]+/jobs/[^/]+$"), "bigquery.jobs.get"),
)


def record_rest(method: str, path: str) -> None:
    """Note one BigQuery REST request; an unknown one is recorded as such (and fails the check)."""
    for verb, pattern, name in _REST:
        if verb == method and pattern.match(path):
            RECORDED.add(name)
            return
    RECORDED.add(f"bigquery:unknown {method} {path}")


class _Recorder(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def _note(self, details: Any) -> None:
        RECORDED.add(str(details.method))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._note(details)
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self._note(details)
        return continuation(details, request)

    def intercept_stream_unary(
        self, continuation: Any, details: Any, requests: Iterator[Any]
    ) -> Any:
        self._note(details)
        return continuation(details, requests)

    def intercept_stream_stream(
        self, continuation: Any, details: Any, requests: Iterator[Any]
    ) -> Any:
        self._note(details)
        return continuation(details, requests)


def recording(create_channel: Callable[..., grpc.Channel]) -> Callable[..., grpc.Channel]:
    """Wrap a channel factory (grpc.insecure_channel) so its channels record every method."""

    def create(*args: Any, **kwargs: Any) -> grpc.Channel:
        return grpc.intercept_channel(create_channel(*args, **kwargs), _Recorder())

    return create
