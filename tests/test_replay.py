"""CSV replay: SKAB recordings reproduced exactly, labels as ground truth, mapping options,
and a replay end to end over the real broker and database."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from birlik.config import Config
from birlik.influx import InfluxClient
from birlik.signals import SIGNALS
from birlik.topics import MachinePath
from gateway.cli import replay_machines
from gateway.publisher import MqttPublisher
from gateway.replay import (
    SKAB,
    ColumnMapping,
    CsvMapping,
    CsvReplayDriver,
    RecordedInterval,
    RejectionLog,
    ReplayError,
    load_mapping,
    write_ground_truth,
)
from gateway.service import Clock, run_gateway
from ops.stack import birlik_command
from tests.helpers import readings_in_db, running_ingest, wait_for

# SKAB is GPL-licensed: it is read from the shared folder next to the repository, never copied in.
SKAB_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "skab" / "data"
SKAB_FILES = sorted(SKAB_DIR.glob("*/*.csv"))
needs_skab = pytest.mark.skipif(
    not SKAB_FILES, reason=f"SKAB data not found in {SKAB_DIR} (clone the repository next to shared/)"
)

MACHINE = MachinePath("replay", "lab", "testbed", "pump")
MOSCOW = timezone(timedelta(hours=3))
# Written out here rather than taken from gateway.replay.SKAB, so the mapping is checked too.
SKAB_SIGNALS = {
    "Accelerometer1RMS": ("accel_rms", 1.0),
    "Accelerometer2RMS": ("accel2_rms", 1.0),
    "Current": ("motor_current", 1.0),
    "Pressure": ("discharge_pressure", 1.0),
    "Temperature": ("motor_temp", 1.0),
    "Thermocouple": ("fluid_temp", 1.0),
    "Voltage": ("voltage", 1.0),
    "Volume Flow RateRMS": ("flow", 0.06),
}


def skab_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


def skab_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=MOSCOW).timestamp()) * 1000


def skab_expected(path: Path) -> dict[int, dict[str, float]]:
    """Each row's time and values after the SKAB mapping's conversion, those outside the
    catalogue's range left out (the driver drops them: SKAB's pressure sensor reads -1.257 bar)."""
    out = {}
    for row in skab_rows(path):
        values = {
            signal: float(row[column]) * scale if scale != 1.0 else float(row[column])
            for column, (signal, scale) in SKAB_SIGNALS.items()
        }
        out[skab_ms(row["datetime"])] = {s: v for s, v in values.items() if SIGNALS[s].low <= v <= SIGNALS[s].high}
    return out


def skab_intervals(path: Path) -> list[tuple[int, int, tuple[int, ...]]]:
    """(onset, end, changepoints) of each run of anomaly = 1, as SKAB labels them."""
    rows = skab_rows(path)
    if not rows or "anomaly" not in rows[0]:
        return []
    out = []
    i = 0
    while i < len(rows):
        if float(rows[i]["anomaly"]) == 1:
            j = i
            while j + 1 < len(rows) and float(rows[j + 1]["anomaly"]) == 1:
                j += 1
            cps = tuple(skab_ms(r["datetime"]) for r in rows[i : j + 2] if float(r["changepoint"]) == 1)
            out.append((skab_ms(rows[i]["datetime"]), skab_ms(rows[j]["datetime"]), cps))
            i = j + 1
        else:
            i += 1
    return out


# --- SKAB, unit ------------------------------------------------------------------------


@needs_skab
@pytest.mark.parametrize("path", SKAB_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_skab_replay_reproduces_every_value_timestamp_and_label(path: Path) -> None:
    driver = CsvReplayDriver({MACHINE: path}, mapping=SKAB, start_ms=None)
    replayed = list(driver.poll(2**62))
    expected = skab_expected(path)
    assert [ts for _, ts, _ in replayed] == list(expected)  # row for row, in order
    for machine, ts, values in replayed:
        assert machine.path == MACHINE and machine.kind == "centrifugal_pump"
        assert values == expected[ts], ts
        assert all(type(v) is float for v in values.values())
    assert list(driver.poll(2**62)) == []

    truth = driver.ground_truth()
    assert [(t.onset_ms, t.end_ms, t.changepoints_ms) for t in truth] == skab_intervals(path)
    assert all(t.machine == str(MACHINE) and t.source == str(path) and t.category == "recorded" for t in truth)


@needs_skab
def test_skab_labels_give_the_known_fault_interval_of_valve1_0() -> None:
    driver = CsvReplayDriver({MACHINE: SKAB_DIR / "valve1" / "0.csv"})
    [interval] = driver.ground_truth()
    rows = skab_rows(SKAB_DIR / "valve1" / "0.csv")
    # Rows 573..973 (0-based, after the header) are the fault regime; the four changepoints are
    # its start, two changes within, and the first normal row after it.
    assert (interval.onset_ms, interval.end_ms) == (skab_ms(rows[573]["datetime"]), skab_ms(rows[973]["datetime"]))
    assert interval.changepoints_ms == tuple(skab_ms(rows[i]["datetime"]) for i in (573, 630, 917, 974))


@needs_skab
def test_a_shifted_replay_starts_where_asked_and_shifts_its_labels_with_it() -> None:
    path = SKAB_DIR / "valve1" / "0.csv"
    recorded = CsvReplayDriver({MACHINE: path})
    shifted = CsvReplayDriver({MACHINE: path}, start_ms=1_763_800_000_000)
    shift = 1_763_800_000_000 - recorded.start_ms
    assert shifted.start_ms == 1_763_800_000_000 and shifted.end_ms == recorded.end_ms + shift
    assert [(ts - shift, v) for _, ts, v in shifted.poll(2**62)] == [(ts, v) for _, ts, v in recorded.poll(2**62)]
    [a], [b] = recorded.ground_truth(), shifted.ground_truth()
    assert (b.onset_ms - shift, b.end_ms - shift) == (a.onset_ms, a.end_ms)


def test_the_skab_yaml_file_is_the_built_in_mapping() -> None:
    assert load_mapping(Path(__file__).resolve().parents[1] / "gateway" / "mappings" / "skab.yaml") == SKAB
    assert load_mapping("skab") is SKAB


# --- mapping options, on a small synthetic recording ------------------------------------

SYNTHETIC = """\
when,temp_f,flow_lpm,amps,status,fault,cp
09.03.2020 10:00:00,212,60,10,ok,0,0
09.03.2020 10:00:01,,120,abc,ok,1,1
09.03.2020 10:00:02,32,nan,11.5,ok,1,0

