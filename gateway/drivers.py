"""Southbound drivers: where a gateway's readings come from.

A driver is anything with the shape of :class:`Driver` (a structural protocol). The simulated
plant (:class:`simulators.driver.SimulatorDriver`, loaded only when configured) and CSV replay
(:mod:`gateway.replay`) are the drivers so far.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from birlik.payload import Value
from birlik.plant import Machine

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
