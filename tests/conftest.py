"""Real servers for the tests: one Mosquitto and one InfluxDB for the session, started by the
same supervisor the demo uses; each test gets its own database name and client ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from birlik.config import Config, load_config
from birlik.influx import InfluxClient
from ops.servers import InfluxDB, Mosquitto, Supervisor


@pytest.fixture(scope="session")
def supervisor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    with Supervisor(tmp_path_factory.mktemp("servers")) as sup:
        yield sup


@pytest.fixture(scope="session")
def mosquitto(supervisor: Supervisor) -> Mosquitto:
    return supervisor.start_mosquitto()


@pytest.fixture(scope="session")
def influxdb(supervisor: Supervisor) -> InfluxDB:
    return supervisor.start_influxdb()


@pytest.fixture
def config(mosquitto: Mosquitto, influxdb: InfluxDB, tmp_path: Path) -> Iterator[Config]:
    """Settings pointing at the session's servers, with a fresh database and client ids."""
    token = uuid.uuid4().hex[:8]
    cfg = load_config(
        env={
            "BIRLIK_MQTT_URL": mosquitto.url,
            "BIRLIK_INFLUX_URL": influxdb.url,
            "BIRLIK_INFLUX_DATABASE": f"test_{token}",
            "BIRLIK_INGEST_CLIENT_ID": f"ingest-{token}",
            "BIRLIK_INGEST_DEAD_LETTERS": str(tmp_path / "dead-letters.jsonl"),
            "BIRLIK_INGEST_FLUSH_INTERVAL_S": "0.1",
            "BIRLIK_ANALYTICS_CLIENT_ID": f"analytics-{token}",
        }
    )
    with InfluxClient(cfg.influx.settings()) as client:
        client.create_database()
    yield cfg
    with InfluxClient(cfg.influx.settings()) as client:
        client.drop_database(cfg.influx.database)


@pytest.fixture
def influx(config: Config) -> Iterator[InfluxClient]:
    with InfluxClient(config.influx.settings()) as client:
        yield client
