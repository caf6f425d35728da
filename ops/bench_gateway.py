"""``birlik bench gateway``: one gateway process with its disk log, through a broker outage.

Its own Mosquitto, InfluxDB and ``birlik ingest`` (the supervisor of ``ops/servers.py``, data
under the state dir, wiped at the start). Two phases, one ``birlik gateway`` process each,
both with ``--state-dir`` (the disk log on, ``synchronous=NORMAL``):

1. **publish**: the default plant (26 machines) as fast as it goes (``--speed 0``), one sample
   a message, for ``--seconds``: readings/s logged, published and acknowledged by the broker.
2. **drain**: the plant at ``--gateway-speed`` (default 120x: 624 messages/s) with
   ``--drain-rate``; after 10 s the broker is stopped for ``--outage-seconds`` (default 60)
   and started again on the same port. The backlog then drains while live readings go on:
   ``drain_rps`` is the readings sent from the log per second, from the reconnect until the
   gateway's backlog is empty. The gateway then runs 5 s more. Phase 2 plays another stretch of
   device time than phase 1 (the same plant would otherwise write the same points).

Every reading of both gateways' disk logs must then be in InfluxDB: ``lost`` counts those
that are not. ``log_bytes_per_reading`` is the disk log's size on disk (database and WAL)
after phase 1, per reading logged. The last line is::

    RESULT gateway publish_rps=... drain_rps=... lost=... log_bytes_per_reading=...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger("bench.gateway")

SUMMARY = "readings/s one gateway publishes with its disk log; drain rate after a broker outage; readings lost"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--outage-seconds", type=float, default=60, help="gateway: how long the broker is stopped (default: 60)"
    )
    p.add_argument(
        "--drain-rate", type=float, default=5000, help="gateway: the gateway's --drain-rate, messages/s (default: 5000)"
    )
    p.add_argument(
        "--gateway-speed", type=float, default=120, help="gateway: plant clock speed in the drain phase (default: 120)"
    )


def _log_points(path: Path) -> set[tuple[str, int, str]]:
    """Every reading in a disk log, as (topic, ts, signal)."""
    from gateway.buffer import read_log

    points: set[tuple[str, int, str]] = set()
    for e in read_log(path):
        for s in json.loads(e.payload)["samples"]:
            points.update((e.topic, s["ts"], k) for k in s["values"])
    return points


def _file_bytes(path: Path) -> int:
    return sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())


def run(args: argparse.Namespace) -> dict[str, object]:
    from birlik.influx import InfluxClient, InfluxSettings
    from ops.servers import Supervisor
    from ops.stack import Stack, wait_until

    state = Path(args.state_dir)
    with Supervisor(state) as supervisor:
        stack = Stack(supervisor)
        for old in ("gw-publish", "gw-drain"):
            shutil.rmtree(state / old, ignore_errors=True)
        stack.start_servers()
        assert stack.broker is not None and stack.influx is not None
        stack.start_ingest()

        # 1. As fast as it goes, with the disk log.
        log1 = state / "gw-publish"
        t0 = time.monotonic()
        child = stack.start_service(
            "gateway-publish",
            [
                "gateway",
                "--gateway-id",
                "gw-publish",
                "--speed",
                "0",
                "--start",
                "now-30d",
                "--seconds",
                str(args.seconds),
                "--state-dir",
                str(log1),
            ],
        )
        child.process.wait(args.seconds + args.timeout)
        elapsed = time.monotonic() - t0
        s1 = stack.stats("gateway-publish")
        publish_rps = s1.get("readings", 0) / elapsed if elapsed else 0.0
        logged1 = _log_points(log1 / "gw-publish.sqlite")
        bytes_per_reading = _file_bytes(log1 / "gw-publish.sqlite") / len(logged1) if logged1 else 0.0
        log.info(
            "publish: %s readings in %s messages acknowledged in %.1f s: %.0f readings/s; disk log %.1f MB",
            f"{s1.get('readings', 0):,}",
            f"{s1.get('acked', 0):,}",
            elapsed,
            publish_rps,
            _file_bytes(log1 / "gw-publish.sqlite") / 1e6,
        )

        # 2. A broker outage at a live rate, then the drain.
        log2 = state / "gw-drain"
        seconds = 10 + args.outage_seconds + 5 + args.timeout
        child = stack.start_service(
            "gateway-drain",
            [
                "gateway",
                "--gateway-id",
                "gw-drain",
                "--speed",
                str(args.gateway_speed),
                "--start",
                "now-20d",
                "--seconds",
                str(seconds),
                "--state-dir",
                str(log2),
                "--drain-rate",
                str(args.drain_rate),
            ],
        )
        wait_until(lambda: stack.stats("gateway-drain").get("acked", 0) > 0, 30)
        time.sleep(10)
        port = stack.broker.port
        supervisor.stop(stack.broker.child)
        log.info("broker stopped for %.0f s", args.outage_seconds)
        time.sleep(args.outage_seconds)
        stack.broker = supervisor.start_mosquitto(port=port)
        # From the gateway's reconnect (paho's back-off: up to 5 s after the broker is back).
        wait_until(lambda: bool(stack.stats("gateway-drain").get("connected")), 30, every_s=0.05)
        t_reconnect = time.monotonic()
        backlog = stack.stats("gateway-drain").get("buffer_backlog", 0)
        drained = wait_until(
            lambda: stack.stats("gateway-drain").get("buffer_backlog", 1) == 0, args.timeout, every_s=0.1
        )
        drain_s = time.monotonic() - t_reconnect
        s2 = stack.stats("gateway-drain")
        per_message = s2.get("readings", 0) / s2.get("messages", 1) if s2.get("messages") else 0
        drain_rps = backlog * per_message / drain_s if drained and drain_s else 0.0
        log.info(
            "drain: %s messages buffered during the outage, drained in %.1f s (%.0f readings/s), live readings "
            "going on",
            f"{backlog:,}",
            drain_s,
            drain_rps,
        )
        time.sleep(5)
        child.stop(60)
        supervisor.children.remove(child)

        # Every reading of both logs in InfluxDB?
        expected = len(logged1 | _log_points(log2 / "gw-drain.sqlite"))  # points of both, once
        with InfluxClient(InfluxSettings(url=stack.influx.url, database="birlik")) as influx:
            wait_until(lambda: influx.count_readings() >= expected, 60, every_s=1)
            stored = influx.count_readings()
        log.info("%s readings logged by the gateways, %s stored", f"{expected:,}", f"{stored:,}")
    return {
        "publish_rps": round(publish_rps),
        "drain_rps": round(drain_rps),
        "lost": max(0, expected - stored),
        "log_bytes_per_reading": round(bytes_per_reading, 1),
    }
