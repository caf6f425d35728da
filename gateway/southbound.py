"""What the PLC drivers (:mod:`gateway.opcua`, :mod:`gateway.modbus`) share.

* The driver file: a YAML document whose ``driver`` key (``opcua`` or ``modbus``) selects the
  driver, with the machines (tenant/site/line/machine path and kind, as in the plant file) and
  their signals. :func:`load_driver` reads it and builds the driver (``birlik gateway --driver``).
* Signal conversion: ``value = raw * scale + offset`` in the device's ``unit``, then converted to
  the catalogue's unit (:data:`UNIT_CONVERSIONS`), then checked: a value that is not a finite
  number or lies outside the catalogue's range is a counted, logged :class:`Rejections` entry.
* :class:`SampleBuffer`: a thread-safe buffer between a driver's I/O thread and ``poll()``, which
  groups the values of one machine with the same timestamp into one sample.
* :class:`Link`: the connection state, logged once per change, with the reconnect back-off.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from birlik.plant import Machine, PlantError, parse_duration
from birlik.signals import SIGNALS, canonical_unit
from birlik.topics import MachinePath, TopicError, check_name
from gateway.drivers import Reading

if TYPE_CHECKING:
    from birlik.payload import Value
    from gateway.modbus import ModbusDriver
    from gateway.opcua import OpcUaDriver

log = logging.getLogger("gateway.southbound")


class DriverConfigError(ValueError):
    """A driver file cannot be used; the message says where and why."""


#: Units a device may use, converted to the catalogue's: ``unit -> (catalogue unit, factor,
#: offset)``, catalogue value = value * factor + offset. Spellings of the catalogue's own units
#: (``°C``, ``RPM``, ...) are those of :data:`birlik.signals.UNIT_ALIASES`.
UNIT_CONVERSIONS: dict[str, tuple[str, float, float]] = {
    "degF": ("degC", 5 / 9, -32 * 5 / 9),
    "°F": ("degC", 5 / 9, -32 * 5 / 9),
    "K": ("degC", 1.0, -273.15),
    "Pa": ("bar", 1e-5, 0.0),
    "kPa": ("bar", 0.01, 0.0),
    "MPa": ("bar", 10.0, 0.0),
    "mbar": ("bar", 0.001, 0.0),
    "psi": ("bar", 0.0689475729, 0.0),
    "l/min": ("m3/h", 0.06, 0.0),
    "l/s": ("m3/h", 3.6, 0.0),
    "m3/min": ("m3/h", 60.0, 0.0),
    "m3/s": ("m3/h", 3600.0, 0.0),
    "W": ("kW", 0.001, 0.0),
    "MW": ("kW", 1000.0, 0.0),
    "Wh": ("kWh", 0.001, 0.0),
    "MWh": ("kWh", 1000.0, 0.0),
    "mA": ("A", 0.001, 0.0),
    "kA": ("A", 1000.0, 0.0),
    "mV": ("V", 0.001, 0.0),
    "kV": ("V", 1000.0, 0.0),
    "rad/s": ("rpm", 60 / (2 * math.pi), 0.0),
    "m/min": ("m/s", 1 / 60, 0.0),
    "in/s": ("mm/s", 25.4, 0.0),
    "m/s2": ("g", 1 / 9.80665, 0.0),
    "m/s²": ("g", 1 / 9.80665, 0.0),
}


@dataclass(frozen=True, slots=True)
class SignalConversion:
    """A device value as a catalogue signal: ``raw * scale + offset`` in ``unit``, then to the
    catalogue's unit."""

    signal: str
    scale: float = 1.0
    offset: float = 0.0
    #: The unit the device uses (default: the catalogue's).
    unit: str | None = None

    def __post_init__(self) -> None:
        spec = SIGNALS.get(self.signal)
        if spec is None or not spec.is_numeric or spec.kind == "counter":
            raise DriverConfigError(
                f"signal {self.signal!r}: not a numeric gauge or total of the signal catalogue (birlik/signals.py)"
            )
        if not (math.isfinite(self.scale) and math.isfinite(self.offset)):
            raise DriverConfigError(f"signal {self.signal!r}: scale and offset must be finite numbers")
        self.unit_factor()  # fail now

    def unit_factor(self) -> tuple[float, float]:
        """(factor, offset) from the device's unit to the catalogue's."""
        target = SIGNALS[self.signal].unit
        if self.unit is None or canonical_unit(self.unit) == target:
            return 1.0, 0.0
        conversion = UNIT_CONVERSIONS.get(self.unit)
        if conversion is None or conversion[0] != target:
            convertible = sorted(u for u, (t, _, _) in UNIT_CONVERSIONS.items() if t == target)
            raise DriverConfigError(
                f"signal {self.signal!r}: unit {self.unit!r} cannot be converted to the catalogue's {target!r}"
                + (f" (convertible: {', '.join(convertible)})" if convertible else "")
            )
        return conversion[1], conversion[2]

    def convert(self, raw: float) -> float:
        value = raw * self.scale + self.offset if (self.scale, self.offset) != (1.0, 0.0) else raw
        factor, offset = self.unit_factor()
        return value * factor + offset if (factor, offset) != (1.0, 0.0) else value

    def check(self, raw: Any) -> tuple[float | None, str]:
        """The catalogue value of ``raw``, or ``(None, reason)``."""
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return None, "not_a_number"
        try:
            value = self.convert(float(raw))
        except OverflowError:
            return None, "not_a_number"
        if not math.isfinite(value):
            return None, "not_finite"
        spec = SIGNALS[self.signal]
        if not spec.low <= value <= spec.high:
            return None, "out_of_range"
        return value, ""


