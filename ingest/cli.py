"""``birlik ingest``: MQTT telemetry into InfluxDB."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "ingest",
        parents=[common],
        help="subscribe to telemetry, validate, write to InfluxDB",
        description="Subscribe to every machine's telemetry topic (MQTT v5, QoS 1, persistent session), "
        "validate each message against the payload schema and the signal catalogue, write the readings "
        "to InfluxDB in batches, and keep rejected messages and readings in the dead-letter file. A "
        "message is acknowledged to the broker only once its readings are stored (or kept as dead "
        "letters): until then the broker keeps it, through crashes and outages. "
        "Settings: [mqtt], [influx] and [ingest] in the config file or BIRLIK_* variables "
        "(window, batch_size, stop_timeout_s, share_group, client_id, metrics_listen ...; "
        "see 'birlik config' and birlik.example.toml).",
    )
    p.add_argument(
        "--plant",
        default=None,
        help="plant description; messages from machines not in it are rejected (config: ingest.plant)",
    )
    p.add_argument("--dead-letters", default=None, help="dead-letter file (config: ingest.dead_letters)")
    p.add_argument("--stats-file", default=None, help="keep counters in this JSON file (config: ingest.stats_file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from birlik.config import load_config
    from birlik.plant import PlantError, load_plant
    from ingest.service import IngestService

    log = logging.getLogger("ingest")
    config = load_config(args.config)
    if args.dead_letters:
        config.ingest.dead_letters = args.dead_letters
    if args.stats_file:
        config.ingest.stats_file = args.stats_file
    plant_path = args.plant or config.ingest.plant
    machines = None
    if plant_path:
        try:
            machines = load_plant(plant_path).registry()
        except PlantError as exc:
            log.error("%s", exc)
            return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await IngestService(config, machines=machines).run(stop)
        # What was not written stays unacknowledged in the broker: not an error of this run.
        return 0

    return asyncio.run(main())
