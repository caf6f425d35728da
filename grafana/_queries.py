"""Read the queries back out of dashboard JSON, and turn Grafana's macros into runnable InfluxQL.

The tests use these to run every panel and variable query of the generated dashboards
against a real InfluxDB, the way Grafana would send them; an operator can use them to
paste a panel's query into the ``influx`` shell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple


class PanelQuery(NamedTuple):
    """One query of a dashboard: a panel target, or a template variable (``panel`` is then
    ``"$name (variable)"``)."""

    dashboard: str
    panel: str
    query: str


def _panels(panels: Sequence[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        yield panel
        # A collapsed row keeps its panels inside it.
        yield from _panels(panel.get("panels") or [])


def panel_queries(dashboard_json: Mapping[str, Any]) -> list[PanelQuery]:
    """Every panel target's query and every query variable's query, in dashboard order."""
    title = str(dashboard_json.get("title", ""))
    found: list[PanelQuery] = []
    for variable in (dashboard_json.get("templating") or {}).get("list") or []:
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, Mapping):  # newer Grafana stores {"query": "...", "refId": ...}
            query = query.get("query")
        if query:
            found.append(PanelQuery(title, f"${variable.get('name')} (variable)", str(query)))
    for panel in _panels(dashboard_json.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("query"):
                found.append(PanelQuery(title, str(panel.get("title", "")), str(target["query"])))
    return found


# Grafana's escapeRegex (@grafana/data): what the InfluxDB data source applies to each value
# of a multi-value or "All" variable before joining them as (a|b).
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_REFERENCE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")

VariableValue = str | Sequence[str]


def format_value(value: VariableValue) -> str:
    """A variable's value as the InfluxDB data source writes it into a raw query: a single-value
    variable (``str``) as is; a multi-value or All variable (a sequence) regex-escaped, and
    several values as ``(a|b)``, ready for ``=~ /^$var$/``."""
    if isinstance(value, str):
        return value
    escaped = [_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), v) for v in value]
    if not escaped:
        raise ValueError("a multi-value variable needs at least one value")
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def expand_macros(
    query: str,
    *,
    start_ms: int,
    end_ms: int,
    interval: str = "10s",
    interval_ms: int | None = None,
    variables: Mapping[str, VariableValue] | None = None,
) -> str:
    """``query`` with Grafana's macros and template variables replaced, as Grafana would send it.

    ``$timeFilter`` becomes ``time >= <start>ms and time <= <end>ms``; ``$__interval`` (and
    ``$interval``) the given interval, ``$__interval_ms`` the same in milliseconds;
    ``$__from``/``$__to`` the range in epoch ms. Variables may be written ``$name``,
    ``${name}`` or ``[[name]]``. A reference to anything unknown raises ``ValueError``, so a
    typo in a dashboard fails loudly instead of reaching InfluxDB.
    """
    builtins = {
        "timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
        "__timeFilter": f"time >= {start_ms}ms and time <= {end_ms}ms",
        "__interval": interval,
        "interval": interval,
        "__interval_ms": str(interval_ms if interval_ms is not None else _duration_ms(interval)),
        "__from": str(start_ms),
        "__to": str(end_ms),
    }
    values = variables or {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in builtins:
            return builtins[name]
        if name in values:
            return format_value(values[name])
        raise ValueError(f"unknown macro or variable ${name} in: {query}")

    return _REFERENCE.sub(replace, query)


_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _duration_ms(text: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w)", text)
    if not match:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]
