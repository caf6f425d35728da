"""The worker's alarm side: verdicts in, transitions stored, then notified; commands in.

:class:`AlarmService` ties the :class:`~analytics.alarms.Lifecycle` to its
:class:`~analytics.alarmstore.AlarmStore` and the :class:`~analytics.notifier.Notifier`.
Every transition is committed to the store with one outbox entry per channel before any
channel sees it; the notifier delivers from there. On start the open alarms are read back,
so a restart neither forgets them nor notifies them again, and notifications still pending
go out.

Two channels are always there: ``influx`` writes every transition to the ``alarm``
measurement (history and annotations in Grafana; retried like any channel while InfluxDB is
away) and, when a broker is configured, ``mqtt`` publishes every transition on
``.../alarm`` and the machine's open alarms, retained, on ``.../alarm_state``. Webhook,
e-mail and Telegram are added when configured (``[alarms]`` in the configuration).

Operators act on alarms with commands (``birlik alarms ack|shelve|unshelve|clear``, or any
MQTT client on ``birlik/_alarms/command``): they are applied on the worker's next poll and
stored like every transition.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from analytics.alarms import Lifecycle, LifecycleSettings, Verdict
from analytics.alarmstore import AlarmStore
from analytics.mqttclient import paho_client
from analytics.notifier import Channel, Notifier
from analytics.quality import SensorIssue
from analytics.rul import Estimate
from birlik import schema
from birlik.alarm import (
    COMMAND_TOPIC,
    Alarm,
    Command,
    Priority,
    SignalContext,
    alarm_topic,
    decode_command,
    encode_state,
    state_topic,
)
from birlik.config import AlarmsConfig, MqttConfig
from birlik.influx import InfluxClient
from birlik.lineprotocol import encode_point
from birlik.payload import PayloadError
from birlik.signals import SIGNALS
from birlik.topics import MachinePath

log = logging.getLogger("analytics.alarms")

#: The Grafana dashboard a technician lands on (grafana/_machine.py; a test keeps them equal).
MACHINE_DASHBOARD_UID = "birlik-machine-detail"


def dashboard_link(grafana_url: str, path: MachinePath, ts_ms: int) -> str:
    """The machine's Grafana dashboard, from 6 hours before ``ts_ms`` to 1 hour after."""
    query = urlencode(
        {"var-site": path.site, "var-machine": path.machine, "from": ts_ms - 6 * 3600_000, "to": ts_ms + 3600_000}
    )
    return f"{grafana_url.rstrip('/')}/d/{MACHINE_DASHBOARD_UID}/machine-detail?{query}"


def priority_of(score: float, threshold: float) -> Priority:
    """Worse the further past the threshold: medium, high at twice, critical at four times."""
    r = score / threshold if threshold > 0 else 0.0
    return "critical" if r >= 4 else "high" if r >= 2 else "medium"


class _Trend:
    """A signal's recent past (one point a minute, the last two hours) for its rate per hour."""

    def __init__(self) -> None:
        self.points: deque[tuple[int, float]] = deque(maxlen=120)

    def add(self, ts_ms: int, value: float) -> None:
        if not self.points or ts_ms - self.points[-1][0] >= 60_000:
            self.points.append((ts_ms, value))

    def rate_per_h(self) -> float | None:
        if len(self.points) < 5 or self.points[-1][0] - self.points[0][0] < 900_000:
            return None
        t = [(ts - self.points[0][0]) / 3.6e6 for ts, _ in self.points]
        v = [value for _, value in self.points]
        n, st, sv = len(t), sum(t), sum(v)
        stt = sum(x * x for x in t)
        stv = sum(x * y for x, y in zip(t, v, strict=True))
        den = n * stt - st * st
        return (n * stv - st * sv) / den if den > 0 else None


def describe_signal(name: str, value: float, normal: float | None, rate: float | None) -> str:
    """``bearing_temp 71.0 degC, 18.0 K above normal (53.0 degC), rising 3.0 K/h``."""
    unit = SIGNALS[name].unit if name in SIGNALS else ""
    delta_unit = "K" if unit == "degC" else unit
    text = f"{name} {value:.3g} {unit}".rstrip()
    if normal is not None:
        diff = value - normal
        text += f", {abs(diff):.2g} {delta_unit} {'above' if diff >= 0 else 'below'} normal ({normal:.3g} {unit})"
    if rate is not None and abs(rate) > 1e-9:
        text += f", {'rising' if rate > 0 else 'falling'} {abs(rate):.2g} {delta_unit}/h"
    return text


