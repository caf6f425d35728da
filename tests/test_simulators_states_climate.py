"""Operating states and the site climate of the simulated fleet."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from birlik.plant import load_plant, parse_plant
from simulators.fleet import Fleet
from simulators.machines.base import SHUTDOWN_S


def _one(kind: str, *, start: datetime = datetime(2026, 3, 1, tzinfo=UTC)) -> Fleet:
    plant = parse_plant(
        {
            "sample_interval": "10s",
            "sites": [
                {
                    "id": "kz-turkestan",
                    "ambient": {"mean_c": 14, "annual_swing_c": 30, "daily_swing_c": 14},
                    "lines": [{"id": "l", "tenant": "t", "machines": [{"id": "m", "kind": kind}]}],
                }
            ],
        }
    )
    return Fleet(plant, seed=3, start_ms=int(start.timestamp() * 1000))


def _runs(states: np.ndarray) -> list[tuple[str, int]]:
    """(state, length in samples) of each run of equal states."""
    edges = np.flatnonzero(states[1:] != states[:-1]) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(states)]])
    return [(str(states[a]), int(b - a)) for a, b in zip(starts, ends, strict=True)]


def test_short_stops_are_idle_and_long_ones_stopped_and_neither_draws_power() -> None:
    fleet = _one("conveyor_drive")
    blocks = list(fleet.blocks(fleet.start_ms + 60 * 86_400_000))
    states = np.concatenate([b[2]["state"] for b in blocks])
    power = np.concatenate([b[2]["power"] for b in blocks])
    runs = _runs(states)
    lengths = {state: [n * 10 for s, n in runs if s == state] for state in ("idle", "stopped")}
    assert lengths["idle"] and lengths["stopped"], "60 days should hold both short and long stops"
    assert max(lengths["idle"]) < SHUTDOWN_S <= min(lengths["stopped"][:-1] or [SHUTDOWN_S])
    assert np.all(power[(states == "idle") | (states == "stopped")] == 0)
    assert set(np.unique(states)) <= {"running", "idle", "stopped"}


def test_summer_is_hotter_than_winter_by_the_annual_swing() -> None:
    def mean_ambient(month: int) -> float:
        fleet = _one("centrifugal_pump", start=datetime(2026, month, 15, tzinfo=UTC))
        blocks = list(fleet.blocks(fleet.start_ms + 86_400_000 - 1))
        return float(np.mean(np.concatenate([b[2]["ambient_temp"] for b in blocks])))

    january, july = mean_ambient(1), mean_ambient(7)
    assert 27 < july - january < 31  # 30 K between the months' means, a little less mid-month
    assert -3 < january < 3 and 26 < july < 31


def test_the_default_plant_has_seasons_at_both_sites() -> None:
    for site in load_plant().sites:
        assert site.ambient_annual_swing_c >= 25, site.id
