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

log = logging.getLogger("bench")

BENCHMARKS: dict[str, tuple[str, Callable[[argparse.Namespace], dict[str, object]]]] = {}


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
    p.add_argument("--sim-duration", default="3h", help="pipeline: simulated plant time to push through (default: 3h)")
    p.add_argument("--batch", type=int, default=1, help="pipeline: samples per message (default: 1)")
    p.add_argument("--timeout", type=float, default=300, help="give up after this many seconds (default: 300)")
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
    result = BENCHMARKS[args.name][1](args)
    print(f"RESULT {args.name} " + " ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return 0 if result.get("lost", 0) == 0 else 1


@benchmark("pipeline", "readings/s from a gateway through MQTT and ingest into InfluxDB, vs InfluxDB bulk writes")
def pipeline(args: argparse.Namespace) -> dict[str, object]:
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.lineprotocol import encode_point
    from birlik.plant import load_plant, parse_duration
    from birlik.servers import Supervisor
    from birlik.stack import Stack, wait_until
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
            time.sleep(0.5)
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
            series = influx.query('SELECT COUNT(*) FROM "telemetry"')
            written = sum(v for v in series[0].values[0][1:] if v) if series else 0

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
