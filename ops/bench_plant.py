"""``python -m ops.bench_plant``: a realistic simulated plant through detection and alarms.

Are machine faults alarmed before failure, how early, how many false alarms, and are
sensor faults reported as sensor faults? The plant is ``simulators/plants/realistic.yaml``
(or ``--plant``): 16 pumps, compressors, conveyors, extruders and spinning frames whose
load follows shifts, working days and the day's demand (the machine parameter
``schedule``), sampled once a minute for ``--weeks`` weeks. Per seed (``--seeds``) the
faults are drawn here, not from the file's ``random_faults``: every machine fault type
once, each on its own machine, with a random onset after the detectors' learning
(:data:`LEARN_D` days), a development of days to two weeks (overheating: hours: cooling
lost at once) ending before the run does, and a severity of 0.5-1; every sensor fault type
once, on other machines; the remaining machines stay healthy.

The plant is backfilled into a real InfluxDB (started by :class:`ops.servers.Supervisor`)
and scored by the analytics worker in this process with an
:class:`~analytics.alarmservice.AlarmService` (no channels), with the settings of
``ops/bench_alarms.py``. The stored transitions are then scored against
``Fleet(...).ground_truth()`` (:func:`score`):

* a machine fault is **alerted before failure** when a ``condition`` alarm is raised (or
  reactivated) on its machine between the onset and the failure (trips come at the failure:
  they do not count); the **lead** is failure minus that first alarm, in hours;
* a machine fault **repaired before its failure** (ground truth ``repaired_ms``: its
  ``repaired_at`` or a maintenance window) never failed: it is not scored as a failure but
  counted apart (``repaired_faults``; ``repaired_alerted``: with a ``condition`` alarm
  between its onset and the repair);
* a **false machine alarm** is a ``condition`` alarm raised on a machine with no machine
  fault under way (before its onset, on a machine without one, or more than an hour after
  the fault's repair); alarms caused by a sensor fault count as false (shown apart as
  ``false_during_sensor_faults``); the rate is per machine-week of plant time;
* a sensor fault is **reported** when a ``sensor`` alarm is raised (or reactivated) on its
  machine during its window (``sensor_right_signal``: one naming the faulty signal).

Ends with ``RESULT plant faults=<n> alerted_before_failure=<n> median_lead_h=<x>
false_alerts_per_machine_week=<x> sensor_fault_recall=<x> ...``.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from birlik.plant import Plant, parse_plant
from birlik.signals import SIGNALS
from simulators.faults import FAULT_TYPES, SCALING_FACTORS, SENSOR_FAULT_TYPES, TYPICAL_ERROR
from simulators.fleet import GroundTruth
from simulators.machines import KINDS

log = logging.getLogger("bench.plant")

SUMMARY = (
    "a realistic plant (shifts, weekends, demand; faults over days to weeks) through detection and alarms: "
    "faults alarmed before failure, lead time, false alarms per machine-week, sensor-fault recall"
)
PLANT_FILE = Path(__file__).resolve().parent.parent / "simulators" / "plants" / "realistic.yaml"
#: Days from the start during which the detectors learn: no fault begins before.
LEARN_D = 2.0
#: A condition alarm this long after a sensor fault's end is still counted as caused by it.
GRACE_MS = 3_600_000
HOUR_MS = 3_600_000
MACHINE_TAGS = ("tenant", "site", "line", "machine")
DAY_MS = 86_400_000
#: A Monday: the run starts with a working week.
DEFAULT_START = "2026-03-02"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("plant")
    g.add_argument(
        "--start-date",
        default=DEFAULT_START,
        help=f"plant: first day of the run, UTC (default: {DEFAULT_START}, a Monday in early spring)",
    )


# --- the faults of a seed -------------------------------------------------------------


def draw_faults(
    seed: int, machines: Sequence[tuple[str, str]], span_d: float, *, learn_d: float = LEARN_D
) -> dict[str, list[dict[str, Any]]]:
    """Plant-file fault mappings per machine id, from ``machines`` ((id, kind) pairs): every
    machine fault type once on its own machine, then every sensor fault type on other
    machines. Onsets after ``learn_d`` days; every window ends half a day before the run."""
    rng = random.Random(f"bench-plant/{seed}")
    free = list(machines)
    rng.shuffle(free)
    out: dict[str, list[dict[str, Any]]] = {}
    room_d = span_d - learn_d - 0.5
    if room_d <= 0.5:
        raise ValueError(f"a run of {span_d:g} days leaves no room for faults after {learn_d:g} days of learning")
    longest = min(14.0, room_d * 0.9)
    shortest = min(3.0, longest / 2)
    # Types limited to some kinds first, so they find a machine of their kind.
    for name in sorted(FAULT_TYPES, key=lambda t: (not FAULT_TYPES[t].kinds, t)):
        cls = FAULT_TYPES[name]
        fits = [m for m in free if not cls.kinds or m[1] in cls.kinds]
        if not fits:
            log.warning("no machine left for a %s fault", name)
            continue
        machine = fits[0]
        free.remove(machine)
        # Overheating is cooling lost at once: the trip follows within hours, not weeks.
        duration = rng.uniform(2, 12) / 24 if name == "overheating" else rng.uniform(shortest, longest)
        onset = rng.uniform(learn_d, span_d - 0.5 - duration)
        out[machine[0]] = [
            {
                "type": name,
                "start": f"{onset * 24:.2f}h",
                "failure": f"{(onset + duration) * 24:.2f}h",
                "severity": round(rng.uniform(0.5, 1.0), 2),
            }
        ]
    for name in SENSOR_FAULT_TYPES:
        if not free:
            log.warning("no machine left for a %s sensor fault", name)
            continue
        machine_id, kind = free.pop(0)
        gauges = [s for s in KINDS[kind].signals if SIGNALS[s].kind == "gauge"]
        signal = rng.choice(gauges)
        duration = min(rng.uniform(0.5, 4.0), room_d * 0.5)
        onset = rng.uniform(learn_d, span_d - 0.5 - duration)
        spec: dict[str, Any] = {
            "type": name,
            "signal": signal,
            "start": f"{onset * 24:.2f}h",
            "duration": f"{duration * 24:.2f}h",
        }
        typical = TYPICAL_ERROR.get(SIGNALS[signal].unit, 1.0)
        if name == "drift":
            spec["amount"] = round(rng.choice((-1, 1)) * rng.uniform(0.5, 1.5) * typical, 3)
        elif name == "spikes":
            spec["amount"] = round(rng.uniform(2, 5) * typical, 3)
            spec["rate"] = round(rng.uniform(4, 30), 1)
        elif name == "scaling":
            spec["factor"] = rng.choice(SCALING_FACTORS)
        out[machine_id] = [spec]
    return out


def build_plant(data: dict[str, Any], seed: int, span_d: float, source: str) -> Plant:
    """The plant file's plant with this seed's faults (and no ``random_faults``)."""
    data = {k: v for k, v in data.items() if k != "random_faults"}
    sites = [dict(s, lines=[dict(ln, machines=[dict(m) for m in ln["machines"]]) for ln in s["lines"]])
             for s in data["sites"]]  # fmt: skip
    data["sites"] = sites
    machines = [m for s in sites for ln in s["lines"] for m in ln["machines"]]
    faults = draw_faults(seed, [(str(m["id"]), str(m["kind"])) for m in machines], span_d)
    for m in machines:
        m["faults"] = faults.get(str(m["id"]), [])
    return parse_plant(data, f"{source} (seed {seed})")


# --- scoring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One stored alarm transition, as scored: machine path, alarm kind, transition, time."""

    machine: str
    kind: str
    transition: str
    ts_ms: int
    title: str = ""

    @property
    def activates(self) -> bool:
        return self.transition in ("raised", "reactivated")


