"""A typed InfluxQL query for Grafana's InfluxDB data source, shaped like the SDK's own.

grafana-foundation-sdk ships dataquery types for Prometheus, Loki, TestData and others but
none for InfluxDB, so this module adds one the same way the SDK generates its own: a model
(:class:`InfluxQLQuery`, a ``cog`` Dataquery variant with ``to_json``/``from_json``) and a
builder (:class:`InfluxQL`, a ``cog`` Builder) that panels accept in ``with_target``.
Registering the variant lets the SDK read dashboards containing these queries back.

The JSON follows Grafana's ``InfluxQuery`` (public/app/plugins/datasource/influxdb/types.ts):
``query`` with ``rawQuery: true`` is the raw InfluxQL editor mode, ``resultFormat`` is
``time_series``, ``table`` or ``logs``, and ``alias`` names series (``$tag_machine``).

The small helpers at the end write the InfluxQL fragments every dashboard repeats.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

from birlik.influx import quote_ident

#: The data source the provisioning file creates and every panel refers to, by uid.
DATASOURCE_UID = "birlik-influxdb"
DATASOURCE_NAME = "birlik InfluxDB"
DATASOURCE_TYPE = "influxdb"

ResultFormat = Literal["time_series", "table", "logs"]


def datasource_ref() -> dashboard.DataSourceRef:
    return dashboard.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


# mypy sees the SDK as Any (pyproject skips following it), hence the ignores on subclassing.
class InfluxQLQuery(cogvariants.Dataquery):  # type: ignore[misc]
    """One raw InfluxQL target of a panel."""

    def __init__(
        self,
        query: str = "",
        *,
        ref_id: str = "",
        alias: str | None = None,
        result_format: ResultFormat = "time_series",
        hide: bool | None = None,
        datasource: dashboard.DataSourceRef | None = None,
    ) -> None:
        self.query = query
        self.ref_id = ref_id
        self.alias = alias
        self.result_format: ResultFormat = result_format
        self.hide = hide
        self.datasource = datasource

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {
            "refId": self.ref_id,
            "query": self.query,
            "rawQuery": True,
            "resultFormat": self.result_format,
        }
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.hide is not None:
            payload["hide"] = self.hide
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        datasource = data.get("datasource")
        return cls(
            str(data.get("query", "")),
            ref_id=str(data.get("refId", "")),
            alias=data.get("alias"),
            result_format=data.get("resultFormat", "time_series"),
            hide=data.get("hide"),
            datasource=dashboard.DataSourceRef.from_json(datasource) if isinstance(datasource, dict) else None,
        )


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):  # type: ignore[misc]
    """Builder for :class:`InfluxQLQuery`: ``InfluxQL('SELECT ...').alias('$tag_machine')``.

    The data source defaults to the provisioned one, so a panel needs nothing else.
    """

    def __init__(self, query: str = "") -> None:
        self._internal = InfluxQLQuery(query, datasource=datasource_ref())

    def build(self) -> InfluxQLQuery:
        return self._internal

    def query(self, query: str) -> Self:
        self._internal.query = query
        return self

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def alias(self, alias: str) -> Self:
        """Series name; Grafana fills in ``$tag_<key>``, ``$col`` and ``$m``."""
        self._internal.alias = alias
        return self

    def result_format(self, result_format: ResultFormat) -> Self:
        self._internal.result_format = result_format
        return self

    def table(self) -> Self:
        return self.result_format("table")

    def hide(self, hide: bool) -> Self:
        self._internal.hide = hide
        return self

    def datasource(self, datasource: dashboard.DataSourceRef) -> Self:
        self._internal.datasource = datasource
        return self


def variant_config() -> cogruntime.DataqueryConfig:
    return cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE, from_json_hook=InfluxQLQuery.from_json)


cogruntime.register_dataquery_variant(variant_config())


# --- InfluxQL fragments ---------------------------------------------------------------------


def matches(tag: str, variable: str) -> str:
    """``"site" =~ /^$site$/``: the tag equals the variable's value, or one of its values
    when several (or All) are selected - Grafana then writes ``(a|b)`` into the regex."""
    return f"{quote_ident(tag)} =~ /^${variable}$/"


def where(*conditions: str) -> str:
    """``WHERE $timeFilter AND ...``: every panel query is bounded by the dashboard's range."""
    return "WHERE " + " AND ".join(("$timeFilter", *conditions))


def group_by(*tags: str, interval: bool = True, fill: str | None = "none") -> str:
    """``GROUP BY time($__interval), "tag" fill(none)``; ``interval=False`` for no time buckets."""
    parts = (["time($__interval)"] if interval else []) + [quote_ident(t) for t in tags]
    clause = "GROUP BY " + ", ".join(parts) if parts else ""
    if fill is not None and interval:
        clause += f" fill({fill})"
    return clause


def mean(field: str, alias: str | None = None) -> str:
    return f"MEAN({quote_ident(field)}) AS {quote_ident(alias or field)}"


def maximum(field: str, alias: str | None = None) -> str:
    return f"MAX({quote_ident(field)}) AS {quote_ident(alias or field)}"


def per_second(field: str, alias: str | None = None) -> str:
    """The rate of a counter that only rises: its increase per second between intervals. A
    counter that starts again from zero (the process restarted) gives no value at that point."""
    return f"NON_NEGATIVE_DERIVATIVE(LAST({quote_ident(field)}), 1s) AS {quote_ident(alias or field)}"
