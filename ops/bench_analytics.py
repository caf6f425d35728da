"""``./scripts/bench analytics``: the detectors on real data (SKAB) and their scoring speed.

1. **SKAB** (Skoltech Anomaly Benchmark, real water-pump test-bed recordings with labelled
   faults), scored by its own yardstick ``shared/eval/skab_eval.py`` with ``--causal``: the
   harness fits a fresh detector per file on its first 400 rows and checks that no label
   changes when later rows are withheld (a streaming detector decides from the past only).
   Both the multivariate factory and the single-signal detector (one per column) are run.
2. **Scoring speed**: one process on one core scores a stream of rows, 10 signals each, from
   many machines row by row with the moving-average detector, and encodes each score as an
   ``anomaly`` point of line protocol (``scoring_rps_per_core``: the detector's and the
   encoding's cost). Then the **live worker end to end** (``worker_rps_per_core``, by the
   process's CPU time, and ``worker_rps_wall``): 100 pumps' messages (10 samples of 7
   readings each) queued in a real Mosquitto, read by the worker, decoded, checked by the
   data-quality monitor, scored (``zscore``), their alarms and health tracked, and every
   point written to a real InfluxDB before the messages are acknowledged.
3. **State per machine**: the bytes of one fitted detector's persisted state (JSON).

The harness needs pandas (installed with the ``dev`` extra). Where the harness or the data
is not beside the repository (``../shared``), give ``--skab-eval`` / ``--skab-data``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("bench")

SUMMARY = "detectors on real data (SKAB, causal) and their scoring speed and state size"

FACTORY = "analytics.detectors.multivariate:skab_factory"
UNIVARIATE_FACTORY = "analytics.detectors.multivariate:univariate_factory"
UNIVARIATE_BANK = "analytics.detectors.multivariate:univariate_bank_factory"
REPO = Path(__file__).resolve().parents[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("analytics")
    g.add_argument(
        "--skab-eval",
        type=Path,
        default=None,
        help="analytics: the SKAB harness skab_eval.py (default: $SKAB_EVAL, else ../shared/eval/skab_eval.py)",
    )
    g.add_argument(
        "--skab-data",
        type=Path,
        default=None,
        help="analytics: SKAB root holding data/ (default: $SKAB_DATA, else the harness's own default)",
    )
    g.add_argument(
        "--scoring-rows",
        type=int,
        default=200_000,
        help="analytics: rows scored for the speed figure (default: 200000)",
    )


def harness_path(given: Path | None) -> Path:
    path = given or (Path(os.environ["SKAB_EVAL"]) if os.environ.get("SKAB_EVAL") else None)
    path = path or REPO.parent / "shared" / "eval" / "skab_eval.py"
    if not path.is_file():
        raise SystemExit(f"bench analytics: the SKAB harness is not at {path}; give --skab-eval PATH")
    return path


def evaluate(harness: Path, detector: str, data: Path | None) -> dict[str, Any]:
    """Run the harness (``--causal``) on ``detector``; its pooled result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(harness), "--detector", detector, "--causal", "--json", str(out)]
        if data is not None:
            cmd += ["--data", str(data)]
        log.info("SKAB: %s", " ".join(cmd[1:]))
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"bench analytics: the SKAB harness failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        log.info("%s", done.stdout.strip().splitlines()[-1])
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def scoring_rate(rows: int, machines: int = 500, signals: int = 10) -> float:
    """Readings/s scored row by row and encoded as anomaly points, in this process."""
    from analytics.detectors.multivariate import MovingAverageDetector
    from birlik.lineprotocol import encode_point

    rng = np.random.default_rng(7)
    detectors = []
    for _ in range(machines):
        d = MovingAverageDetector(n_train=400)
        d.fit(rng.normal(size=(400, signals)))
        detectors.append(d)
    stream = rng.normal(size=(rows, signals)).tolist()
    tags = [{"machine": f"m-{i}", "detector": "moving_average"} for i in range(machines)]
    threshold = detectors[0].threshold
    t0 = time.process_time()
    for n, row in enumerate(stream):
        m = n % machines
        score = detectors[m].update_one(row)
        encode_point("anomaly", tags[m], {"score": score, "anomalous": score > threshold}, n)
    return rows * signals / (time.process_time() - t0)


def state_bytes() -> int:
    from analytics.detectors.multivariate import MovingAverageDetector

    d = MovingAverageDetector(n_train=400)
    d.fit(np.random.default_rng(3).normal(size=(400, 10)))
    for row in np.random.default_rng(4).normal(size=(50, 10)):
        d.update_one(row)
    return len(json.dumps(d.state()).encode())


