"""Alarms on real processes: ``birlik analytics`` over real InfluxDB and Mosquitto, a real
local webhook server, the worker SIGKILLed between storing a transition and notifying it,
restarted, a channel down for a while, commands from ``birlik alarms`` and over MQTT."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from analytics.alarmstore import AlarmStore
from birlik.alarm import COMMAND_TOPIC, Command, decode_state, state_topic
from birlik.influx import InfluxClient, InfluxSettings
from birlik.lineprotocol import encode_point
from birlik.topics import MachinePath
from ops.servers import Child, Supervisor, free_port
from ops.stack import birlik_command
from tests.ingest_procs import wait_until

pytestmark = pytest.mark.slow

PUMP = MachinePath("acme", "kz-turkestan", "line-1", "pump-302")
TAGS = {"tenant": PUMP.tenant, "site": PUMP.site, "line": PUMP.line, "machine": PUMP.machine}


class Webhook:
    """A real HTTP server on a fixed port, started and stopped at will; records what it got."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[dict[str, Any]] = []
        self.keys: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/alarms"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append(json.loads(body))
                outer.keys.append(self.headers["Idempotency-Key"])
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def write_telemetry(url: str, db: str, start_ms: int) -> int:
    """A pump at 1 Hz: 300 s healthy, 120 s of high vibration, 200 s healthy again."""
    rng = np.random.default_rng(5)
    lines = []
    n = 620
    for i in range(n):
        vib = 2.0 + rng.normal(0, 0.05) + (2.5 if 300 <= i < 420 else 0.0)
        fields = {"vibration_rms": round(vib, 4), "bearing_temp": round(50 + rng.normal(0, 0.2), 3), "state": "running"}
        lines.append(encode_point("telemetry", {**TAGS, "kind": "centrifugal_pump"}, fields, start_ms + i * 1000))
    with InfluxClient(InfluxSettings(url=url, database=db)) as influx:
        influx.create_database()
        influx.write(lines)
    return n


def start_analytics(
    sup: Supervisor, name: str, tmp: Path, broker_url: str, influx_url: str, db: str, since_ms: int, **env: str
) -> Child:
    return sup.start(
        name,
        [*birlik_command(), "analytics", "--since", _iso(since_ms), "--stats-file", str(tmp / f"{name}.stats.json")],
        env={
            "BIRLIK_CONFIG": "",
            "BIRLIK_MQTT_URL": broker_url,
            "BIRLIK_INFLUX_URL": influx_url,
            "BIRLIK_INFLUX_DATABASE": db,
            "BIRLIK_ANALYTICS_WARMUP_SAMPLES": "60",
            "BIRLIK_ANALYTICS_POLL_INTERVAL_S": "0.3",
            "BIRLIK_ALARMS_STORE": str(tmp / "alarms.sqlite"),
            "BIRLIK_ALARMS_STALE_AFTER_S": "3600",
            "BIRLIK_ALARMS_GRAFANA_URL": "http://grafana.plant:3000",
            "PYTHONUNBUFFERED": "1",
            **env,
        },
    )


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def retained_state(host: str, port: int) -> list[Any]:
    got: list[Any] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_connect = lambda c, u, f, r, p: c.subscribe(state_topic(PUMP), qos=1)
    client.on_message = lambda c, u, m: got.append(decode_state(m.topic, bytes(m.payload)))
    client.connect(host, port)
    client.loop_start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    return got[-1] if got else []


def pending(tmp: Path) -> dict[str, dict[str, int]]:
    store = AlarmStore(tmp / "alarms.sqlite")
    try:
        return store.outbox_counts()
    finally:
        store.close()


