"""Store and forward and gap repair on real processes: a real ``birlik gateway`` (simulated
plant, 60x) through real Mosquitto, ``birlik ingest`` and InfluxDB; the broker stopped, killed
and restarted, the gateway killed, the disk log full.

The ground truth is the gateway's own disk log: every message it ever logged (both boots after
a restart). Every reading of it must be in InfluxDB, with its value, and nothing else.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from birlik.influx import InfluxClient, InfluxSettings
from birlik.stats import read_stats
from gateway.buffer import read_log
from ops.repair import GapFinder, count, holes
from ops.servers import Child, Mosquitto, Supervisor, find_executable, free_port, mosquitto_config
from ops.stack import birlik_command
from tests.ingest_procs import count_readings, ingest_env, ingest_process, wait_until

pytestmark = pytest.mark.slow

GW = "gw-durable"
TAGS = {"tenant", "site", "line", "kind"}


def _db() -> str:
    return f"gw_{uuid.uuid4().hex[:8]}"


def start_gateway(
    sup: Supervisor,
    name: str,
    broker_url: str,
    state: Path,
    *extra: str,
    seconds: float = 120,
    health_interval_s: float = 10,
    protocol: str = "auto",
    stop_timeout_s: float = 30,
) -> tuple[Child, Path]:
    stats = state / f"{name}.stats.json"
    child = sup.start(
        name,
        [
            *birlik_command(),
            "gateway",
            "--site",
            "kz-turkestan",
            "--speed",
            "60",
            "--gateway-id",
            GW,
            "--state-dir",
            str(state),
            "--stats-file",
            str(stats),
            "--seconds",
            str(seconds),
            *extra,
        ],
        env={
            "BIRLIK_MQTT_URL": broker_url,
            "BIRLIK_CONFIG": "",
            "BIRLIK_GATEWAY_HEALTH_INTERVAL_S": str(health_interval_s),
            "BIRLIK_GATEWAY_PROTOCOL": protocol,
            "BIRLIK_GATEWAY_STOP_TIMEOUT_S": str(stop_timeout_s),
            "PYTHONUNBUFFERED": "1",
        },
    )
    return child, stats


def logged_points(state: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Every sample in the gateway's disk log: (machine, ts) -> values."""
    points: dict[tuple[str, int], dict[str, Any]] = {}
    for e in read_log(state / f"{GW}.sqlite"):
        machine = e.topic.split("/")[4]
        for s in json.loads(e.payload)["samples"]:
            old = points.setdefault((machine, s["ts"]), s["values"])
            assert old == s["values"], "the gateway logged two different samples for one machine and time"
    return points


def stored_points(url: str, db: str) -> dict[tuple[str, int], dict[str, Any]]:
    stored = {}
    with InfluxClient(InfluxSettings(url=url, database=db)) as influx:
        for s in influx.query('SELECT * FROM "telemetry" GROUP BY "machine"'):
            for row in s.records():
                ts = row.pop("time")
                stored[(s.tags["machine"], ts)] = {k: v for k, v in row.items() if v is not None and k not in TAGS}
    return stored


def assert_every_logged_reading_stored_once(state: Path, url: str, db: str) -> int:
    expected = logged_points(state)
    readings = sum(len(v) for v in expected.values())
    wait_until(lambda: count_readings(url, db) >= readings, timeout_s=90, what=f"{readings} readings stored")
    time.sleep(0.5)
    assert count_readings(url, db) == readings
    assert stored_points(url, db) == expected
    return readings


def unacked_in_log(state: Path) -> int:
    db = sqlite3.connect(f"file:{state / f'{GW}.sqlite'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM messages WHERE acked = 0").fetchone()[0])
    finally:
        db.close()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def stored_health(url: str, db: str) -> list[dict[str, Any]]:
    with InfluxClient(InfluxSettings(url=url, database=db)) as influx:
        return [row for series in influx.query('SELECT * FROM "gateway"') for row in series.records()]


