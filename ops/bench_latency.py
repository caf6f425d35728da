"""``./scripts/bench latency``: seconds from a reading at the broker to its alarm, live.

Mosquitto and InfluxDB are started, then the analytics worker as its own process
(``birlik analytics`` live from the broker, no ``--since``) with its alarm store in the state
directory and the MQTT alarm channel on. A publisher in this process sends one sample a
second for each of ``--machines`` centrifugal pumps (7 signals and the state, one sample per
message, QoS 1, device time = wall time at sending, the machines spread evenly over each
second). The run lasts a warm-up (``--warmup-samples`` samples, the worker's
``analytics.warmup_samples``, plus 5 s) and then ``--latency-seconds``. After the warm-up a
``--fault-share`` of the machines (drawn with a fixed seed) get a sudden fault at staggered
random times: a step of +6 mm/s in ``vibration_rms`` and +30 K in ``bearing_temp``, far past
the detector's threshold, kept until the end.

The benchmark subscribes to every machine's ``.../alarm`` topic. A condition alarm is raised
on the sample that completes the hysteresis (``alarms.raise_after`` abnormal verdicts among
the last ``alarms.window``: with a clean step, the ``raise_after``-th faulted sample), and
its ``ts`` is that sample's device time. So each alarm's **latency** is the wall time its
message arrived here minus the wall time the publisher sent the sample whose device time
equals the alarm's ``ts``: the time from the reading that made the alarm decidable to the
alarm in the hands of a subscriber (the hysteresis itself, ``raise_after - 1`` sample
periods from the onset, is not in it; the log gives the time from the onset too). Every
faulted machine must raise a condition alarm (else it is ``missed``) and no healthy machine
any alarm (else ``false``, as is an alarm of a faulted machine before its onset).

The log also splits each latency by the alarm store's own times (``stored`` of the
transition and ``sent`` of its ``mqtt`` outbox entry): reading sent -> transition stored
(broker, the worker's queue and batch, scoring), stored -> published and acknowledged
(the notifier), and -> arrival here; and gives the broker's own transit (one machine's
telemetry subscribed here too), the worker's CPU share and how far it kept up. Ends with::

    RESULT latency machines=<n> readings_per_s=<x> alarms=<n> missed=<n> false=<n>
        p50_s=<x> p95_s=<x> max_s=<x> worker_cpu=<x>

``readings_per_s`` is the offered rate (readings published per second of publishing);
``worker_cpu`` the worker's CPU time over the publishing time (1.0 = one core).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

SUMMARY = "seconds from a reading at the broker to its alarm published by the live analytics worker (p95)"

KIND = "centrifugal_pump"
#: The healthy level and noise of each signal of the pumps.
SIGNALS: dict[str, tuple[float, float]] = {
    "vibration_rms": (2.0, 0.05),
    "bearing_temp": (55.0, 0.2),
    "motor_temp": (62.0, 0.2),
    "ambient_temp": (25.0, 0.1),
    "flow": (100.0, 1.0),
    "discharge_pressure": (5.0, 0.05),
    "motor_current": (30.0, 0.3),
}
#: The fault: a sudden step in these signals (z-scores of about 40 and 12 on the zscore detector).
FAULT_STEP = {"vibration_rms": 6.0, "bearing_temp": 30.0}
SEED = 9
#: Seconds of publishing after the warm-up samples, before any fault.
WARMUP_MARGIN_S = 5.0
#: The latest onset is this many seconds plus ``raise_after`` sample periods before the end.
FAULT_TAIL_S = 5.0
#: After the publishing, how long to wait for the worker to catch up and the last alarms.
DRAIN_S = 30.0
PROGRESS_EVERY_S = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("latency")
    g.add_argument("--machines", type=int, default=500, help="latency: pumps publishing 1 sample/s (default: 500)")
    g.add_argument(
        "--latency-seconds",
        type=float,
        default=120.0,
        help="latency: seconds of publishing after the warm-up, when the faults happen (default: 120)",
    )
    g.add_argument(
        "--warmup-samples",
        type=int,
        default=30,
        help="latency: the worker's analytics.warmup_samples; the warm-up lasts that many seconds + 5 (default: 30)",
    )
    g.add_argument(
        "--fault-share", type=float, default=0.2, help="latency: share of the machines given a fault (default: 0.2)"
    )


# --- the plan and the scoring (pure) ----------------------------------------------------


def plan_faults(machines: int, share: float, first_s: float, last_s: float, seed: int = SEED) -> dict[int, float]:
    """Machine index -> onset, seconds from the start of publishing: ``round(share * machines)``
    machines, drawn at random, with onsets uniform in [first_s, last_s]."""
    rng = random.Random(seed)
    count = min(machines, max(0, round(share * machines)))
    chosen = sorted(rng.sample(range(machines), count))
    return {i: rng.uniform(first_s, max(first_s, last_s)) for i in chosen}


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN when there are no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Received:
    """An alarm transition as it arrived here."""

    arrived: float
    machine: str
    key: str
    kind: str
    transition: str
    ts_ms: int


@dataclass
class Outcome:
    #: Faulted machine -> its first condition alarm after the onset, and the latency (s).
    alarms: dict[str, Received] = field(default_factory=dict)
    latencies: dict[str, float] = field(default_factory=dict)
    #: Seconds from the first faulted sample's sending to the alarm's arrival.
    from_onset: dict[str, float] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)
    false: list[Received] = field(default_factory=list)
    #: Alarms whose ts is not the ``raise_after``-th faulted sample (the hysteresis not as expected).
    off_hysteresis: list[str] = field(default_factory=list)
    #: Other alarms of faulted machines after the onset (sensor alarms...), not scored.
    other: list[Received] = field(default_factory=list)


def evaluate(
    machines: Sequence[str],
    faulted: Mapping[str, Sequence[int]],
    sent: Mapping[tuple[str, int], float],
    received: Sequence[Received],
    raise_after: int,
) -> Outcome:
    """Score what arrived. ``faulted``: machine -> device times of its faulted samples as
    published (in order); ``sent``: (machine, device time) -> wall time it was sent. Only the
    faulted machines with at least ``raise_after`` faulted samples published are expected
    to alarm."""
    out = Outcome()
    seen: set[str] = set()
    for r in sorted(received, key=lambda r: r.arrived):
        if r.key in seen:  # QoS 1: a duplicate delivery is the same transition
            continue
        seen.add(r.key)
        if r.transition not in ("raised", "reactivated"):
            continue
        samples = faulted.get(r.machine)
        if not samples or r.ts_ms < samples[0]:
            out.false.append(r)
        elif r.kind == "condition" and r.machine not in out.alarms:
            out.alarms[r.machine] = r
            at = sent.get((r.machine, r.ts_ms))
            if at is not None:
                out.latencies[r.machine] = r.arrived - at
            out.from_onset[r.machine] = r.arrived - sent[(r.machine, samples[0])]
            if len(samples) < raise_after or samples[raise_after - 1] != r.ts_ms:
                out.off_hysteresis.append(r.machine)
        else:
            out.other.append(r)
    known = set(machines)
    out.missed = sorted(
        m for m, samples in faulted.items() if m in known and len(samples) >= raise_after and m not in out.alarms
    )
    return out


# --- processes --------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included); 0 when it is gone."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Watcher:
    """Every machine's ``.../alarm`` topic and one machine's telemetry, with arrival times."""

    def __init__(self, host: str, port: int, probe_topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[float, str, bytes]] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-latency-watcher")
        self._client.on_connect = lambda c, u, f, r, p: c.subscribe([("birlik/+/+/+/+/alarm", 1), (probe_topic, 1)])
        self._client.on_subscribe = lambda c, u, mid, codes, p: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()

    def _on_message(self, client: Any, userdata: object, message: Any) -> None:
        arrived = time.time()
        with self._lock:
            self.messages.append((arrived, message.topic, bytes(message.payload)))

    def take(self) -> list[tuple[float, str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Published:
    samples: int = 0
    started: float = 0.0
    ended: float = 0.0
    #: (machine, device time) -> wall time sent.
    sent: dict[tuple[str, int], float] = field(default_factory=dict)
    #: machine -> device times of its faulted samples.
    faulted: dict[str, list[int]] = field(default_factory=dict)


def _values(rng: random.Random, faulty: bool) -> dict[str, float | str]:
    values: dict[str, float | str] = {}
    for name, (level, noise) in SIGNALS.items():
        v = level + rng.gauss(0.0, noise) + (FAULT_STEP.get(name, 0.0) if faulty else 0.0)
        values[name] = round(v, 3)
    values["state"] = "running"
    return values


def publish(
    host: str,
    port: int,
    paths: Sequence[Any],
    onsets: Mapping[int, float],
    seconds: float,
    should_stop: Any,
    progress: Any,
) -> Published:
    """Every machine one sample a second for ``seconds`` (machine i at i/n into each second),
    faulty from its onset (seconds from the start) on."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from birlik.payload import encode_telemetry

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-latency-publisher")
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    rng = random.Random(SEED + 1)
    n = len(paths)
    topics = [p.topic() for p in paths]
    names = [str(p) for p in paths]
    last_ts = [0] * n
    out = Published()
    t0 = time.time()
    out.started = t0
    end = t0 + seconds
    k = 0
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    infos = []
    try:
        while True:
            i = k % n
            due = t0 + k // n + i / n
            if due >= end or should_stop():
                break
            now = time.time()
            if due > now:
                time.sleep(min(due - now, 0.05))
                if time.monotonic() >= next_progress:
                    progress(out, now - t0)
                    next_progress += PROGRESS_EVERY_S
                continue
            ts = max(int(now * 1000), last_ts[i] + 1)
            last_ts[i] = ts
            faulty = i in onsets and now >= t0 + onsets[i]
            body = encode_telemetry(
                gateway="gw-bench-latency", seq=k + 1, samples=[(ts, _values(rng, faulty))], kind=KIND
            )
            out.sent[(names[i], ts)] = now
            if faulty:
                out.faulted.setdefault(names[i], []).append(ts)
            infos.append(client.publish(topics[i], body, qos=1))
            out.samples += 1
            k += 1
            if len(infos) > 5000:
                infos = [info for info in infos if not info.is_published()]
    finally:
        out.ended = time.time()
        for info in infos:
            info.wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
    return out


