"""The simulators' block API: the same physics as the per-sample one, and readings that do not
depend on how a run is split into calls."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from birlik.payload import Value
from birlik.plant import Plant, parse_plant
from simulators.fleet import Fleet

T0 = 1_700_000_000_000
MIN = 60_000
Samples = list[tuple[int, dict[str, Value]]]


@pytest.fixture(scope="module")
def plant() -> Plant:
    """One machine of each kind at 1 s, with machine and sensor faults (dropout included)."""
    machines: list[dict[str, Any]] = [
        {
            "id": "pump",
            "kind": "centrifugal_pump",
            "faults": [
                {"type": "cavitation", "start": "10m", "failure": "90m"},
                {"type": "dropout", "signal": "flow", "start": "20m", "duration": "7m"},
                {"type": "spikes", "signal": "vibration_rms", "start": "5m", "duration": "60m", "rate": 40},
                {"type": "stuck", "signal": "bearing_temp", "start": "30m", "duration": "20m"},
            ],
        },
        {"id": "comp", "kind": "air_compressor", "faults": [{"type": "overheating", "start": "30m", "failure": "80m"}]},
        {"id": "conv", "kind": "conveyor_drive", "faults": [{"type": "drift", "signal": "motor_temp", "amount": 4}]},
        {"id": "spin", "kind": "spinning_frame", "params": {"doff_every_s": 1800}},
        {"id": "ex", "kind": "extruder", "params": {"changeover_share": 1.0}},
    ]
    data = {
        "sample_interval": "1s",
        "sites": [
            {
                "id": "uz-syrdarya",
                "utc_offset_h": 5,
                "ambient": {"mean_c": 24, "daily_swing_c": 14},
                "lines": [{"id": "line", "tenant": "tenant", "machines": machines}],
            }
        ],
    }
    return parse_plant(data, "speed-plant")


def _advance(fleet: Fleet, untils: list[int]) -> dict[str, Samples]:
    out: dict[str, Samples] = defaultdict(list)
    for until in untils:
        for machine, ts, values in fleet.advance(until):
            out[machine.id].append((ts, values))
    return out


def test_the_block_api_gives_the_readings_of_advance(plant: Plant) -> None:
    until = T0 + 100 * MIN
    samples = _advance(Fleet(plant, seed=4, start_ms=T0), [until])
    blocks: dict[str, list[tuple[np.ndarray, dict[str, np.ndarray]]]] = defaultdict(list)
    for machine, ts, arrays in Fleet(plant, seed=4, start_ms=T0).blocks(until):
        blocks[machine.id].append((ts, arrays))

    assert blocks.keys() == samples.keys()
    for machine_id, rows in samples.items():
        ts = np.concatenate([t for t, _ in blocks[machine_id]])
        assert ts.tolist() == [t for t, _ in rows]
        names = blocks[machine_id][0][1].keys()
        arrays = {name: np.concatenate([a[name] for _, a in blocks[machine_id]]) for name in names}
        for i, (_, values) in enumerate(rows):
            for name, array in arrays.items():
                item = array[i].item()
                if isinstance(item, float) and math.isnan(item):
                    assert name not in values  # a dropped-out reading
                else:
                    assert values[name] == item, (machine_id, i, name)
                    assert type(values[name]) is type(item), (machine_id, name)
    # The values have the types the payload expects.
    pump = samples["pump"][0][1]
    assert isinstance(pump["flow"], float) and isinstance(pump["state"], str)
    assert isinstance(samples["spin"][0][1]["count_good"], int)
    assert sum("flow" not in v for _, v in samples["pump"]) == 7 * 60


def test_readings_do_not_depend_on_how_the_run_is_split(plant: Plant) -> None:
    end = T0 + 2 * 60 * MIN
    whole = _advance(Fleet(plant, seed=9, start_ms=T0), [end])
    # Uneven steps, many of them crossing the blocks the models compute.
    steps = [T0 + t for t in range(0, 2 * 60 * MIN, 37_123)] + [end]
    split = _advance(Fleet(plant, seed=9, start_ms=T0), steps)
    mixed_fleet = Fleet(plant, seed=9, start_ms=T0)
    mixed: dict[str, Samples] = defaultdict(list)
    for i, until in enumerate(steps):
        if i % 2:
            for machine, ts, values in mixed_fleet.advance(until):
                mixed[machine.id].append((ts, values))
            continue
        for machine, stamps, arrays in mixed_fleet.blocks(until):
            names = list(arrays)
            for j, t in enumerate(stamps.tolist()):
                row = {n: arrays[n][j].item() for n in names}
                mixed[machine.id].append((t, {n: v for n, v in row.items() if v == v}))  # NaN: dropped

    assert split == whole
    assert mixed == whole
    states = {v["state"] for rows in whole.values() for _, v in rows}
    assert {"running", "changeover", "fault"} <= states  # the state machines crossed blocks too
