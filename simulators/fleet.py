"""A plant's machines simulated together on one clock, with the ground truth of the run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

from birlik.payload import Value
from birlik.plant import Machine, Plant, PlantError
from simulators.faults import parse_fault
from simulators.machines import KINDS, MachineModel


@dataclass(frozen=True)
class GroundTruth:
    """One injected fault: where, what, and when (ms since epoch, simulated time)."""

    machine: str  # tenant/site/line/machine
    kind: str
    fault: str
    onset_ms: int
    detectable_ms: int
    failure_ms: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Fleet:
    """Every machine of a plant (or of one site), stepped together at the sample interval.

    Deterministic: the same plant, seed and start time give the same readings.
    """

    def __init__(self, plant: Plant, *, seed: int = 0, start_ms: int, site: str | None = None) -> None:
        self.plant = plant
        self.interval_ms = round(plant.sample_interval_s * 1000)
        # Align to the sample interval, as a device sampling on a fixed clock would.
        self.start_ms = start_ms - start_ms % self.interval_ms
        self.next_ms = self.start_ms
        sites = [plant.site(site)] if site else list(plant.sites)
        self.models: list[tuple[Machine, MachineModel]] = []
        for s in sites:
            for machine in s.machines():
                model_cls = KINDS.get(machine.kind)
                if model_cls is None:
                    raise PlantError(
                        f"{plant.source}: machine {machine.path}: unknown kind {machine.kind!r} "
                        f"(known: {', '.join(KINDS)})"
                    )
                faults = [
                    parse_fault(f, f"{plant.source}: machine {machine.path}: faults[{i}]")
                    for i, f in enumerate(machine.faults)
                ]
                self.models.append((machine, model_cls(machine, s, faults, seed=seed, start_s=self.start_ms / 1000)))

    def advance(self, until_ms: int) -> Iterator[tuple[Machine, int, dict[str, Value]]]:
        """Every sample due up to and including ``until_ms``, in time order."""
        dt_s = self.interval_ms / 1000
        while self.next_ms <= until_ms:
            t_s = self.next_ms / 1000
            for machine, model in self.models:
                yield machine, self.next_ms, model.step(t_s, dt_s)
            self.next_ms += self.interval_ms

    def ground_truth(self) -> list[GroundTruth]:
        out = []
        for machine, model in self.models:
            for fault in model.faults:
                out.append(
                    GroundTruth(
                        str(machine.path),
                        machine.kind,
                        fault.type,
                        self.start_ms + round(fault.start_s * 1000),
                        self.start_ms + round(fault.detectable_s() * 1000),
                        self.start_ms + round(fault.failure_s * 1000),
                    )
                )
        return out
