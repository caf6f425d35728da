"""The plant description: sites, lines and machines, read from a YAML file.

The contract part (which machines exist, where, of which kind) is used by every stage: the
gateway publishes for these machines, the ingest rejects machines that are not listed, the
dashboards group by site and line. Machine parameters and fault scenarios are kept as plain
mappings here and interpreted by :mod:`simulators`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from birlik.topics import MachinePath, TopicError, check_name

DEFAULT_PLANT = Path(__file__).resolve().parent.parent / "simulators" / "plants" / "central-asia.yaml"


class PlantError(ValueError):
    """The plant file is not valid; the message says where."""


@dataclass(frozen=True, eq=False)  # identity: a machine is one asset, hashable
class Machine:
    id: str
    kind: str
    path: MachinePath
    params: Mapping[str, Any] = field(default_factory=dict)
    faults: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Line:
    id: str
    tenant: str
    name: str
    machines: tuple[Machine, ...]


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    country: str
    region: str
    gateway: str
    utc_offset_h: float
    ambient_mean_c: float
    ambient_daily_swing_c: float
    #: Difference between the warmest and coldest months' mean (0: no seasons).
    ambient_annual_swing_c: float
    lines: tuple[Line, ...]

    def machines(self) -> Iterator[Machine]:
        for line in self.lines:
            yield from line.machines


@dataclass(frozen=True)
class Plant:
    name: str
    sample_interval_s: float
    sites: tuple[Site, ...]
    source: str = ""
    #: ``random_faults`` of the plant file: fault scenarios to draw from a seed, interpreted
    #: by :func:`simulators.faults.plant_random_scenarios`.
    random_faults: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def machines(self) -> Iterator[Machine]:
        for site in self.sites:
            yield from site.machines()

    def site(self, site_id: str) -> Site:
        for site in self.sites:
            if site.id == site_id:
                return site
        raise PlantError(
            f"no site {site_id!r} in {self.source or 'the plant'} (sites: {', '.join(s.id for s in self.sites)})"
        )

    def registry(self) -> dict[MachinePath, str]:
        """Every machine's path and kind: what the ingest accepts."""
        return {m.path: m.kind for m in self.machines()}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, None: 1}


def parse_duration(value: Any, where: str = "duration") -> float:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"2h"`` or ``"1d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    if isinstance(value, str) and (m := _DURATION.match(value)):
        return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise PlantError(f"{where}: {value!r} is not a duration (examples: 90, '90s', '15m', '2h', '1d')")


def _get(data: Mapping[str, Any], key: str, where: str, typ: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in data:
        if default is ...:
            raise PlantError(f"{where}: missing {key!r}")
        return default
    value = data[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise PlantError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


def _name(level: str, value: Any, where: str) -> str:
    try:
        return check_name(level, str(value))
    except TopicError as exc:
        raise PlantError(f"{where}: {exc}") from None


def parse_plant(data: Any, source: str = "") -> Plant:
    where = source or "plant"
    if not isinstance(data, dict):
        raise PlantError(f"{where}: the top level must be a mapping with 'sites'")
    sites = []
    seen: set[MachinePath] = set()
    for i, s in enumerate(_get(data, "sites", where, list)):
        sw = f"{where}: sites[{i}]"
        if not isinstance(s, dict):
            raise PlantError(f"{sw}: must be a mapping")
        site_id = _name("site", _get(s, "id", sw, str), sw)
        sw = f"{where}: site {site_id}"
        lines = []
        for j, ln in enumerate(_get(s, "lines", sw, list)):
            lw = f"{sw}: lines[{j}]"
            if not isinstance(ln, dict):
                raise PlantError(f"{lw}: must be a mapping")
            line_id = _name("line", _get(ln, "id", lw, str), lw)
            tenant = _name("tenant", _get(ln, "tenant", lw, str), lw)
            lw = f"{sw}: line {line_id}"
            machines = []
            for k, m in enumerate(_get(ln, "machines", lw, list)):
                mw = f"{lw}: machines[{k}]"
                if not isinstance(m, dict):
                    raise PlantError(f"{mw}: must be a mapping")
                machine_id = _name("machine", _get(m, "id", mw, str), mw)
                path = MachinePath(tenant, site_id, line_id, machine_id)
                if path in seen:
                    raise PlantError(f"{mw}: machine {path} is listed twice")
                seen.add(path)
                faults = _get(m, "faults", mw, list, [])
                if not all(isinstance(f, dict) for f in faults):
                    raise PlantError(f"{mw}: each fault must be a mapping")
                machines.append(
                    Machine(
                        machine_id, _get(m, "kind", mw, str), path, dict(_get(m, "params", mw, dict, {})), tuple(faults)
                    )
                )
            lines.append(Line(line_id, tenant, str(ln.get("name", line_id)), tuple(machines)))
        ambient = _get(s, "ambient", sw, dict, {})
        sites.append(
            Site(
                id=site_id,
                name=str(s.get("name", site_id)),
                country=str(s.get("country", "")),
                region=str(s.get("region", "")),
                gateway=_name("gateway", s.get("gateway", f"gw-{site_id}"), sw),
                utc_offset_h=float(_get(s, "utc_offset_h", sw, (int, float), 5)),
                ambient_mean_c=float(_get(ambient, "mean_c", sw + ": ambient", (int, float), 15.0)),
                ambient_daily_swing_c=float(_get(ambient, "daily_swing_c", sw + ": ambient", (int, float), 10.0)),
                ambient_annual_swing_c=float(_get(ambient, "annual_swing_c", sw + ": ambient", (int, float), 0.0)),
                lines=tuple(lines),
            )
        )
    if not sites:
        raise PlantError(f"{where}: no sites")
    interval = parse_duration(data.get("sample_interval", 5), f"{where}: sample_interval")
    if interval <= 0:
        raise PlantError(f"{where}: sample_interval must be positive")
    random_faults = dict(_get(data, "random_faults", where, dict, {}))
    return Plant(str(data.get("name", "plant")), interval, tuple(sites), source, random_faults)


def load_plant(path: str | Path | None = None) -> Plant:
    path = Path(path) if path else DEFAULT_PLANT
    try:
        text = path.read_text()
    except OSError as exc:
        raise PlantError(f"cannot read plant file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlantError(f"plant file {path} is not valid YAML: {exc}") from None
    return parse_plant(data, str(path))
