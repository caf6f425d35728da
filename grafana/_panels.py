"""Panel and dashboard building blocks the dashboards share.

Every panel reads the provisioned InfluxDB data source; targets get ref ids A, B, C... in
the order given. Colours and thresholds are chosen once here so a machine state or a
vibration level looks the same on every dashboard.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    piechart,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import piechart as piechart_models

from birlik.config import IngestConfig
from birlik.signals import MACHINE_STATES
from grafana._influxql import InfluxQL, datasource_ref

#: Tag on every dashboard of the platform; the dashboards link to each other through it.
TAG = "birlik"

STATE_COLOURS = {
    "running": "green",
    "idle": "blue",
    "stopped": "text",
    "changeover": "yellow",
    "fault": "red",
}
assert set(STATE_COLOURS) == set(MACHINE_STATES)

# ISO 10816-3, group 2 machines (15-300 kW) on rigid foundations: zone B/C 2.8 mm/s
# ("restricted long-term operation"), zone C/D 4.5 mm/s ("damage may occur").
VIBRATION_STEPS = ((None, "green"), (2.8, "yellow"), (4.5, "red"))
ALERT_STEPS = ((None, "green"), (1.0, "red"))
# An ingest process writes a health point every ingest.health_interval_s: seconds since its
# last one, yellow when three intervals passed without one, red after six.
_HEALTH_S = IngestConfig().health_interval_s
LAST_SEEN_STEPS = ((None, "green"), (3 * _HEALTH_S, "yellow"), (6 * _HEALTH_S, "red"))

#: InfluxQL conditions: alerts when raised, anomaly points above their threshold.
RAISED = "\"state\" = 'raised'"
ANOMALOUS = '"anomalous" = true'


def dashboard_skeleton(uid: str, title: str, description: str) -> dashboard.Dashboard:
    """A dashboard with the platform's defaults: last hour, 10 s refresh, read-only, links
    to the other birlik dashboards (keeping time range and variables)."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .time("now-1h", "now")
        .timezone("browser")
        .refresh("10s")
        .readonly()
        .timepicker(dashboard.TimePicker().refresh_intervals(["5s", "10s", "30s", "1m", "5m", "15m"]))
        .links(
            [
                dashboard.DashboardLink("birlik dashboards")
                .type(models.DashboardLinkType.DASHBOARDS)
                .tags([TAG])
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            ]
        )
    )


def finish(board: dashboard.Dashboard) -> models.Dashboard:
    """Build the dashboard and number its panels 1, 2, 3... (Grafana wants unique ids)."""
    built = board.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built


def row(title: str) -> dashboard.Row:
    return dashboard.Row(title)


def thresholds(steps: tuple[tuple[float | None, str], ...]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=colour) for value, colour in steps])
    )


def state_mappings() -> list[Any]:
    """Value mappings that colour each machine state."""
    return [
        models.ValueMap(
            options={
                state: models.ValueMappingResult(text=state, color=colour, index=i)
                for i, (state, colour) in enumerate(STATE_COLOURS.items())
            }
        )
    ]


def _place(panel: Any, title: str, description: str, targets: tuple[InfluxQL, ...], *, height: int, span: int) -> Any:
    panel.title(title).description(description).datasource(datasource_ref()).height(height).span(span)
    for index, target in enumerate(targets):
        panel.with_target(target.ref_id(chr(ord("A") + index)))
    return panel


def time_series(
    title: str,
    *targets: InfluxQL,
    description: str = "",
    unit: str = "",
    steps: tuple[tuple[float | None, str], ...] | None = None,
    height: int = 8,
    span: int = 12,
) -> timeseries.Panel:
    """A time series; ``steps`` draws threshold lines (and colours nothing else)."""
    panel = timeseries.Panel().unit(unit).line_width(1).fill_opacity(8).span_nulls(True)
    if steps:
        panel.thresholds(thresholds(steps)).thresholds_style(
            common.GraphThresholdsStyleConfig().mode(common_models.GraphTresholdsStyleMode.LINE)
        )
    panel.legend(
        common.VizLegendOptions()
        .display_mode(common_models.LegendDisplayMode.LIST)
        .placement(common_models.LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    return _place(panel, title, description, targets, height=height, span=span)


def stat_panel(
    title: str,
    *targets: InfluxQL,
    description: str = "",
    unit: str = "",
    steps: tuple[tuple[float | None, str], ...] | None = None,
    height: int = 4,
    span: int = 6,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .unit(unit)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .color_mode(common_models.BigValueColorMode.BACKGROUND if steps else common_models.BigValueColorMode.VALUE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if steps:
        panel.thresholds(thresholds(steps))
    return _place(panel, title, description, targets, height=height, span=span)


def bar_gauge(
    title: str, *targets: InfluxQL, description: str = "", unit: str = "", height: int = 8, span: int = 12
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .unit(unit)
        .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
        .orientation(common_models.VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return _place(panel, title, description, targets, height=height, span=span)


def table_panel(
    title: str, *targets: InfluxQL, description: str = "", height: int = 8, span: int = 12, state_column: bool = False
) -> table.Panel:
    panel = table.Panel()
    if state_column:
        panel.mappings(state_mappings())
    return _place(panel, title, description, tuple(t.table() for t in targets), height=height, span=span)


def state_timeline(
    title: str, *targets: InfluxQL, description: str = "", height: int = 8, span: int = 24
) -> statetimeline.Panel:
    panel = (
        statetimeline.Panel()
        .mappings(state_mappings())
        .show_value(common_models.VisibilityMode.NEVER)
        .merge_values(True)
        .row_height(0.8)
    )
    return _place(panel, title, description, targets, height=height, span=span)


def pie(
    title: str,
    *targets: InfluxQL,
    description: str = "",
    transformations: list[Any] | None = None,
    height: int = 8,
    span: int = 6,
) -> piechart.Panel:
    panel = (
        piechart.Panel()
        .pie_type(piechart_models.PieChartType.DONUT)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(True))
        .mappings(state_mappings())
        .legend(
            piechart.PieChartLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.RIGHT)
            .values([piechart_models.PieChartLegendValues.VALUE])
        )
    )
    for transformation in transformations or []:
        panel.with_transformation(transformation)
    return _place(panel, title, description, tuple(t.table() for t in targets), height=height, span=span)


def transformation(id_val: str, options: dict[str, Any]) -> Any:
    return models.DataTransformerConfig(id_val=id_val, options=options)


def query_variable(
    name: str, label: str, query: str, *, multi: bool = False, include_all: bool = False
) -> dashboard.QueryVariable:
    """A variable filled from InfluxDB (``SHOW TAG VALUES ...``), refreshed on load."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(datasource_ref())
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
    )