09.03.2020 10:00:04,50,180,12,ok,0,1
09.03.2020 10:00:05,68,240,,,,
"""

SYNTHETIC_MAPPING = CsvMapping(
    name="synthetic",
    delimiter=",",
    timestamp_column="when",
    timestamp_format="%d.%m.%Y %H:%M:%S",
    timezone="+05:00",
    anomaly_column="fault",
    changepoint_column="cp",
    columns={
        "temp_f": ColumnMapping("motor_temp", scale=5 / 9, offset=-160 / 9),  # degF -> degC
        "flow_lpm": ColumnMapping("flow", scale=0.06),
        "amps": ColumnMapping("motor_current"),
        "status": None,
    },
)
T0 = int(datetime(2020, 3, 9, 5, 0, 0, tzinfo=UTC).timestamp() * 1000)  # 10:00 at UTC+5


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    path = tmp_path / "bench.csv"
    path.write_text(SYNTHETIC)
    return path


def test_scale_offset_timezone_and_missing_cells(synthetic: Path) -> None:
    driver = CsvReplayDriver({MACHINE: synthetic}, mapping=SYNTHETIC_MAPPING, kind="conveyor_drive")
    rows = [(ts, values) for _, ts, values in driver.poll(2**62)]
    assert rows == [
        (T0, {"motor_temp": 212 * (5 / 9) - 160 / 9, "flow": 60 * 0.06, "motor_current": 10.0}),
        # empty, non-numeric and NaN cells drop that reading, not the row
        (T0 + 1000, {"flow": 120 * 0.06}),
        (T0 + 2000, {"motor_temp": 32 * (5 / 9) - 160 / 9, "motor_current": 11.5}),
        (T0 + 4000, {"motor_temp": 50 * (5 / 9) - 160 / 9, "flow": 180 * 0.06, "motor_current": 12.0}),
        (T0 + 5000, {"motor_temp": 68 * (5 / 9) - 160 / 9, "flow": 240 * 0.06}),  # empty cells
    ]
    assert rows[0][1]["motor_temp"] == pytest.approx(100.0) and rows[2][1]["motor_temp"] == pytest.approx(0.0)
    assert driver.recordings[0].skipped_readings == 4
    assert driver.recordings[0].ignored_columns == ["status"]
    assert driver.machines()[0].kind == "conveyor_drive"
    # The changepoint on the first normal row after the interval belongs to it (the end of the regime).
    assert driver.ground_truth() == [
        RecordedInterval(str(MACHINE), "conveyor_drive", str(synthetic), T0 + 1000, T0 + 2000, (T0 + 1000, T0 + 4000))
    ]


def test_poll_returns_each_row_once_up_to_and_including_the_time_asked(synthetic: Path) -> None:
    driver = CsvReplayDriver({MACHINE: synthetic}, mapping=SYNTHETIC_MAPPING, kind="pump", start_ms=10_000_000)
    assert [ts for _, ts, _ in driver.poll(10_000_999)] == [10_000_000]
    assert [ts for _, ts, _ in driver.poll(10_002_000)] == [10_001_000, 10_002_000]
    assert [ts for _, ts, _ in driver.poll(10_002_000)] == []
    assert [ts for _, ts, _ in driver.poll(2**62)] == [10_004_000, 10_005_000]
    assert (driver.start_ms, driver.end_ms) == (10_000_000, 10_005_000)
    assert driver.ground_truth()[0].onset_ms == 10_001_000


def test_several_files_play_side_by_side_in_time_order(synthetic: Path, tmp_path: Path) -> None:
    later = tmp_path / "later.csv"
    later.write_text("when,temp_f,flow_lpm,amps\n09.03.2020 10:00:01,,,1\n09.03.2020 10:00:03,,,2\n")
    second = MachinePath("replay", "lab", "testbed", "later")
    driver = CsvReplayDriver({MACHINE: synthetic, second: later}, mapping=SYNTHETIC_MAPPING, kind="pump")
    assert [m.path for m in driver.machines()] == [MACHINE, second]
    played = [(m.path.machine, ts - T0) for m, ts, _ in driver.poll(2**62)]
    assert played == [
        ("pump", 0),
        ("pump", 1000),
        ("later", 1000),
        ("pump", 2000),
        ("later", 3000),
        ("pump", 4000),
        ("pump", 5000),
    ]
    # With a start time, every file is shifted to begin there.
    driver = CsvReplayDriver({MACHINE: synthetic, second: later}, mapping=SYNTHETIC_MAPPING, kind="pump", start_ms=0)
    assert [(m.path.machine, ts) for m, ts, _ in driver.poll(1000)] == [
        ("pump", 0),
        ("later", 0),
        ("pump", 1000),
    ]


def test_iso_times_with_their_own_zone_and_fractions_of_a_second(tmp_path: Path) -> None:
    path = tmp_path / "iso.csv"
    path.write_text("timestamp,v\n2020-03-09T10:00:00.250Z,1\n2020-03-09 13:00:01+03:00,2\n2020-03-09 10:00:02,3\n")
    mapping = CsvMapping(columns={"v": ColumnMapping("voltage")}, timezone="-01:00")
    driver = CsvReplayDriver({MACHINE: path}, mapping=mapping, kind="pump")
    t = int(datetime(2020, 3, 9, 10, tzinfo=UTC).timestamp() * 1000)
    # A zone in the cell wins; times without one are read in the mapping's zone.
    assert [ts - t for _, ts, _ in driver.poll(2**62)] == [250, 1000, 3_600_000 + 2000]


def test_unix_timestamps_and_labels_absent_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "unix.csv"
    path.write_text("t;v\n1583738073;1.5\n1583738074.25;2.5\n")
    mapping = CsvMapping(
        columns={"v": ColumnMapping("voltage", offset=230)},
        delimiter=";",
        timestamp_column="t",
        timestamp_format="unix_s",
        anomaly_column="anomaly",  # not in this file: no labels, not an error
    )
    driver = CsvReplayDriver({MACHINE: path}, mapping=mapping, kind="pump")
    assert list((ts, v) for _, ts, v in driver.poll(2**62)) == [
        (1_583_738_073_000, {"voltage": 231.5}),
        (1_583_738_074_250, {"voltage": 232.5}),
    ]
    assert driver.ground_truth() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,amps\n", "no rows after the header"),
        ("time,amps\n2020-01-01 00:00:00,1\n", "no column 'when' \\(timestamp\\)"),
        ("when;amps\n2020-01-01 00:00:00;1\n", "no column 'when'.*delimiter ','"),
        ("when,volts\n2020-01-01 00:00:00,1\n", "no column 'amps' \\(signal motor_current\\)"),
        ("when,amps\nyesterday,1\n1999-01-01,2\n", r"x.csv: no row can be replayed: 2 rows rejected \(bad_t"),
        ("", "x.csv: the file is empty"),
        ("\ufeffwhen;amps\n", "no column 'when'"),
    ],
)
def test_a_recording_that_does_not_fit_its_mapping_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(text)
    mapping = CsvMapping(columns={"amps": ColumnMapping("motor_current")}, timestamp_column="when")
    with pytest.raises(ReplayError, match=message):
        CsvReplayDriver({MACHINE: path}, mapping=mapping, kind="pump")


def test_a_mapping_file_with_every_option(tmp_path: Path, synthetic: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(
        "name: synthetic\n"
        "delimiter: ','\n"
        "timestamp: {column: when, format: '%d.%m.%Y %H:%M:%S', timezone: '+05:00'}\n"
        "labels: {anomaly: fault, changepoint: cp}\n"
        "columns:\n"
        "  temp_f: {signal: motor_temp, scale: 0.5555555555555556, offset: -17.77777777777778}\n"
        "  flow_lpm: {signal: flow, scale: 0.06}\n"
        "  amps: motor_current\n"
        "  status: null\n"
    )
    mapping = load_mapping(path)
    assert mapping == SYNTHETIC_MAPPING
    with pytest.raises(ReplayError, match="names no machine kind"):
        CsvReplayDriver({MACHINE: synthetic}, mapping=mapping)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("columns: {a: bogus_signal}\n", "'bogus_signal': not a numeric gauge or total of the signal catalogue"),
        ("columns: {a: state}\n", "not a numeric gauge"),
        ("columns: {a: flow, b: flow}\n", "columns 'a' and 'b' both map to 'flow'"),
        ("columns: {a: {signal: flow, scale: fast}}\n", "scale and offset must be numbers"),
        ("columns: {a: {signal: flow, gain: 2}}\n", "expected a signal name, null, or"),
        ("columns: {a: null}\n", "no column is mapped to a signal"),
        ("columns: {a: flow}\ndelimiter: ';;'\n", "delimiter must be one character"),
        ("columns: {a: flow}\ntimestamp: {zone: UTC}\n", "timestamp: unknown keys \\['zone'\\]"),
        ("columns: {a: flow}\ntimestamp: {timezone: Mars/Olympus}\n", "unknown time zone 'Mars/Olympus'"),
        ("columns: {a: flow}\nkind: Big Pump\n", "kind name 'Big Pump' is not valid"),
        ("column: {a: flow}\n", "unknown keys \\['column'\\]"),
        ("- a\n", "a mapping file is a YAML mapping"),
        ("columns: [a\n", "not valid YAML"),
    ],
)
def test_a_broken_mapping_file_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ReplayError, match=message):
        load_mapping(path)


def test_an_unknown_mapping_name_lists_the_built_in_ones() -> None:
    with pytest.raises(ReplayError, match=r"no such mapping file \(built-in mappings: skab\)"):
        load_mapping("skob")


def test_ground_truth_is_written_as_json(tmp_path: Path) -> None:
    interval = RecordedInterval("replay/lab/testbed/pump", "centrifugal_pump", "0.csv", 1000, 5000, (1000, 6000))
    write_ground_truth(tmp_path / "truth.json", [interval])
    assert json.loads((tmp_path / "truth.json").read_text()) == [
        {
            "machine": "replay/lab/testbed/pump",
            "kind": "centrifugal_pump",
            "source": "0.csv",
            "onset_ms": 1000,
            "end_ms": 5000,
            "changepoints_ms": [1000, 6000],
            "category": "recorded",
        }
    ]


def test_machine_paths_for_the_replayed_files() -> None:
    files = ["skab/valve1/0.csv", "skab/valve2/0.csv"]
    assert [str(p) for p in replay_machines(files, None)] == [
        "replay/lab/testbed/valve1-0",
        "replay/lab/testbed/valve2-0",
    ]
    assert [str(p) for p in replay_machines(files, ["a/b/c/d", "a/b/c/e"])] == ["a/b/c/d", "a/b/c/e"]
    assert str(replay_machines(["My Data/Run 1.CSV"], ["t/s/l/{stem}"])[0]) == "t/s/l/run-1"
    with pytest.raises(ValueError, match="same machine a/b/c/valve"):
        replay_machines(files, ["a/b/c/valve"])
    with pytest.raises(ValueError, match="once per replayed file"):
        replay_machines(files, ["a/b/c/d", "a/b/c/e", "a/b/c/f"])
    with pytest.raises(ValueError, match="expected tenant/site/line/machine"):
        replay_machines(files[:1], ["a/b/c"])
    with pytest.raises(ValueError, match="tenant name 'A' is not valid"):
        replay_machines(files[:1], ["A/b/c/d"])


# --- bad rows: counted, logged and skipped, never an exception ------------------------

NOW_MS = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000)
T1 = int(datetime(2020, 3, 9, 10, tzinfo=UTC).timestamp() * 1000)
BAD = CsvMapping(
    name="bad",
    timestamp_column="when",
    anomaly_column="fault",
    columns={
        "amps": ColumnMapping("motor_current"),
        "volts": ColumnMapping("voltage", scale=1e300),  # 1e10 V would become infinite
        "note": None,
    },
)
HEADER = "when,amps,volts,note,fault\n"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def good(i: int, amps: float = 1.0) -> str:
    """A row that replays: at T1 + i s, amps as given, volts 0."""
    return f"{iso(T1 + 1000 * i)},{amps!r},0,ok,0\n"


def replay_text(
    tmp_path: Path, content: str | bytes, mapping: CsvMapping = BAD, **kwargs: Any
) -> tuple[CsvReplayDriver, list[tuple[int, dict[str, object]]]]:
    path = tmp_path / "rec.csv"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    driver = CsvReplayDriver({MACHINE: path}, mapping=mapping, kind="pump", now_ms=NOW_MS, **kwargs)
    return driver, [(ts, dict(values)) for _, ts, values in driver.poll(2**62)]


def assert_counts(driver: CsvReplayDriver, rows: int, **rejected: int) -> None:
    assert driver.rejections == Counter(rejected)
    assert driver.rows == rows
    assert driver.rows_read == rows + sum(rejected.values())


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        ("yesterday", "bad_timestamp"),
        ("", "bad_timestamp"),
        ("2020-13-01 00:00:00", "bad_timestamp"),
        ("2020-03-09 10:00:00\x00", "bad_timestamp"),
        ("0001-01-01 00:00:00", "timestamp_out_of_range"),
        ("0001-01-01 00:00:00+03:00", "timestamp_out_of_range"),
        ("9999-12-31 23:59:59", "timestamp_out_of_range"),
        ("9999-12-31 23:59:59-01:00", "timestamp_out_of_range"),
        ("1999-12-31 23:59:59", "timestamp_out_of_range"),  # before 2000: the payload contract's earliest
        ("2026-12-02 00:00:01", "timestamp_out_of_range"),  # more than 24 h after now
    ],
)
def test_a_bad_iso_timestamp_rejects_its_row_and_keeps_the_others(tmp_path: Path, cell: str, reason: str) -> None:
    driver, rows = replay_text(tmp_path, HEADER + good(0) + f"{cell},5,0,ok,0\n" + good(1))
    assert rows == [(T1, {"motor_current": 1.0, "voltage": 0.0}), (T1 + 1000, {"motor_current": 1.0, "voltage": 0.0})]
    assert_counts(driver, 2, **{reason: 1})


def test_the_latest_timestamp_accepted_is_24_h_after_now(tmp_path: Path) -> None:
    _, rows = replay_text(tmp_path, HEADER + "2000-01-01 00:00:00,1,0,,\n2026-12-02 00:00:00,2,0,,\n")
    assert [ts for ts, _ in rows] == [946_684_800_000, NOW_MS + 24 * 3600 * 1000]


@pytest.mark.parametrize(
    ("fmt", "cell", "reason"),
    [
        ("unix_s", "1e20", "timestamp_out_of_range"),
        ("unix_s", "-1e12", "timestamp_out_of_range"),
        ("unix_s", "1e308", "timestamp_out_of_range"),  # * 1000 is infinite
        ("unix_s", "9" * 5000, "timestamp_out_of_range"),
        ("unix_s", "inf", "timestamp_out_of_range"),
        ("unix_s", "-inf", "timestamp_out_of_range"),
        ("unix_s", "nan", "bad_timestamp"),
        ("unix_s", "1.5.3", "bad_timestamp"),
        ("unix_s", "", "bad_timestamp"),
        ("unix_s", "946684799.999", "timestamp_out_of_range"),
        ("unix_ms", "1e20", "timestamp_out_of_range"),
        ("unix_ms", "-1e12", "timestamp_out_of_range"),
        ("unix_ms", "NaN", "bad_timestamp"),
        ("unix_ms", "Infinity", "timestamp_out_of_range"),
    ],
)
def test_a_bad_unix_timestamp_rejects_its_row(tmp_path: Path, fmt: str, cell: str, reason: str) -> None:
    mapping = CsvMapping(columns={"v": ColumnMapping("voltage")}, timestamp_column="t", timestamp_format=fmt)
    first = "1583748000" if fmt == "unix_s" else "1583748000000"
    later = "1583748001" if fmt == "unix_s" else "1583748001000"
    driver, rows = replay_text(tmp_path, f"t,v\n{first},1\n{cell},2\n{later},3\n", mapping)
    assert rows == [(T1, {"voltage": 1.0}), (T1 + 1000, {"voltage": 3.0})]
    assert_counts(driver, 2, **{reason: 1})


@pytest.mark.parametrize(
    ("cell", "reason"),
    [("01.01.0001 00:00:00", "timestamp_out_of_range"), ("31.12.9999 23:59:59", "timestamp_out_of_range")],
)
def test_a_strptime_timestamp_at_the_ends_of_the_calendar_in_a_zone(tmp_path: Path, cell: str, reason: str) -> None:
    for zone in ("+14:00", "-12:00", "Asia/Almaty"):
        mapping = CsvMapping(
            columns={"v": ColumnMapping("voltage")}, timestamp_format="%d.%m.%Y %H:%M:%S", timezone=zone
        )
        driver, rows = replay_text(tmp_path, f"timestamp,v\n{cell},1\n09.03.2020 10:00:00,2\n", mapping)
        assert [v for _, v in rows] == [{"voltage": 2.0}]
        assert_counts(driver, 1, **{reason: 1})


def test_a_shifted_replay_starts_at_the_first_row_replayed_not_at_a_rejected_one(tmp_path: Path) -> None:
    text = HEADER + "0001-01-01 00:00:00,9,0,,\n" + good(0) + good(1) + "9999-12-31 23:59:59,9,0,,\n"
    driver, rows = replay_text(tmp_path, text, start_ms=NOW_MS)
    assert [ts for ts, _ in rows] == [NOW_MS, NOW_MS + 1000]
    assert (driver.start_ms, driver.end_ms) == (NOW_MS, NOW_MS + 1000)
    assert_counts(driver, 2, timestamp_out_of_range=2)


def test_duplicate_and_out_of_order_timestamps_are_rejected_the_first_row_wins(tmp_path: Path) -> None:
    text = (
        HEADER
        + f"{iso(T1)},1,0,,1\n"
        + f"{iso(T1 + 1000)},2,0,,1\n"
        + f"{iso(T1 + 1000)},99,0,,1\n"  # duplicate of the previous row: would overwrite it
        + f"{iso(T1 + 500)},99,0,,0\n"  # back in time
        + f"{iso(T1)},99,0,,0\n"  # duplicate of an earlier row
        + f"{iso(T1 + 2000)},3,0,,1\n"
        + f"{iso(T1 + 3000)},4,0,,0\n"
    )
    driver, rows = replay_text(tmp_path, text)
    assert [(ts - T1, v["motor_current"]) for ts, v in rows] == [(0, 1.0), (1000, 2.0), (2000, 3.0), (3000, 4.0)]
    assert_counts(driver, 4, duplicate_timestamp=2, out_of_order=1)
    # Rejected rows are not rows: the labelled interval runs over them.
    assert [(i.onset_ms - T1, i.end_ms - T1) for i in driver.ground_truth()] == [(0, 2000)]


@pytest.mark.parametrize(
    ("amps", "volts", "dropped", "reason"),
    [
        ("abc", "0", "motor_current", "not_a_number"),
        ("", "0", "motor_current", "empty"),
        ("  ", "0", "motor_current", "empty"),
        ("nan", "0", "motor_current", "not_finite"),
        ("-inf", "0", "motor_current", "not_finite"),
        ("1e400", "0", "motor_current", "not_finite"),
        ("-0.5", "0", "motor_current", "out_of_range"),  # the catalogue's motor_current is 0 .. 5000 A
        ("5000.1", "0", "motor_current", "out_of_range"),
        ("1", "1e10", "voltage", "out_of_range"),  # * 1e300: infinite
        ("1", "1e-297", "voltage", "out_of_range"),  # * 1e300 = 1000.0000000000001 V, above 1000 V
        ("1", "0x10", "voltage", "not_a_number"),
    ],
)
def test_a_bad_value_drops_that_reading_not_the_row(
    tmp_path: Path, amps: str, volts: str, dropped: str, reason: str
) -> None:
    driver, rows = replay_text(tmp_path, HEADER + f"{iso(T1)},{amps},{volts},,\n")
    [(ts, values)] = rows
    assert ts == T1 and dropped not in values and len(values) == 1
    assert driver.dropped_readings == Counter({reason: 1})
    assert driver.recordings[0].skipped_readings == 1
    assert_counts(driver, 1)


def test_values_at_the_ends_of_the_catalogue_range_are_replayed(tmp_path: Path) -> None:
    _, rows = replay_text(tmp_path, HEADER + f"{iso(T1)},0,0,,\n{iso(T1 + 1000)},5000,1e-297,,\n")
    assert rows == [(T1, {"motor_current": 0.0, "voltage": 0.0}), (T1 + 1000, {"motor_current": 5000.0})]


def test_rows_with_the_wrong_number_of_cells_are_rejected(tmp_path: Path) -> None:
    text = (
        HEADER
        + good(0)
        + f"{iso(T1 + 1000)},2,0,ok\n"  # short: a lost cell may have shifted the others
        + f"{iso(T1 + 2000)},3,0,o,k,0\n"  # long: an unquoted delimiter in a cell
        + f"{iso(T1 + 3000)},4,0,ok,0,,  ,\n"  # trailing empty cells are harmless
        + f"{iso(T1 + 4000)}\n"
        + good(5)
    )
    driver, rows = replay_text(tmp_path, text)
    assert [ts - T1 for ts, _ in rows] == [0, 3000, 5000]
    assert_counts(driver, 3, wrong_column_count=3)


def test_blank_lines_are_not_rows(tmp_path: Path) -> None:
    driver, rows = replay_text(tmp_path, HEADER + "\n" + good(0) + "\r\n,,,,\n   \n" + good(1) + "\n\n")
    assert len(rows) == 2
    assert_counts(driver, 2)
    assert driver.recordings[0].blank_lines == 6


def test_a_byte_order_mark_and_crlf_line_ends(tmp_path: Path) -> None:
    text = (HEADER + good(0) + good(1)).replace("\n", "\r\n")
    _, rows = replay_text(tmp_path, b"\xef\xbb\xbf" + text.encode())
    assert [ts - T1 for ts, _ in rows] == [0, 1000]
    # A byte-order mark anywhere else is part of a cell.
    driver, rows = replay_text(tmp_path, HEADER + good(0) + "\ufeff" + good(1))
    assert [ts - T1 for ts, _ in rows] == [0]
    assert_counts(driver, 1, bad_timestamp=1)


def test_bytes_that_are_not_utf8_reject_only_what_they_touch(tmp_path: Path) -> None:
    content = (
        b"when,amps,volts,note,fault,Temp\xb0C\n"  # a Latin-1 column name, not mapped
        + f"{iso(T1)},1,0,caf\xe9,0,\n".encode("latin-1")  # in an ignored column: replayed
        + f"{iso(T1 + 1000)},2\xb5,0,ok,0,\n".encode("latin-1")  # in a value: that reading dropped
        + f"{iso(T1 + 2000)}\xa0,3,0,ok,0,\n".encode("latin-1")  # in the timestamp: row rejected
        + b"\xff\xfe\x00\x00,\x80\x81\n"
        + f"{iso(T1 + 3000)},4,0,ok,0,\n".encode()
    )
    driver, rows = replay_text(tmp_path, content)
    assert [(ts - T1, v.get("motor_current")) for ts, v in rows] == [(0, 1.0), (1000, None), (3000, 4.0)]
    assert driver.dropped_readings == Counter(not_a_number=1)
    assert_counts(driver, 3, bad_timestamp=1, wrong_column_count=1)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_file_is_a_clear_error(tmp_path: Path, encoding: str) -> None:
    with pytest.raises(ReplayError, match=r"UTF-16|not UTF-8 text: convert the file to UTF-8"):
        replay_text(tmp_path, (HEADER + good(0)).encode(encoding))


def test_huge_lines_and_fields_are_rejected_without_reading_them_whole(tmp_path: Path) -> None:
    from gateway.replay import MAX_LINE_BYTES

    big = "x" * (MAX_LINE_BYTES - 100)  # a long cell within the limit: fine in an ignored column
    text = (
        HEADER
        + good(0)
        + f"{iso(T1 + 1000)},2,0,{'y' * 10 * MAX_LINE_BYTES},0\n"
        + f"{iso(T1 + 2000)},3,0,{big},0\n"
        + f'{iso(T1 + 3000)},4,0,"{"z" * 200_000}",0\r\n'  # quoted, beyond the csv module's field limit
        + good(4)
    )
    driver, rows = replay_text(tmp_path, text)
    assert [ts - T1 for ts, _ in rows] == [0, 2000, 4000]
    assert_counts(driver, 3, line_too_long=2)
    # The last line, without a line end.
    driver, rows = replay_text(tmp_path, HEADER + good(0) + "9" * (MAX_LINE_BYTES + 1))
    assert_counts(driver, 1, line_too_long=1)
    with pytest.raises(ReplayError, match=r"header.* is longer than"):
        replay_text(tmp_path, "when" * MAX_LINE_BYTES + "\n" + good(0))


def test_a_quote_or_carriage_return_cannot_swallow_the_rows_after_it(tmp_path: Path) -> None:
    text = (
        HEADER
        + good(0)
        + f'"{iso(T1 + 1000)},2,0,ok,0\n'  # an unterminated quote: the rest of this line is one cell
        + f'{iso(T1 + 2000)},3,0,"a\n'
        + 'b",0\n'  # a quoted line break is not supported: a row is a line
        + f"{iso(T1 + 3000)},4,0,a\rb,0\n"  # a carriage return inside a cell
        + f'{iso(T1 + 4000)},"5",0,"quoted, with a comma",0\n'
    )
    driver, rows = replay_text(tmp_path, text)
    assert [(ts - T1, v["motor_current"]) for ts, v in rows] == [(0, 1.0), (4000, 5.0)]
    assert_counts(driver, 2, wrong_column_count=3, unreadable=1)


def test_a_file_without_any_row_to_replay_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        ReplayError, match=r"no row can be replayed: 3 rows rejected \(bad_timestamp 2, timestamp_out_of_range 1\)"
    ):
        replay_text(tmp_path, HEADER + "x,1,0,,\n0001-01-01 00:00:00,1,0,,\ny,1,0,,\n")
    with pytest.raises(ReplayError, match="no rows after the header"):
        replay_text(tmp_path, HEADER + "\n,,,,\n")


def test_rejections_are_logged_once_per_reason_every_10_s_and_summed_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    rejection_log = RejectionLog(clock=lambda: now[0])
    text = HEADER + good(0) + "x,1,0,,\n" * 50 + "1990-01-01 00:00:00,1,0,,\n" * 50
    with caplog.at_level("WARNING", logger="gateway.replay"):
        replay_text(tmp_path, text, rejection_log=rejection_log)
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 3
        assert "rec.csv:3: row rejected: timestamp 'x' is not in the format 'iso' (bad_timestamp)" in lines[0]
        assert "rec.csv:53: row rejected: timestamp '1990-01-01 00:00:00'" in lines[1]
        assert "(timestamp_out_of_range)" in lines[1]
        assert (
            "101 rows read, 1 replayed (2 readings), 100 rejected (bad_timestamp 50, timestamp_out_of_range 50)"
            in (lines[2])
        )
        caplog.clear()
        now[0] = 10.0
        replay_text(tmp_path, text, rejection_log=rejection_log)
        assert "(bad_timestamp; 49 more not logged in the last 10 s)" in caplog.records[0].getMessage()


def test_the_counters_of_several_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(HEADER + good(0) + "x,1,0,,\n" + f"{iso(T1 + 1000)},abc,0,,\n")
    b.write_text(HEADER + good(0) + good(0) + "\n")
    driver = CsvReplayDriver(
        {MACHINE: a, MachinePath("replay", "lab", "testbed", "b"): b}, mapping=BAD, kind="pump", now_ms=NOW_MS
    )
    assert driver.stats() == {
        "rows_read": 5,
        "rows_replayed": 3,
        "rows_rejected": {"bad_timestamp": 1, "duplicate_timestamp": 1},
        "readings_dropped": {"not_a_number": 1},
    }
    json.dumps(driver.stats())


def test_birlik_gateway_exits_2_for_a_file_whose_header_lacks_the_mapped_columns(tmp_path: Path) -> None:
    path = tmp_path / "0.csv"
    path.write_text("datetime;Current\n2020-03-09 10:00:00;1\n")
    result = subprocess.run(
        [*birlik_command(), "gateway", "--replay", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "no column 'Accelerometer1RMS' (signal accel_rms) in the header; columns: datetime, Current" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


# --- end to end -------------------------------------------------------------------------

TAGS = {"tenant", "site", "line", "kind"}


@needs_skab
@pytest.mark.slow
async def test_a_replayed_skab_file_arrives_in_the_database_value_for_value(
    config: Config, influx: InfluxClient
) -> None:
    path = SKAB_DIR / "valve1" / "0.csv"
    driver = CsvReplayDriver({MACHINE: path})
    async with running_ingest(config, machines={MACHINE: "centrifugal_pump"}) as ingest:
        publisher = MqttPublisher(config.mqtt, client_id=f"gw-replay-{config.influx.database}")
        publisher.connect()
        try:
            unacked = await asyncio.to_thread(
                run_gateway, "gw-replay", driver, publisher, Clock(driver.start_ms, 0), end_ms=driver.end_ms, batch=60
            )
        finally:
            publisher.close()
        assert unacked == 0
        published = publisher.stats.readings
        await wait_for(lambda: ingest.stats.readings_written >= published)

    expected = skab_expected(path)
    assert published == sum(len(v) for v in expected.values()) == 8 * 1147
    assert ingest.stats.messages_rejected == 0 and ingest.stats.readings_rejected == 0
    assert readings_in_db(influx) == published
    stored: dict[int, dict[str, object]] = {}
    for s in influx.query('SELECT * FROM "telemetry" GROUP BY "machine"'):
        assert s.tags["machine"] == MACHINE.machine
        for row in s.records():
            ts = row.pop("time")
            stored[ts] = {k: v for k, v in row.items() if v is not None and k not in TAGS}
    assert stored == expected


@needs_skab
@pytest.mark.slow
def test_birlik_gateway_replays_a_skab_file_and_writes_its_labels(config: Config, tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    result = subprocess.run(
        [
            *birlik_command(),
            "gateway",
            "--replay",
            str(SKAB_DIR / "valve1" / "0.csv"),
            "--machine",
            "replay/lab/testbed/{parent}-{stem}",
            "--start",
            "2026-11-22T08:00:00Z",
            "--speed",
            "0",
            "--batch",
            "100",
            "--ground-truth",
            str(truth),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BIRLIK_MQTT_URL": config.mqtt.url},
    )
    assert result.returncode == 0, result.stderr
    assert "1147 rows read, 1147 replayed (9176 readings), 0 rejected, 0 readings dropped" in result.stderr
    assert "messages (9176 readings" in result.stderr
    # "lost 0" before gateway/service.py's disk log, "unacknowledged 0, dropped 0" with it.
    assert "lost 0" in result.stderr or "unacknowledged 0, dropped 0" in result.stderr
    start = int(datetime(2026, 11, 22, 8, tzinfo=UTC).timestamp() * 1000)
    [(onset, end, _)] = skab_intervals(SKAB_DIR / "valve1" / "0.csv")
    first = skab_ms(skab_rows(SKAB_DIR / "valve1" / "0.csv")[0]["datetime"])
    [interval] = json.loads(truth.read_text())
    assert interval["machine"] == "replay/lab/testbed/valve1-0" and interval["category"] == "recorded"
    assert (interval["onset_ms"], interval["end_ms"]) == (start + onset - first, start + end - first)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--replay", "x.csv", "--plant", "p.yaml"], "--plant: not with --replay"),
        (["--mapping", "skab"], "--mapping: only with --replay"),
        (["--start", "recording"], "--start recording: only with --replay"),
        (["--replay", "missing.csv"], "missing.csv: cannot read"),
        (["--replay", "x.csv", "--mapping", "nope.yaml"], "nope.yaml: no such mapping file"),
        (["--replay", "x.csv", "--machine", "a/b/c"], "expected tenant/site/line/machine"),
    ],
)
def test_birlik_gateway_rejects_a_confused_replay_command_line(args: list[str], message: str) -> None:
    result = subprocess.run(
        [*birlik_command(), "gateway", *args], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
