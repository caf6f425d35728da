"""``python -m ops.bench_quality``: are sensor faults reported as sensor faults?

Builds plants programmatically (every machine kind of the simulators, several seeds): on
each seed some machines stay healthy, some get one sensor fault (all five types: stuck,
drift, spikes, dropout, scaling, on a random gauge signal, with a random onset after the
learning period and sizes drawn as :func:`simulators.faults.random_scenarios` draws them)
and some get one machine fault (bearing wear, cooling failure, misalignment, ...). Every
machine's samples go through its own :class:`analytics.quality.DataQualityMonitor`.

Reported:

* per sensor-fault type, the **recall**: the share of faults reported as a sensor issue of
  the right signal between the fault's onset and its end, and the time to report;
* **false issues**: issues on healthy machines, on other signals of a sensor-fault machine,
  outside the fault's window (plus a grace period), or on a machine-fault machine before
  the fault started, per machine-week of judged time (after the learning period);
* **machine faults called sensor faults**: machine faults during which any sensor issue
  was raised on that machine (a machine fault must not be explained away as a sensor).

Ends with one line ``RESULT quality sensor_fault_recall=... machine_faults_called_sensor=...
false_issues_per_machine_week=... ...``.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics.quality import DataQualityMonitor, SensorIssue
from birlik.plant import Plant, parse_plant
from birlik.signals import SIGNALS
from simulators.faults import FAULT_TYPES, SCALING_FACTORS, SENSOR_FAULT_TYPES, TYPICAL_ERROR
from simulators.fleet import Fleet, GroundTruth
from simulators.machines import KINDS

log = logging.getLogger("bench.quality")

SUMMARY = "sensor faults reported as sensor faults, machine faults not: recall, time to report, false issues"
HOUR_S = 3600.0
#: An issue raised this long after a sensor fault ended still counts as that fault's (not false).
GRACE_MS = 30 * 60_000


@dataclass
class Outcome:
    faults: int = 0
    reported: int = 0
    right_kind: int = 0
    delays_min: list[float] = field(default_factory=list)


def _sensor_spec(
    rng: random.Random, kind: str, fault: str, start_h: tuple[float, float], span_h: float
) -> dict[str, Any]:
    gauges = [s for s in KINDS[kind].signals if SIGNALS[s].kind == "gauge"]
    signal = rng.choice(gauges)
    start = rng.uniform(*start_h)
    spec: dict[str, Any] = {
        "type": fault,
        "signal": signal,
        "start": f"{start * 60:.1f}m",
        "duration": f"{rng.uniform(0.05, 0.3) * span_h * 60:.1f}m",
    }
    typical = TYPICAL_ERROR.get(SIGNALS[signal].unit, 1.0)
    if fault == "drift":
        spec["amount"] = round(rng.choice((-1, 1)) * rng.uniform(0.5, 1.5) * typical, 3)
    elif fault == "spikes":
        spec["amount"] = round(rng.uniform(2, 5) * typical, 3)
        spec["rate"] = round(rng.uniform(4, 30), 1)
    elif fault == "scaling":
        spec["factor"] = rng.choice(SCALING_FACTORS)
    return spec


def build_plant(seed: int, *, per_kind: int, span_h: float, learn_h: float) -> Plant:
    """One site; per machine kind ``per_kind`` machines: a healthy one, then sensor faults
    (the five types in turn) and machine faults alternating."""
    rng = random.Random(f"bench-quality/{seed}")
    sensor_types = list(SENSOR_FAULT_TYPES)
    machines: list[dict[str, Any]] = []
    n_sensor = 0
    after = learn_h + 1.0  # onsets after the learning period (and an hour to spare)
    for k_i, kind in enumerate(sorted(KINDS)):
        fits = [t for t, f in FAULT_TYPES.items() if not f.kinds or kind in f.kinds]
        for i in range(per_kind):
            faults: list[dict[str, Any]] = []
            role = "healthy" if i == 0 else ("sensor" if i % 2 == 1 else "machine")
            if role == "sensor":
                fault = sensor_types[(n_sensor + seed + k_i) % len(sensor_types)]
                n_sensor += 1
                faults.append(_sensor_spec(rng, kind, fault, (after, span_h * 0.8), span_h - after))
            elif role == "machine":
                start = rng.uniform(after, after + 0.4 * (span_h - after))
                faults.append(
                    {
                        "type": rng.choice(fits),
                        "start": f"{start * 60:.1f}m",
                        "failure": f"{(start + rng.uniform(0.2, 0.6) * (span_h - after)) * 60:.1f}m",
                        "severity": round(rng.uniform(0.5, 1.0), 2),
                    }
                )
            machines.append({"id": f"{kind.split('_')[0][:5]}-{i:02d}", "kind": kind, "faults": faults})
    data = {
        "name": f"quality-bench-{seed}",
        "sample_interval": "5s",
        "sites": [
            {
                "id": "bench",
                "utc_offset_h": 5,
                "ambient": {"mean_c": 14, "annual_swing_c": 28, "daily_swing_c": 15},
                "lines": [{"id": "quality", "tenant": "bench", "machines": machines}],
            }
        ],
    }
    return parse_plant(data, f"quality bench seed {seed}")


def run_seed(
    seed: int, *, per_kind: int, span_h: float, learn_h: float
) -> tuple[list[GroundTruth], dict[str, list[SensorIssue]], dict[str, int]]:
    """Simulate one plant and run the monitors; returns truth, raised issues per machine,
    and the time each machine's learning period ended (ms)."""
    plant = build_plant(seed, per_kind=per_kind, span_h=span_h, learn_h=learn_h)
    start_ms = 1_763_856_000_000 + seed * 7 * 3_600_000
    fleet = Fleet(plant, seed=seed, start_ms=start_ms)
    learn_samples = int(learn_h * HOUR_S / plant.sample_interval_s)
    monitors: dict[str, DataQualityMonitor] = {}
    issues: dict[str, list[SensorIssue]] = defaultdict(list)
    learned_at: dict[str, int] = {}
    end_ms = start_ms + int(span_h * HOUR_S * 1000)
    step_ms = 2 * 3_600_000
    t = start_ms
    while t < end_ms:
        t = min(t + step_ms, end_ms)
        for machine, ts, values in fleet.advance(t):
            key = str(machine.path)
            mon = monitors.get(key)
            if mon is None:
                mon = monitors[key] = DataQualityMonitor(learn_running_samples=learn_samples)
            was_learning = mon.learning
            for issue in mon.update(ts, values):
                if issue.state == "raised":
                    issues[key].append(issue)
            if was_learning and not mon.learning:
                learned_at[key] = ts
        log.info("seed %d: %.0f of %.0f simulated hours", seed, (t - start_ms) / 3_600_000, span_h)
    errors = sum(m.internal_errors for m in monitors.values())
    if errors:
        log.error("seed %d: %d internal errors in the monitors", seed, errors)
    for key in monitors:
        learned_at.setdefault(key, end_ms)
    learned_at["_end"] = end_ms
    return fleet.ground_truth(), issues, learned_at


