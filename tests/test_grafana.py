"""The Grafana dashboards: every query runs against a real InfluxDB holding known data, and
the committed provisioning files are what the code generates."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import grafana
from birlik.config import Config
from birlik.influx import InfluxClient, Series
from birlik.lineprotocol import encode_point
from birlik.schema import ALARM, ALERT, ANOMALY, HEALTH, INGEST, TELEMETRY
from grafana import cli as grafana_cli
from grafana import expand_macros, panel_queries
from ops.cli import common_options

REPO = Path(__file__).resolve().parents[1]
PROVISIONING = REPO / "grafana" / "provisioning"


# --- known data -------------------------------------------------------------------------------

#: site -> line -> [(machine, kind)]: all four machine kinds on both sites.
PLANT = {
    "kz-turkestan": {
        "spinning-1": [("rs-101", "spinning_frame"), ("cv-101", "conveyor_drive")],
        "utilities-1": [("comp-101", "air_compressor"), ("pump-101", "centrifugal_pump")],
        "pipes-1": [("ex-101", "extruder")],
    },
    "uz-syrdarya": {
        "spinning-2": [("rs-201", "spinning_frame"), ("cv-201", "conveyor_drive")],
        "utilities-2": [("comp-201", "air_compressor"), ("pump-201", "centrifugal_pump")],
    },
}
TENANT = {"kz-turkestan": "ontustik-textile", "uz-syrdarya": "syrdarya-tekstil"}
#: The state each machine ends the run in, so every state of the catalogue occurs.
FINAL_STATE = {"cv-101": "idle", "comp-201": "fault", "rs-201": "changeover", "cv-201": "stopped"}
SAMPLE_S = 5
SAMPLES = 120  # ten minutes

#: The ingest processes of the run and their counters per second (each health point every
#: HEALTH_S adds ten times as much). birlik-ingest-1 restarted halfway (its counters start
#: again from zero); birlik-ingest-2 falls behind, retries writes, and stopped two minutes
#: before the end of the run.
INGEST_RATES: dict[str, dict[str, float]] = {
    "birlik-ingest-1": {
        "messages_received": 200,
        "messages_acked": 200,
        "readings_written": 2400,
        "messages_rejected": 0.5,
        "readings_rejected": 2,
        "rejected_not_json": 0.5,
        "rejected_out_of_range": 1.5,
        "rejected_wrong_unit": 0.5,
        "messages_redelivered": 0.1,
        "messages_replayed": 0,
        "write_retries": 0,
    },
    "birlik-ingest-2": {
        "messages_received": 100,
        "messages_acked": 90,
        "readings_written": 1080,
        "messages_rejected": 0.2,
        "readings_rejected": 0,
        "rejected_not_json": 0.2,
        "messages_redelivered": 0,
        "messages_replayed": 1.5,
        "write_retries": 0.3,
    },
}
#: Their gauges, the same in every health point.
INGEST_GAUGES: dict[str, dict[str, float]] = {
    "birlik-ingest-1": {"window_in_use": 1200, "buffered_points": 300, "write_seconds_last": 0.05, "seq_gaps": 0},
    "birlik-ingest-2": {"window_in_use": 18000, "buffered_points": 9000, "write_seconds_last": 2.5, "seq_gaps": 4},
}
HEALTH_S = 10
HEALTH_POINTS = 60  # the last one at the end of the run
RESTARTED_AT = {"birlik-ingest-1": 30}  # index of the first health point after the restart
STOPPED_S = {"birlik-ingest-2": 120}  # seconds before the end of the run


@dataclass(frozen=True)
class KnownData:
    start_ms: int
    end_ms: int
    machines: dict[str, str]  # machine -> site
    interval: str = "30s"

    def expand(self, query: str, variables: Mapping[str, Any]) -> str:
        """``query`` as Grafana sends it for this run's time range, at this run's interval."""
        return expand_macros(
            query, start_ms=self.start_ms - 1000, end_ms=self.end_ms + 1000, interval=self.interval, variables=variables
        )


def _readings(kind: str, i: int, running: bool, phase: float) -> dict[str, float | int | str]:
    """Plausible readings of one machine kind, sample ``i`` of the run."""
    wave = math.sin(i / 7 + phase)
    load = (0.8 + 0.05 * wave) if running else 0.0
    energy = 1000.0 + 0.03 * i * (1 + phase)
    common: dict[str, float | int | str] = {
        "motor_current": round(40 * load + 0.5, 2),
        "power": round(22 * load, 3),
        "energy": round(energy, 3),
        "vibration_rms": round(1.8 + 0.2 * wave + (0.02 * i if kind == "air_compressor" else 0), 3),
        "motor_temp": round(60 + 10 * load, 2),
        "ambient_temp": round(21 + 0.3 * wave, 2),
    }
    if kind == "centrifugal_pump":
        common |= {
            "speed": 2950.0 * (load > 0),
            "flow": round(120 * load, 2),
            "suction_pressure": 0.6,
            "discharge_pressure": round(5.8 * load, 3),
            "bearing_temp": round(48 + 5 * load, 2),
            "differential_pressure": round(0.05 + 0.001 * i, 4),
            "fluid_temp": round(24 + 2 * load, 2),
            # a test-bed pump with accelerometers and a voltage reading, like SKAB's
            "accel_rms": round(0.026 + 0.002 * wave, 4),
            "accel2_rms": round(0.040 + 0.002 * wave, 4),
            "voltage": round(230 + 3 * wave, 1),
        }
    elif kind == "air_compressor":
        common |= {
            "speed": 1480.0 * (load > 0),
            "load": round(100 * load, 1),
            "flow": round(6 * load, 2),
            "discharge_pressure": round(7.5 * load, 3),
            "discharge_temp": round(80 + 0.1 * i, 2),
            "oil_temp": round(70 + 0.05 * i, 2),
        }
    elif kind == "spinning_frame":
        common |= {
            "spindle_speed": round(17_000 * load, 1),
            "bearing_temp": round(45 + 4 * load, 2),
            "count_good": 500 + 3 * i,
            "count_scrap": 10 + i // 20,
        }
    elif kind == "extruder":
        common |= {
            "speed": round(60 * load, 1),
            "melt_pressure": round(180 * load, 1),
            "barrel_temp": round(200 + 5 * wave, 2),
            "count_good": 300 + 2 * i,
            "count_scrap": 5 + i // 30,
        }
    else:  # conveyor_drive
        common |= {
            "speed": round(1450 * load, 1),
            "belt_speed": round(1.6 * load, 3),
            "load": round(100 * load, 1),
            "bearing_temp": round(42 + 4 * load, 2),
            "count_good": 200 + 2 * i,
        }
    return common


def _health_fields(client_id: str, k: int) -> dict[str, float | int]:
    """The fields of health point ``k`` of an ingest process, as ``IngestService._health`` writes
    them: counters since the process started (its first point comes one interval after the
    start), rejected_<reason> only once that reason happened."""
    intervals = k + 1 - RESTARTED_AT.get(client_id, 0) if k >= RESTARTED_AT.get(client_id, 0) else k + 1
    counters = {name: round(rate * HEALTH_S) * intervals for name, rate in INGEST_RATES[client_id].items()}
    fields: dict[str, float | int] = {name: n for name, n in counters.items() if n or not name.startswith("rejected_")}
    return fields | INGEST_GAUGES[client_id]


def _health_points(end_ms: int) -> Iterator[tuple[str, int, int]]:
    """(client id, index, time) of every health point written in the run."""
    for client_id in INGEST_RATES:
        for k in range(HEALTH_POINTS):
            ts = end_ms - (HEALTH_POINTS - 1 - k) * HEALTH_S * 1000
            if ts <= end_ms - STOPPED_S.get(client_id, 0) * 1000:
                yield client_id, k, ts


@pytest.fixture
def grafana_data(config: Config, influx: InfluxClient) -> KnownData:
    """A short run of the centre written to InfluxDB: every machine kind on both sites, with
    anomaly scores and alerts, and the health points of two ingest processes. This is the one
    place that decides the test data; it may be replaced by the output of a short simulated
    run (simulators -> ingest -> analytics)."""
    import time

    end_ms = (int(time.time()) - 30) * 1000
    start_ms = end_ms - (SAMPLES - 1) * SAMPLE_S * 1000
    lines: list[str] = []
    machines: dict[str, str] = {}
    for phase, (site, line, machine, kind) in enumerate(
        (site, line, machine, kind)
        for site, lines_of_site in PLANT.items()
        for line, machines_of_line in lines_of_site.items()
        for machine, kind in machines_of_line
    ):
        machines[machine] = site
        tags = {"tenant": TENANT[site], "site": site, "line": line, "machine": machine, "kind": kind}
        for i in range(SAMPLES):
            ts = start_ms + i * SAMPLE_S * 1000
            final = FINAL_STATE.get(machine, "running")
            state = final if i >= SAMPLES - 12 else ("changeover" if 30 <= i < 36 else "running")
            values = _readings(kind, i, state == "running", phase / 3)
            lines.append(encode_point(TELEMETRY, tags, {"state": state, **values}, ts))
            # The compressors drift (rising oil temperature) and end above threshold.
            score = 1.0 + 0.5 * math.sin(i / 5 + phase) + (0.06 * i if kind == "air_compressor" else 0)
            lines.append(
                encode_point(
                    ANOMALY,
                    {**tags, "detector": "zscore"},
                    {
                        "score": round(score, 3),
                        "threshold": 6.0,
                        "anomalous": score > 6.0,
                        "signal": "oil_temp" if kind == "air_compressor" else "vibration_rms",
                    },
                    ts,
                )
            )
        if kind == "air_compressor":
            alert_tags = {k: v for k, v in tags.items() if k != "kind"}
            raised = start_ms + 100 * SAMPLE_S * 1000
            lines.append(
                encode_point(
                    ALERT,
                    {**alert_tags, "severity": "warning", "state": "raised"},
                    {
                        "id": f"{machine}-zscore-1",
                        "detector": "zscore",
                        "signal": "oil_temp",
                        "message": f"{machine}: oil_temp above its normal range",
                        "score": 7.1,
                    },
                    raised,
                )
            )
            if site == "kz-turkestan":
                lines.append(
                    encode_point(
                        ALERT,
                        {**alert_tags, "severity": "warning", "state": "cleared"},
                        {
                            "id": f"{machine}-zscore-1",
                            "detector": "zscore",
                            "signal": "oil_temp",
                            "message": f"{machine}: back to normal",
                            "score": 2.0,
                        },
                        raised + 60_000,
                    )
                )
        if kind == "air_compressor":  # its alarm, and its health falling with a remaining life
            raised = start_ms + 100 * SAMPLE_S * 1000
            lines.append(
                encode_point(
                    ALARM,
                    {**{k: v for k, v in tags.items() if k != "kind"}, "kind": "condition", "priority": "medium",
                     "state": "unack_active", "transition": "raised"},
                    {"id": f"{machine}.condition.{raised}", "seq": 1, "key": f"{machine}.condition.{raised}#1",
                     "title": f"{machine}: oil temp abnormal", "text": "oil_temp 96 degC, 14 K above normal",
                     "user": "", "comment": ""},
                    raised,
                )
            )  # fmt: skip
        for i in range(0, SAMPLES, 10):
            falling = kind == "air_compressor"
            health = {"indicator": 0.06 * i if falling else 0.2, "health": 1 - 0.015 * i if falling else 0.95}
            if falling:
                health |= {"rul_h": 40.0 - 0.1 * i, "rul_low_h": 30.0, "rul_high_h": 60.0}
            lines.append(encode_point(HEALTH, tags, health, start_ms + i * SAMPLE_S * 1000))
    for client_id, k, ts in _health_points(end_ms):
        lines.append(encode_point(INGEST, {"client_id": client_id}, _health_fields(client_id, k), ts))
    influx.write(lines)
    return KnownData(start_ms, end_ms, machines)


# --- running the dashboards' queries ----------------------------------------------------------


def _variables(board: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [v for v in board.get("templating", {}).get("list", []) if v.get("type") == "query"]


def _tag_values(series: list[Series]) -> list[str]:
    return sorted({str(row[1]) for s in series for row in s.values})


def _has_values(series: list[Series]) -> bool:
    """At least one row with a value besides its time."""
    return any(
        any(value is not None for column, value in zip(s.columns, row, strict=False) if column != "time")
        for s in series
        for row in s.values
    )


def _selections(
    board: Mapping[str, Any],
    influx: InfluxClient,
    data: KnownData,
    chosen: dict[str, Any] | None = None,
    index: int = 0,
) -> Iterator[dict[str, Any]]:
    """Every selection of the dashboard's variables a user could make, each variable's options
    coming from its own query (so a variable depending on another is resolved in order).
    Multi-value variables take "All"; single-value variables take each option in turn."""
    chosen = dict(chosen or {})
    variables = _variables(board)
    if index == len(variables):
        yield chosen
        return
    variable = variables[index]
    query = data.expand(variable["query"], chosen)
    options = _tag_values(influx.query(query))
    assert options, f"{board['title']}: variable ${variable['name']} has no options ({query})"
    if variable.get("multi") or variable.get("includeAll"):
        yield from _selections(board, influx, data, {**chosen, variable["name"]: options}, index + 1)
    else:
        for option in options:
            yield from _selections(board, influx, data, {**chosen, variable["name"]: option}, index + 1)


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return grafana.dashboards()


def test_every_query_returns_data(
    grafana_data: KnownData, influx: InfluxClient, boards: dict[str, dict[str, Any]]
) -> None:
    checked = 0
    for name, board in boards.items():
        selections = list(_selections(board, influx, grafana_data))
        queries = panel_queries(board)
        panels = [p for p in board["panels"] if p["type"] != "row"]
        assert len([q for q in queries if not q.panel.endswith("(variable)")]) >= len(panels), name
        for query in queries:
            answered = 0
            for selection in selections:
                influxql = grafana_data.expand(query.query, selection)
                series = influx.query(influxql)  # raises InfluxRejected on invalid InfluxQL
                answered += _has_values(series)
            assert answered, (
                f"{query.dashboard} / {query.panel}: no data for any of {len(selections)} "
                f"variable selections: {query.query}"
            )
            checked += 1
    assert checked >= 40  # guards against queries silently dropping out of panel_queries


def test_machine_detail_reads_the_selected_machine(
    grafana_data: KnownData, influx: InfluxClient, boards: dict[str, dict[str, Any]]
) -> None:
    state = next(q for q in panel_queries(boards["machine-detail"]) if q.panel == "State now")
    for machine, final in FINAL_STATE.items():
        variables = {"site": grafana_data.machines[machine], "machine": machine}
        series = influx.query(grafana_data.expand(state.query, variables))
        assert series[0].values[-1][1] == final


def test_overview_counts_machines_and_energy(
    grafana_data: KnownData, influx: InfluxClient, boards: dict[str, dict[str, Any]]
) -> None:
    everything = {"site": list(PLANT), "line": [line for lines in PLANT.values() for line in lines]}
    by_panel = {q.panel: q.query for q in panel_queries(boards["centre-overview"])}

    def value(panel: str) -> Any:
        return influx.query(grafana_data.expand(by_panel[panel], everything))[0].values[0][1]

    assert value("Machines reporting") == len(grafana_data.machines)
    assert value("Machines running") == len(grafana_data.machines) - len(FINAL_STATE)
    assert value("Alerts raised") == 2
    # Each machine's meter rises by 0.03 * (1 + phase/3) kWh a sample over 119 samples.
    expected = sum(0.03 * (1 + phase / 3) * (SAMPLES - 1) for phase in range(len(grafana_data.machines)))
    assert value("Energy used") == pytest.approx(expected, rel=1e-3)
    # A single site selected narrows every panel to it.
    one_site = {**everything, "site": ["uz-syrdarya"]}
    series = influx.query(grafana_data.expand(by_panel["Power per site"], one_site))
    assert [s.tags["site"] for s in series] == ["uz-syrdarya"]


#: Panels of platform health drawing counters per second, and the counters they draw.
RATE_PANELS = {
    "Messages received per second": ("messages_received",),
    "Messages acknowledged per second": ("messages_acked",),
    "Readings written per second": ("readings_written",),
    "Rejected per second": ("messages_rejected", "readings_rejected"),
    "Messages received again per second": ("messages_redelivered", "messages_replayed"),
    "Write retries per second": ("write_retries",),
}
#: Panels drawing the largest value of a gauge in each interval.
PEAK_PANELS = {
    "Window in use": "window_in_use",
    "Buffered points": "buffered_points",
    "Write latency": "write_seconds_last",
    "Sequence gaps": "seq_gaps",
}


def _by_client(series: list[Series]) -> dict[str, dict[str, list[Any]]]:
    """client id -> column -> the values that are not null, oldest first."""
    return {
        s.tags["client_id"]: {
            column: [row[i] for row in s.values if row[i] is not None]
            for i, column in enumerate(s.columns)
            if column != "time"
        }
        for s in series
    }


def _js_rename(transformation: Mapping[str, Any], name: str) -> str:
    """What Grafana's renameByRegex transformation makes of a field name (JavaScript's
    ``name.replace(new RegExp(regex), renamePattern)``, $1 being the first group)."""
    options = transformation["options"]
    return re.sub(options["regex"], re.sub(r"\$(\d)", r"\\\1", options["renamePattern"]), name, count=1)


def test_platform_health_reads_the_ingest_counters(
    grafana_data: KnownData, influx: InfluxClient, boards: dict[str, dict[str, Any]]
) -> None:
    board = boards["platform-health"]
    panels = {p["title"]: p for p in board["panels"]}
    by_panel = {q.panel: q.query for q in panel_queries(board)}
    every = {"client_id": sorted(INGEST_RATES)}
    assert _tag_values(influx.query(grafana_data.expand(by_panel["$client_id (variable)"], {}))) == sorted(INGEST_RATES)

    def read(panel: str, variables: Mapping[str, Any] = every, data: KnownData = grafana_data) -> Any:
        return _by_client(influx.query(data.expand(by_panel[panel], variables)))

    # Counters per second. The last interval of the graph may hold fewer health points than
    # the others, so its rate is only roughly right; the restart gives no value (not a negative one).
    assert set(RATE_PANELS) | set(PEAK_PANELS) | {"Last seen"} <= set(by_panel)
    for panel, counters in RATE_PANELS.items():
        rates = read(panel)
        assert set(rates) == set(INGEST_RATES), panel
        for client_id, columns in rates.items():
            for counter in counters:
                values = columns[counter]
                assert len(values) >= 10 and min(values) >= 0, (panel, client_id, values)
                expected = INGEST_RATES[client_id][counter]
                assert values[:-1] == pytest.approx([expected] * (len(values) - 1)), (panel, client_id, counter)
    for panel, gauge in PEAK_PANELS.items():
        for client_id, columns in read(panel).items():
            assert set(columns[gauge]) == {INGEST_GAUGES[client_id][gauge]}, (panel, client_id)

    # Rejections by reason: one column per rejected_<reason> field, renamed to the reason.
    by_reason = read("Rejected per second, by reason")
    [rename] = panels["Rejected per second, by reason"]["transformations"]
    for client_id, columns in by_reason.items():
        for column, values in columns.items():
            reason = _js_rename(rename, f"{client_id} {column}")
            assert reason.startswith(f"{client_id}: "), column
            field = "rejected_" + reason.removeprefix(f"{client_id}: ")
            if field in INGEST_RATES[client_id]:
                assert values[:-1] == pytest.approx([INGEST_RATES[client_id][field]] * (len(values) - 1)), column
            else:
                assert values == [], column  # a reason this process never had
    assert {c for columns in by_reason.values() for c in columns} == {
        "non_negative_derivative_" + f for rates in INGEST_RATES.values() for f in rates if f.startswith("rejected_")
    }
    last_point = {client_id: k for client_id, k, _ in _health_points(grafana_data.end_ms)}
    table = read("Rejected since start, by reason")
    renames = [t for t in panels["Rejected since start, by reason"]["transformations"] if t["id"] == "renameByRegex"]
    for client_id, columns in table.items():
        fields = _health_fields(client_id, last_point[client_id])
        expected = {k: v for k, v in fields.items() if k.startswith("rejected_")}
        got = {"rejected_" + _js_rename(renames[0], column): values for column, values in columns.items() if values}
        assert got == {k: [v] for k, v in expected.items()}, client_id

    # Last seen, at one-second intervals (the last hour's): the time range ends 1 s after the
    # last health point of birlik-ingest-1; birlik-ingest-2 stopped two minutes before that.
    last_seen = read("Last seen", data=KnownData(grafana_data.start_ms, grafana_data.end_ms, {}, interval="1s"))
    assert last_seen == {"birlik-ingest-1": {"last_seen": [1]}, "birlik-ingest-2": {"last_seen": [121]}}
    steps = panels["Last seen"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    colour = {
        client_id: [s["color"] for s in steps if s["value"] is None or s["value"] <= v["last_seen"][0]][-1]
        for client_id, v in last_seen.items()
    }
    assert colour == {"birlik-ingest-1": "green", "birlik-ingest-2": "red"}
    # At the graph's interval (30 s here) it is rounded to it.
    coarse = read("Last seen")
    assert coarse["birlik-ingest-1"]["last_seen"][0] in (0, 30)
    assert coarse["birlik-ingest-2"]["last_seen"][0] in (120, 150)

    # One process selected narrows every panel to it.
    one = {"client_id": ["birlik-ingest-2"]}
    for panel in (*RATE_PANELS, *PEAK_PANELS, "Last seen", "Rejected since start, by reason"):
        assert set(read(panel, one)) == {"birlik-ingest-2"}, panel


def test_every_ingest_counter_is_on_platform_health(boards: dict[str, dict[str, Any]]) -> None:
    """Every number the ingest writes in its health point is drawn, or left out for a reason."""
    from ingest.service import IngestStats

    left_out = {
        "readings_accepted": "readings_written says the same once they are stored",
        "points_written": "readings written, counted per sample",
        "batches_written": "write latency and retries say more",
        "left_in_broker": "only known when the process stops",
        "gateway_health_reports": "the reports themselves are in the gateway measurement",
    }
    written = {k for k, v in IngestStats().as_dict().items() if isinstance(v, int | float) and not isinstance(v, bool)}
    queried = set(re.findall(r'"(\w+)"', " ".join(q.query for q in panel_queries(boards["platform-health"]))))
    assert written - queried == set(left_out)
    assert "/^rejected_/" in " ".join(q.query for q in panel_queries(boards["platform-health"]))


# --- macros -----------------------------------------------------------------------------------


def test_expand_macros_like_grafana() -> None:
    query = (
        'SELECT MEAN("power") FROM "telemetry" WHERE $timeFilter AND "site" =~ /^$site$/ '
        'AND "machine" =~ /^${machine}$/ GROUP BY time($__interval) fill(none)'
    )
    expanded = expand_macros(
        query,
        start_ms=1000,
        end_ms=2000,
        interval="1m",
        variables={"site": ["kz-turkestan", "uz.syrdarya"], "machine": "rs-101"},
    )
    assert expanded == (
        'SELECT MEAN("power") FROM "telemetry" WHERE time >= 1000ms and time <= 2000ms AND '
        '"site" =~ /^(kz-turkestan|uz\\.syrdarya)$/ AND "machine" =~ /^rs-101$/ '
        "GROUP BY time(1m) fill(none)"
    )
    assert (
        expand_macros("$__interval_ms [[site]]", start_ms=0, end_ms=1, interval="2s", variables={"site": ["a"]})
        == "2000 a"
    )
    with pytest.raises(ValueError, match=r"\$sitee"):
        expand_macros("/^$sitee$/", start_ms=0, end_ms=1, variables={"site": "a"})


def test_panel_queries_lists_panels_and_variables(boards: dict[str, dict[str, Any]]) -> None:
    queries = panel_queries(boards["machine-detail"])
    assert queries[0] == grafana.PanelQuery(
        "Machine detail", "$site (variable)", 'SHOW TAG VALUES FROM "telemetry" WITH KEY = "site"'
    )
    assert queries[1].panel == "$machine (variable)"
    titles = {q.panel for q in queries}
    assert {
        "State now",
        "State over time",
        "Vibration",
        "Temperatures",
        "Anomaly score vs threshold",
        "Alerts",
    } <= titles
    # Panels inside a collapsed row are found too.
    collapsed = {
        "title": "t",
        "panels": [
            {"type": "row", "panels": [{"title": "inner", "targets": [{"refId": "A", "query": "SHOW MEASUREMENTS"}]}]}
        ],
    }
    assert panel_queries(collapsed) == [grafana.PanelQuery("t", "inner", "SHOW MEASUREMENTS")]


def test_every_panel_reads_the_provisioned_datasource(boards: dict[str, dict[str, Any]]) -> None:
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["title"]
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "influxdb", "uid": grafana.DATASOURCE_UID}
            for target in panel["targets"]:
                assert target["rawQuery"] is True and target["datasource"]["uid"] == grafana.DATASOURCE_UID
                assert "$timeFilter" in target["query"], f"{panel['title']}: unbounded query"


def test_dashboards_read_back_through_the_sdk(boards: dict[str, dict[str, Any]]) -> None:
    from grafana_foundation_sdk.models.dashboard import Dashboard

    for name, board in boards.items():
        parsed = Dashboard.from_json(board)
        targets = [t for p in parsed.panels if getattr(p, "targets", None) for t in p.targets]
        assert targets and all(isinstance(t, grafana.InfluxQLQuery) for t in targets), name
        assert grafana.dashboard_json(parsed) == board, name


# --- provisioning files -----------------------------------------------------------------------


def _run(argv: Sequence[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``birlik dashboards ...`` through the subcommand's own parser."""
    monkeypatch.delenv("BIRLIK_GRAFANA_INFLUX_URL", raising=False)
    monkeypatch.delenv("BIRLIK_GRAFANA_DATABASE", raising=False)
    parser = argparse.ArgumentParser(prog="birlik")
    grafana_cli.register(parser.add_subparsers(dest="command", required=True), common_options())
    args = parser.parse_args(["dashboards", *argv])
    result: int = args.func(args)
    return result


