"""Real ingest processes for the durability tests: started with ``birlik ingest``, watched
through their stats file, stopped with signals."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from birlik.influx import InfluxClient, InfluxSettings
from birlik.payload import encode_telemetry
from birlik.stats import read_stats
from birlik.topics import MachinePath
from ops.servers import Child, Supervisor
from ops.stack import birlik_command

TS = 1_763_800_000_000
MACHINES = [MachinePath("acme", "kz-turkestan", f"line-{i % 3}", f"pump-{i}") for i in range(6)]
READINGS_PER_MESSAGE = 3


def message(seq: int, *, gateway: str = "gw-1", boot: str = "b1") -> tuple[str, bytes]:
    """Message ``seq`` of a stream: 3 readings of one of six pumps, a timestamp of its own."""
    machine = MACHINES[seq % len(MACHINES)]
    payload = encode_telemetry(
        gateway=gateway,
        boot=boot,
        seq=seq,
        kind="centrifugal_pump",
        samples=[(TS + seq * 10, {"bearing_temp": 40.0 + seq % 100, "vibration_rms": 2.0, "state": "running"})],
    )
    return machine.topic(), payload


def messages(first: int, last: int, **kw: Any) -> list[tuple[str, bytes]]:
    return [message(seq, **kw) for seq in range(first, last + 1)]


@dataclass
class IngestProcess:
    supervisor: Supervisor
    name: str
    env: dict[str, str]
    stats_path: Path
    child: Child | None = None
    starts: list[int] = field(default_factory=list)

    def start(self, *, wait_subscribed: bool = True, timeout_s: float = 60) -> IngestProcess:
        self.stats_path.unlink(missing_ok=True)
        ready = (lambda: bool(read_stats(self.stats_path).get("subscribed"))) if wait_subscribed else None
        self.child = self.supervisor.start(
            self.name,
            [*birlik_command(), "ingest", "--stats-file", str(self.stats_path)],
            env=self.env,
            ready=ready,
            timeout_s=timeout_s,
        )
        self.starts.append(self.child.process.pid)
        return self

    @property
    def stats(self) -> dict[str, Any]:
        return read_stats(self.stats_path)

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.process.pid

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.child is not None
        self.child.process.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.child.process.wait(60)
            self.supervisor.children.remove(self.child)

    def terminate(self, timeout_s: float = 60) -> tuple[int, float]:
        """SIGTERM; the exit code and how long it took to exit."""
        assert self.child is not None
        started = time.monotonic()
        self.child.process.send_signal(signal.SIGTERM)
        code = self.child.process.wait(timeout_s)
        self.supervisor.children.remove(self.child)
        return code, time.monotonic() - started

    def rss_mb(self) -> float:
        """Resident memory now, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log(self) -> str:
        return self.child.log_path.read_text(errors="replace") if self.child else ""


def ingest_env(mqtt_url: str, influx_url: str, database: str, tmp: Path, name: str, **ingest: str) -> dict[str, str]:
    env = {
        "BIRLIK_MQTT_URL": mqtt_url,
        "BIRLIK_INFLUX_URL": influx_url,
        "BIRLIK_INFLUX_DATABASE": database,
        "BIRLIK_INGEST_CLIENT_ID": f"{name}-{database}",
        "BIRLIK_INGEST_DEAD_LETTERS": str(tmp / f"{name}.dead.jsonl"),
        "BIRLIK_INGEST_FLUSH_INTERVAL_S": "0.1",
        "BIRLIK_INGEST_HEALTH_INTERVAL_S": "0",
        "BIRLIK_LOG_LEVEL": "info",
    }
    return env | {f"BIRLIK_INGEST_{k.upper()}": v for k, v in ingest.items()}


def ingest_process(supervisor: Supervisor, env: dict[str, str], tmp: Path, name: str) -> IngestProcess:
    return IngestProcess(supervisor, name, env, tmp / f"{name}.stats.json")


class Publisher:
    """A QoS 1 publisher that knows which messages the broker acknowledged."""

    def __init__(self, host: str, port: int, client_id: str | None = None) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv311
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port)
        self.client.loop_start()

    def publish(self, batch: list[tuple[str, bytes]], *, retain: bool = False, timeout_s: float = 120) -> None:
        """Publish and wait until the broker acknowledged every message."""
        infos = [self.client.publish(t, p, qos=1, retain=retain) for t, p in batch]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not acknowledge a message in time"

    def stream(self, batch: list[tuple[str, bytes]], rate: float) -> threading.Thread:
        """Publish ``batch`` at ``rate`` messages per second in the background."""

        def run() -> None:
            start = time.monotonic()
            infos = []
            for i, (t, p) in enumerate(batch):
                infos.append(self.client.publish(t, p, qos=1))
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            for info in infos:
                info.wait_for_publish(120)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout_s:.0f} s")
        time.sleep(0.1)


def count_readings(url: str, database: str) -> int:
    try:
        with InfluxClient(InfluxSettings(url=url, database=database, timeout_s=5)) as influx:
            return influx.count_readings()
    except Exception:
        return -1


def dead_letters(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def per_machine(url: str, database: str) -> Iterator[tuple[str, int]]:
    with InfluxClient(InfluxSettings(url=url, database=database)) as influx:
        for series in influx.query('SELECT COUNT("bearing_temp") FROM "telemetry" GROUP BY "machine"'):
            yield series.tags.get("machine", ""), int(series.values[0][1])