SUMMARY = "data-quality checks on simulated sensor and machine faults: recall, mistaken kinds, false issues"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quality")
    g.add_argument("--per-kind", type=int, default=5, help="quality: machines per machine kind and seed (default: 5)")
    g.add_argument("--hours", type=float, default=24.0, help="quality: simulated hours per seed (default: 24)")
    g.add_argument("--learn-hours", type=float, default=6.0, help="quality: running hours of learning (default: 6)")
    g.add_argument("-v", "--verbose", action="store_true", help="quality: print every issue raised")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench_quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=3, help="simulation seeds (plants) to run (default: 3)")
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = run(args)
    print("RESULT quality " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return 0


def run(args: argparse.Namespace) -> dict[str, object]:
    """The evaluation (``./scripts/bench quality``); ``args.seeds`` plants."""
    t0 = time.monotonic()
    by_type: dict[str, Outcome] = defaultdict(Outcome)
    machine_faults = called_sensor = 0
    false_issues = 0
    exposure_ms = 0
    called_list: list[str] = []
    for seed in range(1, args.seeds + 1):
        truth, issues, learned_at = run_seed(seed, per_kind=args.per_kind, span_h=args.hours, learn_h=args.learn_hours)
        end_ms = learned_at.pop("_end")
        faults_of: dict[str, list[GroundTruth]] = defaultdict(list)
        for g in truth:
            faults_of[g.machine].append(g)
        for machine, learned in learned_at.items():
            exposure_ms += max(0, end_ms - learned)
            raised = issues.get(machine, [])
            gs = faults_of.get(machine, [])
            explained: set[int] = set()
            for g in gs:
                if g.category == "sensor":
                    o = by_type[g.fault]
                    o.faults += 1
                    hits = [
                        i for i, x in enumerate(raised) if x.signal in g.signals and g.onset_ms <= x.ts_ms <= g.end_ms
                    ]
                    near = [
                        i
                        for i, x in enumerate(raised)
                        if x.signal in g.signals and g.onset_ms <= x.ts_ms <= g.end_ms + GRACE_MS
                    ]
                    explained.update(near)
                    if hits:
                        o.reported += 1
                        first = raised[hits[0]]
                        o.delays_min.append((first.ts_ms - g.onset_ms) / 60_000)
                        o.right_kind += any(
                            raised[i].kind == g.fault or (g.fault == "drift" and raised[i].kind == "offset")
                            for i in hits
                        )
                    elif args.verbose:
                        log.info("missed %s on %s %s", g.fault, machine, g.signals)
                else:
                    machine_faults += 1
                    # Until the fault's repair (and the grace after it), if it was repaired.
                    until = math.inf if g.repaired_ms is None else g.repaired_ms + GRACE_MS
                    during = [i for i, x in enumerate(raised) if g.onset_ms <= x.ts_ms < until]
                    explained.update(during)
                    if during:
                        called_sensor += 1
                        called_list.append(
                            f"{g.fault} on {machine.split('/')[-1]}: "
                            + "; ".join(f"{raised[i].signal} {raised[i].kind}" for i in during[:3])
                        )
            for i, x in enumerate(raised):
                if i not in explained:
                    false_issues += 1
                    log.info("false issue on %s: %s %s: %s", machine.split("/")[-1], x.signal, x.kind, x.detail)
                elif args.verbose:
                    log.info("issue on %s: %s %s: %s", machine.split("/")[-1], x.signal, x.kind, x.detail)
        log.info("seed %d done after %.0f s", seed, time.monotonic() - t0)
    for line in called_list:
        log.info("machine fault called a sensor fault: %s", line)
    print(f"{'sensor fault':12} {'faults':>6} {'reported':>8} {'recall':>6} {'right kind':>10} {'median min':>10}")
    total = reported = 0
    for name in SENSOR_FAULT_TYPES:
        o = by_type[name]
        total += o.faults
        reported += o.reported
        delays = sorted(o.delays_min)
        median = f"{delays[len(delays) // 2]:.1f}" if delays else "-"
        recall = o.reported / o.faults if o.faults else 0.0
        print(f"{name:12} {o.faults:6d} {o.reported:8d} {recall:6.2f} {o.right_kind:10d} {median:>10}")
    weeks = exposure_ms / (7 * 86_400_000)
    all_delays = sorted(d for o in by_type.values() for d in o.delays_min)
    result: dict[str, object] = {
        "sensor_fault_recall": round(reported / total, 3) if total else 0.0,
        "machine_faults_called_sensor": called_sensor,
        "false_issues_per_machine_week": round(false_issues / weeks, 2) if weeks else 0.0,
        "sensor_faults": total,
        "machine_faults": machine_faults,
        "false_issues": false_issues,
        "machine_weeks": round(weeks, 2),
        "median_minutes_to_report": round(all_delays[len(all_delays) // 2], 1) if all_delays else 0,
        "seeds": args.seeds,
        "wall_s": round(time.monotonic() - t0),
    }
    return result


if __name__ == "__main__":
    sys.exit(main())