def test_committed_provisioning_is_up_to_date(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _run(["--check", "--out", str(PROVISIONING)], monkeypatch)
    assert status == 0, "grafana/provisioning is stale; run `birlik dashboards`:\n" + capsys.readouterr().err


def test_check_reports_stale_missing_and_foreign_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["--out", str(tmp_path)], monkeypatch) == 0
    assert _run(["--check", "--out", str(tmp_path)], monkeypatch) == 0
    overview = tmp_path / "dashboards" / "centre-overview.json"
    overview.write_text(overview.read_text().replace("Centre overview", "Centre overview (edited)"))
    (tmp_path / "dashboards" / "machine-detail.json").unlink()
    (tmp_path / "dashboards" / "old.json").write_text("{}")
    capsys.readouterr()
    assert _run(["--check", "--out", str(tmp_path)], monkeypatch) == 1
    err = capsys.readouterr().err
    assert "centre-overview.json: differs" in err
    assert "machine-detail.json: missing" in err
    assert "old.json: not generated" in err
    # Writing again repairs what the code generates (the foreign file is left to the user).
    assert _run(["--out", str(tmp_path)], monkeypatch) == 0
    assert "centre-overview.json" in capsys.readouterr().out


def test_datasource_file_points_at_influxql() -> None:
    data = yaml.safe_load((PROVISIONING / "datasources" / "birlik-influxdb.yaml").read_text())
    assert data["apiVersion"] == 1
    [source] = data["datasources"]
    assert source["type"] == "influxdb" and source["uid"] == grafana.DATASOURCE_UID
    assert source["url"] == "http://influxdb:8086" and source["access"] == "proxy"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["dbName"] == source["database"] == "birlik"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "birlik.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/provisioning/dashboards"
    for name in grafana.DASHBOARDS:
        assert json.loads((PROVISIONING / "dashboards" / f"{name}.json").read_text())["uid"].startswith("birlik-")


