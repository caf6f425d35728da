"""Predictive maintenance: which machines drift away from their normal behaviour.

For the maintenance planner: the anomaly score of every machine relative to its detector's
threshold (1.0 = on the threshold, whatever the detector), where anomalies and alerts
accumulate, and the condition signals (vibration, temperatures) that usually explain them.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from birlik.schema import ALARM, ALERT, ANOMALY, HEALTH, TELEMETRY
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
        .with_row(row("Health and remaining useful life"))
        .with_panel(
            time_series(
                "Health",
                InfluxQL(
                    f'SELECT MIN("health") AS "health" FROM "{HEALTH}" {where(*_SELECTED)} {group_by("machine")}'
                ).alias("$tag_machine"),
                description="Each machine's health, 1 healthy to 0 failed: its anomaly score as a share of the "
                "failure level (four times the alarm threshold), averaged over 10 minutes (analytics/rul.py).",
                steps=((None, "red"), (0.25, "orange"), (0.5, "green")),
                span=12,
            )
        )
        .with_panel(
            table_panel(
                "Remaining useful life",
                InfluxQL(
                    'SELECT LAST("rul_h") AS "hours left", LAST("rul_low_h") AS "at least", '
                    'LAST("rul_high_h") AS "at most", LAST("health") AS "health" '
                    f'FROM "{HEALTH}" {where(*_SELECTED)} GROUP BY "machine"'
                ),
                description="Machines whose health indicator rises: the hours until it reaches the failure level "
                "at its recent trend, with the band of that estimate. A straight line errs early on faults that "
                "accelerate. Machines that do not degrade are not listed.",
                span=12,
            )
        )
        .with_row(row("Condition trends"))
        .with_panel(
            time_series("Vibration", _per_machine("vibration_rms"), unit="suffix: mm/s", steps=VIBRATION_STEPS, span=8)
        )
        .with_panel(time_series("Bearing temperature", _per_machine("bearing_temp"), unit="celsius", span=8))
        .with_panel(time_series("Motor temperature", _per_machine("motor_temp"), unit="celsius", span=8))
        .with_row(row("Alarms"))
        .with_panel(
            table_panel(
                "Alarm history",
                InfluxQL(
                    'SELECT "site", "line", "machine", "kind", "priority", "state", "transition", "title", "text", '
                    f'"user", "comment" FROM "{ALARM}" {where(matches("site", "site"))} ORDER BY time DESC LIMIT 200'
                ),
                description="Every alarm transition (ISA-18.2: raised, acknowledged, returned, shelved, cleared...), "
                "newest first, with who acknowledged or shelved it and why. Act on alarms with 'birlik alarms'.",
                span=24,
                height=10,
            )
        )
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
