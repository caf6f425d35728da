"""``./scripts/bench alarms``: a seeded multi-week plant through detection, the alarm
lifecycle and every channel, on real servers.

A plant of pumps, compressors and conveyors, sampled once a minute for ``--weeks`` weeks
(default 3), with faults that develop over days and trip the machines, is backfilled into a
real InfluxDB. The analytics worker (in this process) scores it with the alarm service and
every channel: Mosquitto (transitions and retained state), InfluxDB, a webhook (a local HTTP
server), e-mail (a local aiosmtpd server; each with its chart) and Telegram (a local server
speaking the Bot API). Each receiver counts what it got by the notification's key.

    RESULT alarms alarms_per_machine_week=<x> notifications_expected=<n> delivered=<n>
        duplicated=<n> p95_notify_s=<x> ...

``notifications_expected`` is the stored transitions times the channels; ``delivered`` the
distinct keys the receivers got; ``duplicated`` what they got more than once;
``p95_notify_s`` the 95th percentile of the time from storing a transition to its channel
accepting it.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("bench")

SUMMARY = "a multi-week plant through detection, the alarm lifecycle and every channel on local servers"
DAY = "1d"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("alarms")
    g.add_argument("--weeks", type=float, default=3.0, help="alarms: weeks of plant time (default: 3)")


def plant_spec(weeks: float) -> dict[str, Any]:
    span_d = weeks * 7
    machines: list[dict[str, Any]] = [
        {"id": "pump-1", "kind": "centrifugal_pump"},
        {"id": "pump-2", "kind": "centrifugal_pump",
         "faults": [{"type": "bearing_wear", "start": f"{span_d * 0.25:.1f}d", "failure": f"{span_d * 0.6:.1f}d"}]},
        {"id": "pump-3", "kind": "centrifugal_pump",
         "faults": [{"type": "cavitation", "start": f"{span_d * 0.5:.1f}d", "failure": f"{span_d * 0.7:.1f}d"}]},
        {"id": "comp-1", "kind": "air_compressor"},
        {"id": "comp-2", "kind": "air_compressor",
         "faults": [{"type": "cooling_failure", "start": f"{span_d * 0.4:.1f}d", "failure": f"{span_d * 0.55:.1f}d"}]},
        {"id": "cv-1", "kind": "conveyor_drive"},
        {"id": "cv-2", "kind": "conveyor_drive",
         "faults": [{"type": "imbalance", "start": f"{span_d * 0.6:.1f}d", "failure": f"{span_d * 0.9:.1f}d"}]},
        {"id": "cv-3", "kind": "conveyor_drive"},
    ]  # fmt: skip
    return {
        "sample_interval": "60s",
        "sites": [{"id": "kz-turkestan", "lines": [{"id": "line-1", "tenant": "acme", "machines": machines}]}],
    }


class _Receiver:
    """Counts notifications by key."""

    def __init__(self) -> None:
        self.keys: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.extra: list[Any] = []

    def got(self, key: str, extra: Any = None) -> None:
        with self.lock:
            self.keys[key] += 1
            if extra is not None:
                self.extra.append(extra)


def _http_server(receiver: _Receiver, telegram: bool) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if telegram:
                text = str(body.get("text", ""))
                receiver.got(text.rsplit("Alarm key: ", 1)[-1].strip(), None)
                answer = json.dumps({"ok": True, "result": {"message_id": 1}}).encode()
            else:
                receiver.got(self.headers.get("Idempotency-Key", ""), None)
                answer = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run(args: argparse.Namespace) -> dict[str, object]:
    import dataclasses

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from analytics.alarmservice import AlarmService, InfluxAlarmChannel, MqttAlarmChannel, configured_channels
    from analytics.alarmstore import AlarmStore
    from analytics.detectors import DETECTORS
    from analytics.notifier import Channel
    from analytics.worker import AnalyticsWorker
    from birlik.alarm import decode_alarm
    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxSettings
    from birlik.plant import parse_plant
    from ops.servers import Supervisor, free_port
    from simulators.backfill import backfill

    weeks = args.weeks
    plant = parse_plant(plant_spec(weeks), "bench-alarms")
    machines = sum(len(line.machines) for site in plant.sites for line in site.lines)
    start_ms = 1_767_225_600_000  # 2026-01-01, a Thursday
    end_ms = start_ms + int(weeks * 7 * 86400_000)
    config = load_config(args.config)
    analytics = dataclasses.replace(config.analytics, poll_interval_s=0.2, warmup_samples=240, settle_s=3600.0)
    logging.getLogger("analytics").setLevel(logging.WARNING)
    logging.getLogger("analytics.alerts").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd, every SMTP command

    webhook, telegram, mail, mqtt_rx = _Receiver(), _Receiver(), _Receiver(), _Receiver()

    class Mailbox:
        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            content = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
            message = email.message_from_bytes(content, policy=email.policy.default)
            pngs = [p for p in message.walk() if p.get_content_type() == "image/png"]
            mail.got(str(message.get("X-Birlik-Alarm-Key", "")), len(pngs))
            return "250 accepted"

    state = Path(args.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    (state / "alarms.sqlite").unlink(missing_ok=True)
    with Supervisor(state) as supervisor:
        broker = supervisor.start_mosquitto()
        server = supervisor.start_influxdb()
        hook_server, tg_server = _http_server(webhook, False), _http_server(telegram, True)
        smtp_port = free_port()
        smtp = Controller(Mailbox(), hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        watcher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        watcher.on_connect = lambda c, u, f, r, p: c.subscribe("birlik/+/+/+/+/alarm", qos=1)
        watcher.on_message = lambda c, u, m: mqtt_rx.got(decode_alarm(m.topic, bytes(m.payload)).key)
        watcher.connect(broker.host, broker.port)
        watcher.loop_start()

        a = config.alarms
        a.store = str(state / "alarms.sqlite")
        a.webhook_url = f"http://127.0.0.1:{hook_server.server_port}/alarms"
        a.smtp_host, a.smtp_port, a.smtp_security = "127.0.0.1", smtp_port, "none"
        a.email_from, a.email_to = "birlik@plant.local", "maintenance@plant.local"
        a.telegram_token, a.telegram_chat_id = "123456:bench-token", "-1001"
        a.telegram_base_url = f"http://127.0.0.1:{tg_server.server_port}"
        a.stale_after_s = 3600.0
        a.escalate_after_s = 8 * 3600.0
        config.mqtt.url = broker.url
        settings = InfluxSettings(url=server.url, database="bench_alarms")
        with InfluxClient(settings) as influx:
            influx.create_database()
            t0 = time.monotonic()
            readings = backfill(plant, influx, start_ms=start_ms, end_ms=end_ms, seed=7)
            log.info("backfilled %d readings (%d machines, %.1f weeks) in %.1f s", readings, machines, weeks,
                     time.monotonic() - t0)  # fmt: skip
            store = AlarmStore(a.store)
            channels: list[Channel] = [
                InfluxAlarmChannel(InfluxClient(settings)),
                MqttAlarmChannel(config.mqtt, client_id="bench-alarms"),
                *configured_channels(a, InfluxClient(settings)),
            ]
            service = AlarmService(a, store, channels)
            worker = AnalyticsWorker(
                influx,
                analytics,
                detector_factory=DETECTORS[analytics.detector],
                since_ms=start_ms,
                max_rows=20_000,
                alarms=service,
            )
            t1 = time.monotonic()
            last = t1
            while worker.poll_once():
                if time.monotonic() - last > 10:
                    log.info("scored %d samples, %d transitions", worker.stats.samples_read, service.transitions)
                    last = time.monotonic()
            scoring_s = time.monotonic() - t1
            log.info("scored %d samples in %.1f s; waiting for the channels", worker.stats.samples_read, scoring_s)
            drained = service.notifier.drain(600)
            transitions = store.transitions()
            latencies = sorted(store.delivery_latencies())
            counts = store.outbox_counts()
            time.sleep(1.0)  # the last MQTT messages to the watcher
            service.close(drain_s=1)
        watcher.disconnect()
        watcher.loop_stop()
        smtp.stop()
        hook_server.shutdown()
        tg_server.shutdown()

    keys = {t.key for t in transitions}
    receivers = {"webhook": webhook, "email": mail, "telegram": telegram, "mqtt": mqtt_rx}
    delivered = sum(len(keys & set(r.keys)) for r in receivers.values())
    influx_sent = counts.get("influx", {}).get("sent", 0)
    duplicated = sum(n - 1 for r in receivers.values() for n in r.keys.values() if n > 1)
    raised = [t for t in transitions if t.transition == "raised"]
    by_kind = Counter(t.kind for t in raised)
    print(f"{'kind':10} {'raised':>6}")
    for kind, n in sorted(by_kind.items()):
        print(f"{kind:10} {n:6d}")
    print(f"transitions by type: {dict(Counter(t.transition for t in transitions))}")
    print(f"outbox: {counts}")
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else 0.0
    return {
        "alarms_per_machine_week": round(len(raised) / (machines * weeks), 2),
        "notifications_expected": len(transitions) * (len(receivers) + 1),
        "delivered": delivered + influx_sent,
        "duplicated": duplicated,
        "p95_notify_s": round(p95, 2),
        "transitions": len(transitions),
        "emails_with_chart": sum(1 for n in mail.extra if n),
        "drained": drained,
        "scoring_s": round(scoring_s, 1),
    }