def worker_rate(
    state: Path, machines: int = 100, messages: int = 50, samples: int = 10, *, data_quality: bool = True
) -> dict[str, float]:
    """Readings/s (per core: the process's CPU time) through the live worker end to end: from
    the broker, decoded, sensor checks, scored, alarms, and the points written to InfluxDB."""
    import dataclasses
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from analytics.alarmservice import AlarmService
    from analytics.alarmstore import AlarmStore
    from analytics.detectors import DETECTORS
    from analytics.stream import TelemetryStream
    from analytics.worker import AnalyticsWorker
    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.payload import encode_telemetry
    from birlik.topics import MachinePath
    from ops.servers import Supervisor

    rng = np.random.default_rng(5)
    t0 = 1_767_225_600_000
    payloads: list[tuple[str, bytes]] = []
    for m in range(machines):
        path = MachinePath("acme", "kz-turkestan", f"line-{m % 5}", f"pump-{m}")
        for k in range(messages):
            rows = []
            for j in range(samples):
                i = k * samples + j
                v = rng.normal(size=7)
                rows.append(
                    (
                        t0 + i * 1000,
                        {
                            "vibration_rms": round(2.0 + 0.05 * v[0], 4),
                            "bearing_temp": round(55 + 0.2 * v[1], 3),
                            "motor_temp": round(60 + 0.2 * v[2], 3),
                            "ambient_temp": 25.0,
                            "flow": round(100 + v[3], 2),
                            "pressure_out": round(5 + 0.05 * v[4], 3),
                            "current": round(30 + 0.3 * v[5], 2),
                            "state": "running",
                        },
                    )
                )
            payloads.append((path.topic(), encode_telemetry(gateway="gw-bench", seq=len(payloads) + 1, samples=rows)))
    total_samples = machines * messages * samples
    readings = total_samples * 7
    (state / "worker" / "alarms.sqlite").unlink(missing_ok=True)
    with Supervisor(state / "worker") as supervisor:
        broker = supervisor.start_mosquitto()
        server = supervisor.start_influxdb()
        config = load_config(None, env={})
        config.mqtt.url = broker.url
        config.alarms.store = str(state / "worker" / "alarms.sqlite")
        analytics = dataclasses.replace(config.analytics, warmup_samples=60, data_quality=data_quality)
        settings = InfluxSettings(url=server.url, database="bench_worker")
        with InfluxClient(settings) as influx:
            influx.create_database()
            stream = TelemetryStream(config.mqtt, client_id=f"bench-analytics-stream-{data_quality}")
            stream.subscribed.wait(15)
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
            pub.max_inflight_messages_set(1000)
            pub.connect(broker.host, broker.port)
            pub.loop_start()
            infos = [pub.publish(topic, body, qos=1) for topic, body in payloads]
            for info in infos:
                info.wait_for_publish(60)
            pub.disconnect()
            pub.loop_stop()
            service = AlarmService(config.alarms, AlarmStore(config.alarms.store), [])
            worker = AnalyticsWorker(
                influx, analytics, detector_factory=DETECTORS["zscore"], since_ms=t0, alarms=service
            )
            cpu0, wall0 = time.process_time(), time.monotonic()
            done = threading.Event()
            worker.run_live(stream, should_stop=lambda: worker.stats.samples_read >= total_samples or done.is_set())
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            stream.close()
            service.close(drain_s=0)
    log.info("worker: %d readings (%d samples) in %.1f s wall, %.1f s CPU", readings, total_samples, wall, cpu)
    return {"worker_rps_per_core": readings / cpu, "worker_rps_wall": readings / wall}


def run(args: argparse.Namespace) -> dict[str, object]:
    harness = harness_path(args.skab_eval)
    started = time.monotonic()
    multi = evaluate(harness, FACTORY, args.skab_data)
    uni = evaluate(harness, UNIVARIATE_BANK, args.skab_data)
    log.info("scoring %d rows of 10 signals, 500 machines, one core", args.scoring_rows)
    rate = scoring_rate(args.scoring_rows)
    log.info("the live worker end to end: broker -> scores in InfluxDB")
    live = worker_rate(Path(args.state_dir))
    log.info("... and without the data-quality checks")
    bare = worker_rate(Path(args.state_dir), data_quality=False)
    result: dict[str, object] = {
        "factory": FACTORY,
        "univariate_factory": UNIVARIATE_FACTORY,
        "skab_f1": multi["F1"],
        "skab_far": multi["FAR"],
        "skab_mar": multi["MAR"],
        "scoring_rps_per_core": round(rate),
        "state_bytes_per_machine": state_bytes(),
        "univariate_skab_f1": uni["F1"],
        "univariate_skab_far": uni["FAR"],
        "univariate_skab_mar": uni["MAR"],
        "worker_rps_per_core": round(live["worker_rps_per_core"]),
        "worker_rps_wall": round(live["worker_rps_wall"]),
        "worker_rps_per_core_without_quality": round(bare["worker_rps_per_core"]),
        "seconds": round(time.monotonic() - started, 1),
    }
    return result