def test_killed_between_storing_and_notifying_every_notification_goes_out_exactly_once(tmp_path: Path) -> None:
    db = "alarms_kill"
    since = (int(time.time()) - 3600) * 1000
    hook = Webhook(free_port())
    hook.start()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto(port=free_port())
        influx = sup.start_influxdb()
        write_telemetry(influx.url, db, since)
        common = {"BIRLIK_ALARMS_WEBHOOK_URL": hook.url}
        first = start_analytics(
            sup, "analytics-1", tmp_path, broker.url, influx.url, db, since,
            BIRLIK_FAILPOINT="alarms.after_commit:1", **common,
        )  # fmt: skip
        assert first.process.wait(60) == -signal.SIGKILL
        sup.children.remove(first)
        assert hook.got == []  # stored, never notified
        assert pending(tmp_path)["webhook"] == {"pending": 1}

        second = start_analytics(sup, "analytics-2", tmp_path, broker.url, influx.url, db, since, **common)
        wait_until(lambda: len(hook.got) >= 2 and pending(tmp_path)["webhook"] == {"sent": 2}, 60, "2 notifications")
        assert [(n["transition"], n["state"]) for n in hook.got] == [
            ("raised", "unack_active"),
            ("returned", "unack_rtn"),
        ]
        assert len(set(hook.keys)) == len(hook.keys) == 2 and hook.keys == [n["key"] for n in hook.got]
        raised = hook.got[0]
        assert raised["priority"] in ("high", "critical") and raised["kind"] == "condition"
        assert "vibration_rms" in raised["text"] and "mm/s" in raised["text"] and "above normal" in raised["text"]
        assert raised["dashboard"].startswith("http://grafana.plant:3000/d/birlik-machine-detail/")
        wait_until(lambda: pending(tmp_path)["influx"] == {"sent": 2} and pending(tmp_path)["mqtt"] == {"sent": 2})
        with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
            rows = [r for s in client.query('SELECT * FROM "alarm"') for r in s.records()]
        assert [r["transition"] for r in rows] == ["raised", "returned"]
        state = retained_state(broker.host, broker.port)
        assert [(a.alarm_id, a.state) for a in state] == [(raised["id"], "unack_rtn")]

        # Acknowledged from the command line: the returned alarm closes, stored and notified.
        ack = sup.start(
            "ack",
            [*birlik_command(), "alarms", "ack", raised["id"], "--user", "aigerim", "--comment", "bearing ordered"],
            env={"BIRLIK_CONFIG": "", "BIRLIK_MQTT_URL": broker.url},
        )
        assert ack.process.wait(30) == 0
        wait_until(lambda: len(hook.got) >= 3, 30, "the acknowledgement notified")
        assert (hook.got[2]["transition"], hook.got[2]["state"], hook.got[2]["user"]) == (
            "acknowledged",
            "normal",
            "aigerim",
        )
        wait_until(lambda: retained_state(broker.host, broker.port) == [], 10, "the retained state emptied")
        assert sup.stop(second) == 0

        # A plain restart re-sends nothing and raises nothing again.
        third = start_analytics(sup, "analytics-3", tmp_path, broker.url, influx.url, db, since, **common)
        time.sleep(4)
        assert sup.stop(third) == 0
        assert len(hook.got) == 3
        store = AlarmStore(tmp_path / "alarms.sqlite")
        assert len(store.transitions()) == 3
        store.close()
    hook.stop()


