"""From anomalous samples to alerts, and the channels alerts are sent through.

An alert is raised after ``raise_after`` consecutive anomalous samples of one machine (one
odd sample is not worth a maintenance technician's walk) and cleared after ``clear_after``
consecutive normal ones. Channels deliver raised and cleared alerts; MQTT is the first,
webhook, e-mail and Telegram follow the same protocol.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from birlik.config import MqttConfig
from birlik.payload import Alert, Severity
from birlik.topics import MachinePath

log = logging.getLogger("analytics.alerts")


class AlertChannel(Protocol):
    name: str

    def send(self, alert: Alert) -> None:
        """Deliver one alert transition (raised or cleared)."""
        ...

    def close(self) -> None: ...


class LogChannel:
    """Writes alerts to the worker's log."""

    name = "log"

    def send(self, alert: Alert) -> None:
        log.warning(
            "ALERT %s %s %s: %s (score %.1f, threshold %.1f)",
            alert.state.upper(),
            alert.severity,
            alert.path,
            alert.message,
            alert.score,
            alert.threshold,
        )

    def close(self) -> None:
        pass


class MqttChannel:
    """Publishes alerts to ``birlik/<tenant>/<site>/<line>/<machine>/alert``, QoS 1."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, client_id: str) -> None:
        self.config = config
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        if config.username:
            self._client.username_pw_set(config.username, config.password or None)
        context = config.ssl_context()
        if context is not None:
            self._client.tls_set_context(context)
        self._client.connect(config.host, config.port, keepalive=config.keepalive_s)
        self._client.loop_start()

    def send(self, alert: Alert) -> None:
        self._client.publish(alert.path.topic("alert"), alert.encode(), qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class _MachineAlertState:
    anomalous_run: int = 0
    normal_run: int = 0
    active: Alert | None = None


class AlertTracker:
    """Turns per-sample verdicts into alert transitions, per machine."""

    def __init__(self, *, raise_after: int, clear_after: int, threshold: float, detector: str) -> None:
        self.raise_after = raise_after
        self.clear_after = clear_after
        self.threshold = threshold
        self.detector = detector
        self._machines: defaultdict[MachinePath, _MachineAlertState] = defaultdict(_MachineAlertState)

    def active(self) -> list[Alert]:
        return [s.active for s in self._machines.values() if s.active is not None]

    def update(self, path: MachinePath, ts_ms: int, score: float, signal: str) -> Alert | None:
        """Feed one scored sample; returns an alert when one is raised or cleared."""
        st = self._machines[path]
        if score > self.threshold:
            st.anomalous_run += 1
            st.normal_run = 0
            if st.active is None and st.anomalous_run >= self.raise_after:
                severity: Severity = "critical" if score >= 2 * self.threshold else "warning"
                st.active = Alert(
                    path=path,
                    alert_id=f"{path.machine}-{ts_ms}",
                    state="raised",
                    severity=severity,
                    detector=self.detector,
                    signal=signal,
                    score=score,
                    threshold=self.threshold,
                    ts_ms=ts_ms,
                    message=f"{path.machine}: {signal} abnormal for {st.anomalous_run} samples",
                )
                return st.active
        else:
            st.normal_run += 1
            st.anomalous_run = 0
            if st.active is not None and st.normal_run >= self.clear_after:
                raised = st.active
                st.active = None
                return Alert(
                    path=path,
                    alert_id=raised.alert_id,
                    state="cleared",
                    severity=raised.severity,
                    detector=self.detector,
                    signal=raised.signal,
                    score=score,
                    threshold=self.threshold,
                    ts_ms=ts_ms,
                    message=f"{path.machine}: back to normal",
                )
        return None
