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
   process's CPU time, and ``worker_rps_wall``): the built-in centre's 28 simulated
   machines of five kinds (5-second samples with their state changes, 10 samples a
   message), first 8 hours of warm-up scored in process while the checks and detectors
   learn, then 2 hours' messages queued in a real Mosquitto, read by the worker, decoded,
   checked by the data-quality monitor, scored (``zscore``), their alarms and health
   tracked, and every point written to a real InfluxDB before the messages are
   acknowledged. Readings are the numeric values of the samples (not the state). The
   same again with one sample a message over a fleet of 1,008 machines (each of the 28
   copied 36 times after the warm-up; ``worker_rps_per_core_1000_machines_single_samples``):
   a machine's samples in a stream batch are judged together (in columns), so the rate
   depends on how many of them a batch holds, and this is the case with the fewest.
3. **State per machine**: the bytes of one fitted detector's persisted state (JSON).

The harness needs pandas (installed with the ``dev`` extra). Where the harness or the data
is not beside the repository (``../shared``), give ``--skab-eval`` / ``--skab-data``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import shutil
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


def plant_messages(
    warmup_h: float, measured_h: float, samples_per_message: int = 10, seed: int = 5
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], int, int]:
    """The built-in centre's machines (``simulators/plants/central-asia.yaml``: spinning
    frames, conveyors, compressors, pumps, extruders, 5-second samples, with their state
    changes) as telemetry messages: a warm-up (while the data-quality checks and the
    detectors learn) and a measured period. Returns both, and the measured period's
    samples and readings."""
    from birlik.payload import Value, encode_telemetry
    from birlik.plant import Machine, load_plant
    from simulators.fleet import Fleet

    plant = load_plant(REPO / "simulators" / "plants" / "central-asia.yaml")
    t0 = 1_767_225_600_000
    fleet = Fleet(plant, seed=seed, start_ms=t0)
    split = t0 + int(warmup_h * 3_600_000)
    end = split + int(measured_h * 3_600_000)
    warmup: list[tuple[str, bytes]] = []
    measured: list[tuple[str, bytes]] = []
    samples = readings = 0
    seq = 0
    pending: dict[Machine, list[tuple[int, dict[str, Value]]]] = {}
    for machine, ts, values in fleet.advance(end):
        rows = pending.setdefault(machine, [])
        rows.append((ts, values))
        if len(rows) < samples_per_message:
            continue
        seq += 1
        body = encode_telemetry(gateway="gw-bench", seq=seq, samples=rows, kind=machine.kind)
        if rows[0][0] < split:
            warmup.append((machine.path.topic(), body))
        else:
            measured.append((machine.path.topic(), body))
            samples += len(rows)
            readings += sum(1 for _, v in rows for k, x in v.items() if k != "state" and x is not None)
        pending[machine] = []
    return warmup, measured, samples, readings


def publish(queued: str, url: str) -> None:
    """Publish the pickled ``(topic, payload)`` list at ``queued`` to the broker at ``url``
    (QoS 1, as fast as the broker takes them): the benchmark's publisher process."""
    from urllib.parse import urlsplit

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    messages = pickle.loads(Path(queued).read_bytes())
    where = urlsplit(url)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    pub.max_inflight_messages_set(1000)
    pub.connect(where.hostname or "127.0.0.1", where.port or 1883)
    pub.loop_start()
    for i in range(0, len(messages), 5000):  # within the client's queue
        infos = [pub.publish(topic, body, qos=1) for topic, body in messages[i : i + 5000]]
        for info in infos:
            info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()