def test_broker_stopped_for_60_s_mid_stream_every_reading_lands_exactly_once(tmp_path: Path) -> None:
    db = _db()
    state = tmp_path / "gw"
    with Supervisor(tmp_path / "s") as sup:
        port = free_port()
        broker = sup.start_mosquitto(port=port)
        influx = sup.start_influxdb()
        ingest_process(sup, ingest_env(broker.url, influx.url, db, tmp_path, "ingest"), tmp_path, "ingest").start()
        gateway, stats = start_gateway(
            sup, "gateway", broker.url, state, "--drain-rate", "1000", seconds=80, health_interval_s=1
        )
        wait_until(lambda: read_stats(stats).get("acked", 0) > 200, what="the gateway publishing")
        time.sleep(3)
        sup.stop(broker.child)
        time.sleep(1)
        seq_before = read_stats(stats)["seq"]
        time.sleep(59)
        during = read_stats(stats)
        # The poll loop did not wait for the broker: the drivers kept sampling, into the disk log.
        assert during["seq"] - seq_before > 6000 and during["buffer_depth"] > 6000
        assert not during["connected"] and during["buffer_oldest_unsent_age_s"] > 55
        sup.start_mosquitto(port=port)
        assert gateway.process.wait(120) == 0
        final = read_stats(stats)
        assert final["reconnects"] == 1 and final["buffer_depth"] == 0 and final["unacked"] == 0
        assert final["replayed"] >= during["buffer_depth"]
        text = gateway.log_path.read_text()
        assert text.count("broker unreachable, buffering to disk") == 1
        assert text.count("connected again, draining") == 1
        assert_every_logged_reading_stored_once(state, influx.url, db)

        # Its health, as telemetry: the backlog and its age seen after the reconnect, then drained.
        health = stored_health(influx.url, db)
        assert {h["gateway"] for h in health} == {GW} and {h["boot"] for h in health} == {final["boot"]}
        after = [h for h in health if h["reconnects"] == 1]
        assert after and max(h["buffer_backlog"] for h in after) > 3000
        assert max(h["oldest_unsent_s"] for h in after) > 55
        assert after[-1]["buffer_depth"] < 1000 and after[-1]["replayed"] > 3000
        assert all(h["reconnects"] == 0 for h in health[: health.index(after[0])])


def test_gateway_sigkilled_while_buffering_and_restarted_loses_nothing(tmp_path: Path) -> None:
    db = _db()
    state = tmp_path / "gw"
    start_ms = int(time.time() * 1000) - 6 * 3600 * 1000
    with Supervisor(tmp_path / "s") as sup:
        port = free_port()
        broker = sup.start_mosquitto(port=port)
        influx = sup.start_influxdb()
        ingest_process(sup, ingest_env(broker.url, influx.url, db, tmp_path, "ingest"), tmp_path, "ingest").start()
        first, stats = start_gateway(sup, "gateway-1", broker.url, state, "--start", _iso(start_ms))
        wait_until(lambda: read_stats(stats).get("acked", 0) > 300, what="the gateway publishing")
        sup.stop(broker.child)
        wait_until(lambda: read_stats(stats).get("buffer_depth", 0) > 500, what="messages buffered")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        sup.children.remove(first)
        assert unacked_in_log(state) > 500
        sup.start_mosquitto(port=port)
        # Another stretch of device time: the first boot's readings can only come from its log.
        second, stats2 = start_gateway(
            sup, "gateway-2", broker.url, state, "--start", _iso(start_ms + 2 * 3600 * 1000), seconds=8
        )
        assert second.process.wait(90) == 0
        assert unacked_in_log(state) == 0
        assert read_stats(stats2)["replayed"] > 500
        assert "connected to the broker" in second.log_path.read_text()
        assert len({e.boot for e in read_log(state / f"{GW}.sqlite")}) == 2
        assert_every_logged_reading_stored_once(state, influx.url, db)


def test_a_full_disk_log_drops_the_oldest_counts_and_reports_it(tmp_path: Path) -> None:
    state = tmp_path / "gw"
    with Supervisor(tmp_path / "s") as sup:
        gateway, stats = start_gateway(
            sup, "gateway", f"mqtt://127.0.0.1:{free_port()}", state, "--buffer-max-mb", "0.2", seconds=4
        )
        assert gateway.process.wait(60) == 1  # unacknowledged messages remain (no broker)
        final = read_stats(stats)
        assert final["buffer_dropped"] > 0 and final["buffer_bytes"] <= 200_000
        assert final["seq"] == final["buffer_dropped"] + final["buffer_depth"]
        entries = read_log(state / f"{GW}.sqlite")
        assert entries[0].seq == final["buffer_dropped"] + 1 and entries[-1].seq == final["seq"]  # oldest dropped
        text = gateway.log_path.read_text()
        assert "dropped" in text and "to keep the log within its size" in text
        assert f"dropped {final['buffer_dropped']}," in text  # the stop line