def _store_times(path: Path) -> dict[str, tuple[float, float | None]]:
    """Transition key -> (stored, sent on the mqtt channel), from the worker's alarm store."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT t.key, t.stored, o.sent FROM transitions t "
                "LEFT JOIN outbox o ON o.key = t.key AND o.channel = 'mqtt'"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        log.warning("cannot read the alarm store %s (%s): no breakdown", path, exc)
        return {}
    return {str(k): (float(stored), None if sent is None else float(sent)) for k, stored, sent in rows}


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "none"
    return f"p50 {percentile(values, 50):.3f} s, p95 {percentile(values, 95):.3f} s, max {max(values):.3f} s"


# --- the benchmark ------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    from birlik.alarm import decode_alarm
    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.payload import PayloadError, decode_telemetry
    from birlik.process import terminate_gracefully
    from birlik.topics import MachinePath
    from ops.servers import Supervisor
    from ops.stack import Stack, wait_until

    if args.machines < 1 or args.warmup_samples < 1 or not 0 <= args.fault_share <= 1:
        raise SystemExit("bench latency: --machines and --warmup-samples must be positive, --fault-share 0 to 1")
    terminate_gracefully()  # SIGTERM as Ctrl-C: every child is stopped on the way out
    deadline = time.monotonic() + args.timeout
    config = load_config(args.config)
    raise_after = config.alarms.raise_after
    warmup_s = args.warmup_samples + WARMUP_MARGIN_S
    seconds = warmup_s + args.latency_seconds
    onsets = plan_faults(args.machines, args.fault_share, warmup_s, seconds - raise_after - FAULT_TAIL_S)
    paths = [MachinePath("bench", "latency", f"line-{i % 10}", f"pump-{i:04d}") for i in range(args.machines)]
    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    store = state / "alarms.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}{suffix}").unlink(missing_ok=True)
    log.info(
        "latency: %d pumps at 1 sample/s (%d readings/s offered), %d of them faulted after a warm-up of %.0f s, "
        "%.0f s in all",
        args.machines,
        args.machines * len(SIGNALS),
        len(onsets),
        warmup_s,
        seconds,
    )
    with Supervisor(state) as supervisor:
        stack = Stack(supervisor)
        stack.start_servers(
            analytics={
                "warmup_samples": args.warmup_samples,
                "detector": config.analytics.detector,
                "threshold": config.analytics.threshold,
                "data_quality": config.analytics.data_quality,
            },
            alarms={
                "store": str(store),
                "raise_after": raise_after,
                "window": config.alarms.window,
                "stale_after_s": 3600.0,
            },
        )
        assert stack.broker is not None and stack.influx is not None
        broker = stack.broker
        with InfluxClient(InfluxSettings(url=stack.influx.url, database="birlik")) as influx:
            influx.create_database()
        watcher = Watcher(broker.host, broker.port, paths[0].topic())
        try:
            if not watcher.subscribed.wait(10):
                raise SystemExit("bench latency: the alarm subscription was not acknowledged in 10 s")
            worker = stack.start_service(
                "analytics", ["analytics"], ready=lambda: stack.stats("analytics").get("running") is True, timeout_s=90
            )
            time.sleep(1.0)  # its telemetry subscription (connected asynchronously) in place
            pid = worker.process.pid
            others = {c.name: c.process.pid for c in supervisor.children if c.name in ("mosquitto", "influxdb")}
            cpu0 = {name: cpu_seconds(p) for name, p in {**others, "analytics": pid}.items()}

            def progress(out: Published, elapsed: float) -> None:
                read = stack.stats("analytics").get("samples_read", 0)
                alarms = sum(1 for _, topic, _ in watcher.take() if topic.endswith("/alarm"))
                log.info(
                    "%3.0f s: published %d samples, the worker read %d (behind %d), %d alarm transitions in; "
                    "worker CPU %.2f",
                    elapsed,
                    out.samples,
                    read,
                    out.samples - read,
                    alarms,
                    (cpu_seconds(pid) - cpu0["analytics"]) / max(elapsed, 1e-9),
                )

            budget = max(0.0, min(seconds, deadline - time.monotonic() - DRAIN_S))
            if budget < seconds:
                log.warning("--timeout %.0f s: publishing only %.0f of %.0f s", args.timeout, budget, seconds)
            published = publish(broker.host, broker.port, paths, onsets, budget, lambda: not worker.running, progress)
            wall = published.ended - published.started
            cpu = {name: cpu_seconds(p) - cpu0[name] for name, p in {**others, "analytics": pid}.items()}
            expected = {m for m, s in published.faulted.items() if len(s) >= raise_after}

            def alarmed() -> set[str]:
                got = set()
                for _, topic, payload in watcher.take():
                    if topic.endswith("/alarm"):
                        try:
                            a = decode_alarm(topic, payload)
                        except PayloadError:
                            continue
                        if a.kind == "condition" and a.transition == "raised":
                            got.add(str(a.path))
                return got

            caught_up = wait_until(
                lambda: stack.stats("analytics").get("samples_read", 0) >= published.samples and expected <= alarmed(),
                max(1.0, min(DRAIN_S, deadline - time.monotonic())),
            )
            caught_up_s = time.time() - published.ended
            read = stack.stats("analytics").get("samples_read", 0)
            time.sleep(1.0)  # a late (false) alarm
            if not worker.running:
                log.error("the worker exited (code %s); its log:\n%s", worker.process.returncode, worker.log_tail())
            supervisor.stop(worker)
        finally:
            watcher.close()
        messages = watcher.take()
    received: list[Received] = []
    transit: list[float] = []
    for arrived, topic, payload in messages:
        try:
            if topic.endswith("/alarm"):
                a = decode_alarm(topic, payload)
                received.append(Received(arrived, str(a.path), a.key, a.kind, a.transition, a.ts_ms))
            else:
                for s in decode_telemetry(topic, payload).samples:
                    at = published.sent.get((str(paths[0]), s.ts_ms))
                    if at is not None:
                        transit.append(arrived - at)
        except PayloadError as exc:
            log.warning("undecodable message on %s: %s", topic, exc)
    outcome = evaluate([str(p) for p in paths], published.faulted, published.sent, received, raise_after)
    latencies = list(outcome.latencies.values())
    _report(outcome, published, transit, _store_times(store), read, caught_up, caught_up_s, cpu, wall, raise_after)
    readings_per_s = published.samples * len(SIGNALS) / wall if wall > 0 else 0.0
    return {
        "machines": args.machines,
        "readings_per_s": round(readings_per_s),
        "alarms": len(outcome.latencies),
        "missed": len(outcome.missed),
        "false": len(outcome.false),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3) if latencies else math.nan,
        "worker_cpu": round(cpu["analytics"] / wall, 2) if wall > 0 else 0.0,
    }


def _report(
    outcome: Outcome,
    published: Published,
    transit: list[float],
    times: Mapping[str, tuple[float, float | None]],
    read: int,
    caught_up: bool,
    caught_up_s: float,
    cpu: Mapping[str, float],
    wall: float,
    raise_after: int,
) -> None:
    log.info(
        "published %d samples in %.1f s; the worker read %d of them%s",
        published.samples,
        wall,
        read,
        f", all in and every expected alarm {caught_up_s:.1f} s after the last" if caught_up else " (NOT caught up)",
    )
    log.info(
        "CPU over the publishing, share of one core: %s",
        ", ".join(f"{name} {seconds / wall:.2f}" for name, seconds in cpu.items()) if wall > 0 else "-",
    )
    log.info("broker transit (publisher -> broker -> a subscriber, one machine's telemetry): %s", _spread(transit))
    queued, notified, delivered = [], [], []
    for machine, alarm in outcome.alarms.items():
        stored, mqtt_sent = times.get(alarm.key, (None, None))
        at = published.sent.get((machine, alarm.ts_ms))
        if stored is None or at is None:
            continue
        queued.append(stored - at)
        if mqtt_sent is not None:
            notified.append(mqtt_sent - stored)
            delivered.append(alarm.arrived - mqtt_sent)
    log.info("latency, decisive reading sent -> alarm here: %s", _spread(list(outcome.latencies.values())))
    log.info("  reading sent -> transition stored by the worker (broker, queue, batch, scoring): %s", _spread(queued))
    log.info("  stored -> published and acknowledged by the broker (notifier, mqtt channel): %s", _spread(notified))
    log.info("  acknowledged -> here (can be negative: the broker forwards before it acknowledges): %s",
             _spread(delivered))  # fmt: skip
    log.info(
        "from the first faulted sample sent (the hysteresis, %d samples, included): %s",
        raise_after,
        _spread(list(outcome.from_onset.values())),
    )
    if outcome.missed:
        log.warning(
            "%d faulted machine(s) raised no condition alarm: %s", len(outcome.missed), ", ".join(outcome.missed)
        )
    for r in outcome.false:
        log.warning("false alarm: %s %s %s at %d", r.machine, r.kind, r.transition, r.ts_ms)
    if outcome.off_hysteresis:
        log.warning(
            "%d alarm(s) not on the %d-th faulted sample: %s",
            len(outcome.off_hysteresis),
            raise_after,
            ", ".join(outcome.off_hysteresis),
        )
    if outcome.other:
        log.info("other alarms of faulted machines: %d (%s)", len(outcome.other),
                 ", ".join(sorted({f"{r.kind} {r.transition}" for r in outcome.other})))  # fmt: skip
