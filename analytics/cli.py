"""``birlik analytics``: predictive-maintenance anomaly detection and alerts."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from birlik.process import parse_start

if TYPE_CHECKING:
    from analytics.alarmservice import AlarmService
    from birlik.config import Config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "analytics",
        parents=[common],
        help="score new readings for anomalies, store scores, raise alerts",
        description="Score every machine's readings with an anomaly detector that learns each machine's normal "
        "behaviour, check its sensors, write the scores back (measurements 'anomaly', 'health', 'sensor_issue'), "
        "and raise alarms (stored, then notified; see 'birlik alarms'). Live, it reads the telemetry from the "
        "broker as it arrives; with --since it reads InfluxDB from that time on (backfills, replays). "
        "Settings: [analytics] and [alarms] in the config file or BIRLIK_ANALYTICS_*, BIRLIK_ALARMS_*.",
    )
    p.add_argument(
        "--since",
        type=parse_start,
        default=None,
        help="read InfluxDB from this time on: now-1h or ISO time (default: live from the broker)",
    )
    p.add_argument(
        "--poll",
        action="store_true",
        help="live, but by polling InfluxDB (from now - lookback_s) instead of reading the broker",
    )
    p.add_argument("--once", action="store_true", help="score what is there, then exit (batch mode)")
    p.add_argument("--stats-file", default=None, help="keep counters in this JSON file (config: analytics.stats_file)")
    p.add_argument("--no-mqtt", action="store_true", help="do not publish alerts on MQTT (log them only)")
    p.add_argument(
        "--alarms-store", default=None, help="the alarm store, SQLite (config: alarms.store, default alarms.sqlite)"
    )
    p.add_argument("--no-alarms", action="store_true", help="no alarm lifecycle and notifications (alerts only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from analytics.alerts import AlertChannel, LogChannel, MqttChannel
    from analytics.detectors import DETECTORS
    from analytics.worker import AnalyticsWorker
    from birlik.config import ConfigError, load_config
    from birlik.influx import InfluxClient
    from birlik.process import terminate_gracefully

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
    since_ms = args.since if args.since is not None else int((time.time() - config.analytics.lookback_s) * 1000)
    channels: list[AlertChannel] = [LogChannel()]
    if not args.no_mqtt:
        try:
            channels.append(MqttChannel(config.mqtt, client_id=config.analytics.client_id))
        except OSError as exc:
            log.error("cannot reach the broker at %s: %s", config.mqtt.url, exc)
            return 1
    if args.alarms_store:
        config.alarms.store = args.alarms_store
    with InfluxClient(config.influx.settings()) as influx:
        alarms = None if args.no_alarms else build_alarms(config, mqtt=not args.no_mqtt)
        worker = AnalyticsWorker(
            influx, config.analytics, detector_factory=factory, channels=channels, since_ms=since_ms, alarms=alarms
        )
        try:
            if args.since is None and not args.poll and not args.once and not args.no_mqtt:
                from analytics.stream import TelemetryStream

                stream = TelemetryStream(
                    config.mqtt,
                    client_id=f"{config.analytics.client_id}-stream",
                    share_group=config.analytics.share_group,
                )
                try:
                    worker.run_live(stream)
                finally:
                    stream.close()
            else:
                worker.run(once=args.once)
        finally:
            for channel in channels:
                channel.close()
            if alarms is not None:
                alarms.close(drain_s=10.0 if args.once else 3.0)
    return 0


def build_alarms(config: Config, *, mqtt: bool) -> AlarmService:
    """The alarm service with every configured channel (see analytics/alarmservice.py)."""
    from analytics.alarmservice import (
        AlarmService,
        CommandListener,
        InfluxAlarmChannel,
        MqttAlarmChannel,
        configured_channels,
    )
    from analytics.alarmstore import AlarmStore
    from analytics.notifier import Channel
    from birlik.influx import InfluxClient

    store = AlarmStore(config.alarms.store)
    chart_influx = InfluxClient(config.influx.settings())
    channels: list[Channel] = [InfluxAlarmChannel(InfluxClient(config.influx.settings()))]
    commands = None
    if mqtt:
        channels.append(
            MqttAlarmChannel(config.mqtt, client_id=f"{config.analytics.client_id}-alarms", open_alarms=store.latest())
        )
        commands = CommandListener(config.mqtt, client_id=f"{config.analytics.client_id}-commands")
    channels += configured_channels(config.alarms, chart_influx)
    return AlarmService(config.alarms, store, channels, commands=commands)
