"""``birlik simulate``: look at what the machine models produce, without any server."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from birlik.plant import Plant


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "simulate",
        parents=[common],
        help="print a plant's machines, faults and simulated readings (no servers needed)",
        description="Without --machine: list the plant's sites, lines, machines and injected faults with "
        "their ground truth. With --machine: print that machine's simulated readings as CSV, or --plot "
        "them. With --backfill: write the whole plant's readings for the period straight to InfluxDB "
        "(settings [influx]), e.g. a week of history for dashboards or detector training. "
        "To send a simulated plant through the platform live, use 'birlik gateway' or 'birlik demo'.",
    )
    p.add_argument("--plant", default=None, help="plant description (YAML; default: the built-in Central Asia centre)")
    p.add_argument("--machine", default=None, help="machine id to print readings of, e.g. pump-302")
    p.add_argument("--duration", default="2h", help="simulated time span (default: %(default)s)")
    p.add_argument("--start", default="now-2h", help="simulated start: now-2h or ISO time (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="simulation seed (default: %(default)s)")
    p.add_argument("--every", type=int, default=1, help="print every N-th sample (default: %(default)s)")
    p.add_argument(
        "--backfill", action="store_true", help="write the period's readings to InfluxDB (no MQTT, no ingest)"
    )
    p.add_argument(
        "--plot", metavar="PNG", default=None, help="with --machine: draw its signals and faults to this PNG file"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import csv
    import logging
    import sys
    from datetime import UTC, datetime

    from birlik.plant import PlantError, load_plant, parse_duration
    from birlik.process import parse_start
    from simulators.fleet import Fleet

    log = logging.getLogger("simulate")
    try:
        plant = load_plant(args.plant)
        start_ms = parse_start(args.start)
        fleet = Fleet(plant, seed=args.seed, start_ms=start_ms)
        span_ms = int(parse_duration(args.duration, "--duration") * 1000)
    except (PlantError, argparse.ArgumentTypeError) as exc:
        log.error("%s", exc)
        return 2

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    if args.backfill:
        return _backfill(args, plant, fleet.start_ms, span_ms)

    if args.machine is None:
        print(f"plant {plant.name} ({plant.source}), one sample every {plant.sample_interval_s:g} s")
        for site in plant.sites:
            print(f"  site {site.id}: {site.name}, {site.region} ({site.country}), gateway {site.gateway}")
            for line in site.lines:
                kinds = ", ".join(f"{m.id} ({m.kind})" for m in line.machines)
                print(f"    line {line.id} [{line.tenant}] {line.name}: {kinds}")
        print("faults (ground truth for a run starting", iso(fleet.start_ms) + "):")
        for g in fleet.ground_truth():
            end = "failure" if g.category == "machine" else "ends"
            if g.repaired_ms is not None and not g.failed:
                end = "repaired before failing,"
                end_ms = g.repaired_ms
            else:
                end_ms = g.failure_ms
            print(
                f"  {g.machine}: {g.category} fault {g.fault} ({', '.join(g.signals) or 'all signals'}), "
                f"onset {iso(g.onset_ms)}, detectable from {iso(g.detectable_ms)}, {end} {iso(end_ms)}"
                + (", trips the machine" if g.trips and g.failed else "")
                + (f", repaired {iso(g.repaired_ms)}" if g.repaired_ms is not None and g.failed else "")
            )
        return 0

    models = {m.id: (m, model) for m, model in fleet.models}
    if args.machine not in models:
        log.error("no machine %r in %s (machines: %s)", args.machine, plant.source, ", ".join(sorted(models)))
        return 2
    machine, model = models[args.machine]
    truth = [g for g in fleet.ground_truth() if g.machine == str(machine.path)]
    fleet.models = [(machine, model)]  # step only this machine: the others are independent
    if args.plot:
        from simulators.plot import plot_machine

        rows = [(ts, values) for _, ts, values in fleet.advance(fleet.start_ms + span_ms)]
        plot_machine(machine, list(model.signals), rows, truth, args.plot)
        print(f"wrote {args.plot}: {machine.id} ({machine.kind}), {len(rows)} samples", file=sys.stderr)
        return 0
    writer = csv.writer(sys.stdout)
    columns = list(model.signals)
    writer.writerow(["time", *columns])
    for i, (_, ts, values) in enumerate(fleet.advance(fleet.start_ms + span_ms)):
        if i % max(args.every, 1) == 0:
            writer.writerow([iso(ts), *(values.get(c, "") for c in columns)])
    return 0


def _backfill(args: argparse.Namespace, plant: Plant, start_ms: int, span_ms: int) -> int:
    import logging
    import time

    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxError
    from simulators.backfill import backfill

    log = logging.getLogger("simulate")
    config = load_config(args.config)
    machines = len(list(plant.machines()))
    log.info(
        "backfill: %d machines, %.1f h of device time from %s, seed %d -> %s database %s",
        machines,
        span_ms / 3_600_000,
        time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(start_ms / 1000)),
        args.seed,
        config.influx.url,
        config.influx.database,
    )

    def progress(written: int, ts: int) -> None:
        done = (ts - start_ms) / span_ms
        log.info("backfill: %5.1f %%, %s readings written", 100 * done, f"{written:,}")

    t0 = time.monotonic()
    try:
        with InfluxClient(config.influx.settings()) as influx:
            influx.create_database()
            written = backfill(
                plant, influx, start_ms=start_ms, end_ms=start_ms + span_ms, seed=args.seed, progress=progress
            )
    except InfluxError as exc:
        log.error("InfluxDB at %s: %s", config.influx.url, exc)
        return 1
    elapsed = time.monotonic() - t0
    log.info(
        "backfill done: %s readings of %d machines (%.1f machine-days) in %.1f s",
        f"{written:,}",
        machines,
        machines * span_ms / 86_400_000,
        elapsed,
    )
    return 0
