"""TLS and authentication between the ingest and a real Mosquitto that requires both:
certificates made at test time, a password file made with mosquitto_passwd."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from birlik.config import Config, ConfigError, load_config
from birlik.influx import InfluxClient
from ingest.service import IngestService
from ops.servers import InfluxDB, Mosquitto, Supervisor, find_executable
from tests.helpers import publish_all, readings_in_db, running_ingest, wait_for
from tests.ingest_procs import READINGS_PER_MESSAGE, messages
from tests.tls_certs import Certs, make_certs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> tuple[Mosquitto, Certs]:
    folder = tmp_path_factory.mktemp("tls")
    certs = make_certs(folder / "certs")
    passwords = folder / "passwords"
    passwords.write_text("")
    subprocess.run(
        [find_executable("mosquitto_passwd", "/usr/bin"), "-b", str(passwords), "ingest", "s3cret"], check=True
    )
    subprocess.run(
        [find_executable("mosquitto_passwd", "/usr/bin"), "-b", str(passwords), "device", "d3vice"], check=True
    )
    passwords.chmod(0o644)
    with Supervisor(folder / "servers") as sup:
        broker = sup.start_mosquitto(
            extra=[
                f"cafile {certs.ca}",
                f"certfile {certs.server_cert}",
                f"keyfile {certs.server_key}",
                "allow_anonymous false",
                f"password_file {passwords}",
            ]
        )
        yield broker, certs


def _config(broker: Mosquitto, influxdb: InfluxDB, tmp_path: Path, **mqtt: str) -> Config:
    token = uuid.uuid4().hex[:8]
    env = {
        "BIRLIK_MQTT_URL": f"mqtts://127.0.0.1:{broker.port}",
        "BIRLIK_INFLUX_URL": influxdb.url,
        "BIRLIK_INFLUX_DATABASE": f"tls_{token}",
        "BIRLIK_INGEST_CLIENT_ID": f"tls-{token}",
        "BIRLIK_INGEST_DEAD_LETTERS": str(tmp_path / "dead.jsonl"),
        "BIRLIK_INGEST_HEALTH_INTERVAL_S": "0",
    }
    return load_config(env=env | {f"BIRLIK_MQTT_{k.upper()}": v for k, v in mqtt.items()})


def _device(broker: Mosquitto, certs: Certs) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}")
    client.tls_set_context(ssl.create_default_context(cafile=str(certs.ca)))
    client.username_pw_set("device", "d3vice")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    return client


async def test_ingest_over_tls_with_a_password_stores_every_reading(
    tls_broker: tuple[Mosquitto, Certs], influxdb: InfluxDB, tmp_path: Path
) -> None:
    broker, certs = tls_broker
    cfg = _config(broker, influxdb, tmp_path, username="ingest", password="s3cret", ca_file=str(certs.ca))
    async with running_ingest(cfg) as ingest:
        device = _device(broker, certs)
        await asyncio.to_thread(publish_all, device, messages(1, 50))
        device.disconnect()
        await wait_for(lambda: ingest.stats.messages_acked == 50)
    with InfluxClient(cfg.influx.settings()) as influx:
        assert readings_in_db(influx) == 50 * READINGS_PER_MESSAGE


async def _refused(cfg: Config, caplog: pytest.LogCaptureFixture) -> str:
    service = IngestService(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    with caplog.at_level(logging.ERROR, logger="ingest.mqtt"):
        await asyncio.sleep(3)
        assert not service.ready.is_set()  # never subscribed
        stop.set()
        await asyncio.wait_for(task, 30)
    errors = [r.getMessage() for r in caplog.records if r.name == "ingest.mqtt" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # said once, not once per attempt
    return errors[0]


async def test_a_wrong_password_is_refused_with_a_clear_error(
    tls_broker: tuple[Mosquitto, Certs], influxdb: InfluxDB, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, certs = tls_broker
    cfg = _config(broker, influxdb, tmp_path, username="ingest", password="wrong", ca_file=str(certs.ca))
    message = await _refused(cfg, caplog)
    assert "refused the connection" in message and ("user name or password" in message or "authorized" in message)


async def test_an_untrusted_server_certificate_is_refused_with_a_clear_error(
    tls_broker: tuple[Mosquitto, Certs], influxdb: InfluxDB, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker, certs = tls_broker
    cfg = _config(broker, influxdb, tmp_path, username="ingest", password="s3cret", ca_file=str(certs.other_ca))
    message = await _refused(cfg, caplog)
    assert "certificate is not trusted" in message and "mqtt.ca_file" in message


def test_tls_files_that_do_not_exist_are_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mqtt.ca_file .* is not a readable file"):
        load_config(env={"BIRLIK_MQTT_URL": "mqtts://broker:8883", "BIRLIK_MQTT_CA_FILE": str(tmp_path / "nope.pem")})
    assert load_config(env={"BIRLIK_MQTT_URL": "mqtts://broker"}).mqtt.port == 8883


def test_the_gateway_publishes_over_tls_and_says_why_it_is_refused(
    tls_broker: tuple[Mosquitto, Certs], caplog: pytest.LogCaptureFixture
) -> None:
    import time

    from birlik.config import MqttConfig
    from gateway.publisher import MqttPublisher

    broker, certs = tls_broker
    url = f"mqtts://127.0.0.1:{broker.port}"
    good = MqttPublisher(
        MqttConfig(url=url, username="device", password="d3vice", ca_file=str(certs.ca)), client_id="gw-tls-ok"
    )
    good.connect(15)
    assert good.publish("birlik/acme/site/line/m-1/telemetry", b"{}", 0, 1)
    assert good.flush(15)
    good.close()

    def refused(config: MqttConfig, client_id: str) -> list[str]:
        caplog.clear()
        publisher = MqttPublisher(config, client_id=client_id)
        with caplog.at_level(logging.ERROR, logger="gateway.publisher"):
            publisher.start()
            time.sleep(4)
            assert not publisher.connected
            publisher.close()
        return [r.getMessage() for r in caplog.records if r.name == "gateway.publisher" and r.levelno >= logging.ERROR]

    wrong = refused(MqttConfig(url=url, username="device", password="nope", ca_file=str(certs.ca)), "gw-tls-pw")
    assert len(wrong) == 1 and "refused the connection" in wrong[0], wrong
    untrusted = refused(
        MqttConfig(url=url, username="device", password="d3vice", ca_file=str(certs.other_ca)), "gw-tls-ca"
    )
    assert len(untrusted) == 1 and "certificate is not trusted" in untrusted[0], untrusted
