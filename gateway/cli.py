"""``birlik gateway``: an edge gateway publishing machine readings over MQTT."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

from birlik.plant import PlantError, parse_duration


def parse_start(text: str) -> int:
    """Device-clock start in ms: ``now``, ``now-2h``, or an ISO 8601 time."""
    text = text.strip()
    if text.startswith("now"):
        rest = text[3:].strip()
        offset = 0.0
        if rest:
            if rest[0] not in "+-":
                raise argparse.ArgumentTypeError(f"{text!r}: expected now, now-2h or now+10m")
            offset = parse_duration(rest[1:]) * (-1 if rest[0] == "-" else 1)
        return int((time.time() + offset) * 1000)
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time (examples: now, now-2h, 2026-11-22T08:00:00Z)"
        ) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "gateway",
        parents=[common],
        help="edge gateway: read machines, publish readings over MQTT (QoS 1)",
        description="Read the machines of a plant (or one site of it) through a southbound driver and "
        "publish their readings to the broker, one topic per machine. The simulator driver plays "
        "the plant described in --plant; its clock runs in real time or accelerated.",
    )
    p.add_argument("--plant", default=None, help="plant description (YAML; default: the built-in Central Asia centre)")
    p.add_argument("--site", default=None, help="only the machines of this site (default: all sites)")
    p.add_argument(
        "--gateway-id", default=None, help="gateway id in payloads and as MQTT client id (default: the site's gateway)"
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="device clock speed: 1 real time, 60 one hour per minute, 0 as fast as possible (default: 1)",
    )
    p.add_argument(
        "--start", type=parse_start, default=None, help="device clock start: now, now-2h, or ISO time (default: now)"
    )
    p.add_argument(
        "--sim-duration", default=None, help="stop after this much device time, e.g. 2h (default: run until stopped)"
    )
    p.add_argument("--seconds", type=float, default=None, help="stop after this many wall-clock seconds")
    p.add_argument("--seed", type=int, default=1, help="simulation seed (default: 1)")
    p.add_argument("--batch", type=int, default=1, help="samples per message per machine (default: 1)")
    p.add_argument("--stats-file", default=None, help="keep counters in this JSON file while running")
    p.add_argument("--ground-truth", default=None, help="write the injected faults of this run to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from birlik.cli import terminate_gracefully
    from birlik.config import load_config
    from birlik.plant import load_plant
    from birlik.stats import StatsFile
    from gateway.drivers import SimulatorDriver
    from gateway.publisher import MqttPublisher, PublishError
    from gateway.service import Clock, run_gateway

    log = logging.getLogger("gateway")
    terminate_gracefully()
    config = load_config(args.config)
    try:
        plant = load_plant(args.plant)
        start_ms = args.start if args.start is not None else int(time.time() * 1000)
        driver = SimulatorDriver(plant, seed=args.seed, start_ms=start_ms, site=args.site)
        end_ms = None
        if args.sim_duration:
            end_ms = driver.fleet.start_ms + int(parse_duration(args.sim_duration, "--sim-duration") * 1000)
    except PlantError as exc:
        log.error("%s", exc)
        return 2
    if args.batch < 1:
        log.error("--batch must be at least 1")
        return 2
    if args.ground_truth:
        truth = [g.as_dict() for g in driver.fleet.ground_truth()]
        Path(args.ground_truth).write_text(json.dumps(truth, indent=1))
    gateway_id = args.gateway_id or (plant.site(args.site).gateway if args.site else f"gw-{plant.name}")
    publisher = MqttPublisher(config.mqtt, client_id=gateway_id)
    try:
        publisher.connect()
    except PublishError as exc:
        log.error("%s", exc)
        return 1
    try:
        unacked = run_gateway(
            gateway_id,
            driver,
            publisher,
            Clock(driver.fleet.start_ms, args.speed),
            end_ms=end_ms,
            wall_seconds=args.seconds,
            batch=args.batch,
            stats=StatsFile(args.stats_file),
        )
    finally:
        publisher.close()
    return 0 if unacked == 0 else 1
