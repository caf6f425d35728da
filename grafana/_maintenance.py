"""Predictive maintenance: which machines drift away from their normal behaviour.

For the maintenance planner: the anomaly score of every machine relative to its detector's
threshold (1.0 = on the threshold, whatever the detector), where anomalies and alerts
accumulate, and the condition signals (vibration, temperatures) that usually explain them.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from birlik.schema import ALERT, ANOMALY, TELEMETRY
from grafana._influxql import InfluxQL, group_by, matches, where
from grafana._panels import (
    ANOMALOUS,
    RAISED,
    VIBRATION_STEPS,
    bar_gauge,
    dashboard_skeleton,
    finish,
    query_variable,
    row,
    table_panel,
    time_series,
)

UID = "birlik-predictive-maintenance"
TITLE = "Predictive maintenance"

_SELECTED = (matches("site", "site"), matches("kind", "kind"))


def _per_machine(field: str) -> InfluxQL:
    return InfluxQL(
        f'SELECT MEAN("{field}") AS "{field}" FROM "{TELEMETRY}" {where(*_SELECTED)} {group_by("machine")}'
    ).alias("$tag_machine")


def predictive_maintenance() -> models.Dashboard:
    """The "Predictive maintenance" dashboard."""
    return finish(
        dashboard_skeleton(
            UID,
            TITLE,
            "Anomaly scores of all machines, anomalies and alerts per machine, condition trends.",
        )
        .with_variable(
            query_variable(
                "site", "Site", f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "site"', multi=True, include_all=True
            )
        )
        .with_variable(
            query_variable(
                "kind",
                "Machine kind",
                f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "kind"',
                multi=True,
                include_all=True,
            )
        )
        .with_row(row("Anomaly scores"))
        .with_panel(
            time_series(
                "Score relative to threshold, all machines",
                InfluxQL(
                    'SELECT MAX("score") / MAX("threshold") AS "ratio" '
                    f'FROM "{ANOMALY}" {where(*_SELECTED)} {group_by("machine")}'
                ).alias("$tag_machine"),
                description="Largest anomaly score in each interval divided by the detector's threshold. "
                "Above 1.0 the sample is anomalous; a machine that stays above it raises an alert.",
                steps=((None, "green"), (1.0, "red")),
                span=24,
                height=9,
            )
        )
        .with_panel(
            bar_gauge(
                "Anomalous samples per machine",
                InfluxQL(
                    f'SELECT COUNT("score") AS "samples" FROM "{ANOMALY}" '
                    f'{where(*_SELECTED, ANOMALOUS)} GROUP BY "machine"'
                ).alias("$tag_machine"),
                description="Samples above threshold in the time range.",
            )
        )
        .with_panel(
            bar_gauge(
                "Alerts raised per machine",
                InfluxQL(
                    f'SELECT COUNT("id") AS "alerts" FROM "{ALERT}" {where(matches("site", "site"), RAISED)} '
                    'GROUP BY "machine"'
                ).alias("$tag_machine"),
                description="Alerts raised in the time range (the alert measurement has no kind tag, "
                "so only the site selector applies).",
            )
        )
        .with_row(row("Condition trends"))
        .with_panel(
            time_series("Vibration", _per_machine("vibration_rms"), unit="suffix: mm/s", steps=VIBRATION_STEPS, span=8)
        )
        .with_panel(time_series("Bearing temperature", _per_machine("bearing_temp"), unit="celsius", span=8))
        .with_panel(time_series("Motor temperature", _per_machine("motor_temp"), unit="celsius", span=8))
        .with_row(row("Alerts"))
        .with_panel(
            table_panel(
                "Alert history",
                InfluxQL(
                    'SELECT "site", "line", "machine", "severity", "state", "detector", "signal", '
                    f'"message", "score" FROM "{ALERT}" {where(matches("site", "site"))} '
                    "ORDER BY time DESC LIMIT 200"
                ),
                description="Every alert transition, newest first.",
                span=24,
                height=10,
            )
        )
    )
