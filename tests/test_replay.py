"""CSV replay: SKAB recordings reproduced exactly, labels as ground truth, mapping options,
and a replay end to end over the real broker and database."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

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
        out[skab_ms(row["datetime"])] = {
            s: v for s, v in values.items() if SIGNALS[s].low <= v <= SIGNALS[s].high
        }
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
    assert "messages (9176 readings" in result.stderr and "lost 0" in result.stderr
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
