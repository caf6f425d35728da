"""From a machine's readings to the features a detector scores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from birlik.signals import SIGNALS

#: Condition signals: what degrades when a machine does. Process variables (load, flow,
#: pressures, power, speed) follow production, not health; scoring them here would alarm on
#: every change of demand. A per-machine multivariate model can relate the two later.
CONDITION_SIGNALS = frozenset(
    {"vibration_rms", "accel_rms", "accel2_rms", "bearing_temp", "motor_temp", "oil_temp", "discharge_temp"}
)
assert SIGNALS.keys() >= CONDITION_SIGNALS


def features(values: Mapping[str, Any]) -> dict[str, float] | None:
    """The condition signals of a sample taken while running, or None if it is not scored.

    Samples in any state but ``running`` are left out: idle and stopped machines are not
    compared with running ones. Temperatures become rises over the ambient temperature
    when it is reported, so a hot afternoon in Turkestan is not taken for an overheating
    bearing.
    """
    state = values.get("state")
    if state is not None and state != "running":
        return None
    ambient = values.get("ambient_temp")
    out: dict[str, float] = {}
    for name, value in values.items():
        if name not in CONDITION_SIGNALS or value is None or isinstance(value, str | bool):
            continue
        if ambient is not None and name.endswith("_temp"):
            out[name] = float(value) - float(ambient)
        else:
            out[name] = float(value)
    return out or None
