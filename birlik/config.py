"""Configuration: defaults, then a TOML file, then environment variables, then flags.

The file (``--config FILE`` or ``BIRLIK_CONFIG``) has one table per section::

    [mqtt]
    url = "mqtt://broker.example:1883"
    [influx]
    url = "http://influxdb:8086"
    database = "birlik"
    [ingest]
    batch_size = 5000

Every key can also be set as ``BIRLIK_<SECTION>_<KEY>`` (``BIRLIK_INFLUX_TOKEN=...``).
``birlik config`` prints the settings in force and where each came from. A wrong key,
type or value is reported with its source, never as a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from birlik.influx import InfluxSettings


class ConfigError(ValueError):
    """The configuration is not valid; the message says where and why."""


@dataclass
class MqttConfig:
    #: ``mqtt://host:1883``, or ``mqtts://host:8883`` for TLS.
    url: str = "mqtt://127.0.0.1:1883"
    username: str = ""
    password: str = ""
    keepalive_s: int = 30
    #: TLS (``mqtts://``): the CA certificate(s) that sign the broker's certificate, PEM; empty:
    #: the system's trusted CAs. The broker's certificate must match the URL's host name.
    ca_file: str = ""
    #: TLS client certificate and its key (PEM), for brokers that require one; optional.
    cert_file: str = ""
    key_file: str = ""

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``mqtts://`` (server verified, host name checked), else None."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file or None)
        return context


@dataclass
class InfluxConfig:
    url: str = "http://127.0.0.1:8086"
    database: str = "birlik"
    username: str = ""
    password: str = ""
    token: str = ""
    timeout_s: float = 10.0

    def settings(self) -> InfluxSettings:
        return InfluxSettings(
            url=self.url,
            database=self.database,
            username=self.username or None,
            password=self.password or None,
            token=self.token or None,
            timeout_s=self.timeout_s,
        )


@dataclass
class IngestConfig:
    #: Readings are written to InfluxDB in batches of at most about this many points...
    batch_size: int = 5000
    #: ...or after this long, whichever comes first.
    flush_interval_s: float = 0.25
    #: The most unacknowledged messages the broker may send (MQTT v5 Receive Maximum, at most
    #: 65535): the process holds at most this many, the rest waits in the broker. A window of W
    #: messages and a write latency of L seconds allow about W / L messages per second.
    window: int = 20000
    #: Where rejected messages and readings are kept (JSON lines), with the reason.
    dead_letters: str = "dead-letters.jsonl"
    #: Dead-letter files are rotated at this size; this many rotated files are kept.
    dead_letters_max_mb: int = 100
    dead_letters_keep: int = 5
    #: Plant description; when set, messages from machines not in it are rejected.
    plant: str = ""
    max_payload_bytes: int = 256 * 1024
    #: The MQTT client id, which names the persistent session: fixed, and unique per process.
    client_id: str = "birlik-ingest"
    #: Several ingest processes with the same group share the messages (MQTT v5 $share).
    share_group: str = ""
    #: How long the broker keeps the session (and queues messages) while the ingest is away.
    session_expiry_s: int = 7 * 24 * 3600
    #: On SIGTERM, how long to go on writing what was received before leaving the rest
    #: unacknowledged in the broker (keep it below the container's stop grace period).
    stop_timeout_s: float = 20.0
    #: The broker's max_queued_messages, as configured there (docker/mosquitto/mosquitto.conf):
    #: the ingest warns at start when it would drop messages during a short outage. 0: unlimited.
    #: (Mosquitto's max_inflight_messages does not cap an MQTT v5 client's Receive Maximum.)
    broker_max_queued_messages: int = 1_000_000
    #: ``host:port`` to serve Prometheus metrics on (``/metrics``), e.g. ``0.0.0.0:9108``; empty: off.
    metrics_listen: str = ""
    #: Every this many seconds the ingest writes its own counters to InfluxDB (measurement
    #: ``ingest``) for the platform-health dashboard; 0: off.
    health_interval_s: float = 10.0
    stats_file: str = ""


@dataclass
class AnalyticsConfig:
    poll_interval_s: float = 2.0
    #: Where to start reading on the first poll, seconds before now.
    lookback_s: float = 600.0
    detector: str = "zscore"
    #: Samples used to learn each machine's normal behaviour before scoring.
    warmup_samples: int = 60
    #: After a machine starts running again, device-time seconds before its samples are
    #: learned from: temperatures need two or three thermal time constants to settle.
    settle_s: float = 3600.0
    threshold: float = 6.0
    #: Consecutive anomalous samples that raise an alert, and normal ones that clear it.
    raise_after: int = 5
    clear_after: int = 20
    client_id: str = "birlik-analytics"
    #: Live from the broker: several analytics processes with the same group share the
    #: machines' messages (MQTT v5 $share); empty: this process reads them all.
    share_group: str = ""
    #: Data-quality checks of every sensor (stuck, dropout, out of range, spikes, drift, offset,
    #: scaling): sensor alarms, and a faulty sensor kept out of the machine model.
    data_quality: bool = True
    #: Refit each machine's model every this many hours of device time from the normal
    #: samples of that period, unless they sit further from the first model learned
    #: than ``refit_max_drift`` (in units of the threshold); 0: never refit.
    refit_every_h: float = 0.0
    refit_max_drift: float = 0.33
    stats_file: str = ""


@dataclass
class AlarmsConfig:
    #: The alarm store (SQLite): open alarms, every transition, the outbox of notifications.
    store: str = "alarms.sqlite"
    #: Abnormal verdicts among the last ``window`` that raise an alarm (hysteresis).
    raise_after: int = 5
    window: int = 10
    #: Normal verdicts in a row that return an active alarm to normal.
    clear_after: int = 20
    #: An alarm that returns and comes back within this many seconds is the same alarm.
    cooldown_s: float = 600.0
    #: An active alarm nobody acknowledged for this many seconds escalates (notified again).
    escalate_after_s: float = 1800.0
    #: A machine silent this many seconds (no new readings) raises a ``stale`` alarm.
    stale_after_s: float = 300.0
    #: The maintenance team the alarms go to (in every notification).
    team: str = "maintenance"
    #: Grafana's address, for the dashboard link in every notification; empty: no link.
    grafana_url: str = "http://localhost:3000"
    #: Webhook: POST every transition as JSON here; empty: off.
    webhook_url: str = ""
    #: E-mail (SMTP): server, ``starttls`` | ``tls`` | ``none``, account, sender, recipients
    #: (comma-separated); empty host: off.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    email_from: str = "birlik@localhost"
    email_to: str = ""
    #: Hours of the contributing signals drawn in the e-mail's chart.
    chart_hours: float = 6.0
    #: Telegram Bot API: token and chat; empty token: off. The base URL for a local API server.
    telegram_token: str = ""
    telegram_chat_id: str = ""
    telegram_base_url: str = "https://api.telegram.org"


@dataclass
class GatewayConfig:
    #: Keep the disk log here (``<dir>/<gateway id>.sqlite``) across restarts; empty: a
    #: temporary log, removed at stop (nothing survives a crash).
    state_dir: str = ""
    #: Disk log size limit, MB; when full the oldest messages are dropped (counted and logged).
    buffer_max_mb: float = 1024.0
    #: Keep messages this long, acknowledged or not, so they can be sent again on repair requests.
    retention: str = "24h"
    #: Messages per second sent again from the log (backlog after an outage, repair requests).
    drain_rate: float = 1000.0
    #: SQLite synchronous mode of the disk log: ``normal`` survives a crash of the gateway,
    #: ``full`` also fsyncs every commit (power loss, at a cost in speed).
    sync: str = "normal"
    #: MQTT protocol version: ``5``, ``3.1.1``, or ``auto`` (5, and 3.1.1 when a broker refuses 5).
    protocol: str = "auto"
    #: Every this many seconds the gateway publishes its health (``birlik/_gateway/<id>/health``),
    #: which the ingest writes to InfluxDB (measurement ``gateway``); 0: off.
    health_interval_s: float = 10.0
    #: At stop, how long to go on sending the backlog while the broker is there.
    stop_timeout_s: float = 30.0


@dataclass
class RepairConfig:
    #: Seconds between looks at the sequence records.
    interval_s: float = 10.0
    #: Ask only for holes below sequence numbers stored this long ago (later ones may be in flight).
    settle_s: float = 30.0
    #: Ask a gateway boot again after this long without the hole closing.
    retry_s: float = 60.0
    #: Hours of sequence records read at the start.
    lookback_h: float = 24.0
    #: Give a hole up after this many requests (the gateway no longer has it, or it is gone).
    max_attempts: int = 5
    client_id: str = "birlik-repair"


@dataclass
class Config:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    analytics: AnalyticsConfig = field(default_factory=AnalyticsConfig)
    alarms: AlarmsConfig = field(default_factory=AlarmsConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    repair: RepairConfig = field(default_factory=RepairConfig)
    #: Where each value came from: "section.key" -> "default" | file | env var.
    sources: dict[str, str] = field(default_factory=dict, repr=False)


SECTIONS = ("mqtt", "influx", "ingest", "analytics", "alarms", "gateway", "repair")


def _coerce(value: Any, typ: type, where: str) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be {typ.__name__}, got {value!r}")


def load_config(path: str | Path | None = None, *, env: Mapping[str, str] | None = None) -> Config:
    """Defaults, overlaid by the TOML file at ``path`` (or ``$BIRLIK_CONFIG``), then the environment."""
    env = os.environ if env is None else env
    config = Config()
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(config, section)):
            config.sources[f"{section}.{f.name}"] = "default"
    path = path or env.get("BIRLIK_CONFIG") or None
    if path:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for section, values in data.items():
            if section not in SECTIONS:
                raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {section} must be a table [{section}]")
            for key, value in values.items():
                _set(config, section, key, value, f"{path} [{section}] {key}", str(path))
    for section in SECTIONS:
        prefix = f"BIRLIK_{section.upper()}_"
        for name, value in env.items():
            if name.startswith(prefix):
                _set(config, section, name[len(prefix) :].lower(), value, f"environment variable {name}", name)
    _validate(config)
    return config


def override(config: Config, section: str, values: Mapping[str, Any], source: str = "command line") -> None:
    """Command-line flags over the settings of ``section``: each value that is not None wins,
    and the whole configuration is checked again (raises :class:`ConfigError`)."""
    for key, value in values.items():
        if value is not None:
            _set(config, section, key, value, f"{source} ({section}.{key})", source)
    _validate(config)


def _set(config: Config, section: str, key: str, value: Any, where: str, source: str) -> None:
    target = getattr(config, section)
    hints = get_type_hints(type(target))
    if key not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(target))
        raise ConfigError(f"{where}: unknown setting (known in [{section}]: {known})")
    setattr(target, key, _coerce(value, hints[key], where))
    config.sources[f"{section}.{key}"] = source


def _validate(config: Config) -> None:
    mqtt = urlsplit(config.mqtt.url)
    try:
        mqtt_port = mqtt.port
    except ValueError:
        mqtt_port = -1
    if mqtt.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not mqtt.hostname or mqtt_port == -1:
        raise ConfigError(
            f"mqtt.url {config.mqtt.url!r} must look like mqtt://host:1883 or mqtts://host:8883 "
            f"(from {config.sources['mqtt.url']})"
        )
    for key in ("ca_file", "cert_file", "key_file"):
        path = getattr(config.mqtt, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"mqtt.{key} {path!r} is not a readable file (from {config.sources['mqtt.' + key]})")
    if config.mqtt.key_file and not config.mqtt.cert_file:
        raise ConfigError(f"mqtt.key_file is set without mqtt.cert_file (from {config.sources['mqtt.key_file']})")
    if config.mqtt.tls:
        try:
            config.mqtt.ssl_context()
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"mqtt TLS files cannot be used: {exc}") from None
    if not 0 < config.mqtt.keepalive_s <= 65535:
        raise ConfigError(
            f"mqtt.keepalive_s must be 1 to 65535, got {config.mqtt.keepalive_s} "
            f"(from {config.sources['mqtt.keepalive_s']})"
        )
    influx = urlsplit(config.influx.url)
    if influx.scheme not in ("http", "https") or not influx.hostname:
        raise ConfigError(
            f"influx.url {config.influx.url!r} must look like http://host:8086 (from {config.sources['influx.url']})"
        )
    positive = {
        "ingest.batch_size": config.ingest.batch_size,
        "ingest.flush_interval_s": config.ingest.flush_interval_s,
        "ingest.max_payload_bytes": config.ingest.max_payload_bytes,
        "ingest.window": config.ingest.window,
        "ingest.stop_timeout_s": config.ingest.stop_timeout_s,
        "ingest.session_expiry_s": config.ingest.session_expiry_s,
        "ingest.dead_letters_max_mb": config.ingest.dead_letters_max_mb,
        "ingest.dead_letters_keep": config.ingest.dead_letters_keep,
        "analytics.poll_interval_s": config.analytics.poll_interval_s,
        "analytics.warmup_samples": config.analytics.warmup_samples,
        "analytics.threshold": config.analytics.threshold,
        "analytics.raise_after": config.analytics.raise_after,
        "analytics.clear_after": config.analytics.clear_after,
        "analytics.refit_max_drift": config.analytics.refit_max_drift,
        "alarms.raise_after": config.alarms.raise_after,
        "alarms.window": config.alarms.window,
        "alarms.clear_after": config.alarms.clear_after,
        "alarms.cooldown_s": config.alarms.cooldown_s,
        "alarms.escalate_after_s": config.alarms.escalate_after_s,
        "alarms.stale_after_s": config.alarms.stale_after_s,
        "alarms.smtp_port": config.alarms.smtp_port,
        "alarms.chart_hours": config.alarms.chart_hours,
        "gateway.buffer_max_mb": config.gateway.buffer_max_mb,
        "gateway.drain_rate": config.gateway.drain_rate,
        "gateway.stop_timeout_s": config.gateway.stop_timeout_s,
        "repair.interval_s": config.repair.interval_s,
        "repair.retry_s": config.repair.retry_s,
        "repair.lookback_h": config.repair.lookback_h,
        "repair.max_attempts": config.repair.max_attempts,
    }
    for key, value in positive.items():
        if not 0 < value < float("inf"):  # also refuses NaN
            raise ConfigError(f"{key} must be positive and finite, got {value} (from {config.sources[key]})")
    if config.ingest.window > 65535:
        raise ConfigError(
            f"ingest.window must be at most 65535 (the MQTT Receive Maximum), got {config.ingest.window} "
            f"(from {config.sources['ingest.window']})"
        )
    for key in (
        "ingest.health_interval_s",
        "ingest.broker_max_queued_messages",
        "gateway.health_interval_s",
        "repair.settle_s",
        "analytics.settle_s",
        "analytics.refit_every_h",
    ):
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if not 0 <= value < float("inf"):
            raise ConfigError(f"{key} must be 0 or more, and finite, got {value} (from {config.sources[key]})")
    listen = config.ingest.metrics_listen
    if listen:
        port = listen.rpartition(":")[2]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"ingest.metrics_listen {listen!r} must look like 127.0.0.1:9108 or :9108 "
                f"(from {config.sources['ingest.metrics_listen']})"
            )
    _validate_gateway(config)
    _validate_alarms(config)
    for key in (
        "ingest.client_id",
        "ingest.share_group",
        "repair.client_id",
        "analytics.client_id",
        "analytics.share_group",
    ):
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if any(c in value for c in "/+#") or len(value) > 128 or (name == "client_id" and not value):
            raise ConfigError(
                f"{key} {value!r} must be a non-empty name without '/', '+' or '#' (from {config.sources[key]})"
            )


def _validate_alarms(config: Config) -> None:
    a = config.alarms
    if a.raise_after > a.window:
        raise ConfigError(
            f"alarms.raise_after ({a.raise_after}) must be at most alarms.window ({a.window}) "
            f"(from {config.sources['alarms.raise_after']})"
        )
    if a.smtp_security not in ("starttls", "tls", "none"):
        raise ConfigError(
            f"alarms.smtp_security must be starttls, tls or none, got {a.smtp_security!r} "
            f"(from {config.sources['alarms.smtp_security']})"
        )
    if a.smtp_host and not a.email_to.strip():
        raise ConfigError(
            f"alarms.smtp_host is set but alarms.email_to is empty (from {config.sources['alarms.smtp_host']})"
        )
    if a.telegram_token and not a.telegram_chat_id:
        raise ConfigError("alarms.telegram_token is set but alarms.telegram_chat_id is empty")
    for key in ("webhook_url", "grafana_url", "telegram_base_url"):
        url = getattr(a, key)
        if url and urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(
                f"alarms.{key} {url!r} must be an http:// or https:// URL (from {config.sources['alarms.' + key]})"
            )


#: ``gateway.protocol`` values.
MQTT_PROTOCOLS = ("auto", "5", "3.1.1")


def _validate_gateway(config: Config) -> None:
    from birlik.plant import PlantError, parse_duration

    gw = config.gateway
    try:
        parse_duration(gw.retention, "gateway.retention")
    except PlantError as exc:
        raise ConfigError(f"{exc} (from {config.sources['gateway.retention']})") from None
    if gw.sync not in ("normal", "full"):
        raise ConfigError(
            f"gateway.sync must be 'normal' or 'full', got {gw.sync!r} (from {config.sources['gateway.sync']})"
        )
    if gw.protocol not in MQTT_PROTOCOLS:
        raise ConfigError(
            f"gateway.protocol must be one of {', '.join(repr(p) for p in MQTT_PROTOCOLS)}, got {gw.protocol!r} "
            f"(from {config.sources['gateway.protocol']})"
        )


def describe(config: Config) -> str:
    """The settings in force, secrets hidden, with where each came from."""
    lines = []
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for f in dataclasses.fields(getattr(config, section)):
            value = getattr(getattr(config, section), f.name)
            secret = f.name in ("password", "token", "smtp_password", "telegram_token")
            shown = "***" if secret and value else repr(value)
            lines.append(f"{f.name} = {shown}    # {config.sources[f'{section}.{f.name}']}")
    return "\n".join(lines)
