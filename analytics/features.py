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

#: Square laws: a process variable and what drives it. A strainer's (or an orifice's)
#: pressure drop grows with the square of the flow through it, whatever the demand; the same
#: flow with a higher drop is fouling (a clogging suction strainer). Both signals go to the
#: detector, which scores the drop's excess over its learned square law and never the
#: driver itself (see :mod:`analytics.detectors.zscore`).
SQUARE_LAWS = {"differential_pressure": "flow"}
assert SIGNALS.keys() >= SQUARE_LAWS.keys() | set(SQUARE_LAWS.values())


def features(values: Mapping[str, Any]) -> dict[str, float] | None:
    """The condition signals of a sample taken while running (and the signals of a square law,
    :data:`SQUARE_LAWS`, both present), or None if it is not scored.

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
    for target, driver in SQUARE_LAWS.items():
        y, q = values.get(target), values.get(driver)
        if (type(y) is float or type(y) is int) and (type(q) is float or type(q) is int):  # not bools
            out[target], out[driver] = float(y), float(q)
    return out or None
