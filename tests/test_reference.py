"""Ambient sensors judged against the line's other machines' (:mod:`analytics.reference`)."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.quality import DataQualityMonitor, SensorIssue
from analytics.reference import LineReferences
from birlik.topics import MachinePath
from tests.test_quality_batch import key
from tests.test_standstill import HOUR_MS, START_MS, THREE_SHIFTS, fleet_samples


def path(machine: str, line: str = "l") -> MachinePath:
    return MachinePath("t", "s", line, machine)


def test_each_neighbour_s_nearest_reading_is_given() -> None:
    refs = LineReferences(max_gap_ms=60_000, every_ms=0, store_every_ms=0)
    refs.add(path("a"), [0, 60_000], [{"ambient_temp": 20.0}, {"ambient_temp": 21.0}])
    assert refs.refs(path("a"), [0]) is None  # no neighbours
    refs.add(path("b"), [0, 60_000], [{"ambient_temp": 22.0}, {"ambient_temp": 23.0}])
    assert refs.refs(path("a"), [0]) is None  # one neighbour cannot say which sensor is wrong
    refs.add(path("c"), [10_000, 70_000], [{"ambient_temp": 24.0}, {"ambient_temp": "warm"}])
    refs.add(path("x", line="other"), [0], [{"ambient_temp": 99.0}])  # another line's hall
    assert refs.refs(path("a"), [0, 60_000, 200_000]) == [
        {"ambient_temp@b": 22.0, "ambient_temp@c": 24.0},
        {"ambient_temp@b": 23.0, "ambient_temp@c": 24.0},  # c's nearest number within the gap
        None,
    ]
    refs.add(path("a"), [30_000], [{"ambient_temp": 0.0}])  # older than what it had: ignored
    assert refs.refs(path("b"), [60_000]) == [{"ambient_temp@a": 21.0, "ambient_temp@c": 24.0}]
    refs.add(path("a"), [600_000], [{"ambient_temp": 20.0}])
    refs.prune()
    assert refs.refs(path("b"), [60_000]) == [{"ambient_temp@c": 24.0}]  # a's old readings forgotten
    # By default a machine's samples get references once a minute, and readings are kept
    # one per 15 seconds.
    every = LineReferences()
    for m in "abc":
        every.add(path(m), list(range(0, 120_000, 5_000)), [{"ambient_temp": 20.0}] * 24)
    got = every.refs(path("a"), list(range(0, 120_000, 5_000)))
    assert got is not None and [i for i, r in enumerate(got) if r] == [0, 12]
    assert len(every._lines[("t", "s", "l")]["b"]["ambient_temp"].ts) == 8


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.integers(min_value=-(2**63), max_value=2**63),
            st.one_of(
                st.floats(allow_nan=True, allow_infinity=True),
                st.integers(),
                st.booleans(),
                st.none(),
                st.text(max_size=3),
            ),
        ),
        max_size=40,
    )
)
def test_any_readings_never_break_the_references(readings: list[tuple[str, int, Any]]) -> None:
    refs = LineReferences()
    for machine, ts, value in readings:
        refs.add(path(machine), [ts], [{"ambient_temp": value, "speed": value}])
        got = refs.refs(path(machine), [ts, 0])
        assert got is None or all(r is None or all(k.startswith("ambient_temp@") for k in r) for r in got)
        refs.prune()


def line_of_spinning_frames(faults: dict[str, list[dict[str, Any]]], days: float) -> list[tuple[str, int, dict]]:
    machines = [
        {"id": m, "kind": "spinning_frame", "faults": faults.get(m, []), "params": {"schedule": THREE_SHIFTS}}
        for m in ("rs-1", "rs-2", "rs-3")
    ]
    return fleet_samples(machines, days, seed=4)


def judge(data: list[tuple[str, int, dict]], *, batch_h: float) -> dict[str, list[SensorIssue]]:
    """As the worker does: each batch's readings added to the references first, then each
    machine's samples judged with them (in columns where they can be)."""
    refs = LineReferences()
    monitors: dict[str, DataQualityMonitor] = defaultdict(DataQualityMonitor)
    out: dict[str, list[SensorIssue]] = defaultdict(list)
    step = int(batch_h * HOUR_MS)
    for start in range(START_MS, data[-1][1] + 1, step):
        batch: dict[str, tuple[list[int], list[dict]]] = defaultdict(lambda: ([], []))
        for m, ts, v in data:
            if start <= ts < start + step:
                batch[m][0].append(ts)
                batch[m][1].append(v)
        for m, (ts, vs) in batch.items():
            refs.add(path(m), ts, vs)
        for m, (ts, vs) in batch.items():
            for _, issues in monitors[m].update_many(ts, vs, refs.refs(path(m), ts)):
                out[m].extend(issues)
        refs.prune()
    assert all(mon.internal_errors == 0 for mon in monitors.values())
    return out


def test_an_ambient_sensor_off_from_its_neighbours_is_the_sensor() -> None:
    # Low against every temperature of its machine, it looks like a machine running hot; its
    # neighbours' ambient sensors say otherwise. Thursday to Saturday: no standstill to tell.
    drift = {"type": "drift", "signal": "ambient_temp", "start": "76h", "duration": "56h", "amount": -8.0}
    data = line_of_spinning_frames({"rs-2": [drift]}, days=6)
    got = judge(data, batch_h=1)
    assert [(i.signal, i.kind, i.state) for i in got["rs-2"]][:1] == [("ambient_temp", "drift", "raised")]
    raised = got["rs-2"][0]
    assert 76 < (raised.ts_ms - START_MS) / HOUR_MS < 132
    assert "other ambient sensors" in raised.detail
    assert got["rs-1"] == [] and got["rs-3"] == []


def test_without_a_fault_the_neighbours_agree_and_batches_say_what_samples_say() -> None:
    data = line_of_spinning_frames({}, days=4)
    by_batch = judge(data, batch_h=2)
    assert dict(by_batch) == {}
    # The same with references, sample by sample and in columns.
    drift = {"type": "drift", "signal": "ambient_temp", "start": "40h", "duration": "40h", "amount": 8.0}
    data = line_of_spinning_frames({"rs-1": [drift]}, days=4)
    refs = LineReferences()
    per_machine: dict[str, tuple[list[int], list[dict]]] = defaultdict(lambda: ([], []))
    for m, ts, v in data:
        per_machine[m][0].append(ts)
        per_machine[m][1].append(v)
    for m, (ts, vs) in per_machine.items():
        refs.add(path(m), ts, vs)
    ts, vs = per_machine["rs-1"]
    r = refs.refs(path("rs-1"), ts)
    assert r is not None
    mon = DataQualityMonitor()
    n = 0
    while mon.learning:
        mon.update(ts[n], vs[n], r[n])
        n += 1
    a, b = mon, copy.deepcopy(mon)
    one = [key(i, x) for i in range(n, len(ts)) for x in a.update(ts[i], vs[i], r[i])]
    many = [
        key(i + j, x)
        for i in range(n, len(ts), 120)
        for j, xs in b.update_many(ts[i : i + 120], vs[i : i + 120], r[i : i + 120])
        for x in xs
    ]
    assert one == many
    assert any(k[1] == "ambient_temp" and k[2] == "drift" for k in one)
    assert b.batched_samples > 0