@dataclass
class KindStats:
    faults: int = 0
    alerted: int = 0
    #: Hours from the first alarm to failure (machine faults), or from onset to the first
    #: report (sensor faults).
    hours: list[float] = field(default_factory=list)
    #: Hours from "detectable in principle" to failure: the lead the signals allowed.
    possible_h: list[float] = field(default_factory=list)
    right_signal: int = 0
    #: Sensor faults for which the data-quality checks raised an issue of the faulty signal
    #: in the window (whether or not it became a sensor alarm).
    checked: int = 0

    def add(self, other: KindStats) -> None:
        self.faults += other.faults
        self.alerted += other.alerted
        self.hours += other.hours
        self.possible_h += other.possible_h
        self.right_signal += other.right_signal
        self.checked += other.checked


@dataclass
class Score:
    machine: dict[str, KindStats] = field(default_factory=lambda: defaultdict(KindStats))
    sensor: dict[str, KindStats] = field(default_factory=lambda: defaultdict(KindStats))
    #: Machine faults whose failure falls after the end of the run (not scored).
    censored: int = 0
    #: Machine faults repaired before their failure (not scored as failures), and of those
    #: the ones with a condition alarm while under way.
    repaired: int = 0
    repaired_alerted: int = 0
    false_alarms: int = 0
    #: Of the false ones: raised on a machine while one of its sensors was faulty.
    false_during_sensor: int = 0
    #: Sensor alarms raised with no sensor fault under way on that machine.
    false_sensor_alarms: int = 0
    #: Machine faults during which a sensor alarm was raised on their machine.
    machine_called_sensor: int = 0
    machine_weeks: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, other: Score) -> None:
        for mine, theirs in ((self.machine, other.machine), (self.sensor, other.sensor)):
            for k, v in theirs.items():
                mine[k].add(v)
        self.censored += other.censored
        self.repaired += other.repaired
        self.repaired_alerted += other.repaired_alerted
        self.false_alarms += other.false_alarms
        self.false_during_sensor += other.false_during_sensor
        self.false_sensor_alarms += other.false_sensor_alarms
        self.machine_called_sensor += other.machine_called_sensor
        self.machine_weeks += other.machine_weeks
        self.notes += other.notes