def start_volatile_mosquitto(sup: Supervisor, port: int, tmp: Path) -> Mosquitto:
    """The shipped settings, but the broker saves its state once an hour: killed, it forgets
    everything it had acknowledged since it started, the ingest's queued messages included."""
    shipped = Path(__file__).resolve().parents[1] / "docker" / "mosquitto" / "mosquitto.conf"
    custom = tmp / "volatile.conf"
    lines = [ln for ln in shipped.read_text().splitlines() if not ln.strip().startswith("autosave_interval")]
    custom.write_text("\n".join([*lines, "autosave_interval 3600"]) + "\n")
    data = tmp / "mosquitto-volatile"
    data.mkdir(exist_ok=True)
    conf = data / "mosquitto.conf"
    conf.write_text(mosquitto_config(port, data, conf=custom))

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    child = sup.start("mosquitto", [find_executable("mosquitto", "/usr/sbin"), "-c", str(conf)], ready=ready, port=port)
    return Mosquitto(child, "127.0.0.1", port)


def test_messages_lost_by_a_crashed_broker_are_repaired_by_birlik_repair_across_two_ingests(tmp_path: Path) -> None:
    """Two ingest processes share the stream ($share), so each sees only part of every sequence;
    ``birlik repair`` (a process of its own) finds the holes from what both stored."""
    db = _db()
    state = tmp_path / "gw"
    with Supervisor(tmp_path / "s") as sup:
        port = free_port()
        broker = start_volatile_mosquitto(sup, port, tmp_path)
        influx = sup.start_influxdb()
        ingests = [
            ingest_process(
                sup, ingest_env(broker.url, influx.url, db, tmp_path, name, share_group="store"), tmp_path, name
            )
            for name in ("ingest-a", "ingest-b")
        ]
        for ingest in ingests:
            ingest.start()
        # (A stop bounded to 10 s of draining and 10 s of flushing: SIGTERMed while it still
        # sends, the gateway is done well within the minute the test waits.)
        gateway, stats = start_gateway(sup, "gateway", broker.url, state, seconds=300, stop_timeout_s=10)
        wait_until(lambda: read_stats(stats).get("acked", 0) > 300, what="the gateway publishing")
        wait_until(lambda: all(i.stats.get("messages_acked", 0) > 50 for i in ingests), what="both ingests storing")
        # The ingests away: the broker acknowledges the gateway's messages and keeps them for the
        # ingests' sessions, in memory only; then it crashes, and they are gone.
        for ingest in ingests:
            assert ingest.terminate()[0] == 0
        lost_from = read_stats(stats)["seq"]
        time.sleep(4)
        broker.child.process.send_signal(signal.SIGKILL)
        broker.child.process.wait(10)
        sup.children.remove(broker.child)
        broker = start_volatile_mosquitto(sup, port, tmp_path)
        for ingest in ingests:
            ingest.start()

        with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
            observer = GapFinder(client, settle_s=2, retry_s=5)  # reads only: to see the holes exist

            def holes_seen() -> bool:
                observer.read()
                return bool(observer.stats()["open"] > 300)

            wait_until(holes_seen, timeout_s=30, what="holes seen")
            boot = read_stats(stats)["boot"]
            gap = holes(observer.boots[(GW, boot)].covered, observer.boots[(GW, boot)].settled_max)
            assert count(gap) > 300 and gap[0][0] > lost_from - 1000, gap
            ingest_records = {
                row["ingest"] for series in client.query('SELECT * FROM "sequence"') for row in series.records()
            }
            assert ingest_records == {f"ingest-a-{db}", f"ingest-b-{db}"}  # each stored part of the sequence

        repair_stats = tmp_path / "repair.stats.json"
        repair = sup.start(
            "repair",
            [
                *birlik_command(),
                "repair",
                "--interval",
                "1",
                "--settle",
                "2",
                "--stats-file",
                str(repair_stats),
            ],
            env={
                "BIRLIK_MQTT_URL": broker.url,
                "BIRLIK_INFLUX_URL": influx.url,
                "BIRLIK_INFLUX_DATABASE": db,
                "BIRLIK_REPAIR_RETRY_S": "5",
                "BIRLIK_REPAIR_CLIENT_ID": f"repair-{db}",
                "BIRLIK_CONFIG": "",
            },
        )

        def repaired() -> bool:
            s = read_stats(repair_stats)
            return bool(s.get("closed", 0) >= count(gap) and s.get("open", 1) == 0)

        wait_until(repaired, timeout_s=90, what="the holes closed by birlik repair")
        gateway.process.send_signal(signal.SIGTERM)
        # 1: live messages still in flight at the stop, kept in the disk log for the next start.
        assert gateway.process.wait(60) in (0, 1)
        assert read_stats(stats)["repaired"] >= count(gap)
        assert "repair request: boot" in gateway.log_path.read_text()
        # Stored by both ingests: the repaired messages went to whichever the broker chose.
        assert_every_logged_reading_stored_once(state, influx.url, db)
        assert sup.stop(repair) == 0
        assert "closed" in repair.log_path.read_text()
