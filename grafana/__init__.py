"""Grafana dashboards as code, over the platform's InfluxDB.

Dashboards are built with grafana-foundation-sdk and written, with the data source and
the dashboard provider, as a provisioning tree by ``birlik dashboards``:

- :func:`centre_overview`, :func:`machine_detail`, :func:`predictive_maintenance`,
  :func:`platform_health`: the dashboards (SDK objects); :func:`dashboards` gives them as
  JSON data.
- :class:`InfluxQL` / :class:`InfluxQLQuery`: the typed InfluxQL target the SDK lacks.
- :func:`provisioning_files`, :func:`write_provisioning`, :func:`check_provisioning`: the
  provisioning tree, with :class:`ProvisioningOptions` for the data source's URL and database.
- :func:`panel_queries`, :func:`expand_macros`: every query of a dashboard, and Grafana's
  macros turned into runnable InfluxQL (the tests run each query against InfluxDB).

The names are imported on first use, so ``from grafana import cli`` (which ``birlik --help``
does) stays free of the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grafana._health import platform_health
    from grafana._influxql import DATASOURCE_UID, InfluxQL, InfluxQLQuery
    from grafana._machine import machine_detail
    from grafana._maintenance import predictive_maintenance
    from grafana._overview import centre_overview
    from grafana._provisioning import (
        DASHBOARDS,
        ProvisioningOptions,
        check_provisioning,
        dashboard_json,
        dashboards,
        provisioning_files,
        write_provisioning,
    )
    from grafana._queries import PanelQuery, expand_macros, format_value, panel_queries

_WHERE = {
    "DATASOURCE_UID": "_influxql",
    "InfluxQL": "_influxql",
    "InfluxQLQuery": "_influxql",
    "platform_health": "_health",
    "machine_detail": "_machine",
    "predictive_maintenance": "_maintenance",
    "centre_overview": "_overview",
    "DASHBOARDS": "_provisioning",
    "ProvisioningOptions": "_provisioning",
    "check_provisioning": "_provisioning",
    "dashboard_json": "_provisioning",
    "dashboards": "_provisioning",
    "provisioning_files": "_provisioning",
    "write_provisioning": "_provisioning",
    "PanelQuery": "_queries",
    "expand_macros": "_queries",
    "format_value": "_queries",
    "panel_queries": "_queries",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"grafana.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'grafana' has no attribute {name!r}")


__all__ = [
    "DASHBOARDS",
    "DATASOURCE_UID",
    "InfluxQL",
    "InfluxQLQuery",
    "PanelQuery",
    "ProvisioningOptions",
    "centre_overview",
    "check_provisioning",
    "dashboard_json",
    "dashboards",
    "expand_macros",
    "format_value",
    "machine_detail",
    "panel_queries",
    "platform_health",
    "predictive_maintenance",
    "provisioning_files",
    "write_provisioning",
]