class Rejections:
    """Counted device values that were not turned into readings, logged at most once per
    ``every_s`` per reason (with the count since the last line)."""

    def __init__(self, driver: str, every_s: float = 10.0) -> None:
        self.driver = driver
        self.every_s = every_s
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._last_log: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def reject(self, reason: str, detail: str) -> None:
        with self._lock:
            self.counts[reason] += 1
            self._unlogged[reason] += 1
            now = time.monotonic()
            if now - self._last_log.get(reason, -math.inf) < self.every_s:
                return
            self._last_log[reason] = now
            count, self._unlogged[reason] = self._unlogged[reason], 0
        log.warning("%s: rejected %d value(s) (%s), e.g. %s", self.driver, count, reason, detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Link:
    """A device connection's state: logged once per change, counted, and the back-off between
    reconnect attempts (doubling from ``min_s`` to ``max_s``, reset by a good connection)."""

    def __init__(self, driver: str, target: str, min_s: float, max_s: float) -> None:
        self.driver = driver
        self.target = target
        self.min_s = min_s
        self.max_s = max_s
        self.connected = False
        self.connects = 0
        self.losses = 0
        self.failed_attempts = 0
        self.lost_at_ms: int | None = None
        self._announced: bool | None = None
        self._delay = min_s

    def up(self, detail: str = "") -> None:
        self.connected = True
        self.connects += 1
        self._delay = self.min_s
        if self._announced is not True:
            log.info("%s: connected to %s%s", self.driver, self.target, f" ({detail})" if detail else "")
            self._announced = True

    def down(self, reason: object) -> None:
        """A connection attempt failed or an established connection was lost."""
        if self.connected:
            self.losses += 1
            self.lost_at_ms = int(time.time() * 1000)
        else:
            self.failed_attempts += 1
        self.connected = False
        if self._announced is not False:
            log.warning(
                "%s: %s %s: %s; retrying with back-off (%g s .. %g s)",
                self.driver,
                "lost the connection to" if self._announced else "cannot connect to",
                self.target,
                str(reason) or type(reason).__name__,
                self.min_s,
                self.max_s,
            )
            self._announced = False

    def next_delay(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.max_s)
        return delay


@dataclass
class _Group:
    values: dict[str, Value] = field(default_factory=dict)
    updated: float = 0.0


class SampleBuffer:
    """Values from a driver's I/O thread, grouped per machine and timestamp until ``poll()``.

    A group is released once no value has joined it for ``settle_s`` (values of one sample
    arrive together, e.g. in one OPC UA publish response, and must not be split by a poll in
    between). ``add`` drops a repeat of a (machine, signal, timestamp) it has already seen
    recently (a server resends the current value after a re-subscription).
    """

    def __init__(self, settle_s: float = 0.1, remember: int = 64) -> None:
        self.settle_s = settle_s
        self.remember = remember
        self._lock = threading.Lock()
        self._groups: OrderedDict[tuple[Machine, int], _Group] = OrderedDict()
        self._seen: dict[tuple[Machine, str], OrderedDict[int, None]] = {}
        self.readings = 0
        self.duplicates = 0

    def add(self, machine: Machine, ts_ms: int, signal: str, value: Value) -> bool:
        with self._lock:
            return self._add(machine, ts_ms, signal, value)

    def _add(self, machine: Machine, ts_ms: int, signal: str, value: Value) -> bool:
        seen = self._seen.setdefault((machine, signal), OrderedDict())
        if ts_ms in seen:
            self.duplicates += 1
            return False
        seen[ts_ms] = None
        if len(seen) > self.remember:
            seen.popitem(last=False)
        group = self._groups.get((machine, ts_ms))
        if group is None:
            group = self._groups[(machine, ts_ms)] = _Group()
        group.values[signal] = value
        group.updated = time.monotonic()
        self.readings += 1
        return True

    def add_sample(self, machine: Machine, ts_ms: int, values: Mapping[str, Value]) -> None:
        """Several values of one machine at once (no poll can split them)."""
        with self._lock:
            for signal, value in values.items():
                self._add(machine, ts_ms, signal, value)

    def take(self, *, everything: bool = False) -> list[Reading]:
        """The settled samples (all of them with ``everything``), each machine's in time order."""
        now = time.monotonic()
        with self._lock:
            ready = [key for key, group in self._groups.items() if everything or now - group.updated >= self.settle_s]
            out = [(machine, ts, self._groups.pop((machine, ts)).values) for machine, ts in ready]
        out.sort(key=lambda r: r[1])
        return out


# --- the driver file ---------------------------------------------------------------------

DRIVERS = ("opcua", "modbus")


def load_driver(path: str | os.PathLike[str]) -> OpcUaDriver | ModbusDriver:
    """The driver described by a driver file (``driver: opcua`` or ``driver: modbus``)."""
    where = str(path)
    doc = read_yaml(path)
    kind = doc.get("driver")
    if kind == "opcua":
        from gateway.opcua import opcua_from_dict

        return opcua_from_dict(doc, where)
    if kind == "modbus":
        from gateway.modbus import modbus_from_dict

        return modbus_from_dict(doc, where)
    raise DriverConfigError(f"{where}: 'driver' must be one of {', '.join(DRIVERS)}, got {kind!r}")


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise DriverConfigError(f"{p}: no such driver file")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DriverConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise DriverConfigError(f"{p}: a driver file is a YAML mapping with 'driver' and 'machines'")
    return doc


def check_keys(section: Mapping[str, Any], where: str, known: set[str], required: Collection[str] = ()) -> None:
    unknown = set(section) - known
    if unknown:
        raise DriverConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    missing = set(required) - set(section)
    if missing:
        raise DriverConfigError(f"{where}: missing {', '.join(sorted(missing))}")


def section(doc: Mapping[str, Any], key: str, where: str, known: set[str]) -> Mapping[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise DriverConfigError(f"{where}: {key!r} must be a mapping with keys {sorted(known)}")
    check_keys(value, f"{where}: {key}", known)
    return value


def duration(value: Any, where: str, default: float, *, positive: bool = True) -> float:
    if value is None:
        return default
    try:
        seconds = parse_duration(value, where)
    except PlantError as exc:
        raise DriverConfigError(str(exc)) from None
    if positive and seconds <= 0:
        raise DriverConfigError(f"{where}: must be more than 0")
    return seconds


def number(value: Any, where: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DriverConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def integer(value: Any, where: str, low: int, high: int, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise DriverConfigError(f"{where}: expected an integer from {low} to {high}, got {value!r}")
    return value


@dataclass(frozen=True)
class Backoff:
    min_s: float
    max_s: float


def backoff(doc: Mapping[str, Any], where: str) -> Backoff:
    """``reconnect: {min: 1s, max: 60s}``."""
    sec = section(doc, "reconnect", where, {"min", "max"})
    low = duration(sec.get("min"), f"{where}: reconnect.min", 1.0)
    high = duration(sec.get("max"), f"{where}: reconnect.max", 60.0)
    if high < low:
        raise DriverConfigError(f"{where}: reconnect.max must not be less than reconnect.min")
    return Backoff(low, high)


def machines(
    doc: Mapping[str, Any],
    where: str,
    signal_keys: set[str],
    parse_signal: Callable[[str, Mapping[str, Any], str], Any],
    machine_keys: Collection[str] = (),
) -> list[tuple[Machine, dict[str, Any], dict[str, Any]]]:
    """The ``machines`` list: each one's :class:`Machine`, its signals parsed by
    ``parse_signal(signal, spec, where)``, and its entry (for driver-specific keys)."""
    entries = doc.get("machines")
    if not isinstance(entries, list) or not entries:
        raise DriverConfigError(f"{where}: 'machines' must be a non-empty list")
    out = []
    seen: set[MachinePath] = set()
    for i, entry in enumerate(entries):
        mw = f"{where}: machines[{i}]"
        if not isinstance(entry, dict):
            raise DriverConfigError(f"{mw}: must be a mapping with path, kind and signals")
        check_keys(entry, mw, {"path", "kind", "signals", *machine_keys}, {"path", "kind", "signals"})
        levels = str(entry["path"]).split("/")
        try:
            if len(levels) != 4:
                raise TopicError(f"path {entry['path']!r}: expected tenant/site/line/machine")
            path = MachinePath(*levels)
            kind = check_name("kind", str(entry["kind"]))
        except TopicError as exc:
            raise DriverConfigError(f"{mw}: {exc}") from None
        if path in seen:
            raise DriverConfigError(f"{mw}: machine {path} is listed twice")
        seen.add(path)
        mw = f"{where}: machine {path}"
        raw_signals = entry["signals"]
        if not isinstance(raw_signals, dict) or not raw_signals:
            raise DriverConfigError(f"{mw}: 'signals' must map catalogue signals to their sources")
        signals: dict[str, Any] = {}
        for name, spec in raw_signals.items():
            sw = f"{mw}: signals.{name}"
            if not isinstance(spec, dict):
                raise DriverConfigError(f"{sw}: must be a mapping")
            check_keys(spec, sw, signal_keys | {"scale", "offset", "unit"})
            signals[str(name)] = parse_signal(str(name), spec, sw)
        out.append((Machine(path.machine, kind, path), signals, entry))
    return out


def conversion(spec: Mapping[str, Any], where: str, signal: str) -> SignalConversion:
    try:
        return SignalConversion(
            signal,
            number(spec.get("scale"), f"{where}: scale", 1.0),
            number(spec.get("offset"), f"{where}: offset", 0.0),
            None if spec.get("unit") is None else str(spec["unit"]),
        )
    except DriverConfigError as exc:
        raise DriverConfigError(f"{where}: {exc}") from None
