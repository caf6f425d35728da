"""Machine detail: one machine, every signal it reports, its state, anomaly score and alerts.

For the maintenance engineer looking into one asset: pick the site and the machine at the
top. Signals are grouped by what they measure, with units from the signal catalogue;
a panel stays empty ("No data") for signals the machine's kind does not report, e.g. flow
on a conveyor drive.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, timeseries
from grafana_foundation_sdk.models import dashboard as models

from birlik.influx import quote_ident
from birlik.schema import ALERT, ANOMALY, TELEMETRY
from birlik.signals import SIGNALS
from grafana._influxql import InfluxQL, group_by, matches, mean, where
from grafana._panels import (
    ANOMALOUS,
    VIBRATION_STEPS,
    dashboard_skeleton,
    finish,
    query_variable,
    row,
    stat_panel,
    state_mappings,
    state_timeline,
    table_panel,
    time_series,
)

UID = "birlik-machine-detail"
TITLE = "Machine detail"

_THIS_MACHINE = (matches("site", "site"), matches("machine", "machine"))

#: Grafana unit ids for the catalogue's units ("suffix:" where Grafana has none).
GRAFANA_UNITS = {
    "degC": "celsius",
    "mm/s": "suffix: mm/s",
    "A": "amp",
    "kW": "kwatt",
    "kWh": "kwatth",
    "rpm": "rotrpm",
    "m/s": "velocityms",
    "bar": "pressurebar",
    "m3/h": "suffix: m³/h",
    "%": "percent",
    "count": "short",
    "g": "suffix: g",
    "V": "volt",
}

#: Gauge panels: title and the signals drawn together (they share a unit).
GAUGE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Vibration", ("vibration_rms",)),
    ("Vibration acceleration", ("accel_rms", "accel2_rms")),
    ("Temperatures", ("bearing_temp", "motor_temp", "oil_temp", "discharge_temp", "fluid_temp", "ambient_temp")),
    ("Barrel temperature", ("barrel_temp",)),
    ("Motor current", ("motor_current",)),
    ("Voltage", ("voltage",)),
    ("Power", ("power",)),
    ("Load", ("load",)),
    ("Speed", ("speed", "spindle_speed")),
    ("Belt speed", ("belt_speed",)),
    ("Pressures", ("suction_pressure", "discharge_pressure", "differential_pressure")),
    ("Melt pressure", ("melt_pressure",)),
    ("Flow", ("flow",)),
)


def _unit(signal: str) -> str:
    return GRAFANA_UNITS.get(SIGNALS[signal].unit, "")


def _gauge_panel(title: str, signals: tuple[str, ...]) -> timeseries.Panel:
    units = {SIGNALS[s].unit for s in signals}
    assert len(units) == 1, f"{title}: signals of one panel share a unit, got {units}"
    select = ", ".join(mean(s) for s in signals)
    return time_series(
        title,
        InfluxQL(f'SELECT {select} FROM "{TELEMETRY}" {where(*_THIS_MACHINE)} {group_by()}').alias("$col"),
        description="; ".join(f"{s}: {SIGNALS[s].description}" for s in signals),
        unit=_unit(signals[0]),
        steps=VIBRATION_STEPS if signals == ("vibration_rms",) else None,
        span=12,
    )


def _per_interval(*signals: str) -> str:
    """Increase of cumulative signals (meters, counters) per time bucket."""
    return ", ".join(f"NON_NEGATIVE_DIFFERENCE(LAST({quote_ident(s)})) AS {quote_ident(s)}" for s in signals)


def machine_detail() -> models.Dashboard:
    """The "Machine detail" dashboard."""
    board = (
        dashboard_skeleton(
            UID,
            TITLE,
            "One machine: current values, state over time, every signal, anomaly score and alerts.",
        )
        .with_variable(query_variable("site", "Site", f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "site"'))
        .with_variable(
            query_variable(
                "machine",
                "Machine",
                f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "machine" WHERE {matches("site", "site")}',
            )
        )
        .with_row(row("Now"))
        .with_panel(
            stat_panel(
                "State now",
                InfluxQL(f'SELECT LAST("state") AS "state" FROM "{TELEMETRY}" {where(*_THIS_MACHINE)}'),
                span=6,
            )
            .mappings(state_mappings())
            .reduce_options(_last_text())
        )
        .with_panel(
            stat_panel(
                "Power now",
                InfluxQL(f'SELECT LAST("power") AS "power" FROM "{TELEMETRY}" {where(*_THIS_MACHINE)}'),
                unit="kwatt",
                span=6,
            )
        )
        .with_panel(
            stat_panel(
                "Vibration now",
                InfluxQL(f'SELECT LAST("vibration_rms") AS "vibration_rms" FROM "{TELEMETRY}" {where(*_THIS_MACHINE)}'),
                unit="suffix: mm/s",
                steps=VIBRATION_STEPS,
                span=6,
            )
        )
        .with_panel(
            stat_panel(
                "Bearing temperature now",
                InfluxQL(f'SELECT LAST("bearing_temp") AS "bearing_temp" FROM "{TELEMETRY}" {where(*_THIS_MACHINE)}'),
                unit="celsius",
                span=6,
            )
        )
        .with_panel(
            state_timeline(
                "State over time",
                InfluxQL(
                    f'SELECT LAST("state") AS "state" FROM "{TELEMETRY}" {where(*_THIS_MACHINE)} '
                    + group_by(fill="previous")
                ).alias("$tag_machine"),
                height=4,
            )
        )
        .with_row(row("Signals"))
    )
    for title, signals in GAUGE_GROUPS:
        board.with_panel(_gauge_panel(title, signals))
    return finish(
        board.with_panel(
            time_series(
                "Energy per interval",
                InfluxQL(
                    f'SELECT {_per_interval("energy")} FROM "{TELEMETRY}" {where(*_THIS_MACHINE)} {group_by()}'
                ).alias("$col"),
                description="Energy meter increase in each interval of the graph.",
                unit="kwatth",
            )
        )
        .with_panel(
            time_series(
                "Production per interval",
                InfluxQL(
                    f'SELECT {_per_interval("count_good", "count_scrap")} FROM "{TELEMETRY}" '
                    f"{where(*_THIS_MACHINE)} {group_by()}"
                ).alias("$col"),
                description="Good and scrap units produced in each interval (spinning frames, conveyors).",
                unit="short",
            )
        )
        .with_row(row("Condition monitoring"))
        .with_panel(
            time_series(
                "Anomaly score vs threshold",
                InfluxQL(
                    'SELECT MAX("score") AS "score", LAST("threshold") AS "threshold" '
                    f'FROM "{ANOMALY}" {where(*_THIS_MACHINE)} {group_by("detector")}'
                ).alias("$tag_detector $col"),
                description="Largest anomaly score in each interval and the detector's threshold: "
                "a score above the threshold marks the sample anomalous; several in a row raise an alert.",
                span=24,
            )
        )
        .with_panel(
            table_panel(
                "Anomalous samples",
                InfluxQL(
                    'SELECT "detector", "signal", "score", "threshold" '
                    f'FROM "{ANOMALY}" {where(*_THIS_MACHINE, ANOMALOUS)} ORDER BY time DESC LIMIT 100'
                ),
                description="Samples above threshold, newest first, with the signal that contributed most.",
            )
        )
        .with_panel(
            table_panel(
                "Alerts",
                InfluxQL(
                    'SELECT "severity", "state", "detector", "signal", "message", "score", "id" '
                    f'FROM "{ALERT}" {where(*_THIS_MACHINE)} ORDER BY time DESC LIMIT 100'
                ),
                description="This machine's alert transitions (raised, cleared), newest first.",
            )
        )
    )


def _last_text() -> common.ReduceDataOptions:
    """Reduce to the last value, text included (the state is a string)."""
    return common.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields("/.*/")
