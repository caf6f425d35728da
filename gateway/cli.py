"""``birlik gateway``: an edge gateway publishing machine readings over MQTT."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from birlik.plant import PlantError, parse_duration
from birlik.process import parse_start

if TYPE_CHECKING:
    from birlik.config import GatewayConfig
    from birlik.topics import MachinePath
    from gateway.buffer import DiskLog
    from gateway.drivers import Driver


#: ``--start recording``: a replay keeps the recorded timestamps.
RECORDING = "recording"
DEFAULT_REPLAY_MACHINE = "replay/lab/testbed/{parent}-{stem}"


def parse_gateway_start(text: str) -> int | str:
    """``--start``: what :func:`parse_start` accepts, or ``recording`` (replay only)."""
    return RECORDING if text.strip() == RECORDING else parse_start(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "gateway",
        parents=[common],
        help="edge gateway: read machines, publish readings over MQTT (QoS 1)",
        description="Read machines through a southbound driver and publish their readings to the broker, one "
        "topic per machine. The simulator driver (the default) plays the plant described in --plant; the replay "
        "driver (--replay) plays recorded CSV files, one machine per file. The device clock runs in real time "
        "or accelerated.",
        epilog="Replay example: birlik gateway --replay ../shared/datasets/skab/data/valve1/0.csv --speed 0 "
        "--start now-1h --ground-truth truth.json",
    )
    p.add_argument(
        "--gateway-id",
        default=None,
        help="gateway id in payloads and as MQTT client id (default: the site's gateway, or gw-replay)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="device clock speed: 1 real time, 60 one hour per minute, 0 as fast as possible (default: 1)",
    )
    p.add_argument(
        "--start",
        type=parse_gateway_start,
        default=None,
        help="device clock start: now, now-2h, or ISO time; a replay starts its recordings there, or with "
        "'recording' keeps their recorded timestamps (default: now)",
    )
    p.add_argument(
        "--sim-duration",
        default=None,
        help="stop after this much device time, e.g. 2h (default: run until stopped; a replay stops at the end "
        "of its recordings)",
    )
    p.add_argument("--seconds", type=float, default=None, help="stop after this many wall-clock seconds")
    p.add_argument("--batch", type=int, default=1, help="samples per message per machine (default: 1)")
    p.add_argument("--stats-file", default=None, help="keep counters in this JSON file while running")
    _store_and_forward_options(p)  # gateway/buffer.py
    p.add_argument(
        "--ground-truth",
        default=None,
        help="write the injected faults (simulator) or the labelled anomaly intervals (replay) to this JSON file",
    )
    sim = p.add_argument_group("simulator driver (the default)")
    sim.add_argument(
        "--plant", default=None, help="plant description (YAML; default: the built-in Central Asia centre)"
    )
    sim.add_argument("--site", default=None, help="only the machines of this site (default: all sites)")
    sim.add_argument("--seed", type=int, default=1, help="simulation seed (default: 1)")
    rep = p.add_argument_group("replay driver: recorded CSV files as machines")
    rep.add_argument(
        "--replay", nargs="+", metavar="FILE", default=None, help="replay these CSV files, one machine per file"
    )
    rep.add_argument(
        "--mapping",
        default=None,
        metavar="skab|FILE",
        help="column mapping: a built-in name or a YAML file like gateway/mappings/skab.yaml (default: skab)",
    )
    rep.add_argument(
        "--machine",
        action="append",
        default=None,
        metavar="TENANT/SITE/LINE/MACHINE",
        help="machine path of the replayed file; once per file, or once with {parent} and {stem} standing for "
        "the file's folder and name (default: replay/lab/testbed/{parent}-{stem})",
    )
    rep.add_argument("--kind", default=None, help="machine kind of the replayed machines (default: the mapping's)")
    plc = p.add_argument_group("PLC drivers: OPC UA or Modbus TCP, live, in real time")
    plc.add_argument(
        "--driver",
        default=None,
        metavar="FILE",
        help="read the machines of this driver file (YAML with 'driver: opcua' or 'driver: modbus'; examples in "
        "gateway/examples/)",
    )
    p.set_defaults(func=run)


def replay_machines(files: list[str], templates: list[str] | None) -> list[MachinePath]:
    """One machine path per file, from ``--machine`` (once per file, or once with placeholders)."""
    from birlik.topics import MachinePath, TopicError

    templates = templates or [DEFAULT_REPLAY_MACHINE]
    if len(templates) not in (1, len(files)):
        raise ValueError(f"give --machine once, or once per replayed file ({len(files)}), not {len(templates)} times")
    if len(templates) == 1:
        templates = templates * len(files)
    paths = []
    for file, template in zip(files, templates, strict=True):
        p = Path(file)
        text = template.replace("{parent}", _name(p.parent.name or "recording")).replace("{stem}", _name(p.stem))
        levels = text.split("/")
        if len(levels) != 4:
            raise ValueError(f"--machine {template!r}: expected tenant/site/line/machine")
        try:
            paths.append(MachinePath(*levels))
        except TopicError as exc:
            raise ValueError(f"--machine {template!r}: {exc}") from None
    duplicates = sorted({str(p) for p in paths if paths.count(p) > 1})
    if duplicates:
        raise ValueError(
            f"several files would replay as the same machine {', '.join(duplicates)}: give one --machine per file"
        )
    return paths


def _name(text: str) -> str:
    """A file or folder name as a topic level: lowercase, other characters as '-'."""
    return re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-.") or "x"


def run(args: argparse.Namespace) -> int:
    import logging
    import sqlite3

    from birlik.config import load_config, override
    from birlik.process import terminate_gracefully
    from birlik.stats import StatsFile
    from gateway.publisher import MqttPublisher
    from gateway.service import Clock, run_gateway

    log = logging.getLogger("gateway")
    terminate_gracefully()
    config = load_config(args.config)
    if args.batch < 1:
        log.error("--batch must be at least 1")
        return 2
    flags = ("state_dir", "buffer_max_mb", "retention", "drain_rate", "sync")
    override(config, "gateway", {name: getattr(args, name) for name in flags})  # flags win over [gateway]
    driver: Driver
    try:
        if args.driver:
            driver, start_ms, end_ms, gateway_id, truth = _southbound(args)
        elif args.replay:
            driver, start_ms, end_ms, gateway_id, truth = _replay(args)
        else:
            driver, start_ms, end_ms, gateway_id, truth = _simulator(args)
    except (PlantError, ValueError) as exc:  # ReplayError is a ValueError
        log.error("%s", exc)
        return 2
    if args.ground_truth:
        Path(args.ground_truth).write_text(json.dumps(truth, indent=1))
    publisher = MqttPublisher(config.mqtt, client_id=gateway_id, protocol=config.gateway.protocol)
    try:
        buffer = _disk_log(config.gateway, gateway_id)
    except (ValueError, OSError, sqlite3.Error) as exc:
        log.error("disk log: %s", exc)
        return 2
    try:
        unacked = run_gateway(
            gateway_id,
            driver,
            publisher,
            Clock(start_ms, args.speed),
            end_ms=end_ms,
            wall_seconds=args.seconds,
            batch=args.batch,
            stats=StatsFile(args.stats_file, every_s=0.25),
            buffer=buffer,
            drain_rate=config.gateway.drain_rate,
            stop_timeout_s=config.gateway.stop_timeout_s,
            health_interval_s=config.gateway.health_interval_s,
        )
    finally:
        publisher.close()
        close = getattr(driver, "close", None)  # the PLC drivers' I/O threads
        if close is not None:
            close()
    return 0 if unacked == 0 else 1


Setup = tuple["Driver", int, int | None, str, list[dict[str, object]]]


def _store_and_forward_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "store and forward: the disk log (docs/gateway.md); each flag overrides its [gateway] setting in the config"
    )
    g.add_argument(
        "--state-dir",
        default=None,
        help="keep the disk log here (<dir>/<gateway id>.sqlite), across restarts (gateway.state_dir; default: a "
        "temporary log, removed at stop)",
    )
    g.add_argument(
        "--buffer-max-mb", type=float, default=None, help="disk log size limit, MB (gateway.buffer_max_mb; 1024)"
    )
    g.add_argument(
        "--retention",
        default=None,
        help="keep messages this long, acknowledged or not, for repairs (gateway.retention; 24h)",
    )
    g.add_argument(
        "--drain-rate",
        type=float,
        default=None,
        help="messages/s sent again from the log after an outage or on repair requests (gateway.drain_rate; 1000)",
    )
    g.add_argument(
        "--sync",
        choices=["normal", "full"],
        default=None,
        help="SQLite synchronous mode: normal survives a crash of the gateway; "
        "full also fsyncs every commit, for power loss (gateway.sync; normal)",
    )


def _disk_log(config: GatewayConfig, gateway_id: str) -> DiskLog | None:
    from gateway.buffer import DiskLog

    if not config.state_dir:
        return None
    return DiskLog(
        Path(config.state_dir) / f"{gateway_id}.sqlite",
        max_bytes=int(config.buffer_max_mb * 1e6),
        retention_s=parse_duration(config.retention, "gateway.retention"),
        sync="full" if config.sync == "full" else "normal",
    )


def _simulator(args: argparse.Namespace) -> Setup:
    from birlik.plant import load_plant
    from simulators.driver import SimulatorDriver  # only when simulated machines are configured

    replay_only = [o for o, v in (("--mapping", args.mapping), ("--machine", args.machine), ("--kind", args.kind)) if v]
    if replay_only:
        raise ValueError(f"{', '.join(replay_only)}: only with --replay")
    if args.start == RECORDING:
        raise ValueError("--start recording: only with --replay")
    plant = load_plant(args.plant)
    start_ms = args.start if args.start is not None else int(time.time() * 1000)
    driver = SimulatorDriver(plant, seed=args.seed, start_ms=start_ms, site=args.site)
    end_ms = None
    if args.sim_duration:
        end_ms = driver.fleet.start_ms + int(parse_duration(args.sim_duration, "--sim-duration") * 1000)
    gateway_id = args.gateway_id or (plant.site(args.site).gateway if args.site else f"gw-{plant.name}")
    truth = [g.as_dict() for g in driver.fleet.ground_truth()]
    return driver, driver.fleet.start_ms, end_ms, gateway_id, truth


def _southbound(args: argparse.Namespace) -> Setup:
    from gateway.southbound import load_driver

    others = [
        o
        for o, v in (
            ("--replay", args.replay),
            ("--plant", args.plant),
            ("--site", args.site),
            ("--mapping", args.mapping),
            ("--machine", args.machine),
            ("--kind", args.kind),
            ("--start", args.start),
            ("--sim-duration", args.sim_duration),
            ("--ground-truth", args.ground_truth),
            ("--speed", args.speed != 1.0),
        )
        if v
    ]
    if others:
        raise ValueError(f"{', '.join(others)}: not with --driver (a PLC driver reads live machines in real time)")
    driver = load_driver(args.driver)
    gateway_id = args.gateway_id or driver.config.gateway or f"gw-{driver.name}"
    return driver, int(time.time() * 1000), None, gateway_id, []


def _replay(args: argparse.Namespace) -> Setup:
    from gateway.replay import CsvReplayDriver, load_mapping

    simulator_only = [o for o, v in (("--plant", args.plant), ("--site", args.site)) if v]
    if simulator_only:
        raise ValueError(f"{', '.join(simulator_only)}: not with --replay (a replay's machines are its files)")
    mapping = load_mapping(args.mapping or "skab")
    paths = replay_machines(args.replay, args.machine)
    now_ms = int(time.time() * 1000)
    start_ms = None if args.start == RECORDING else now_ms if args.start is None else args.start
    driver = CsvReplayDriver(
        dict(zip(paths, args.replay, strict=True)), mapping=mapping, kind=args.kind, start_ms=start_ms
    )
    end_ms = driver.end_ms
    if args.sim_duration:
        end_ms = min(end_ms, driver.start_ms + int(parse_duration(args.sim_duration, "--sim-duration") * 1000))
    truth = [i.as_dict() for i in driver.ground_truth()]
    return driver, driver.start_ms, end_ms, args.gateway_id or "gw-replay", truth