def worker_rate(
    state: Path,
    *,
    warmup_h: float = 8.0,
    measured_h: float = 2.0,
    data_quality: bool = True,
    samples_per_message: int = 10,
    copies: int = 1,
) -> dict[str, float]:
    """Readings/s (per core: the process's CPU time) through the live worker end to end: from
    the broker, decoded, sensor checks, scored, alarms, and the points written to InfluxDB.

    The worker first goes through a warm-up in this process (not measured: the checks and
    detectors learn, as they do once per machine), then the measured period's messages are
    queued in a real Mosquitto and the worker consumes them from there. With ``copies``,
    every machine stands for that many (each with its own topic and a copy of what its
    checks and detector learned), so the fleet is large and the messages of one stream
    batch are spread over many machines, as in a whole centre."""
    import copy
    import dataclasses

    from analytics.alarmservice import AlarmService
    from analytics.alarmstore import AlarmStore
    from analytics.detectors import DETECTORS
    from analytics.stream import TelemetryStream
    from analytics.worker import AnalyticsWorker
    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.payload import decode_telemetry
    from ops.servers import Supervisor

    warmup, measured, total_samples, readings = plant_messages(warmup_h, measured_h, samples_per_message)
    log.info(
        "worker: %d warm-up messages, then %d messages (%d samples, %d readings) measured",
        len(warmup),
        len(measured),
        total_samples,
        readings,
    )
    # A fresh broker and store each time: no session or message left from an earlier run.
    shutil.rmtree(state / "worker", ignore_errors=True)
    with Supervisor(state / "worker") as supervisor:
        broker = supervisor.start_mosquitto()
        server = supervisor.start_influxdb()
        config = load_config(None, env={})
        config.mqtt.url = broker.url
        config.alarms.store = str(state / "worker" / "alarms.sqlite")
        analytics = dataclasses.replace(config.analytics, data_quality=data_quality)
        settings = InfluxSettings(url=server.url, database="bench_worker")
        with InfluxClient(settings) as influx:
            influx.create_database()
            service = AlarmService(config.alarms, AlarmStore(config.alarms.store), [])
            worker = AnalyticsWorker(
                influx, analytics, detector_factory=DETECTORS["zscore"], since_ms=0, alarms=service
            )
            lines: list[str] = []
            for topic, body in warmup:  # learning, in process
                worker.score_telemetry(decode_telemetry(topic, body), lines, [])
                if len(lines) >= 50_000:
                    worker.write(lines)
                    lines.clear()
            worker.write(lines)
            learning = sum(1 for m in worker._machines.values() if m.quality is not None and m.quality.learning)
            if copies > 1:
                originals = list(worker._machines.values())
                for m in originals:
                    for k in range(1, copies):
                        twin = copy.deepcopy(m)
                        twin.path = dataclasses.replace(m.path, machine=f"{m.path.machine}-{k}")
                        twin.anomaly_head = None
                        worker._machines[twin.path] = twin
                measured = [
                    (topic if k == 0 else topic.replace("/telemetry", f"-{k}/telemetry"), body)
                    for topic, body in measured
                    for k in range(copies)
                ]
                total_samples *= copies
                readings *= copies
            # What the warm-up learned saved as the worker saves it after every batch (the
            # data-quality checks once per machine, when learned): a one-off per machine, long
            # done in a worker that has been running, so not in the measured period.
            worker._after_batch(list(worker._machines.values()))
            log.info("worker: warm-up done (%d machines, %d still learning)", len(worker._machines), learning)
            stream = TelemetryStream(config.mqtt, client_id=f"bench-analytics-stream-{data_quality}")
            stream.subscribed.wait(15)
            # The messages come from another process while the worker reads them: its CPU
            # time is then the worker's own, receiving included.
            queued = state / "worker" / "measured.pickle"
            queued.write_bytes(pickle.dumps(measured))
            read0 = worker.stats.samples_read
            cpu0, wall0 = time.process_time(), time.monotonic()
            code = f"from ops.bench_analytics import publish; publish({str(queued)!r}, {broker.url!r})"
            publisher = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
            try:
                worker.run_live(stream, should_stop=lambda: worker.stats.samples_read - read0 >= total_samples)
            finally:
                publisher.wait(60)
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
    log.info("the live worker end to end: broker -> scores in InfluxDB (10 samples a message)")
    live = worker_rate(Path(args.state_dir))
    log.info("... with one sample a message (the gateway's default), 28 machines copied 36 times (1,008)")
    single = worker_rate(Path(args.state_dir), measured_h=0.25, samples_per_message=1, copies=36)
    log.info("... and without the data-quality checks (10 samples a message)")
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
        "worker_rps_per_core_1000_machines_single_samples": round(single["worker_rps_per_core"]),
        "worker_rps_per_core_without_quality": round(bare["worker_rps_per_core"]),
        "seconds": round(time.monotonic() - started, 1),
    }
    return result
