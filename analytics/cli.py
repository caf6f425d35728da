"""``birlik analytics``: predictive-maintenance anomaly detection and alerts."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "analytics",
        parents=[common],
        help="score new readings for anomalies, store scores, raise alerts",
        description="Poll InfluxDB for new readings of every machine, score them with an anomaly detector "
        "that learns each machine's normal behaviour, write the scores back (measurement 'anomaly'), and "
        "raise and clear alerts (measurement 'alert', MQTT topic birlik/<tenant>/<site>/<line>/<machine>/alert). "
        "Settings: [analytics] in the config file or BIRLIK_ANALYTICS_*.",
    )
    p.add_argument(
        "--since", default=None, help="score readings from this time: now-1h or ISO time (default: now - lookback_s)"
    )
    p.add_argument("--once", action="store_true", help="score what is there, then exit (batch mode)")
    p.add_argument("--stats-file", default=None, help="keep counters in this JSON file (config: analytics.stats_file)")
    p.add_argument("--no-mqtt", action="store_true", help="do not publish alerts on MQTT (log them only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from analytics.alerts import AlertChannel, LogChannel, MqttChannel
    from analytics.detectors import DETECTORS
    from analytics.worker import AnalyticsWorker
    from birlik.config import ConfigError, load_config
    from birlik.influx import InfluxClient
    from birlik.process import parse_start, terminate_gracefully

    log = logging.getLogger("analytics")
    terminate_gracefully()
    config = load_config(args.config)
    if args.stats_file:
        config.analytics.stats_file = args.stats_file
    factory = DETECTORS.get(config.analytics.detector)
    if factory is None:
        raise ConfigError(
            f"analytics.detector {config.analytics.detector!r} is unknown (known: {', '.join(DETECTORS)})"
        )
    since_ms = parse_start(args.since) if args.since else int((time.time() - config.analytics.lookback_s) * 1000)
    channels: list[AlertChannel] = [LogChannel()]
    if not args.no_mqtt:
        try:
            channels.append(MqttChannel(config.mqtt, client_id=config.analytics.client_id))
        except OSError as exc:
            log.error("cannot reach the broker at %s: %s", config.mqtt.url, exc)
            return 1
    with InfluxClient(config.influx.settings()) as influx:
        worker = AnalyticsWorker(
            influx, config.analytics, detector_factory=factory, channels=channels, since_ms=since_ms
        )
        try:
            worker.run(once=args.once)
        finally:
            for channel in channels:
                channel.close()
    return 0
