"""``birlik bench <name>``: benchmarks and evaluations on real servers.

Each benchmark starts the servers it needs, is bounded in time, prints progress, and ends
with one line ``RESULT <name> key=value ...``. Ratios measured side by side in the same run
(e.g. the pipeline against InfluxDB's own bulk-write rate) are the figures to compare
between machines.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops import (
    bench_alarms,
    bench_analytics,
    bench_gateway,
    bench_ingest,
    bench_latency,
    bench_outage,
    bench_plant,
    bench_quality,
)

if TYPE_CHECKING:
    from birlik.plant import Plant

log = logging.getLogger("bench")

BENCHMARKS: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, object]]]] = {}
#: Seeds when --seeds is not given: each benchmark stays within minutes.
DEFAULT_SEEDS = {"detection": 5, "quality": 3, "plant": 2}


def benchmark(
    name: str, summary: str
) -> Callable[[Callable[[argparse.Namespace], dict[str, object]]], Callable[[argparse.Namespace], dict[str, object]]]:
    def add(fn: Callable[[argparse.Namespace], dict[str, object]]) -> Callable[[argparse.Namespace], dict[str, object]]:
        BENCHMARKS[name] = (summary, fn)
        return fn

    return add


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="run a named benchmark on real servers; ends with 'RESULT <name> key=value ...'",
        description="Benchmarks: " + "; ".join(f"{n}: {s}" for n, (s, _) in BENCHMARKS.items()),
    )
    p.add_argument("name", nargs="?", help="benchmark to run (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the benchmarks")
    p.add_argument("--state-dir", type=Path, default=None, help="data and logs (default: .state/bench-<name>)")
    p.add_argument("--sim-duration", default="3h", help="simulated plant time per run (default: 3h)")
    p.add_argument("--batch", type=int, default=1, help="pipeline: samples per message (default: 1)")
    p.add_argument("--timeout", type=float, default=300, help="give up after this many seconds (default: 300)")
    p.add_argument("--seconds", type=float, default=10, help="simulators: wall seconds per measurement (default: 10)")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="simulation seeds (plants) to run (default: detection 5, quality 3, plant 2)",
    )
    p.add_argument("--plant", default=None, help="detection: plant description (default: the built-in centre)")
    bench_ingest.add_arguments(p)
    bench_outage.add_arguments(p)
    bench_gateway.add_arguments(p)
    bench_analytics.add_arguments(p)
    bench_alarms.add_arguments(p)
    bench_quality.add_arguments(p)
    bench_plant.add_arguments(p)
    bench_latency.add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        for name, (summary, _) in BENCHMARKS.items():
            print(f"{name:12} {summary}")
        return 0 if args.list else 2
    if args.name not in BENCHMARKS:
        log.error("no benchmark %r (available: %s)", args.name, ", ".join(BENCHMARKS))
        return 2
    args.state_dir = args.state_dir or Path(f".state/bench-{args.name}")
    if args.seeds is None:
        args.seeds = DEFAULT_SEEDS.get(args.name, 5)
    result = BENCHMARKS[args.name][1](args)
    print(f"RESULT {args.name} " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return 0 if result.get("lost", 0) == 0 else 1


@benchmark("pipeline", "readings/s from a gateway through MQTT and ingest into InfluxDB, vs InfluxDB bulk writes")
def pipeline(args: argparse.Namespace) -> dict[str, object]:
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.lineprotocol import encode_point
    from birlik.plant import load_plant, parse_duration
    from ops.servers import Supervisor
    from ops.stack import Stack, wait_until
    from simulators.fleet import Fleet

    plant = load_plant()
    span_ms = int(parse_duration(args.sim_duration, "--sim-duration") * 1000)
    start_ms = int(time.time() * 1000) - span_ms
    with Supervisor(args.state_dir) as supervisor:
        stack = Stack(supervisor)
        stack.start_servers()
        assert stack.influx is not None
        stack.start_ingest()
        t0 = time.monotonic()
        gateway = stack.start_service(
            "gateway",
            [
                "gateway",
                "--speed",
                "0",
                "--start",
                str(_iso(start_ms)),
                "--sim-duration",
                f"{span_ms / 1000}s",
                "--batch",
                str(args.batch),
            ],
        )
        deadline = t0 + args.timeout
        while gateway.running and time.monotonic() < deadline:
            time.sleep(2)
            g, i = stack.stats("gateway"), stack.stats("ingest")
            log.info(
                "published %s readings, written %s", f"{g.get('readings', 0):,}", f"{i.get('readings_written', 0):,}"
            )
        t_published = time.monotonic() - t0
        published = stack.stats("gateway").get("readings", 0)
        wait_until(
            lambda: stack.stats("ingest").get("readings_written", 0) >= published, max(deadline - time.monotonic(), 1)
        )
        t_written = time.monotonic() - t0
        ingest = stack.stats("ingest")
        with InfluxClient(InfluxSettings(url=stack.influx.url, database="birlik")) as influx:
            written = influx.count_readings()

            # The same readings written straight to InfluxDB in batches of 5000: the ceiling.
            lines, bulk_readings = [], 0
            for m, ts, values in Fleet(plant, seed=1, start_ms=start_ms).advance(start_ms + span_ms):
                lines.append(encode_point("telemetry", {"machine": m.id, "site": m.path.site}, values, ts))
                bulk_readings += len(values)
            influx.create_database("bulk")
            tb = time.monotonic()
            for k in range(0, len(lines), 5000):
                influx.write(lines[k : k + 5000], database="bulk")
            bulk_s = time.monotonic() - tb
    pipeline_rate = written / t_written if t_written else 0.0
    bulk_rate = bulk_readings / bulk_s if bulk_s else 0.0
    log.info(
        "%d readings in %d messages: published in %.1f s, all written after %.1f s; bulk write of the same: %.1f s",
        published,
        ingest.get("messages_received", 0),
        t_published,
        t_written,
        bulk_s,
    )
    return {
        "readings_per_s": round(pipeline_rate),
        "messages_per_s": round(ingest.get("messages_received", 0) / t_written) if t_written else 0,
        "published": published,
        "written": written,
        "lost": published - written,
        "influx_bulk_readings_per_s": round(bulk_rate),
        "ratio_to_bulk": round(pipeline_rate / bulk_rate, 3) if bulk_rate else 0,
        "batch": args.batch,
    }


def _iso(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@benchmark(
    "detection", "alerts vs the simulators' ground truth over several seeds: detections, lead time, false alarms"
)
def detection(args: argparse.Namespace) -> dict[str, object]:
    import dataclasses

    from analytics.alerts import LogChannel
    from analytics.detectors import DETECTORS
    from analytics.worker import AnalyticsWorker
    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.plant import load_plant, parse_duration
    from ops.servers import Supervisor
    from simulators.backfill import backfill
    from simulators.fleet import Fleet

    plant = load_plant(args.plant)
    span_ms = int(parse_duration(args.sim_duration, "--sim-duration") * 1000)
    analytics = dataclasses.replace(load_config(args.config).analytics, **DEMO_ANALYTICS)
    logging.getLogger("analytics").setLevel(logging.WARNING)
    logging.getLogger("analytics.alerts").setLevel(logging.ERROR)
    faults = detected = false_alarms = 0
    leads: list[float] = []
    machine_days = 0.0
    with Supervisor(args.state_dir) as supervisor:
        server = supervisor.start_influxdb()
        for seed in range(1, args.seeds + 1):
            # Each seed also starts at another time of day: the ambient cycle is part of the test.
            start_ms = 1_763_856_000_000 + seed * 7 * 3600 * 1000
            settings = InfluxSettings(url=server.url, database=f"seed{seed}")
            with InfluxClient(settings) as influx:
                influx.create_database()
                backfill(plant, influx, start_ms=start_ms, end_ms=start_ms + span_ms, seed=seed)
                worker = AnalyticsWorker(
                    influx,
                    analytics,
                    detector_factory=DETECTORS[analytics.detector],
                    channels=[LogChannel()],
                    since_ms=start_ms,
                )
                worker.run(once=True)
                raised = influx.query(
                    'SELECT "id" FROM "alert" WHERE "state" = \'raised\' GROUP BY "tenant", "site", "line", "machine"'
                )
            alerts: dict[str, list[int]] = {}
            for s in raised:
                path = "/".join(s.tags[k] for k in ("tenant", "site", "line", "machine"))
                alerts[path] = [row[0] for row in s.values]
            span_end = start_ms + span_ms
            truth = [g for g in Fleet(plant, seed=seed, start_ms=start_ms).ground_truth() if g.onset_ms < span_end]
            machine_faults = [g for g in truth if g.category == "machine"]

            def explained(machine: str, t: int, truth: list[Any] = truth) -> bool:
                # An alert during an injected fault of its machine (machine or sensor) is no false alarm.
                return any(g.machine == machine and g.onset_ms <= t <= g.failure_ms for g in truth)

            seed_false = sum(1 for machine, times in alerts.items() for t in times if not explained(machine, t))
            seed_detected = 0
            for g in machine_faults:
                hits = [t for t in alerts.get(g.machine, []) if g.onset_ms <= t <= g.failure_ms]
                if hits:
                    seed_detected += 1
                    leads.append((g.failure_ms - min(hits)) / 60_000)
            faults += len(machine_faults)
            detected += seed_detected
            false_alarms += seed_false
            machine_days += len(list(plant.machines())) * span_ms / 86_400_000
            log.info(
                "seed %d: %d/%d machine faults detected, %d false alarms",
                seed,
                seed_detected,
                len(machine_faults),
                seed_false,
            )
    return {
        "seeds": args.seeds,
        "faults": faults,
        "detected": detected,
        "mean_lead_min": round(sum(leads) / len(leads), 1) if leads else 0,
        "false_alarms": false_alarms,
        "false_alarms_per_machine_day": round(false_alarms / machine_days, 3) if machine_days else 0,
    }


#: The analytics settings the demo runs with (5 s samples, accelerated clock).
DEMO_ANALYTICS: dict[str, Any] = {"poll_interval_s": 1.0, "warmup_samples": 120, "raise_after": 5, "clear_after": 60}


@benchmark("simulators", "machine-days simulated per wall second, with publishing off and through the gateway")
def simulators(args: argparse.Namespace) -> dict[str, object]:
    from birlik.plant import load_plant
    from ops.servers import Supervisor
    from ops.stack import Stack

    plant = load_plant(args.plant)
    machines = len(list(plant.machines()))
    start_ms = 1_763_856_000_000

    # Publishing off: the models alone, for a bounded wall time.
    from simulators.fleet import Fleet

    fleet = Fleet(plant, seed=1, start_ms=start_ms)
    samples = 0
    t0 = time.monotonic()
    chunk_ms = int(plant.sample_interval_s * 1000) * 4096
    until = start_ms
    while time.monotonic() - t0 < args.seconds:
        until += chunk_ms
        samples += sum(len(ts) for _, ts, _ in fleet.blocks(until))
    elapsed = time.monotonic() - t0
    machine_days = samples * plant.sample_interval_s / 86_400
    log.info(
        "models: %d samples of %d machines (%.1f machine-days) in %.1f s", samples, machines, machine_days, elapsed
    )

    # The yardstick: a week of a 50-machine plant at 1-second resolution.
    week_plant = _fleet_of(50, plant)
    t1 = time.monotonic()
    week_samples = sum(
        len(ts) for _, ts, _ in Fleet(week_plant, seed=1, start_ms=start_ms).blocks(start_ms + 7 * 86_400_000 - 1)
    )
    week_s = time.monotonic() - t1
    log.info("a week of 50 machines at 1 s: %s samples in %.1f s", f"{week_samples:,}", week_s)

    # Publishing through the gateway to a real broker, as fast as it goes.
    with Supervisor(args.state_dir) as supervisor:
        stack = Stack(supervisor)
        stack.start_servers()
        results = {}
        for batch in (1, 60):
            name = f"gateway-batch{batch}"
            g0 = time.monotonic()
            child = stack.start_service(
                name,
                [
                    "gateway",
                    "--speed",
                    "0",
                    "--start",
                    _iso(start_ms),
                    "--seconds",
                    str(args.seconds),
                    "--batch",
                    str(batch),
                ],
            )
            child.process.wait(args.seconds + 120)
            stats = stack.stats(name)
            results[batch] = stats.get("acked", 0) and stats.get("readings", 0) / (time.monotonic() - g0)
            log.info(
                "gateway, %d sample(s) a message: %s readings acknowledged", batch, f"{stats.get('readings', 0):,}"
            )
    return {
        "machine_days_per_s": round(machine_days / elapsed, 2),
        "samples_per_s": round(samples / elapsed),
        "published_readings_per_s": round(results[1]),
        "published_readings_per_s_batch60": round(results[60]),
        "machines": machines,
        "sample_interval_s": plant.sample_interval_s,
        "week_50_machines_1s_wall_s": round(week_s, 1),
    }


def _fleet_of(count: int, plant: Plant) -> Plant:
    """``count`` machines of the plant's kinds in turn, sampled every second, on its first site."""
    from birlik.plant import parse_plant

    kinds = sorted({m.kind for m in plant.machines()})
    machines = [{"id": f"m-{i:03d}", "kind": kinds[i % len(kinds)]} for i in range(count)]
    site = plant.sites[0]
    return parse_plant(
        {
            "sample_interval": "1s",
            "sites": [{"id": site.id, "lines": [{"id": "bench", "tenant": "bench", "machines": machines}]}],
        },
        f"{count} machines",
    )


benchmark("ingest", bench_ingest.SUMMARY)(bench_ingest.run)  # ops/bench_ingest.py
benchmark("outage", bench_outage.SUMMARY)(bench_outage.run)  # ops/bench_outage.py
benchmark("gateway", bench_gateway.SUMMARY)(bench_gateway.run)  # ops/bench_gateway.py
benchmark("analytics", bench_analytics.SUMMARY)(bench_analytics.run)  # ops/bench_analytics.py
benchmark("alarms", bench_alarms.SUMMARY)(bench_alarms.run)  # ops/bench_alarms.py
benchmark("quality", bench_quality.SUMMARY)(bench_quality.run)  # ops/bench_quality.py
benchmark("plant", bench_plant.SUMMARY)(bench_plant.run)  # ops/bench_plant.py
benchmark("latency", bench_latency.SUMMARY)(bench_latency.run)  # ops/bench_latency.py
