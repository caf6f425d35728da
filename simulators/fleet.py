"""A plant's machines simulated together on one clock, with the ground truth of the run."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from birlik.payload import Value
from birlik.plant import Machine, Plant, PlantError
from simulators.faults import SensorFault, plant_random_scenarios, split_faults
from simulators.machines import KINDS, MachineModel
from simulators.machines.base import BLOCK, Arr


@dataclass(frozen=True)
class GroundTruth:
    """One injected fault: where, what, and when (ms since epoch, simulated time).

    ``category`` is ``machine`` (the machine degrades) or ``sensor`` (the machine is fine,
    a measurement is wrong). ``failure_ms`` is a machine fault's failure (full strength;
    the machine stops there if ``trips``) and the end of a sensor fault's window.
    ``detectable_ms`` is when the fault shows in its signals in principle; a fault too
    weak to ever show (``detectable`` false) has it at its end (:attr:`end_ms`).

    ``repaired_ms`` (machine faults; None: never) is when the fault was repaired (its own
    ``repaired_at`` or a maintenance window of the machine): from then on the machine is
    healthy again. A fault repaired before its failure time never failed (:attr:`failed`
    false): a benchmark should not count it as a failure; it was under way from its onset
    to its repair.
    """

    machine: str  # tenant/site/line/machine
    kind: str
    fault: str
    onset_ms: int
    detectable_ms: int
    failure_ms: int
    category: str = "machine"
    signals: tuple[str, ...] = ()
    trips: bool = False
    detectable: bool = True
    severity: float = 1.0
    repaired_ms: int | None = None

    @property
    def failed(self) -> bool:
        """Whether a machine fault reached its failure (before any repair); a sensor fault: False."""
        return self.category == "machine" and (self.repaired_ms is None or self.failure_ms < self.repaired_ms)

    @property
    def end_ms(self) -> int:
        """The end of the fault: its failure, or its repair if that came first (sensor faults: the window's end)."""
        if self.repaired_ms is not None:
            return min(self.failure_ms, self.repaired_ms)
        return self.failure_ms

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["signals"] = list(self.signals)
        if self.repaired_ms is None:
            del d["repaired_ms"]  # as before repairs existed
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GroundTruth:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["signals"] = tuple(values.get("signals", ()))
        return cls(**values)


def write_ground_truth(truth: Sequence[GroundTruth], path: str | Path) -> None:
    """The ground truth as JSON: a list of objects, one per fault (as ``birlik gateway --ground-truth``)."""
    Path(path).write_text(json.dumps([g.as_dict() for g in truth], indent=1) + "\n")


def load_ground_truth(path: str | Path) -> list[GroundTruth]:
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):  # tolerate {"faults": [...]}
        data = data.get("faults", [])
    return [GroundTruth.from_dict(d) for d in data]


