"""Centre overview: every site and line of the centre on one screen.

For the shift supervisor: how many machines run, which are stopped or in fault, how much
power each site draws and how much energy each line used, which machines vibrate most,
and the alerts analytics raised. The site and line selectors filter every panel.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from birlik.schema import ALERT, ANOMALY, TELEMETRY
from grafana._influxql import InfluxQL, group_by, matches, where
from grafana._panels import (
    ALERT_STEPS,
    ANOMALOUS,
    RAISED,
    VIBRATION_STEPS,
    bar_gauge,
    dashboard_skeleton,
    finish,
    pie,
    query_variable,
    row,
    stat_panel,
    state_timeline,
    table_panel,
    time_series,
    transformation,
)

UID = "birlik-centre-overview"
TITLE = "Centre overview"

_SELECTED = (matches("site", "site"), matches("line", "line"))

# The latest state of each machine in the range; the stats and the pie chart count these.
_LATEST_STATE = (
    f'SELECT LAST("state") AS "state" FROM "{TELEMETRY}" {where(*_SELECTED)} GROUP BY "site", "line", "machine"'
)


def centre_overview() -> models.Dashboard:
    """The "Centre overview" dashboard."""
    return finish(
        dashboard_skeleton(
            UID,
            TITLE,
            "All sites and lines: machine states, power and energy, vibration, alerts.",
        )
        .with_variable(
            query_variable(
                "site", "Site", f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "site"', multi=True, include_all=True
            )
        )
        .with_variable(
            query_variable(
                "line",
                "Line",
                f'SHOW TAG VALUES FROM "{TELEMETRY}" WITH KEY = "line" WHERE {matches("site", "site")}',
                multi=True,
                include_all=True,
            )
        )
        .with_row(row("Machines"))
        .with_panel(
            stat_panel(
                "Machines reporting",
                InfluxQL(f'SELECT COUNT("state") AS "machines" FROM ({_LATEST_STATE})'),
                description="Machines that sent at least one reading in the time range.",
                span=4,
            )
        )
        .with_panel(
            stat_panel(
                "Machines running",
                InfluxQL(f'SELECT COUNT("state") AS "machines" FROM ({_LATEST_STATE}) WHERE "state" = \'running\''),
                description="Machines whose latest reported state is 'running'.",
                span=4,
            )
        )
        .with_panel(
            stat_panel(
                "Alerts raised",
                InfluxQL(f'SELECT COUNT("id") AS "alerts" FROM "{ALERT}" {where(*_SELECTED, RAISED)}'),
                description="Alerts analytics raised in the time range (cleared ones included).",
                steps=ALERT_STEPS,
                span=4,
            )
        )
        .with_panel(
            stat_panel(
                "Anomalous samples",
                InfluxQL(f'SELECT COUNT("score") AS "samples" FROM "{ANOMALY}" {where(*_SELECTED, ANOMALOUS)}'),
                description="Scored samples above their detector's threshold in the time range.",
                span=4,
            )
        )
        .with_panel(
            stat_panel(
                "Energy used",
                InfluxQL(
                    'SELECT SUM("spread") AS "energy" FROM '
                    f'(SELECT SPREAD("energy") FROM "{TELEMETRY}" {where(*_SELECTED)} '
                    'GROUP BY "machine")'
                ),
                description="Sum over machines of the energy meter's increase in the time range.",
                unit="kwatth",
                span=4,
            )
        )
        .with_panel(
            stat_panel(
                "Power now",
                InfluxQL(
                    'SELECT SUM("power") AS "power" FROM '
                    f'(SELECT LAST("power") AS "power" FROM "{TELEMETRY}" {where(*_SELECTED)} '
                    'GROUP BY "machine")'
                ),
                description="Sum of each machine's latest active power reading.",
                unit="kwatt",
                span=4,
            )
        )
        .with_panel(
            table_panel(
                "Machine states (latest)",
                InfluxQL(_LATEST_STATE),
                description="Latest reported state of every machine, by site and line.",
                state_column=True,
                span=16,
                height=9,
            )
        )
        .with_panel(
            pie(
                "Machines by state",
                InfluxQL(_LATEST_STATE),
                description="How many machines are in each state (latest reading).",
                transformations=[
                    transformation(
                        "groupBy",
                        {
                            "fields": {
                                "state": {"aggregations": [], "operation": "groupby"},
                                "machine": {"aggregations": ["count"], "operation": "aggregate"},
                            }
                        },
                    )
                ],
                span=8,
                height=9,
            )
        )
        .with_panel(
            state_timeline(
                "State of every machine",
                InfluxQL(
                    f'SELECT LAST("state") AS "state" FROM "{TELEMETRY}" {where(*_SELECTED)} '
                    + group_by("machine", fill="previous")
                ).alias("$tag_machine"),
                height=10,
            )
        )
        .with_row(row("Power and energy"))
        .with_panel(
            time_series(
                "Power per site",
                InfluxQL(
                    'SELECT SUM("power") AS "power" FROM '
                    f'(SELECT MEAN("power") AS "power" FROM "{TELEMETRY}" {where(*_SELECTED)} '
                    f"{group_by('site', 'machine')}) "
                    f"{where()} {group_by('site')}"
                ).alias("$tag_site"),
                description="Active power drawn by the selected machines of each site.",
                unit="kwatt",
            )
        )
        .with_panel(
            bar_gauge(
                "Energy used per line",
                InfluxQL(
                    'SELECT SUM("spread") AS "energy" FROM '
                    f'(SELECT SPREAD("energy") FROM "{TELEMETRY}" {where(*_SELECTED)} '
                    'GROUP BY "site", "line", "machine") GROUP BY "site", "line"'
                ).alias("$tag_site / $tag_line"),
                description="Energy meter increase in the time range, summed per line.",
                unit="kwatth",
            )
        )
        .with_row(row("Condition"))
        .with_panel(
            time_series(
                "Vibration, all machines",
                InfluxQL(
                    f'SELECT MEAN("vibration_rms") AS "vibration_rms" FROM "{TELEMETRY}" '
                    f"{where(*_SELECTED)} {group_by('machine')}"
                ).alias("$tag_machine"),
                description="Vibration velocity RMS (ISO 10816). Above 2.8 mm/s: plan an "
                "inspection; above 4.5 mm/s: damage may occur.",
                unit="suffix: mm/s",
                steps=VIBRATION_STEPS,
            )
        )
        .with_panel(
            time_series(
                "Bearing temperature, all machines",
                InfluxQL(
                    f'SELECT MEAN("bearing_temp") AS "bearing_temp" FROM "{TELEMETRY}" '
                    f"{where(*_SELECTED)} {group_by('machine')}"
                ).alias("$tag_machine"),
                unit="celsius",
            )
        )
        .with_panel(
            table_panel(
                "Recent alerts",
                InfluxQL(
                    'SELECT "site", "line", "machine", "severity", "state", "detector", "signal", '
                    f'"message", "score" FROM "{ALERT}" {where(*_SELECTED)} ORDER BY time DESC LIMIT 100'
                ),
                description="Alert transitions (raised, cleared), newest first.",
                span=24,
                height=9,
            )
        )
    )
