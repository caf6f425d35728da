"""Southbound drivers: where a gateway's readings come from.

A driver is anything with :meth:`Driver.poll`. The simulator driver is the first; CSV
replay, OPC UA and Modbus TCP drivers plug in the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from birlik.payload import Value
from birlik.plant import Machine, Plant
from simulators.fleet import Fleet

Reading = tuple[Machine, int, dict[str, Value]]


class Driver(Protocol):
    """A source of machine readings."""

    #: Short name for logs, e.g. "simulator".
    name: str

    def machines(self) -> list[Machine]:
        """The machines this driver reads."""
        ...

    def poll(self, until_ms: int) -> Iterable[Reading]:
        """Every sample taken up to ``until_ms`` (device time) not returned before."""
        ...


class SimulatorDriver:
    """Reads simulated machines (:class:`simulators.fleet.Fleet`)."""

    name = "simulator"

    def __init__(self, plant: Plant, *, seed: int, start_ms: int, site: str | None = None) -> None:
        self.fleet = Fleet(plant, seed=seed, start_ms=start_ms, site=site)

    def machines(self) -> list[Machine]:
        return [m for m, _ in self.fleet.models]

    def poll(self, until_ms: int) -> Iterable[Reading]:
        return self.fleet.advance(until_ms)
