"""Nothing acknowledged is lost: real ``birlik ingest`` processes, real Mosquitto and InfluxDB,
killed with SIGKILL, frozen with SIGSTOP, the database stopped or refusing mid-stream.

Each test counts the readings in InfluxDB at the end: the same series and timestamp written
twice is stored once, so the count equals what was published exactly when nothing was lost.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from birlik.influx import InfluxClient, InfluxSettings
from ops.servers import Supervisor, free_port
from tests.ingest_procs import (
    READINGS_PER_MESSAGE,
    Publisher,
    count_readings,
    dead_letters,
    ingest_env,
    ingest_process,
    messages,
    wait_until,
)

pytestmark = pytest.mark.slow


def _db() -> str:
    return f"dur_{uuid.uuid4().hex[:8]}"


def test_sigkill_while_influxdb_is_down_loses_nothing(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto()
        influx_port = free_port()
        influx = sup.start_influxdb(port=influx_port)
        env = ingest_env(broker.url, influx.url, db, tmp_path, "kill")
        ingest = ingest_process(sup, env, tmp_path, "ingest").start()
        sup.stop(influx.child)
        pub = Publisher(broker.host, broker.port)
        pub.publish(messages(1, 300))
        wait_until(lambda: ingest.stats.get("messages_received", 0) >= 300, what="ingest received all 300")
        assert ingest.stats["messages_acked"] == 0  # nothing is acknowledged before it is stored
        ingest.kill(signal.SIGKILL)
        influx = sup.start_influxdb(port=influx_port)
        ingest.start()
        wait_until(lambda: count_readings(influx.url, db) == 300 * READINGS_PER_MESSAGE, what="all readings stored")
        wait_until(lambda: ingest.stats.get("window_in_use") == 0, what="everything acknowledged")
        pub.close()
        assert dead_letters(tmp_path / "kill.dead.jsonl") == []


def test_influxdb_away_for_30_s_mid_stream_memory_bounded_and_stop_within_the_deadline(tmp_path: Path) -> None:
    db = _db()
    window = 2000
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto()
        influx_port = free_port()
        influx = sup.start_influxdb(port=influx_port)
        env = ingest_env(broker.url, influx.url, db, tmp_path, "outage", window=str(window), stop_timeout_s="3")
        ingest = ingest_process(sup, env, tmp_path, "ingest").start()
        pub = Publisher(broker.host, broker.port)
        total = 40_000
        stream = pub.stream(messages(1, total), rate=1000)  # 40 s at 1,000 messages/s
        time.sleep(5)
        sup.stop(influx.child)
        peak_rss = 0.0
        peak_window = 0
        outage_end = time.monotonic() + 30
        while time.monotonic() < outage_end:
            peak_rss = max(peak_rss, ingest.rss_mb())
            peak_window = max(peak_window, ingest.stats.get("window_in_use", 0))
            time.sleep(0.5)
        # The window is full and the rest waits in the broker; memory does not grow with the outage.
        assert peak_window <= window
        assert ingest.stats.get("window_in_use", 0) >= window * 0.9
        assert peak_rss < 250, f"peak RSS {peak_rss:.0f} MB"
        # SIGTERM during the outage: the ingest leaves within its deadline, the broker keeps the rest.
        code, took = ingest.terminate()
        assert code == 0 and took < 3 + 5, f"exit {code} after {took:.1f} s"
        influx = sup.start_influxdb(port=influx_port)
        ingest.start()
        stream.join(120)
        wait_until(
            lambda: count_readings(influx.url, db) == total * READINGS_PER_MESSAGE,
            timeout_s=120,
            what="every reading stored after the outage",
        )
        pub.close()
        assert dead_letters(tmp_path / "outage.dead.jsonl") == []


def test_broker_sigkilled_and_restarted_keeps_the_session_and_what_it_had_queued(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker_port = free_port()
        broker = sup.start_mosquitto(port=broker_port)
        influx = sup.start_influxdb()
        env = ingest_env(broker.url, influx.url, db, tmp_path, "broker")
        ingest = ingest_process(sup, env, tmp_path, "ingest").start()
        # The session exists; the ingest goes away and messages queue for it in the broker.
        code, _ = ingest.terminate()
        assert code == 0
        pub = Publisher(broker.host, broker.port)
        pub.publish(messages(1, 2000))
        pub.close()
        # Wait for the broker's next save (shipped autosave_interval: 10 s).
        published = time.time()
        database = sup.state_dir / "mosquitto" / "mosquitto.db"
        wait_until(lambda: database.exists() and database.stat().st_mtime > published + 1.0, 30, "a save of the broker")
        broker.child.process.send_signal(signal.SIGKILL)
        broker.child.process.wait(10)
        sup.children.remove(broker.child)
        broker = sup.start_mosquitto(port=broker_port)
        ingest.start()
        wait_until(lambda: count_readings(influx.url, db) == 2000 * READINGS_PER_MESSAGE, what="queued messages stored")
        # And with the ingest connected: the broker killed mid-stream, the ingest reconnects by itself.
        pub = Publisher(broker.host, broker.port)
        pub.publish(messages(2001, 3000))
        wait_until(lambda: count_readings(influx.url, db) == 3000 * READINGS_PER_MESSAGE, what="stream stored")
        pub.close()
        broker.child.process.send_signal(signal.SIGKILL)
        broker.child.process.wait(10)
        sup.children.remove(broker.child)
        broker = sup.start_mosquitto(port=broker_port)
        pub = Publisher(broker.host, broker.port)
        pub.publish(messages(3001, 4000))
        wait_until(
            lambda: count_readings(influx.url, db) == 4000 * READINGS_PER_MESSAGE, what="stored after reconnecting"
        )
        pub.close()
        assert ingest.running and len(ingest.starts) == 2
        assert "connected and subscribed again" in ingest.log()


def test_ingest_frozen_for_60_s_at_full_input_rate_nothing_dropped_by_the_shipped_broker(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto()
        influx = sup.start_influxdb()
        env = ingest_env(broker.url, influx.url, db, tmp_path, "frozen")
        ingest = ingest_process(sup, env, tmp_path, "ingest").start()
        pub = Publisher(broker.host, broker.port)
        total = 150_000
        stream = pub.stream(messages(1, total), rate=2500)  # 60 s of input
        time.sleep(1)
        ingest.kill(signal.SIGSTOP)
        time.sleep(60)
        ingest.kill(signal.SIGCONT)
        stream.join(180)
        wait_until(
            lambda: count_readings(influx.url, db) == total * READINGS_PER_MESSAGE,
            timeout_s=180,
            what="every reading stored after the freeze",
        )
        pub.close()


def test_database_dropped_404_recovers_without_dead_letters(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto()
        influx = sup.start_influxdb()
        env = ingest_env(broker.url, influx.url, db, tmp_path, "dropped")
        ingest = ingest_process(sup, env, tmp_path, "ingest").start()
        pub = Publisher(broker.host, broker.port)
        pub.publish(messages(1, 100))
        wait_until(lambda: count_readings(influx.url, db) == 100 * READINGS_PER_MESSAGE, what="first 100")
        with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
            client.drop_database(db)
        pub.publish(messages(101, 200))
        wait_until(lambda: count_readings(influx.url, db) == 100 * READINGS_PER_MESSAGE, what="the next 100")
        pub.close()
        assert dead_letters(tmp_path / "dropped.dead.jsonl") == []
        assert "does not exist" in ingest.log()


def test_rejected_credentials_401_hold_everything_and_recover_when_fixed(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto()
        influx = sup.start_influxdb(auth=True)
        admin = InfluxSettings(url=influx.url, database=db, username="admin", password="admin-pw")
        first_admin = "CREATE USER admin WITH PASSWORD 'admin-pw' WITH ALL PRIVILEGES"
        httpx.post(f"{influx.url}/query", params={"q": first_admin})
        with InfluxClient(admin) as client:
            client.create_database(db)
        env = ingest_env(broker.url, influx.url, db, tmp_path, "auth")
        env |= {"BIRLIK_INFLUX_USERNAME": "writer", "BIRLIK_INFLUX_PASSWORD": "rotated-pw"}
        ingest = ingest_process(sup, env, tmp_path, "ingest").start()
        pub = Publisher(broker.host, broker.port)
        pub.publish(messages(1, 200))
        wait_until(lambda: ingest.stats.get("write_retries", 0) >= 2, what="writes refused and retried")
        assert ingest.stats["messages_acked"] == 0
        assert "credentials" in ingest.log()
        # The operator creates the user the ingest was configured with: it recovers by itself.
        with InfluxClient(admin) as client:
            client.query_all("CREATE USER writer WITH PASSWORD 'rotated-pw'")
            client.query_all(f'GRANT ALL ON "{db}" TO writer')
        wait_until(lambda: ingest.stats.get("messages_acked", 0) == 200, what="acknowledged after recovery")
        with InfluxClient(admin) as client:
            assert client.count_readings() == 200 * READINGS_PER_MESSAGE
        pub.close()
        assert dead_letters(tmp_path / "auth.dead.jsonl") == []


def test_three_processes_share_the_stream_one_sigkilled_and_restarted_every_reading_once(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto()
        influx = sup.start_influxdb()
        procs = [
            ingest_process(
                sup, ingest_env(broker.url, influx.url, db, tmp_path, f"share{i}", share_group="g"), tmp_path, f"i{i}"
            ).start()
            for i in range(3)
        ]
        pub = Publisher(broker.host, broker.port)
        total = 30_000
        stream = pub.stream(messages(1, total), rate=3000)
        time.sleep(4)
        victim = procs[1]
        assert victim.stats.get("messages_received", 0) > 0
        victim.kill(signal.SIGKILL)
        time.sleep(2)
        victim.start()
        stream.join(60)
        wait_until(
            lambda: count_readings(influx.url, db) == total * READINGS_PER_MESSAGE,
            timeout_s=90,
            what="every reading stored",
        )
        pub.close()
        assert all(p.running for p in procs)
        assert all(p.stats.get("messages_received", 0) > 0 for p in procs)