def score(
    truth: Iterable[GroundTruth],
    events: Iterable[Event],
    *,
    machines: int,
    start_ms: int,
    end_ms: int,
    issues: Iterable[Event] = (),
) -> Score:
    """Score stored transitions against the ground truth (the rules in the module doc).

    ``issues``: the sensor issues the data-quality checks raised (``title`` the signal), to
    tell a check that missed a sensor fault from an issue that never became an alarm."""
    truth = list(truth)
    issues = list(issues)
    events = sorted(events, key=lambda e: e.ts_ms)
    out = Score(machine_weeks=machines * (end_ms - start_ms) / (7 * DAY_MS))
    by_machine: dict[str, list[GroundTruth]] = defaultdict(list)
    for g in truth:
        by_machine[g.machine].append(g)
    short = {g.machine: g.machine.rsplit("/", 1)[-1] for g in truth}
    for g in truth:
        mine = [e for e in events if e.machine == g.machine and e.activates]
        if g.category == "machine":
            if g.repaired_ms is not None and not g.failed and g.repaired_ms <= end_ms:
                # Repaired before it failed: no failure to alarm before.
                out.repaired += 1
                out.repaired_alerted += any(
                    e.kind == "condition" and g.onset_ms <= e.ts_ms < g.repaired_ms for e in mine
                )
                if any(e.kind == "sensor" and e.transition == "raised" and _during(g, e.ts_ms) for e in mine):
                    out.machine_called_sensor += 1
                continue
            if g.failure_ms > end_ms:
                out.censored += 1
                continue
            stats = out.machine[g.fault]
            stats.faults += 1
            stats.possible_h.append((g.failure_ms - g.detectable_ms) / HOUR_MS)
            hits = [e for e in mine if e.kind == "condition" and g.onset_ms <= e.ts_ms < g.failure_ms]
            if hits:
                stats.alerted += 1
                stats.hours.append((g.failure_ms - hits[0].ts_ms) / HOUR_MS)
            else:
                out.notes.append(f"missed {g.fault} (severity {g.severity:g}) on {short[g.machine]}")
            if any(e.kind == "sensor" and e.transition == "raised" and _during(g, e.ts_ms) for e in mine):
                out.machine_called_sensor += 1
        else:
            stats = out.sensor[g.fault]
            stats.faults += 1
            hits = [e for e in mine if e.kind == "sensor" and g.onset_ms <= e.ts_ms <= g.end_ms]
            if hits:
                stats.alerted += 1
                stats.hours.append((hits[0].ts_ms - g.onset_ms) / HOUR_MS)
                stats.right_signal += any(s in e.title for e in hits for s in g.signals)
            else:
                out.notes.append(f"sensor fault {g.fault} of {','.join(g.signals)} on {short[g.machine]} not reported")
            stats.checked += any(
                i.machine == g.machine and i.title in g.signals and g.onset_ms <= i.ts_ms <= g.end_ms for i in issues
            )
    for e in events:
        if e.transition != "raised":
            continue
        faults = by_machine.get(e.machine, [])
        if e.kind == "condition":
            if any(g.category == "machine" and _during(g, e.ts_ms) for g in faults):
                continue
            out.false_alarms += 1
            if any(g.category == "sensor" and g.onset_ms <= e.ts_ms <= g.end_ms + GRACE_MS for g in faults):
                out.false_during_sensor += 1
        elif e.kind == "sensor" and not any(
            g.category == "sensor" and g.onset_ms <= e.ts_ms <= g.end_ms + GRACE_MS for g in faults
        ):
            out.false_sensor_alarms += 1
    return out


