"""The signal catalogue: every signal a machine may report, with its unit, type and range.

One place decides what a reading of ``bearing_temp`` is: degrees Celsius, a float, between
-50 and 300. The gateway declares units with this catalogue, the ingest checks readings
against it, and the line-protocol encoder writes each signal with one InfluxDB field type
(gauges and running totals always as floats, counters always as integers, states as
strings), so a device that
sends ``12`` one day and ``12.0`` the next cannot cause a field-type conflict in the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SignalKind = Literal["gauge", "total", "counter", "state"]

#: Operating states a machine reports in its ``state`` signal.
MACHINE_STATES = ("running", "idle", "stopped", "changeover", "fault")


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    unit: str
    kind: SignalKind
    low: float
    high: float
    description: str

    @property
    def is_numeric(self) -> bool:
        return self.kind != "state"

    @property
    def is_cumulative(self) -> bool:
        """A running total (energy, production counts): it never decreases while healthy."""
        return self.kind in ("total", "counter")


_CATALOGUE = (
    Signal("state", "", "state", 0, 0, "operating state: " + ", ".join(MACHINE_STATES)),
    Signal("load", "%", "gauge", 0, 150, "load relative to rated load"),
    Signal("speed", "rpm", "gauge", 0, 40_000, "motor or shaft speed"),
    Signal("spindle_speed", "rpm", "gauge", 0, 40_000, "spindle speed (spinning frame)"),
    Signal("belt_speed", "m/s", "gauge", 0, 20, "belt speed (conveyor)"),
    Signal("motor_current", "A", "gauge", 0, 5_000, "motor phase current, RMS"),
    Signal("power", "kW", "gauge", 0, 10_000, "active electrical power"),
    Signal("energy", "kWh", "total", 0, 1e12, "cumulative active energy"),
    Signal("vibration_rms", "mm/s", "gauge", 0, 200, "vibration velocity, RMS (ISO 10816)"),
    Signal("bearing_temp", "degC", "gauge", -50, 300, "drive-end bearing temperature"),
    Signal("motor_temp", "degC", "gauge", -50, 300, "motor winding temperature"),
    Signal("oil_temp", "degC", "gauge", -50, 300, "lubricating oil temperature"),
    Signal("discharge_temp", "degC", "gauge", -50, 300, "discharge (outlet) temperature"),
    Signal("ambient_temp", "degC", "gauge", -60, 70, "ambient air temperature at the machine"),
    Signal("suction_pressure", "bar", "gauge", -1, 100, "suction (inlet) pressure, gauge"),
    Signal("discharge_pressure", "bar", "gauge", -1, 500, "discharge (outlet) pressure, gauge"),
    Signal("flow", "m3/h", "gauge", 0, 100_000, "volume flow"),
    Signal("differential_pressure", "bar", "gauge", -1, 50, "pressure drop across a filter or strainer"),
    Signal("melt_pressure", "bar", "gauge", 0, 1_000, "melt pressure at the extruder die"),
    Signal("barrel_temp", "degC", "gauge", -50, 400, "extruder barrel temperature"),
    Signal("fluid_temp", "degC", "gauge", -50, 300, "temperature of the pumped fluid"),
    Signal("voltage", "V", "gauge", 0, 1_000, "supply voltage, line to line"),
    Signal("accel_rms", "g", "gauge", 0, 50, "vibration acceleration, RMS"),
    Signal("accel2_rms", "g", "gauge", 0, 50, "vibration acceleration, RMS, second sensor"),
    Signal("count_good", "count", "counter", 0, 1e15, "cumulative good units produced"),
    Signal("count_scrap", "count", "counter", 0, 1e15, "cumulative scrap units"),
)

SIGNALS: dict[str, Signal] = {s.name: s for s in _CATALOGUE}

# Spellings devices commonly use for the catalogue's units; anything else is a wrong unit.
UNIT_ALIASES: dict[str, str] = {
    "°C": "degC",
    "C": "degC",
    "celsius": "degC",
    "mm/sec": "mm/s",
    "m³/h": "m3/h",
    "kw": "kW",
    "kwh": "kWh",
    "a": "A",
    "RPM": "rpm",
    "1/min": "rpm",
    "percent": "%",
    "pcs": "count",
    "units": "count",
}


def canonical_unit(unit: str) -> str:
    """The catalogue's spelling of ``unit`` (``"°C"`` -> ``"degC"``); unknown units unchanged."""
    return UNIT_ALIASES.get(unit, unit)