def test_datasource_options_and_token_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [
        "--out",
        str(tmp_path),
        "--influx-url",
        "https://influx.example:8086",
        "--database",
        "plant",
        "--influx-token-env",
        "INFLUX_TOKEN",
    ]
    assert _run(argv, monkeypatch) == 0
    [source] = yaml.safe_load((tmp_path / "datasources" / "birlik-influxdb.yaml").read_text())["datasources"]
    assert source["url"] == "https://influx.example:8086"
    assert source["jsonData"]["dbName"] == "plant"
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    # Grafana expands ${INFLUX_TOKEN} from its own environment: no secret is written.
    assert source["secureJsonData"]["httpHeaderValue1"] == "Token ${INFLUX_TOKEN}"


def test_selections_cover_every_machine(
    grafana_data: KnownData, influx: InfluxClient, boards: dict[str, dict[str, Any]]
) -> None:
    picked = [(s["site"], s["machine"]) for s in _selections(boards["machine-detail"], influx, grafana_data)]
    assert sorted(picked) == sorted((site, m) for m, site in grafana_data.machines.items())
    assert all(
        isinstance(v, list) for s in _selections(boards["centre-overview"], influx, grafana_data) for v in s.values()
    )
    assert list(itertools.islice(_selections(boards["predictive-maintenance"], influx, grafana_data), 2))
    assert list(_selections(boards["platform-health"], influx, grafana_data)) == [{"client_id": sorted(INGEST_RATES)}]