def _during(g: GroundTruth, ts_ms: int) -> bool:
    """Whether a machine fault is under way at ``ts_ms``: from its onset (for good, unless it
    is repaired: then until an hour after the repair)."""
    return g.onset_ms <= ts_ms and (g.repaired_ms is None or ts_ms < g.repaired_ms + GRACE_MS)


def _median(xs: Sequence[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def report(total: Score) -> dict[str, object]:
    """Print the per-kind tables; the RESULT figures (the required ones first)."""
    print(f"{'machine fault':16} {'faults':>6} {'alerted':>7} {'median lead h':>13} {'worst lead h':>12} "
          f"{'possible h':>10}")  # fmt: skip
    leads: list[float] = []
    faults = alerted = 0
    for name in FAULT_TYPES:
        s = total.machine.get(name, KindStats())
        faults += s.faults
        alerted += s.alerted
        leads += s.hours
        worst = min(s.hours) if s.hours else None
        print(f"{name:16} {s.faults:6d} {s.alerted:7d} {_fmt(_median(s.hours)):>13} {_fmt(worst):>12} "
              f"{_fmt(_median(s.possible_h)):>10}")  # fmt: skip
    print(f"{'sensor fault':16} {'faults':>6} {'reported':>8} {'right signal':>12} {'median h to report':>18} "
          f"{'issue raised':>12}")  # fmt: skip
    s_faults = s_reported = 0
    for name in SENSOR_FAULT_TYPES:
        s = total.sensor.get(name, KindStats())
        s_faults += s.faults
        s_reported += s.alerted
        print(f"{name:16} {s.faults:6d} {s.alerted:8d} {s.right_signal:12d} {_fmt(_median(s.hours)):>18} "
              f"{s.checked:12d}")  # fmt: skip
    for note in total.notes:
        print(f"  {note}")
    weeks = total.machine_weeks
    median_lead = _median(leads)
    return {
        "faults": faults,
        "alerted_before_failure": alerted,
        "median_lead_h": round(median_lead, 1) if median_lead is not None else 0,
        "false_alerts_per_machine_week": round(total.false_alarms / weeks, 3) if weeks else 0,
        "sensor_fault_recall": round(s_reported / s_faults, 3) if s_faults else 0,
        "false_alerts": total.false_alarms,
        "false_during_sensor_faults": total.false_during_sensor,
        "false_sensor_alarms": total.false_sensor_alarms,
        "machine_faults_called_sensor": total.machine_called_sensor,
        "sensor_faults": s_faults,
        "sensor_right_signal": sum(s.right_signal for s in total.sensor.values()),
        "sensor_issue_raised": sum(s.checked for s in total.sensor.values()),
        "censored_faults": total.censored,
        "repaired_faults": total.repaired,
        "repaired_alerted": total.repaired_alerted,
        "machine_weeks": round(weeks, 1),
    }


# --- the run ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    """The benchmark (``./scripts/bench plant``): ``args.seeds`` plants of ``args.weeks`` weeks."""
    import dataclasses

    from analytics.alarmservice import AlarmService
    from analytics.alarmstore import AlarmStore
    from analytics.detectors import DETECTORS
    from analytics.worker import AnalyticsWorker
    from birlik import schema
    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.topics import MachinePath
    from ops.servers import Supervisor
    from simulators.backfill import backfill
    from simulators.fleet import Fleet

    t_start = time.monotonic()
    source = Path(getattr(args, "plant", None) or PLANT_FILE)
    data = yaml.safe_load(source.read_text())
    weeks = float(args.weeks)
    span_d = weeks * 7
    start_ms = int(datetime.fromisoformat(getattr(args, "start_date", DEFAULT_START)).replace(tzinfo=UTC).timestamp())
    start_ms *= 1000
    end_ms = start_ms + int(span_d * DAY_MS)
    config = load_config(getattr(args, "config", None))
    # As ops/bench_alarms.py: one-minute samples, four hours of settled running learned.
    analytics = dataclasses.replace(config.analytics, poll_interval_s=0.2, warmup_samples=240, settle_s=3600.0)
    a = config.alarms
    a.stale_after_s = 1e9  # wall-clock silence means nothing while a backfill is scored
    for name in ("analytics", "analytics.alerts", "analytics.alarms", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("simulators.backfill").setLevel(logging.ERROR)  # scaled readings off the catalogue
    state = Path(getattr(args, "state_dir", None) or ".state/bench-plant")
    state.mkdir(parents=True, exist_ok=True)
    total = Score()
    verbose = bool(getattr(args, "verbose", False))
    with Supervisor(state) as supervisor:
        server = supervisor.start_influxdb()
        for seed in range(1, args.seeds + 1):
            plant = build_plant(data, seed, span_d, str(source))
            machines = len(list(plant.machines()))
            truth = Fleet(plant, seed=seed, start_ms=start_ms).ground_truth()
            for g in truth:
                log.info("seed %d: %s %s on %s, %.1f d to %.1f d%s", seed, g.category, g.fault,
                         g.machine.rsplit("/", 1)[-1], (g.onset_ms - start_ms) / DAY_MS,
                         (g.failure_ms - start_ms) / DAY_MS,
                         f", severity {g.severity:g}" if g.category == "machine" else f", {g.signals[0]}")  # fmt: skip
            settings = InfluxSettings(url=server.url, database=f"plant_seed{seed}")
            store_path = state / f"alarms-seed{seed}.sqlite"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{store_path}{suffix}").unlink(missing_ok=True)
            with InfluxClient(settings) as influx:
                influx.drop_database(settings.database)  # a run before this one left its data
                influx.create_database()
                t0 = time.monotonic()

                def progress(written: int, ts: int, seed: int = seed, t0: float = t0) -> None:
                    log.info("seed %d: backfilled %.1f of %.1f days (%s readings, %.0f s)", seed,
                             (ts - start_ms) / DAY_MS, span_d, f"{written:,}", time.monotonic() - t0)  # fmt: skip

                readings = backfill(plant, influx, start_ms=start_ms, end_ms=end_ms - 1, seed=seed, progress=progress,
                                    progress_every_s=15)  # fmt: skip
                log.info("seed %d: %s readings of %d machines backfilled in %.0f s", seed, f"{readings:,}", machines,
                         time.monotonic() - t0)  # fmt: skip
                a.store = str(store_path)
                store = AlarmStore(a.store)
                service = AlarmService(a, store, [])
                worker = AnalyticsWorker(
                    influx,
                    analytics,
                    detector_factory=DETECTORS[analytics.detector],
                    since_ms=start_ms,
                    max_rows=5_000,  # the points of one poll go in one write: keep it under the body limit
                    alarms=service,
                )
                t1 = last = time.monotonic()
                while worker.poll_once():
                    if time.monotonic() - last > 15:
                        reached = min(worker.stats.last_ts_by_machine.values(), default=start_ms)
                        log.info("seed %d: scored up to day %.1f (%s samples, %d transitions, %.0f s)", seed,
                                 (reached - start_ms) / DAY_MS, f"{worker.stats.samples_read:,}",
                                 service.transitions, time.monotonic() - t1)  # fmt: skip
                        last = time.monotonic()
                log.info("seed %d: scored %s samples in %.0f s", seed, f"{worker.stats.samples_read:,}",
                         time.monotonic() - t1)  # fmt: skip
                transitions = store.transitions()
                issues = [
                    Event(str(MachinePath(*(row.tags[k] for k in MACHINE_TAGS))), "issue", "raised", int(v[0]),
                          row.tags["signal"])
                    for row in influx.query(
                        f"SELECT \"detail\" FROM {schema.SENSOR_ISSUE} WHERE \"state\" = 'raised' "
                        "GROUP BY \"tenant\", \"site\", \"line\", \"machine\", \"signal\""
                    )
                    for v in row.values
                ]  # fmt: skip
                service.close(drain_s=0)
                store.close()
            events = [Event(str(t.path), t.kind, t.transition, t.ts_ms, t.title) for t in transitions]
            if verbose:
                for e in events:
                    if e.transition in ("raised", "reactivated"):
                        log.info("  %s %s %s at day %.2f: %s", e.machine.rsplit("/", 1)[-1], e.kind, e.transition,
                                 (e.ts_ms - start_ms) / DAY_MS, e.title)  # fmt: skip
            seed_score = score(truth, events, machines=machines, start_ms=start_ms, end_ms=end_ms, issues=issues)
            seed_alerted = sum(s.alerted for s in seed_score.machine.values())
            seed_faults = sum(s.faults for s in seed_score.machine.values())
            log.info("seed %d: %d/%d machine faults alarmed before failure, %d false condition alarms, "
                     "%d/%d sensor faults reported; %.0f s so far", seed, seed_alerted, seed_faults,
                     seed_score.false_alarms, sum(s.alerted for s in seed_score.sensor.values()),
                     sum(s.faults for s in seed_score.sensor.values()), time.monotonic() - t_start)  # fmt: skip
            total.add(seed_score)
    result = report(total)
    result.update(seeds=args.seeds, weeks=weeks, wall_s=round(time.monotonic() - t_start))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.bench_plant", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=2, help="simulation seeds (plants) to run (default: 2)")
    p.add_argument("--weeks", type=float, default=3.0, help="weeks of plant time per seed (default: 3)")
    p.add_argument("--plant", default=None, help="plant file (default: simulators/plants/realistic.yaml)")
    p.add_argument("--config", default=None, help="TOML configuration file (analytics and alarm settings)")
    p.add_argument("--state-dir", type=Path, default=Path(".state/bench-plant"), help="data and logs")
    p.add_argument("-v", "--verbose", action="store_true", help="log every alarm raised")
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    result = run(args)
    print("RESULT plant " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
