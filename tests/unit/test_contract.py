"""The flight contract: validation and everything derived from it."""

from __future__ import annotations

import inspect
import json
import typing

import jsonschema
import msgspec
import pytest

from flightpipe import contract
from flightpipe.warehouse import bigquery_sql, duckdb
from tests.factories import make_event, payload


def test_a_valid_event_round_trips_through_json() -> None:
    event = make_event()
    assert contract.decode_event(payload(event)) == event


def test_unknown_fields_are_ignored() -> None:
    body = json.loads(payload(make_event()))
    body["gate"] = "C12"
    assert contract.decode_event(json.dumps(body).encode()).carrier == "UA"


def test_nullable_fields_may_be_absent() -> None:
    body = json.loads(payload(make_event()))
    for name in ("tail_number", "actual_departure", "arr_delay_min", "air_time_min"):
        del body[name]
    event = contract.decode_event(json.dumps(body).encode())
    assert event.tail_number is None and event.arr_delay_min is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b.pop("event_id"), "missing required field `event_id`"),
        (lambda b: b.update(flight_number="1545"), "Expected `int`, got `str`"),
        (lambda b: b.update(carrier="UAL"), "`$.carrier`"),
        (lambda b: b.update(status="landed"), "`$.status`"),
        (lambda b: b.update(event_time="2013-01-01T10:15:00"), "`$.event_time`"),
        (lambda b: b.update(flight_date="01/01/2013"), "`$.flight_date`"),
        (lambda b: b.update(flight_id="UA1545"), "`$.flight_id`"),
        # The id's date is the flight's date (the warehouses find a flight through it).
        (lambda b: b.update(flight_date="2013-01-02"), "must start with `flight_date`"),
        (lambda b: b.update(dep_delay_min=2.5), "`$.dep_delay_min`"),
    ],
)
def test_schema_violations_are_invalid_with_a_reason(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    body = json.loads(payload(make_event()))
    mutate(body)
    with pytest.raises(contract.InvalidEvent) as info:
        contract.decode_event(json.dumps(body).encode())
    assert str(info.value).startswith("schema: ")
    assert reason in str(info.value)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe", b"[1,2]", b"null"])
def test_malformed_json_is_invalid(raw: bytes) -> None:
    with pytest.raises(contract.InvalidEvent):
        contract.decode_event(raw)


def test_columns_are_the_contract_fields_plus_the_pipeline_fields() -> None:
    assert (
        tuple(f.name for f in msgspec.structs.fields(contract.FlightEvent)) == contract.FIELD_NAMES
    )
    assert contract.COLUMN_NAMES[-3:] == ("message_id", "publish_time", "ingest_time")


def test_required_fields_are_not_nullable_anywhere() -> None:
    required = {f.name for f in msgspec.structs.fields(contract.FlightEvent) if f.required}
    assert required == {c.name for c in contract.CONTRACT_COLUMNS if not c.nullable}
    schema = contract.json_schema()
    assert set(schema["required"]) == required
    bq = {f["name"]: f["mode"] for f in bigquery_sql.events_schema()}
    assert {n for n, mode in bq.items() if mode == "REQUIRED"} == required | {
        "message_id",
        "publish_time",
        "ingest_time",
    }
    ddl = duckdb.columns_ddl()
    for name in required:
        assert f"\n  {name} " in f"\n  {ddl}" and f"{name} " in ddl


def test_the_bigquery_adapter_types_every_contract_column() -> None:
    types = {f["name"]: f["type"] for f in bigquery_sql.events_schema()}
    assert types["event_time"] == "TIMESTAMP"
    assert types["flight_date"] == "DATE"
    assert types["flight_number"] == "INT64"
    assert types["status"] == "STRING"
    assert all(f["description"] for f in bigquery_sql.events_schema())


def test_json_schema_accepts_what_the_decoder_accepts_and_rejects_the_rest() -> None:
    validator = jsonschema.Draft202012Validator(
        contract.json_schema(), format_checker=jsonschema.FormatChecker()
    )
    good = json.loads(payload(make_event()))
    assert not list(validator.iter_errors(good))
    bad = dict(good, status="landed")
    assert list(validator.iter_errors(bad))


def test_the_published_json_schema_file_is_up_to_date() -> None:
    from pathlib import Path

    path = Path(__file__).parents[2] / "flightpipe" / "schemas" / "flight-event.schema.json"
    assert json.loads(path.read_text()) == contract.json_schema(), (
        "regenerate with: .venv/bin/python -m flightpipe.schemas"
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_time", "0001-01-01T00:00:00+14:00"),  # year 0 in UTC
        ("scheduled_departure", "9999-12-31T23:59:59-05:00"),  # year 10000 in UTC
        ("actual_arrival", "0001-01-01T00:00:00+00:01"),
        ("flight_id", "2013-01-01-UA1545-EWR\n"),  # Python's `$` matches before a final newline
        (
            "flight_id",
            "2013-01-01-UA\u0661\u0665\u0664\u0665-EWR",
        ),  # Arabic-Indic digits match `\d`
        ("carrier", "UA\n"),
        ("origin", "EWR\n"),
        ("tail_number", "N14228\n"),
        ("tail_number", "n14228"),
        ("event_id", "evt\x00-1"),
        ("event_id", "evt-1\n"),
        ("event_id", "evt\x85-1"),  # a C1 control character
    ],
)
def test_values_the_warehouses_or_the_api_cannot_round_trip_are_invalid(
    field: str, value: str
) -> None:
    body = json.loads(payload(make_event()))
    body[field] = value
    with pytest.raises(contract.InvalidEvent) as info:
        contract.decode_event(json.dumps(body).encode())
    assert field in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_time", "0001-01-01T00:00:00-05:00"),  # early but still year 1 in UTC
        ("event_time", "9999-12-31T23:59:59+05:00"),
        ("tail_number", "CC-BAW"),
        ("event_id", "évènement 1 ✈"),
    ],
)
def test_values_at_the_edges_of_the_range_are_valid(field: str, value: str) -> None:
    body = json.loads(payload(make_event()))
    body[field] = value
    contract.decode_event(json.dumps(body).encode())


@pytest.mark.parametrize("depth", [100, 10_000, 1_000_000])
def test_deeply_nested_json_is_invalid_not_a_recursion_error(depth: int) -> None:
    body = payload(make_event())
    nested = body[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"
    if depth < 1000:
        contract.decode_event(nested)  # shallow nesting in an unknown field is fine
        return
    with pytest.raises(contract.InvalidEvent, match="nested too deeply"):
        contract.decode_event(nested)


def test_patterns_mean_the_same_in_python_and_in_json_schema() -> None:
    # JSON Schema's `pattern` is ECMA-262: `$` is the end of the string there, and `$(?!\n)` is
    # the same end in Python; jsonschema evaluates with Python's re, so check both readings.
    schema = contract.json_schema()
    body = json.loads(payload(make_event()))
    body["flight_id"] += "\n"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, schema)


def test_each_adapter_types_every_kind_of_column_and_the_contract_names_no_storage_type() -> None:
    kinds = set(typing.get_args(contract.Kind))
    assert set(duckdb.TYPES) == kinds
    assert set(bigquery_sql.TYPES) == kinds
    storage = set(duckdb.TYPES.values()) | set(bigquery_sql.TYPES.values())
    source = inspect.getsource(contract)
    assert not [t for t in storage if f'"{t}"' in source]