# --- after a short simulated run through the platform ------------------------------------------

SIM_PLANT = {
    "sample_interval": "5s",
    "sites": [
        {
            "id": site,
            "lines": [
                {
                    "id": f"line-{n}",
                    "tenant": tenant,
                    "machines": [
                        {
                            "id": f"pump-{n}",
                            "kind": "centrifugal_pump",
                            "faults": [{"type": "bearing_wear", "start": "15m", "failure": "55m"}],
                        },
                        {"id": f"comp-{n}", "kind": "air_compressor"},
                        {"id": f"rs-{n}", "kind": "spinning_frame", "params": {"doff_every_s": 1800}},
                        {"id": f"cv-{n}", "kind": "conveyor_drive"},
                    ],
                }
            ],
        }
        for n, (site, tenant) in enumerate((("kz-turkestan", "ontustik-textile"), ("uz-syrdarya", "sirdaryo-agro")), 1)
    ],
}


@pytest.mark.slow
async def test_every_query_returns_data_after_a_short_simulated_run(
    config: Config, influx: InfluxClient, boards: dict[str, dict[str, Any]]
) -> None:
    """Simulators -> gateway -> MQTT -> ingest -> InfluxDB -> analytics, then every panel."""
    import asyncio
    import time

    from analytics.alerts import LogChannel
    from analytics.detectors import DETECTORS
    from analytics.worker import AnalyticsWorker
    from birlik.plant import parse_plant
    from gateway.publisher import MqttPublisher
    from gateway.service import Clock, run_gateway
    from simulators.driver import SimulatorDriver
    from tests.helpers import running_ingest, wait_for

    def health_points() -> int:
        series = influx.query(f'SELECT COUNT("messages_received") FROM "{INGEST}"')
        return int(series[0].values[0][1]) if series else 0

    plant = parse_plant(SIM_PLANT, "grafana-test-plant")
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - 70 * 60 * 1000
    config.ingest.health_interval_s = 0.1  # health points for platform health, at the wall clock's time
    async with running_ingest(config, machines=plant.registry()) as ingest:
        driver = SimulatorDriver(plant, seed=5, start_ms=start_ms)
        publisher = MqttPublisher(config.mqtt, client_id=f"gw-grafana-{config.influx.database}")
        publisher.connect()
        try:
            await asyncio.to_thread(
                run_gateway, "gw-grafana", driver, publisher, Clock(start_ms, 0), end_ms=end_ms, batch=20
            )
        finally:
            publisher.close()
        await wait_for(lambda: ingest.stats.readings_written >= publisher.stats.readings)
        await wait_for(lambda: health_points() >= 5)
    health = KnownData(end_ms, int(time.time() * 1000), {}, interval="100ms")
    from analytics.alarmservice import AlarmService, InfluxAlarmChannel
    from analytics.alarmstore import AlarmStore

    config.alarms.store = str(Path(config.ingest.dead_letters).parent / "alarms.sqlite")
    alarms = AlarmService(config.alarms, AlarmStore(config.alarms.store), [InfluxAlarmChannel(influx)])
    worker = AnalyticsWorker(
        influx,
        config.analytics,
        detector_factory=DETECTORS["zscore"],
        channels=[LogChannel()],
        since_ms=start_ms,
        alarms=alarms,
    )
    stats = worker.run(once=True)
    alarms.close(drain_s=30)
    assert stats.alerts_raised >= 2  # the two pumps' bearings

    run = KnownData(start_ms, end_ms, {m.id: m.path.site for m in plant.machines()})
    from birlik.signals import SIGNALS

    stored = {row[0] for row in influx.query('SHOW FIELD KEYS FROM "telemetry"')[0].values}
    counters = {row[0] for row in influx.query(f'SHOW FIELD KEYS FROM "{INGEST}"')[0].values}
    for name, board in boards.items():
        data = health if name == "platform-health" else run
        selections = list(_selections(board, influx, data))
        for query in panel_queries(board):
            signals = set(re.findall(r'"([a-z0-9_]+)"', query.query)) & SIGNALS.keys()
            if signals and not signals & stored:
                continue  # e.g. accel_rms: only replayed test beds report it (see the known-data test)
            if "/^rejected_/" in query.query and not any(c.startswith("rejected_") for c in counters):
                continue  # nothing was rejected in the run
            answered = sum(_has_values(influx.query(data.expand(query.query, s))) for s in selections)
            assert answered, f"{name} / {query.panel}: no data after a simulated run: {query.query}"


def test_every_gauge_of_the_catalogue_has_a_machine_detail_panel() -> None:
    from birlik.signals import SIGNALS
    from grafana._machine import GAUGE_GROUPS

    drawn = {signal for _, signals in GAUGE_GROUPS for signal in signals}
    assert drawn == {name for name, s in SIGNALS.items() if s.kind == "gauge"}
