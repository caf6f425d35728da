"""The analytics worker on real InfluxDB and Mosquitto: a developing fault raises an alert
before the failure, healthy machines stay quiet, scores and alerts are stored and published."""

from __future__ import annotations

import threading

import pytest

from analytics.alerts import LogChannel, MqttChannel
from analytics.detectors import DETECTORS
from analytics.worker import AnalyticsWorker
from birlik.config import Config
from birlik.influx import InfluxClient
from birlik.payload import Alert, decode_alert
from birlik.plant import parse_plant
from birlik.topics import subscription
from simulators.backfill import backfill
from simulators.fleet import Fleet
from tests.helpers import publisher

pytestmark = pytest.mark.slow

START_MS = 1_763_800_000_000
PLANT = parse_plant(
    {
        "sample_interval": "5s",
        "sites": [
            {
                "id": "uz-syrdarya",
                "lines": [
                    {
                        "id": "juice-1",
                        "tenant": "sirdaryo-agro",
                        "machines": [
                            {"id": "pump-1", "kind": "centrifugal_pump"},
                            {
                                "id": "pump-2",
                                "kind": "centrifugal_pump",
                                "faults": [{"type": "bearing_wear", "start": "20m", "failure": "100m"}],
                            },
                            {"id": "comp-1", "kind": "air_compressor"},
                            {"id": "cv-1", "kind": "conveyor_drive"},
                        ],
                    }
                ],
            }
        ],
    },
    "test-plant",
)


def test_a_developing_fault_raises_one_alert_before_failure_and_healthy_machines_stay_quiet(
    config: Config, influx: InfluxClient
) -> None:
    span_ms = 110 * 60 * 1000
    backfill(PLANT, influx, start_ms=START_MS, end_ms=START_MS + span_ms, seed=3)
    truth = Fleet(PLANT, seed=3, start_ms=START_MS).ground_truth()[0]

    received: list[Alert] = []
    got = threading.Event()
    watcher = publisher(config.mqtt, f"watch-{config.influx.database}")
    watcher.on_message = lambda c, u, m: (received.append(decode_alert(m.topic, bytes(m.payload))), got.set())
    watcher.subscribe(subscription("alert"), qos=1).__class__  # noqa: B018 - subscribe before alerts flow
    mqtt_channel = MqttChannel(config.mqtt, client_id=config.analytics.client_id)
    try:
        worker = AnalyticsWorker(
            influx,
            config.analytics,
            detector_factory=DETECTORS["zscore"],
            channels=[LogChannel(), mqtt_channel],
            since_ms=START_MS,
        )
        stats = worker.run(once=True)
        assert got.wait(10), "no alert arrived on MQTT"
    finally:
        mqtt_channel.close()
        watcher.loop_stop()
        watcher.disconnect()

    samples = 4 * (span_ms // 5000 + 1)
    assert stats.samples_read == samples
    assert stats.alerts_by_machine == {"sirdaryo-agro/uz-syrdarya/juice-1/pump-2": 1}
    alert = next(a for a in received if a.state == "raised")
    assert alert.path.machine == "pump-2"
    assert alert.signal in ("vibration_rms", "bearing_temp")
    assert truth.onset_ms < alert.ts_ms < truth.failure_ms
    # Every scored sample has its score stored; the alert is stored too.
    assert influx.count("anomaly", "score") == stats.samples_scored > 0
    assert influx.count("anomaly", "score", "anomalous = true") == stats.anomalous_samples > 0
    rows = influx.query('SELECT "id", "signal", "severity" FROM "alert" WHERE "state" = \'raised\'')
    assert [r["id"] for r in rows[0].records()] == [alert.alert_id]

    # A second pass finds nothing new: each sample is scored once.
    assert worker.poll_once() == 0
    assert influx.count("anomaly", "score") == stats.samples_scored