class Fleet:
    """Every machine of a plant (or of one site), stepped together at the sample interval.

    Machine faults act inside the models (physics); sensor faults are applied here, to the
    readings the models return. Random scenarios the plant asks for (``random_faults``)
    are drawn over the whole plant, so a fleet of one site gets the same ones.

    Deterministic: the same plant, seed and start time give the same readings.
    """

    def __init__(self, plant: Plant, *, seed: int = 0, start_ms: int, site: str | None = None) -> None:
        self.plant = plant
        self.interval_ms = round(plant.sample_interval_s * 1000)
        # Align to the sample interval, as a device sampling on a fixed clock would.
        self.start_ms = start_ms - start_ms % self.interval_ms
        self.next_ms = self.start_ms
        sites = [plant.site(site)] if site else list(plant.sites)
        drawn = plant_random_scenarios(plant, seed=seed)
        self.models: list[tuple[Machine, MachineModel]] = []
        self.sensor_faults: dict[Machine, list[SensorFault]] = {}
        for s in sites:
            for machine in s.machines():
                model_cls = KINDS.get(machine.kind)
                where = f"{plant.source}: machine {machine.path}"
                if model_cls is None:
                    raise PlantError(f"{where}: unknown kind {machine.kind!r} (known: {', '.join(KINDS)})")
                specs = [*machine.faults, *drawn.get(machine.path, [])]
                faults, sensor_faults = split_faults(
                    specs, where, kind=machine.kind, signals=model_cls.signals, seed=f"{seed}/{machine.path}"
                )
                model = model_cls(
                    machine,
                    s,
                    faults,
                    seed=seed,
                    start_s=self.start_ms / 1000,
                    dt_s=self.interval_ms / 1000,
                    sensor_faults=sensor_faults,
                )
                self.models.append((machine, model))
                if sensor_faults:
                    self.sensor_faults[machine] = sensor_faults

    def blocks(self, until_ms: int) -> Iterator[tuple[Machine, Arr, dict[str, Arr]]]:
        """Every sample due up to and including ``until_ms``, as arrays: for each span of up
        to :data:`BLOCK` samples, each machine's timestamps (ms, int64) and readings
        (``{signal: array}``; gauges and energy float, counters int, ``state`` strings, a
        dropped-out reading NaN). The same samples :meth:`advance` returns, without dicts."""
        while self.next_ms <= until_ms:
            n = min(BLOCK, (until_ms - self.next_ms) // self.interval_ms + 1)
            ts = self.next_ms + self.interval_ms * np.arange(n, dtype=np.int64)
            self.next_ms += n * self.interval_ms
            for machine, model in self.models:
                yield machine, ts, model.take(n)

    def advance(self, until_ms: int) -> Iterator[tuple[Machine, int, dict[str, Value]]]:
        """Every sample due up to and including ``until_ms``, in time order."""
        while self.next_ms <= until_ms:
            rows: list[tuple[Machine, list[dict[str, Value]]]] = []
            ts_list: list[int] = []
            n = min(BLOCK, (until_ms - self.next_ms) // self.interval_ms + 1)
            for machine, ts, arrays in self.blocks(self.next_ms + (n - 1) * self.interval_ms):
                ts_list = ts.tolist()
                rows.append((machine, _rows(arrays)))
            for i, t in enumerate(ts_list):
                for machine, samples in rows:
                    yield machine, t, samples[i]

    def ground_truth(self) -> list[GroundTruth]:
        """Every injected fault, machine faults then sensor faults, in plant order."""

        def ms(t_s: float) -> int:
            return self.start_ms + round(t_s * 1000)

        out = []
        for machine, model in self.models:
            for fault in model.faults:
                out.append(
                    GroundTruth(
                        str(machine.path),
                        machine.kind,
                        fault.type,
                        ms(fault.start_s),
                        ms(fault.detectable_s()),
                        ms(fault.failure_s),
                        category=fault.category,
                        signals=model.affected_signals(fault),
                        trips=fault.trips,
                        detectable=fault.detectable,
                        severity=fault.scale,
                        repaired_ms=None if math.isinf(fault.repaired_s) else ms(fault.repaired_s),
                    )
                )
        for machine, _ in self.models:
            for sensor in self.sensor_faults.get(machine, ()):
                out.append(
                    GroundTruth(
                        str(machine.path),
                        machine.kind,
                        sensor.type,
                        ms(sensor.start_s),
                        ms(sensor.detectable_s()),
                        ms(sensor.end_s),
                        category=sensor.category,
                        signals=(sensor.signal,),
                    )
                )
        return out


def _rows(arrays: dict[str, Arr]) -> list[dict[str, Value]]:
    """One block's arrays as a readings dict per sample (Python values; NaN: no reading)."""
    names = list(arrays)
    columns = [arrays[name].tolist() for name in names]
    rows: list[dict[str, Value]] = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    for name, array in arrays.items():
        if array.dtype.kind == "f" and np.isnan(array).any():
            for i in np.flatnonzero(np.isnan(array)).tolist():
                del rows[i][name]
    return rows