class InfluxAlarmChannel:
    """Writes each transition as a point of the ``alarm`` measurement."""

    name = "influx"

    def __init__(self, influx: InfluxClient) -> None:
        self.influx = influx

    def send(self, alarm: Alarm) -> None:
        p = alarm.path
        tags = {
            "tenant": p.tenant,
            "site": p.site,
            "line": p.line,
            "machine": p.machine,
            "kind": alarm.kind,
            "priority": alarm.priority,
            "state": alarm.state,
            "transition": alarm.transition,
        }
        fields: dict[str, Any] = {
            "id": alarm.alarm_id,
            "seq": alarm.seq,
            "key": alarm.key,
            "title": alarm.title,
            "text": alarm.text,
            "user": alarm.user,
            "comment": alarm.comment,
        }
        self.influx.write([encode_point(schema.ALARM, tags, fields, alarm.ts_ms)])

    def close(self) -> None:
        pass


class MqttAlarmChannel:
    """Every transition on ``.../alarm`` (MQTT v5, QoS 1); the machine's open alarms, retained,
    on ``.../alarm_state``. Raises ConnectionError (retried) while the broker is away."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, client_id: str, open_alarms: Sequence[Alarm] = ()) -> None:
        self._client = paho_client(config, client_id)
        self._client.connect_async(config.host, config.port, keepalive=config.keepalive_s)
        self._client.loop_start()
        self._open: dict[MachinePath, dict[str, Alarm]] = {}
        for a in open_alarms:
            self._open.setdefault(a.path, {})[a.alarm_id] = a

    def send(self, alarm: Alarm) -> None:
        if not self._client.is_connected():
            raise ConnectionError("not connected to the broker")
        machine = self._open.setdefault(alarm.path, {})
        if alarm.open:
            machine[alarm.alarm_id] = alarm
        else:
            machine.pop(alarm.alarm_id, None)
        for topic, payload, retain in (
            (alarm_topic(alarm.path), alarm.encode(), False),
            (state_topic(alarm.path), encode_state(alarm.path, list(machine.values()), alarm.ts_ms), True),
        ):
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            info.wait_for_publish(10)
            if not info.is_published():
                raise ConnectionError(f"the broker did not acknowledge {topic} in 10 s")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class CommandListener:
    """Receives commands from ``birlik/_alarms/command`` (QoS 1) into a queue.

    A persistent session (MQTT v5, fixed client id, kept a day): commands sent while the
    worker restarts wait in the broker."""

    def __init__(self, config: MqttConfig, *, client_id: str) -> None:
        self.commands: queue.Queue[Command] = queue.Queue(maxsize=10_000)
        self.rejected = 0
        self._client = paho_client(config, client_id)
        self._client.on_connect = lambda c, u, f, r, p: c.subscribe(COMMAND_TOPIC, qos=1)
        self._client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 24 * 3600
        self._client.connect_async(
            config.host, config.port, keepalive=config.keepalive_s, clean_start=False, properties=props
        )
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self.commands.put_nowait(decode_command(bytes(message.payload)))
        except PayloadError as exc:
            self.rejected += 1
            log.warning("alarm command ignored: %s", exc)
        except queue.Full:
            log.warning("alarm command ignored: too many waiting")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


#: The verdict on every normal sample (never changed: only abnormal verdicts carry more).
_NORMAL = Verdict(False)


class AlarmService:
    def __init__(
        self,
        config: AlarmsConfig,
        store: AlarmStore,
        channels: Sequence[Channel],
        *,
        kinds: Mapping[MachinePath, str] | None = None,
        commands: CommandListener | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.kinds: dict[MachinePath, str] = dict(kinds or {})
        self.lifecycle = Lifecycle(
            LifecycleSettings(
                raise_after=config.raise_after,
                window=config.window,
                clear_after=config.clear_after,
                cooldown_s=config.cooldown_s,
                escalate_after_s=config.escalate_after_s,
            ),
            describe=self._describe,
        )
        restored = store.latest(closed_since_s=config.cooldown_s)
        self.lifecycle.restore(restored)
        self.notifier = Notifier(store, channels)
        self.commands = commands
        self._trends: defaultdict[tuple[MachinePath, str], _Trend] = defaultdict(_Trend)
        self._trended: dict[MachinePath, int] = {}
        self._arrival: dict[MachinePath, float] = {}
        self._last_ts: dict[MachinePath, int] = {}
        self.transitions = 0
        self._sensor_seen: dict[MachinePath, tuple[tuple[str, str], ...]] = {}
        self._sensor_given: dict[MachinePath, Sequence[SensorIssue]] = {}
        self._cursors, self._models = store.progress()
        open_now = [a for a in restored if a.open]
        if open_now:
            log.info("alarms: %d open alarm(s) read back from %s", len(open_now), store.path)
        self.notifier.start()

    def _describe(self, path: MachinePath) -> tuple[str, str, str]:
        return self.kinds.get(path, ""), self.config.team, ""

    def _commit(self, alarms: list[Alarm]) -> None:
        if not alarms:
            return
        alarms = [a if a.dashboard else _with_link(a, self.config.grafana_url) for a in alarms]
        self.store.commit(alarms, self.notifier.names)
        self.transitions += len(alarms)
        self.notifier.wake()

    # --- inputs from the worker ----------------------------------------------------------

    def sample(
        self,
        path: MachinePath,
        kind: str,
        ts_ms: int,
        values: Mapping[str, Any],
        *,
        scored: tuple[float, float, str, float | None] | None,
        estimate: Estimate | None = None,
        sensor_issues: Sequence[SensorIssue] | None = None,
    ) -> None:
        """One sample of a machine: its state, and (if it was scored) score, threshold,
        explaining signal and that signal's normal level (in the signal's own unit)."""
        self.kinds.setdefault(path, kind)
        self._arrival[path] = time.monotonic()
        self._last_ts[path] = max(ts_ms, self._last_ts.get(path, ts_ms))
        out: list[Alarm] = []
        state = values.get("state")
        if isinstance(state, str):
            out += self.lifecycle.machine_state(path, state, ts_ms)
        if ts_ms - self._trended.get(path, ts_ms - 60_000) >= 60_000:  # trends keep a point a minute
            self._trended[path] = ts_ms
            for name, value in values.items():
                if isinstance(value, float) and name in SIGNALS and math.isfinite(value):
                    self._trends[(path, name)].add(ts_ms, value)
        if sensor_issues is not None and sensor_issues is not self._sensor_given.get(path):
            # (The monitor hands the same object until an issue changes: nothing new to say.)
            self._sensor_given[path] = sensor_issues
            out += self._sensor(path, ts_ms, sensor_issues)
        if scored is not None:
            score, threshold, signal, normal = scored
            abnormal = score > threshold
            verdict = _NORMAL
            if abnormal:
                value = values.get(signal)
                context: tuple[SignalContext, ...] = ()
                text = f"{signal} abnormal"
                if isinstance(value, int | float):
                    trend = self._trends.get((path, signal))
                    rate = trend.rate_per_h() if trend else None
                    unit = SIGNALS[signal].unit if signal in SIGNALS else ""
                    context = (SignalContext(signal, float(value), unit, normal, rate),)
                    text = describe_signal(signal, float(value), normal, rate)
                verdict = Verdict(
                    True,
                    priority_of(score, threshold),
                    f"{path.machine}: {signal.replace('_', ' ')} abnormal",
                    text,
                    context,
                )
                if estimate is not None and ts_ms - estimate.ts_ms <= 3600_000:
                    verdict.health = round(estimate.health, 3)
                    if estimate.rul_h is not None:
                        verdict.ttf_h = round(estimate.rul_h, 1)
                        verdict.ttf_low_h = round(estimate.rul_low_h or 0.0, 1)
                        verdict.ttf_high_h = round(estimate.rul_high_h or 0.0, 1)
            out += self.lifecycle.observe(path, "condition", ts_ms, verdict)
        self._commit(out)

    def _sensor(self, path: MachinePath, ts_ms: int, issues: Sequence[SensorIssue]) -> list[Alarm]:
        """One sensor alarm per machine while any of its sensors has an open issue."""
        signature = tuple(sorted((i.signal, i.kind) for i in issues))
        if self._sensor_seen.get(path, ()) == signature:
            return []
        self._sensor_seen[path] = signature
        if not issues:
            return self.lifecycle.set_active(path, "sensor", ts_ms, None)
        signals = sorted({i.signal for i in issues})
        verdict = Verdict(
            True,
            "low",
            f"{path.machine}: sensor fault ({', '.join(signals)})",
            "; ".join(i.detail for i in issues)[:2000] + ". The machine itself may be fine: check the sensor.",
        )
        out = self.lifecycle.set_active(path, "sensor", ts_ms, verdict)
        if not self.lifecycle.is_active(path, "sensor"):
            self._sensor_seen.pop(path, None)  # not raised (a planned stop): try again on the next sample
            self._sensor_given.pop(path, None)
        return out

    def tick(self) -> None:
        """Once per poll: commands, stale machines, shelves and escalations."""
        out: list[Alarm] = []
        if self.commands is not None:
            while True:
                try:
                    cmd = self.commands.commands.get_nowait()
                except queue.Empty:
                    break
                ts = max(self._last_ts.values(), default=int(time.time() * 1000))
                done, said = self.lifecycle.command(cmd, ts)
                log.info("alarm command: %s", said)
                out += done
        now = time.monotonic()
        for path, arrived in self._arrival.items():
            silent = now - arrived
            ts = self._last_ts[path]
            out += self.lifecycle.stale(path, ts, silent_s=silent if silent > self.config.stale_after_s else None)
        out += self.lifecycle.tick(max(self._last_ts.values(), default=int(time.time() * 1000)))
        self._commit(out)

    def cursor(self, path: MachinePath) -> int | None:
        """Device time of the last sample of ``path`` scored before a restart, if any."""
        value = self._cursors.get(str(path))
        return int(value) if isinstance(value, int) else None

    def save_cursors(self, cursors: Mapping[MachinePath, int], models: Mapping[MachinePath, Any] | None = None) -> None:
        """Remember how far each machine was scored (after its scores and transitions are
        stored) and, when given, what its detector learned up to there."""
        learned = {str(p): m for p, m in (models or {}).items() if p in cursors}  # each with its cursor
        moved = {key: ts for p, ts in cursors.items() if self._cursors.get(key := str(p)) != ts or key in learned}
        self.store.save_progress(moved, learned)
        self._cursors.update(moved)
        self._models.update(learned)

    def model(self, path: MachinePath) -> Any:
        """The detector state saved for ``path`` with its cursor, if any."""
        return self._models.get(str(path))

    def save_quality(self, path: MachinePath, state: bytes) -> None:
        """What the machine's data-quality checks learned (:meth:`DataQualityMonitor.dumps`)."""
        self.store.set_blob(f"quality/{path}", state)

    def quality(self, path: MachinePath) -> bytes | None:
        return self.store.get_blob(f"quality/{path}")

    def close(self, drain_s: float = 5.0) -> None:
        self.notifier.drain(drain_s)
        self.notifier.stop()
        if self.commands is not None:
            self.commands.close()


