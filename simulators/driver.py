"""The simulated plant as a gateway driver.

It has the shape of :class:`gateway.drivers.Driver` (a structural protocol, so this module
needs nothing of the gateway); the gateway imports it only when it is configured to read
simulated machines, so an edge gateway reading PLCs does not load the simulators.
"""

from __future__ import annotations

from collections.abc import Iterable

from birlik.payload import Value
from birlik.plant import Machine, Plant
from simulators.fleet import Fleet


class SimulatorDriver:
    """Reads simulated machines (:class:`simulators.fleet.Fleet`)."""

    name = "simulator"

    def __init__(self, plant: Plant, *, seed: int, start_ms: int, site: str | None = None) -> None:
        self.fleet = Fleet(plant, seed=seed, start_ms=start_ms, site=site)

    def machines(self) -> list[Machine]:
        return [m for m, _ in self.fleet.models]

    def poll(self, until_ms: int) -> Iterable[tuple[Machine, int, dict[str, Value]]]:
        return self.fleet.advance(until_ms)
