"""From a machine's readings to the features a detector scores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from birlik.signals import SIGNALS

_SCORED = frozenset(name for name, s in SIGNALS.items() if s.kind == "gauge" and name not in ("ambient_temp",))


def features(values: Mapping[str, Any]) -> dict[str, float] | None:
    """The numeric gauges of a sample taken while running, or None if it is not scored.

    Running totals and counters are left out (they only grow), and so are samples in any
    state but ``running``: idle and stopped machines are not compared with running ones.
    Temperatures become rises over the ambient temperature when it is reported, so a hot
    afternoon in Turkestan is not taken for an overheating bearing.
    """
    state = values.get("state")
    if state is not None and state != "running":
        return None
    ambient = values.get("ambient_temp")
    out: dict[str, float] = {}
    for name, value in values.items():
        if name not in _SCORED or value is None or isinstance(value, str | bool):
            continue
        if ambient is not None and name.endswith("_temp"):
            out[name] = float(value) - float(ambient)
        else:
            out[name] = float(value)
    return out or None