def test_a_webhook_down_for_a_while_gets_everything_in_order_and_the_worker_never_waits(tmp_path: Path) -> None:
    db = "alarms_down"
    since = (int(time.time()) - 3600) * 1000
    hook = Webhook(free_port())  # not listening yet: connections refused
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto(port=free_port())
        influx = sup.start_influxdb()
        n = write_telemetry(influx.url, db, since)
        worker = start_analytics(
            sup, "analytics", tmp_path, broker.url, influx.url, db, since, BIRLIK_ALARMS_WEBHOOK_URL=hook.url
        )
        stats = tmp_path / "analytics.stats.json"

        def scored_all() -> bool:
            return stats.exists() and json.loads(stats.read_text()).get("samples_read", 0) >= n

        wait_until(scored_all, 60, "every sample scored while the webhook is down")
        wait_until(lambda: pending(tmp_path).get("influx") == {"sent": 2}, 30, "the other channels delivering")
        assert pending(tmp_path)["webhook"] == {"pending": 2}

        # A shelve over the MQTT command topic, while the webhook is still down.
        store = AlarmStore(tmp_path / "alarms.sqlite")
        alarm_id = store.transitions()[0].alarm_id
        store.close()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        client.connect(broker.host, broker.port)
        client.loop_start()
        cmd = Command("shelve", alarm_id, user="timur", comment="sensor check tomorrow", duration_s=8 * 3600)
        client.publish(COMMAND_TOPIC, cmd.encode(), qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        wait_until(lambda: pending(tmp_path)["webhook"] == {"pending": 3}, 30, "the shelve stored")
        state = retained_state(broker.host, broker.port)
        assert [(a.state, a.user) for a in state] == [("shelved", "timur")]

        hook.start()
        wait_until(lambda: len(hook.got) >= 3, 90, "the webhook catching up")
        assert [n["transition"] for n in hook.got] == ["raised", "returned", "shelved"]
        assert len(set(hook.keys)) == 3
        log = worker.log_path.read_text()
        assert log.count("webhook: cannot deliver") == 1 and "webhook: delivering again" in log
        assert sup.stop(worker) == 0
    hook.stop()


def test_a_stuck_sensor_raises_a_sensor_alarm_not_a_machine_alarm(config: Any, influx: Any, tmp_path: Path) -> None:
    """In-process worker on the real InfluxDB: bearing_temp freezes while the pump runs on."""
    from analytics.alarmservice import AlarmService
    from analytics.detectors import DETECTORS
    from analytics.notifier import Channel
    from analytics.worker import AnalyticsWorker

    rng = np.random.default_rng(9)
    start = (int(time.time()) - 3 * 3600) * 1000
    lines = []
    for i in range(0, 9000):  # 1 Hz, 2.5 h: the stuck reading from 1 h 50 min on
        temp = 50 + 2 * np.sin(i / 900) + rng.normal(0, 0.2)
        fields = {
            "vibration_rms": round(2.0 + rng.normal(0, 0.05), 4),
            "bearing_temp": 51.234 if i >= 6600 else round(temp, 3),
            "motor_temp": round(60 + 2 * np.sin(i / 900) + rng.normal(0, 0.2), 3),
            "state": "running",
        }
        lines.append(encode_point("telemetry", {**TAGS, "kind": "centrifugal_pump"}, fields, start + i * 1000))
    influx.write(lines)
    config.alarms.store = str(tmp_path / "alarms.sqlite")
    store = AlarmStore(config.alarms.store)
    channels: list[Channel] = []
    service = AlarmService(config.alarms, store, channels)
    worker = AnalyticsWorker(
        influx, config.analytics, detector_factory=DETECTORS["zscore"], since_ms=start, max_rows=20_000, alarms=service
    )
    while worker.poll_once():
        pass
    service.close(drain_s=0)
    raised = [a for a in store.transitions() if a.transition == "raised"]
    assert [(a.kind, a.priority) for a in raised] == [("sensor", "low")], [a.text for a in raised]
    assert "bearing_temp" in raised[0].title and "check the sensor" in raised[0].text
    assert raised[0].ts_ms - (start + 6600_000) < 30 * 60_000  # reported within half an hour
    issues = [r for s in influx.query('SELECT * FROM "sensor_issue"') for r in s.records()]
    assert {(r["signal"], r["issue"], r["state"]) for r in issues} >= {("bearing_temp", "stuck", "raised")}
    store.close()


def test_a_restarted_worker_goes_on_with_what_it_learned_and_does_not_learn_a_fault_as_normal(
    config: Any, influx: Any, tmp_path: Path
) -> None:
    """The pump's vibration rises from 2 to 4 mm/s and stays there. A worker stopped while the
    fault develops and started again goes on with its saved baseline; a worker started afresh
    at that point learns 4 mm/s as this pump's normal."""
    from analytics.alarmservice import AlarmService
    from analytics.detectors import DETECTORS
    from analytics.worker import AnalyticsWorker

    rng = np.random.default_rng(4)
    start = (int(time.time()) - 2 * 3600) * 1000

    def write(first: int, last: int) -> None:
        lines = []
        for i in range(first, last):
            vib = 2.0 + min(max(i - 1000, 0) * 0.002, 2.0) + rng.normal(0, 0.05)
            fields = {
                "vibration_rms": round(vib, 4),
                "bearing_temp": round(50 + rng.normal(0, 0.2), 3),
                "state": "running",
            }
            lines.append(encode_point("telemetry", {**TAGS, "kind": "centrifugal_pump"}, fields, start + i * 1000))
        influx.write(lines)

    def worker(store_path: Path, since_ms: int) -> tuple[AnalyticsWorker, AlarmService]:
        config.alarms.store = str(store_path)
        service = AlarmService(config.alarms, AlarmStore(store_path), [])
        w = AnalyticsWorker(
            influx, config.analytics, detector_factory=DETECTORS["zscore"], since_ms=since_ms, alarms=service
        )
        return w, service

    write(0, 2000)
    first, service = worker(tmp_path / "kept.sqlite", start)
    first.run(once=True)
    service.close(drain_s=0)
    assert first.stats.anomalous_samples > 500  # the rise was seen
    write(2000, 3000)

    resumed, service = worker(tmp_path / "kept.sqlite", start)
    resumed.run(once=True)
    service.close(drain_s=0)
    assert resumed.stats.models_restored == 1 and resumed.stats.samples_read == 1000
    assert resumed.stats.anomalous_samples == 1000  # still abnormal: the baseline is the healthy one

    fresh, service = worker(tmp_path / "fresh.sqlite", start + 2000_000)
    fresh.run(once=True)
    service.close(drain_s=0)
    assert fresh.stats.models_restored == 0 and fresh.stats.anomalous_samples == 0  # learned the fault as normal


def test_live_from_the_broker_in_arrival_order_future_and_late_samples_neither_blind_nor_escape(
    tmp_path: Path,
) -> None:
    from birlik.payload import encode_telemetry
    from tests.ingest_procs import Publisher

    db = "alarms_live"
    base = (int(time.time()) - 1800) * 1000
    rng = np.random.default_rng(11)

    def message(seq: int, ts: int, vib: float) -> tuple[str, bytes]:
        values = {"vibration_rms": round(vib + rng.normal(0, 0.05), 4), "bearing_temp": 50.0, "state": "running"}
        return PUMP.topic(), encode_telemetry(
            gateway="gw-live", seq=seq, kind="centrifugal_pump", samples=[(ts, values)]
        )

    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto(port=free_port())
        influx = sup.start_influxdb()
        with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
            client.create_database()
        worker = sup.start(
            "analytics",
            [*birlik_command(), "analytics", "--stats-file", str(tmp_path / "a.stats.json")],
            env={
                "BIRLIK_CONFIG": "",
                "BIRLIK_MQTT_URL": broker.url,
                "BIRLIK_INFLUX_URL": influx.url,
                "BIRLIK_INFLUX_DATABASE": db,
                "BIRLIK_ANALYTICS_WARMUP_SAMPLES": "60",
                "BIRLIK_ALARMS_STORE": str(tmp_path / "alarms.sqlite"),
                "BIRLIK_ANALYTICS_DATA_QUALITY": "false",
            },
        )
        wait_until(lambda: "live from" in worker.log_path.read_text(), 30, "the worker started")
        time.sleep(1.0)  # subscribed
        pub = Publisher(broker.host, broker.port)
        batch = [message(i + 1, base + i * 1000, 2.0) for i in range(200)]
        batch[150] = message(151, base + 23 * 3600_000, 2.0)  # a clock 23 h ahead
        batch += [message(201 + i, base + (200 + i) * 1000, 4.5) for i in range(40)]  # a fault
        batch += [message(241 + i, base - (100 - i) * 1000, 2.0) for i in range(20)]  # late, older than all
        pub.publish(batch)
        pub.close()

        def scored() -> int:
            with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
                series = client.query('SELECT COUNT("score") FROM "anomaly"')
            return int(series[0].values[0][1]) if series else 0

        wait_until(lambda: scored() >= 260 - 60, 60, "every sample after the warm-up scored")
        with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
            times = [r["time"] for s in client.query('SELECT "score" FROM "anomaly"') for r in s.records()]
        assert sum(base + 150_000 < t < base + 3600_000 for t in times) == 89  # after the future one: not blinded
        assert sum(t < base for t in times) == 20  # the late ones, scored when they came
        store_path = tmp_path / "alarms.sqlite"
        wait_until(lambda: any(a.transition == "raised" for a in AlarmStore(store_path).transitions()), 30, "alarm")
        assert sup.stop(worker) == 0
        assert "acknowledged after the scores are written" in worker.log_path.read_text()


def test_live_worker_sigkilled_mid_stream_gets_what_it_had_not_finished_again(tmp_path: Path) -> None:
    from birlik.payload import encode_telemetry
    from tests.ingest_procs import Publisher

    db = "alarms_live_kill"
    base = (int(time.time()) - 6 * 3600) * 1000
    total = 20_000
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto(port=free_port())
        influx = sup.start_influxdb()
        with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
            client.create_database()

        def start(name: str) -> Child:
            return sup.start(
                name,
                [*birlik_command(), "analytics", "--stats-file", str(tmp_path / f"{name}.stats.json")],
                env={
                    "BIRLIK_CONFIG": "",
                    "BIRLIK_MQTT_URL": broker.url,
                    "BIRLIK_INFLUX_URL": influx.url,
                    "BIRLIK_INFLUX_DATABASE": db,
                    "BIRLIK_ALARMS_STORE": str(tmp_path / "alarms.sqlite"),
                },
            )

        def read(name: str) -> int:
            path = tmp_path / f"{name}.stats.json"
            return int(json.loads(path.read_text()).get("samples_read", 0)) if path.exists() else 0

        first = start("first")
        wait_until(lambda: "live from" in first.log_path.read_text(), 30, "the worker started")
        time.sleep(1.0)
        pub = Publisher(broker.host, broker.port)
        values = {"vibration_rms": 2.0, "bearing_temp": 50.0, "state": "running"}
        # Sent over 8 s in the background: the worker cannot be through them all when it is
        # killed (it scores far faster), and the rest queue in its session while it is down.
        sending = pub.stream(
            [
                (PUMP.topic(), encode_telemetry(gateway="gw-k", seq=i + 1, samples=[(base + i * 1000, values)]))
                for i in range(total)
            ],
            rate=total / 8,
        )

        def scored() -> int:  # one anomaly point per scored sample written
            with InfluxClient(InfluxSettings(url=influx.url, database=db)) as client:
                return sum(
                    int(row[1]) for s in client.query('SELECT count("score") FROM "anomaly"') for row in s.values
                )

        wait_until(lambda: scored() >= 300, 60, "the worker scoring")  # (its stats file lags up to a second)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        sup.children.remove(first)
        # What it had written before the kill (and so perhaps acknowledged): the scored
        # samples, and the warm-up's, which are learned, not written.
        done_before = scored() + 60
        sending.join(60)
        pub.close()
        assert done_before < total, "the worker finished before it could be killed: publish more"
        second = start("second")
        wait_until(lambda: read("second") >= total - done_before, 60, "the rest read again after the restart")
        time.sleep(1.0)
        assert total - done_before <= read("second") <= total  # what was not written, and no more
        assert sup.stop(second) == 0


def test_a_command_sent_while_the_worker_is_down_is_applied_when_it_is_back(tmp_path: Path) -> None:
    db = "alarms_cmd_down"
    since = (int(time.time()) - 3600) * 1000
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto(port=free_port())
        influx = sup.start_influxdb()
        write_telemetry(influx.url, db, since)
        first = start_analytics(sup, "analytics-1", tmp_path, broker.url, influx.url, db, since)

        def transitions() -> list[Any]:
            store = AlarmStore(tmp_path / "alarms.sqlite")
            try:
                return store.transitions()
            finally:
                store.close()

        wait_until(lambda: [a.transition for a in transitions()] == ["raised", "returned"], 60, "the alarm")
        assert sup.stop(first) == 0
        alarm_id = transitions()[0].alarm_id
        ack = sup.start(
            "ack",
            [*birlik_command(), "alarms", "ack", alarm_id, "--user", "aigerim"],
            env={"BIRLIK_CONFIG": "", "BIRLIK_MQTT_URL": broker.url},
        )
        assert ack.process.wait(30) == 0  # the broker took it; nobody was listening
        second = start_analytics(sup, "analytics-2", tmp_path, broker.url, influx.url, db, since)
        wait_until(lambda: len(transitions()) == 3, 60, "the command applied after the restart")
        last = transitions()[-1]
        assert (last.transition, last.state, last.user) == ("acknowledged", "normal", "aigerim")
        assert sup.stop(second) == 0


def test_a_restarted_worker_goes_on_with_what_its_sensor_checks_learned(
    config: Any, influx: Any, tmp_path: Path
) -> None:
    """A pump's data-quality checks learn its first six running hours. The worker is stopped,
    a bearing thermocouple sticks, the worker is started again: it goes on with what its
    checks learned and reports the stuck sensor. A worker started afresh at that point is
    still learning, the stuck reading included, and reports nothing."""
    from analytics.alarmservice import AlarmService
    from analytics.detectors import DETECTORS
    from analytics.worker import AnalyticsWorker
    from tests.test_quality import START_MS, simulated

    start = (int(time.time()) - 10 * 3600) * 1000
    stuck = {"type": "stuck", "signal": "bearing_temp", "start": "7.5h", "duration": "1h"}
    samples = [(ts - START_MS + start, v) for ts, v in simulated([stuck], 9.0, "centrifugal_pump")]
    restart_ms = start + 7 * 3600_000

    def write(rows: list[tuple[int, dict[str, Any]]]) -> None:
        lines = [encode_point("telemetry", {**TAGS, "kind": "centrifugal_pump"}, v, ts) for ts, v in rows]
        for i in range(0, len(lines), 5000):
            influx.write(lines[i : i + 5000])

    def worker(store_path: Path, since_ms: int) -> tuple[AnalyticsWorker, AlarmService, AlarmStore]:
        config.alarms.store = str(store_path)
        store = AlarmStore(store_path)
        service = AlarmService(config.alarms, store, [])
        w = AnalyticsWorker(
            influx, config.analytics, detector_factory=DETECTORS["zscore"], since_ms=since_ms, alarms=service
        )
        return w, service, store

    def stuck_alarms(store: AlarmStore) -> list[Any]:
        return [a for a in store.transitions() if a.kind == "sensor" and "bearing_temp" in a.title]

    write([s for s in samples if s[0] < restart_ms])
    first, service, _ = worker(tmp_path / "kept.sqlite", start)
    while first.poll_once():
        pass
    service.close(drain_s=0)
    assert first.stats.quality_restored == 0
    assert not first._machines[PUMP].quality.learning  # type: ignore[union-attr]
    write([s for s in samples if s[0] >= restart_ms])

    resumed, service, store = worker(tmp_path / "kept.sqlite", start)
    while resumed.poll_once():
        pass
    service.close(drain_s=0)
    assert resumed.stats.quality_restored == 1
    raised = stuck_alarms(store)
    assert raised and raised[0].transition == "raised" and "has read exactly" in raised[0].text
    assert start + 7.5 * 3600_000 < raised[0].ts_ms < start + 8.5 * 3600_000

    fresh, service, store = worker(tmp_path / "fresh.sqlite", restart_ms)
    while fresh.poll_once():
        pass
    service.close(drain_s=0)
    assert fresh.stats.quality_restored == 0
    assert fresh._machines[PUMP].quality.learning  # type: ignore[union-attr]
    assert stuck_alarms(store) == []