def _with_link(alarm: Alarm, grafana_url: str) -> Alarm:
    import dataclasses

    if not grafana_url:
        return alarm
    return dataclasses.replace(alarm, dashboard=dashboard_link(grafana_url, alarm.path, alarm.ts_ms))


def chart_source(influx: InfluxClient) -> Callable[[Alarm, float], dict[str, list[tuple[int, float]]]]:
    """Each contributing signal of an alarm over the ``hours`` before it, from InfluxDB."""
    from birlik.influx import quote_ident, quote_string

    def series(alarm: Alarm, hours: float) -> dict[str, list[tuple[int, float]]]:
        p = alarm.path
        out: dict[str, list[tuple[int, float]]] = {}
        for signal in alarm.signals:
            if signal.name not in SIGNALS:
                continue
            query = (
                f"SELECT {quote_ident(signal.name)} FROM {quote_ident(schema.TELEMETRY)} WHERE "
                f"tenant = {quote_string(p.tenant)} AND site = {quote_string(p.site)} AND "
                f"line = {quote_string(p.line)} AND machine = {quote_string(p.machine)} AND "
                f"time > {alarm.ts_ms - int(hours * 3.6e6)}ms AND time <= {alarm.ts_ms}ms"
            )
            points = [
                (int(row[0]), float(row[1]))
                for s in influx.query(query)
                for row in s.values
                if isinstance(row[1], int | float)
            ]
            out[signal.name] = points
        return out

    return series


def configured_channels(config: AlarmsConfig, influx: InfluxClient) -> list[Channel]:
    """Webhook, e-mail (with a chart from ``influx``) and Telegram, each where configured."""
    from analytics.channels import EmailChannel, TelegramChannel, WebhookChannel

    channels: list[Channel] = []
    if config.webhook_url:
        channels.append(WebhookChannel(config.webhook_url))
    if config.smtp_host:
        channels.append(
            EmailChannel(
                config.smtp_host,
                config.smtp_port,
                sender=config.email_from,
                recipients=[r.strip() for r in config.email_to.split(",") if r.strip()],
                username=config.smtp_username,
                password=config.smtp_password,
                security=config.smtp_security,  # type: ignore[arg-type]  # checked by the configuration
                chart=chart_source(influx),
                chart_hours=config.chart_hours,
            )
        )
    if config.telegram_token:
        channels.append(
            TelegramChannel(config.telegram_token, config.telegram_chat_id, base_url=config.telegram_base_url)
        )
    return channels
