"""``birlik demo``: a simulated plant through the whole platform, with a readable summary.

simulators -> gateways (one per site) -> Mosquitto -> ingest -> InfluxDB -> analytics ->
alerts, every stage its own process, on servers started for the run. A misconfigured
device also publishes a few bad messages, to show how they are rejected and kept.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("demo")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run a simulated plant through the whole platform and summarise (start here)",
        description="Start Mosquitto and InfluxDB, the ingest and analytics services and one gateway per "
        "site, play the plant on an accelerated clock for --seconds of wall time, then stop everything "
        "and print what happened: messages published, readings written, rejected (and why), anomalies, "
        "alerts per machine, and how the alerts compare with the faults injected. The last line is "
        "machine-readable: SUMMARY published=<readings> written=<readings> rejected=<items> "
        "anomalies=<samples> alerts=<raised>.",
    )
    p.add_argument("--seconds", type=float, default=60, help="wall-clock duration of the plant run (default: 60)")
    p.add_argument(
        "--speed", type=float, default=120, help="simulated seconds per wall second (default: 120, 1 h in 30 s)"
    )
    p.add_argument("--plant", default=None, help="plant description (YAML; default: the built-in Central Asia centre)")
    p.add_argument("--seed", type=int, default=1, help="simulation seed (default: 1)")
    p.add_argument(
        "--state-dir", type=Path, default=Path(".state/demo"), help="data, logs, dead letters (default: %(default)s)"
    )
    p.add_argument("--no-bad-device", action="store_true", help="do not publish the misconfigured device's messages")
    p.add_argument(
        "--keep-running", action="store_true", help="after the summary, keep Mosquitto and InfluxDB up until Ctrl-C"
    )
    p.set_defaults(func=run)


@dataclass
class AlertLog:
    """Alerts seen on MQTT during the run."""

    raised: Counter[str] = field(default_factory=Counter)
    first_raised_ms: dict[str, int] = field(default_factory=dict)
    cleared: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


#: What a misconfigured device sends: (what a person should read, machine path or "" for a
#: real machine of the plant, the raw payload or the readings of an otherwise valid message).
BAD_MESSAGES: list[tuple[str, str, bytes | dict[str, Any]]] = [
    ("a payload that is not JSON", "", b"temperature=71.2;vibration=2.1"),
    ("a temperature in degF", "", {"units": {"bearing_temp": "degF"}, "values": {"bearing_temp": 141.8}}),
    (
        "an unknown machine",
        "ontustik-textile/kz-turkestan/spinning-1/rs-999",
        {"units": {"vibration_rms": "mm/s"}, "values": {"vibration_rms": 1.2}},
    ),
    ("an unsupported schema version", "", {"v": 7, "units": {}, "values": {"speed": 1450.0}}),
    (
        "a vibration of 900 mm/s (out of range)",
        "",
        {"units": {"vibration_rms": "mm/s"}, "values": {"vibration_rms": 900.0}},
    ),
]


def _bad_payload(spec: bytes | dict[str, Any], ts_ms: int, seq: int) -> bytes:
    if isinstance(spec, bytes):
        return spec
    message = {
        "v": spec.get("v", 1),
        "gateway": "gw-legacy-plc",
        "seq": seq,
        "units": spec["units"],
        "samples": [{"ts": ts_ms, "values": spec["values"]}],
    }
    return json.dumps(message).encode()


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M")


def run(args: argparse.Namespace) -> int:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.payload import PayloadError, decode_alert
    from birlik.plant import PlantError, load_plant
    from birlik.process import terminate_gracefully
    from birlik.topics import subscription
    from ingest.deadletters import load as load_dead_letters
    from ops.bench import DEMO_ANALYTICS
    from ops.servers import ServerError, Supervisor
    from ops.stack import Stack, wait_until
    from simulators.fleet import Fleet, write_ground_truth

    terminate_gracefully()
    if args.seconds <= 0 or args.speed <= 0:
        log.error("--seconds and --speed must be positive")
        return 2
    try:
        plant = load_plant(args.plant)
    except PlantError as exc:
        log.error("%s", exc)
        return 2
    sim_span_ms = int(args.seconds * args.speed * 1000)
    # The simulated period ends about now, so "last N hours" in Grafana shows the whole run.
    start_ms = int(time.time() * 1000) - sim_span_ms
    fleet = Fleet(plant, seed=args.seed, start_ms=start_ms)
    start_ms = fleet.start_ms
    truth = fleet.ground_truth()
    machines = list(plant.machines())
    plant_file = plant.source
    say = print

    say(
        f"birlik demo: {plant.name}: {len(plant.sites)} sites, {sum(len(s.lines) for s in plant.sites)} lines, "
        f"{len(machines)} machines, one sample per machine every {plant.sample_interval_s:g} s (simulated)"
    )
    for site in plant.sites:
        say(f"  {site.id}: {site.name}, {site.region} ({site.country}), {len(list(site.machines()))} machines")
    say(
        f"  clock: {args.seconds:g} s of wall time at {args.speed:g}x = {sim_span_ms / 3600_000:.1f} h simulated, "
        f"{_iso(start_ms)}-{_iso(start_ms + sim_span_ms)} UTC"
    )
    for g in truth:
        onset = (g.onset_ms - start_ms) / args.speed / 1000
        fail = (g.failure_ms - start_ms) / args.speed / 1000
        say(f"  injected fault: {g.machine.split('/')[-1]} {g.fault}, onset at {onset:.0f} s, failure at {fail:.0f} s")

    alerts = AlertLog()
    published_bad = 0
    summary: dict[str, Any] = {}
    with Supervisor(args.state_dir) as supervisor:
        stack = Stack(supervisor)
        try:
            stack.start_servers(
                ingest={"plant": plant_file},
                analytics=DEMO_ANALYTICS,
            )
        except ServerError as exc:
            log.error("%s", exc)
            return 1
        assert stack.broker and stack.influx
        say(f"servers: Mosquitto {stack.broker.url}, InfluxDB {stack.influx.url}; state in {stack.dir}")
        write_ground_truth(truth, stack.dir / "ground-truth.json")

        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="birlik-demo", protocol=mqtt.MQTTv311)

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            try:
                alert = decode_alert(msg.topic, bytes(msg.payload))
            except PayloadError:
                return
            with alerts.lock:
                if alert.state == "raised":
                    key = str(alert.path)
                    alerts.raised[key] += 1
                    alerts.first_raised_ms.setdefault(key, alert.ts_ms)
                else:
                    alerts.cleared += 1
            say(
                f"  ALERT {alert.state:7} {alert.severity:8} {alert.path.machine:9} {alert.signal} "
                f"(score {alert.score:.1f}) at simulated {_iso(alert.ts_ms)}"
            )

        watcher.on_message = on_message
        watcher.connect(stack.broker.host, stack.broker.port)
        watcher.subscribe(subscription("alert"), qos=1)
        watcher.loop_start()
        try:
            stack.start_ingest()
            since = datetime.fromtimestamp(start_ms / 1000, UTC).isoformat()
            stack.start_service("analytics", ["analytics", "--since", since])
            gateways = []
            for site in plant.sites:
                gateways.append(
                    stack.start_service(
                        f"gateway-{site.id}",
                        [
                            "gateway",
                            "--plant",
                            plant_file,
                            "--site",
                            site.id,
                            "--speed",
                            str(args.speed),
                            "--start",
                            datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(),
                            "--sim-duration",
                            f"{sim_span_ms / 1000}s",
                            "--seed",
                            str(args.seed),
                        ],
                    )
                )
            say(f"running: ingest, analytics, {len(gateways)} gateways; logs in {stack.dir / 'logs'}")
            if not args.no_bad_device:
                say("  a misconfigured legacy device (gw-legacy-plc) also publishes a bad message every 5 s")

            started = time.monotonic()
            next_report = started + 5
            next_bad = started + 2
            bad_index = 0
            while any(g.running for g in gateways):
                now = time.monotonic()
                if not args.no_bad_device and now >= next_bad:
                    _publish_bad(watcher, machines, bad_index, start_ms, args.speed, now - started)
                    published_bad += 1
                    bad_index += 1
                    next_bad = now + 5
                if now >= next_report:
                    next_report = now + 5
                    say(_progress(stack, gateways, now - started, start_ms, args.speed))
                for name in ("ingest", "analytics"):
                    child = next(c for c in supervisor.children if c.name == name)
                    if not child.running:
                        raise ServerError(f"{name} stopped unexpectedly; its log:\n{child.log_tail()}")
                time.sleep(0.2)
            failed = [g for g in gateways if g.process.returncode != 0]
            if failed:
                raise ServerError(f"{failed[0].name} failed; its log:\n{failed[0].log_tail()}")
            say(f"plant run finished after {time.monotonic() - started:.0f} s; letting ingest and analytics catch up")
            published_msgs = sum(stack.stats(g.name).get("messages", 0) for g in gateways)
            wait_until(
                lambda: (
                    stack.stats("ingest").get("messages_received", 0) >= published_msgs + published_bad
                    and stack.stats("ingest").get("buffered_points", 1) == 0
                ),
                60,
            )
            time.sleep(1.5)  # one more flush interval and analytics poll
            points = stack.stats("ingest").get("points_written", 0)
            wait_until(lambda: stack.stats("analytics").get("samples_read", 0) >= points, 60)
        except KeyboardInterrupt:
            say("interrupted: stopping everything")
        except ServerError as exc:
            log.error("%s", exc)
            return 1
        finally:
            for child in reversed(list(supervisor.children)):
                if child.name not in ("mosquitto", "influxdb"):
                    supervisor.stop(child)
            watcher.loop_stop()
            watcher.disconnect()

        with InfluxClient(InfluxSettings(url=stack.influx.url, database="birlik")) as influx:
            summary = _summarise(
                stack, influx, plant, alerts, truth, load_dead_letters(stack.dir / "dead-letters.jsonl")
            )
        _print_summary(summary, stack, args)
        if args.keep_running:
            say(
                f"servers still running: export BIRLIK_MQTT_URL={stack.broker.url} "
                f"BIRLIK_INFLUX_URL={stack.influx.url}; Ctrl-C stops them"
            )
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    print(
        f"SUMMARY published={summary['published']} written={summary['written']} rejected={summary['rejected']} "
        f"anomalies={summary['anomalies']} alerts={summary['alerts']}",
        flush=True,
    )
    return 0 if summary["published"] == summary["written"] else 1


def _publish_bad(client: Any, machines: list[Any], index: int, start_ms: int, speed: float, elapsed: float) -> None:
    what, path, spec = BAD_MESSAGES[index % len(BAD_MESSAGES)]
    topic = f"birlik/{path}/telemetry" if path else machines[index % len(machines)].path.topic()
    client.publish(topic, _bad_payload(spec, start_ms + int(elapsed * speed * 1000), index), qos=1)
    log.debug("bad device: %s on %s", what, topic)


def _progress(stack: Any, gateways: list[Any], elapsed: float, start_ms: int, speed: float) -> str:
    # Downstream first: counters read in the order the data flows never show more
    # written than published.
    analytics = stack.stats("analytics")
    ingest = stack.stats("ingest")
    published = sum(stack.stats(g.name).get("readings", 0) for g in gateways)
    rejected = ingest.get("readings_rejected", 0) + ingest.get("messages_rejected", 0)
    return (
        f"  {elapsed:5.0f} s  simulated {_iso(start_ms + int(elapsed * speed * 1000))}  "
        f"published {published:,}  written {ingest.get('readings_written', 0):,}  rejected {rejected}  "
        f"scored {analytics.get('samples_scored', 0):,}  anomalous {analytics.get('anomalous_samples', 0):,}  "
        f"alerts {analytics.get('alerts_raised', 0)}"
    )


def _summarise(
    stack: Any, influx: Any, plant: Any, alerts: AlertLog, truth: list[Any], dead: list[dict[str, Any]]
) -> dict[str, Any]:
    gateways = [stack.stats(f"gateway-{s.id}") for s in plant.sites]
    written = influx.count_readings()
    points = influx.query('SELECT COUNT("state") FROM "telemetry"')
    anomalies = influx.count("anomaly", "score", "anomalous = true")
    scored = influx.count("anomaly", "score")
    reasons = Counter(entry["reason"] for entry in dead)
    return {
        "published_messages": sum(g.get("messages", 0) for g in gateways),
        "published": sum(g.get("readings", 0) for g in gateways),
        "unacked": sum(g.get("unacked", 0) for g in gateways),
        "written": written,
        "samples": points[0].values[0][1] if points else 0,
        "rejected": len(dead),
        "reasons": reasons,
        "examples": {e["reason"]: e["detail"] for e in dead},
        "anomalies": anomalies,
        "scored": scored,
        "alerts": sum(alerts.raised.values()),
        "alerts_by_machine": alerts.raised,
        "first_alert": alerts.first_raised_ms,
        "cleared": alerts.cleared,
        "truth": truth,
        "ingest": stack.stats("ingest"),
    }


def _print_summary(s: dict[str, Any], stack: Any, args: argparse.Namespace) -> None:
    lost = s["published"] - s["written"]
    print()
    print("Summary")
    print(
        f"  published  {s['published']:>9,} readings in {s['published_messages']:,} messages (QoS 1, all acknowledged)"
    )
    print(f"  written    {s['written']:>9,} readings to InfluxDB ({s['samples']:,} samples); lost: {lost}")
    print(f"  rejected   {s['rejected']:>9,} bad messages or readings, kept in {stack.dir / 'dead-letters.jsonl'}")
    for reason, n in s["reasons"].most_common():
        print(f"               {n:>4} {reason:<20} e.g. {s['examples'][reason]}")
    print(f"  anomalies  {s['anomalies']:>9,} anomalous samples out of {s['scored']:,} scored")
    print(f"  alerts     {s['alerts']:>9,} raised, {s['cleared']} cleared")
    for machine, n in s["alerts_by_machine"].most_common():
        print(f"               {n:>4} {machine}")
    faulty = {g.machine for g in s["truth"]}
    for g in s["truth"]:
        first = s["first_alert"].get(g.machine)
        name = g.machine.split("/")[-1]
        if first is None:
            reached = "before the run ended" if g.onset_ms < g.failure_ms else ""
            print(f"  fault      {name} {g.fault}: no alert {reached} (onset {_iso(g.onset_ms)} UTC)".rstrip())
        else:
            lead = (g.failure_ms - first) / 60_000
            print(
                f"  fault      {name} {g.fault}: onset {_iso(g.onset_ms)}, first alert {_iso(first)}, "
                f"{lead:.0f} min before failure ({_iso(g.failure_ms)}) (simulated UTC)"
            )
    false_alarms = sum(n for m, n in s["alerts_by_machine"].items() if m not in faulty)
    print(f"  false alarms on healthy machines: {false_alarms}")
    print(f"  ground truth of this run (injected faults): {stack.dir / 'ground-truth.json'}")
    print()
    print("Look at the data (InfluxQL; restart the servers on this run's data with")
    print(f"  .venv/bin/birlik servers --state-dir {args.state_dir} --influx-port 8086 ):")
    print(
        '  curl -sG http://127.0.0.1:8086/query --data-urlencode db=birlik --data-urlencode "q='
        "SELECT mean(vibration_rms), max(bearing_temp) FROM telemetry WHERE machine = 'pump-302' "
        'AND time > now() - 3h GROUP BY time(5m)"'
    )
