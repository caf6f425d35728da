"""Machine models, one module per kind."""

from simulators.machines.base import MachineModel
from simulators.machines.compressor import AirCompressor
from simulators.machines.conveyor import ConveyorDrive
from simulators.machines.extruder import Extruder
from simulators.machines.pump import CentrifugalPump
from simulators.machines.spinning import SpinningFrame

KINDS: dict[str, type[MachineModel]] = {
    m.kind: m for m in (CentrifugalPump, AirCompressor, SpinningFrame, ConveyorDrive, Extruder)
}

__all__ = ["KINDS", "AirCompressor", "CentrifugalPump", "ConveyorDrive", "Extruder", "MachineModel", "SpinningFrame"]
