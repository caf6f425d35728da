"""The broker's settings: the shipped docker/mosquitto/mosquitto.conf has the limits the platform
needs, the local broker of the tests and the demo (ops/servers.py) is written from it, and a
broker killed with SIGKILL keeps the ingest's persistent session and its queued messages."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from birlik.config import load_config
from ops.servers import (
    MOSQUITTO_LOCAL_OPTIONS,
    MOSQUITTO_SETTINGS,
    SHIPPED_MOSQUITTO_CONF,
    Mosquitto,
    Supervisor,
    mosquitto_config,
    mosquitto_settings,
    parse_mosquitto_conf,
)

REPO = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def _options(settings: list[tuple[str, str]]) -> dict[str, str]:
    """Single-valued options as a dict (each must appear once); log_type may repeat."""
    options: dict[str, str] = {}
    for option, value in settings:
        if option == "log_type":
            continue
        assert option not in options, f"{option} is set twice"
        options[option] = value
    return options


def _duration_s(value: str) -> int:
    units = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}
    return int(value[:-1]) * units[value[-1]]


@pytest.fixture(scope="module")
def shipped() -> list[tuple[str, str]]:
    return parse_mosquitto_conf((REPO / "docker" / "mosquitto" / "mosquitto.conf").read_text())


def test_the_supervisor_reads_the_file_of_this_repository() -> None:
    assert SHIPPED_MOSQUITTO_CONF == REPO / "docker" / "mosquitto" / "mosquitto.conf"
    settings, source = mosquitto_settings()
    assert ("persistence", "true") in settings
    assert source == str(SHIPPED_MOSQUITTO_CONF)


def test_shipped_file_has_the_limits_the_platform_needs(shipped: list[tuple[str, str]]) -> None:
    o = _options(shipped)
    # Persistent sessions and their queues survive a restart, and a SIGKILL loses ~10-11 s.
    assert o["persistence"] == "true"
    assert o["persistence_location"] == "/mosquitto/data/"  # the compose volume
    assert o["autosave_interval"] == "10"
    assert o.get("autosave_on_changes", "false") == "false"  # seconds, not a count of changes
    # An ingest away for hours loses nothing; memory stays bounded.
    assert int(o["max_queued_messages"]) >= 1_000_000
    assert 0 < int(o["max_queued_bytes"]) <= 4 * 1024 * MiB
    assert int(o["max_queued_bytes"]) >= 1024 * MiB
    # The ingest acknowledges after writing: its whole window may be in flight.
    inflight = int(o["max_inflight_messages"])
    window = getattr(load_config(env={}).ingest, "window", 5000)  # the ingest's MQTT v5 Receive Maximum
    assert inflight == 0 or window <= inflight <= 65534, (inflight, window)
    # Oversized telemetry reaches the ingest, to be dead-lettered with a reason.
    size_limit, packet_limit = int(o["message_size_limit"]), int(o["max_packet_size"])
    assert size_limit >= 20 * MiB and size_limit > load_config(env={}).ingest.max_payload_bytes
    assert packet_limit >= size_limit + 1024, "a packet is its payload plus topic, properties and header"
    assert int(o["max_queued_bytes"]) >= 10 * size_limit
    # Abandoned sessions go away, but not within any outage the queue can cover.
    assert _duration_s(o["persistent_client_expiration"]) >= 7 * 86400
    assert o["allow_anonymous"] == "true"
    assert o["listener"] == "1883 0.0.0.0"


def test_built_in_settings_equal_the_file(shipped: list[tuple[str, str]]) -> None:
    """ops/servers.py falls back to MOSQUITTO_SETTINGS when the file is absent (an installed
    package): they must say the same, in the same order."""
    assert list(MOSQUITTO_SETTINGS) == [(k, v) for k, v in shipped if k not in MOSQUITTO_LOCAL_OPTIONS]


@pytest.mark.parametrize("from_file", [True, False], ids=["from the file", "built in"])
def test_local_broker_config_keeps_every_shipped_setting(
    shipped: list[tuple[str, str]], tmp_path: Path, from_file: bool
) -> None:
    conf = None if from_file else tmp_path / "absent.conf"
    text = mosquitto_config(18830, tmp_path / "mosquitto", conf=conf)
    local = parse_mosquitto_conf(text)
    kept = [(k, v) for k, v in local if k not in MOSQUITTO_LOCAL_OPTIONS]
    assert kept == [(k, v) for k, v in shipped if k not in MOSQUITTO_LOCAL_OPTIONS]
    o = _options(local)
    assert o["listener"] == "18830 127.0.0.1"
    assert o["persistence_location"] == f"{tmp_path / 'mosquitto'}/"
    assert o["log_dest"] == "stdout"
    assert not [(k, v) for k, v in local if v.startswith("/mosquitto/")], "a path of the container is left"
    if not from_file:
        assert "built into ops/servers.py" in text


def test_the_local_broker_runs_with_the_shipped_limits(mosquitto: Mosquitto) -> None:
    """The session's broker (conftest) was started from the generated file: its CONNACK
    announces the shipped max_inflight_messages and max_packet_size."""
    o = _options(parse_mosquitto_conf(SHIPPED_MOSQUITTO_CONF.read_text()))
    connack: dict[str, Any] = {}
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"limits-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        connack.update(reason=reason, properties=properties)
        done.set()

    client.on_connect = on_connect
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert done.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert not connack["reason"].is_failure
    assert connack["properties"].ReceiveMaximum == int(o["max_inflight_messages"])
    assert connack["properties"].MaximumPacketSize == int(o["max_packet_size"])


def test_an_oversized_blob_still_reaches_the_subscriber(mosquitto: Mosquitto) -> None:
    """20 MiB is far above what the ingest accepts (it dead-letters it as oversized), but the
    broker must deliver it for the ingest to say so."""
    topic = f"test/oversized/{uuid.uuid4().hex[:8]}"  # not under birlik/: no session queues it
    received: list[int] = []
    subscribed, arrived = threading.Event(), threading.Event()
    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"big-sub-{topic[-8:]}", protocol=mqtt.MQTTv5)
    subscriber.on_subscribe = lambda *args: subscribed.set()

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        received.append(len(message.payload))
        arrived.set()

    subscriber.on_message = on_message
    subscriber.connect(mosquitto.host, mosquitto.port)
    subscriber.loop_start()
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"big-pub-{topic[-8:]}", protocol=mqtt.MQTTv311)
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    try:
        subscriber.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        info = publisher.publish(topic, b"\xff" * (20 * MiB), qos=1)
        info.wait_for_publish(30)
        assert info.is_published()
        assert arrived.wait(30), "the 20 MiB message was not delivered"
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        subscriber.disconnect()
        subscriber.loop_stop()
    assert received == [20 * MiB]


# --- a broker killed with SIGKILL --------------------------------------------------------


class _Subscriber:
    """An MQTT v5 client with a persistent session that records what it receives."""

    def __init__(self, client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.session_present: bool | None = None
        self.received: list[bytes] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = lambda c, u, message: self.received.append(message.payload)

    def _on_connect(self, c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connected.set()

    def connect(self, broker: Mosquitto) -> None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600
        properties.ReceiveMaximum = 5000
        self.connected.clear()
        self.client.connect(broker.host, broker.port, clean_start=False, properties=properties)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def disconnect(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def supervisor_of_own(tmp_path: Path) -> Iterator[Supervisor]:
    """Servers of this test only: it kills its broker."""
    with Supervisor(tmp_path / "servers") as sup:
        yield sup


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigkilled_broker_keeps_the_session_and_its_queue(supervisor_of_own: Supervisor) -> None:
    sup = supervisor_of_own
    broker = sup.start_mosquitto()
    topic = "birlik/t/site/line/machine/telemetry"
    subscriber = _Subscriber(f"ingest-{uuid.uuid4().hex[:8]}")
    subscriber.connect(broker)
    assert subscriber.session_present is False
    subscriber.client.subscribe(topic, qos=1)
    assert subscriber.subscribed.wait(10)
    subscriber.disconnect()  # the session stays, with its subscription: messages are queued

    count = 5000
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gateway-sigkill", protocol=mqtt.MQTTv5)
    publisher.max_inflight_messages_set(500)
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        infos = [publisher.publish(topic, f"reading {i}".encode(), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(20)
            assert info.is_published()
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    all_acknowledged = time.time()

    # Wait for a save that started after the last PUBACK (autosave_interval 10: every 10-11 s;
    # a save of this database takes milliseconds).
    database = sup.state_dir / "mosquitto" / "mosquitto.db"
    deadline = time.monotonic() + 30
    while not (database.exists() and database.stat().st_mtime > all_acknowledged + 1.0):
        assert time.monotonic() < deadline, "Mosquitto did not save its database within 30 s"
        time.sleep(0.1)

    broker.child.process.send_signal(signal.SIGKILL)
    assert broker.child.process.wait(10) == -signal.SIGKILL
    sup.stop(broker.child)  # already dead: just forgotten

    restarted = sup.start_mosquitto(port=broker.port)  # same port, same state dir
    subscriber.connect(restarted)
    try:
        assert subscriber.session_present is True, "the persistent session did not survive the SIGKILL"
        deadline = time.monotonic() + 20
        while len(set(subscriber.received)) < count and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        subscriber.disconnect()
    assert set(subscriber.received) == {f"reading {i}".encode() for i in range(count)}
