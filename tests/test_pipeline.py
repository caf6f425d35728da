"""End to end over the real broker and database: gateway -> Mosquitto -> ingest -> InfluxDB."""

from __future__ import annotations

import asyncio

import pytest

from birlik.config import Config
from birlik.influx import InfluxClient
from birlik.plant import load_plant
from gateway.publisher import MqttPublisher
from gateway.service import Clock, run_gateway
from simulators.driver import SimulatorDriver
from simulators.fleet import Fleet
from tests.helpers import readings_in_db, running_ingest, wait_for

pytestmark = pytest.mark.slow

START_MS = 1_763_800_000_000
TAGS = {"tenant", "site", "line", "kind"}
SPAN_MS = 20 * 60 * 1000  # 20 simulated minutes of the whole default plant


@pytest.mark.parametrize("batch", [1, 10])
async def test_every_published_reading_arrives_once_with_its_value_and_time(
    config: Config, influx: InfluxClient, batch: int
) -> None:
    plant = load_plant()
    async with running_ingest(config, machines=plant.registry()) as ingest:
        driver = SimulatorDriver(plant, seed=7, start_ms=START_MS)
        publisher = MqttPublisher(config.mqtt, client_id=f"gw-test-{batch}-{config.influx.database}")
        publisher.connect()
        try:
            unacked = await asyncio.to_thread(
                run_gateway, "gw-test", driver, publisher, Clock(START_MS, 0), end_ms=START_MS + SPAN_MS, batch=batch
            )
        finally:
            publisher.close()
        assert unacked == 0
        published = publisher.stats.readings
        await wait_for(lambda: ingest.stats.readings_written >= published)

    assert ingest.stats.messages_rejected == 0 and ingest.stats.readings_rejected == 0
    assert readings_in_db(influx) == published

    # Same values and timestamps as the simulator produced (same seed, same clock).
    expected = {
        (m.path.machine, ts): values
        for m, ts, values in Fleet(plant, seed=7, start_ms=START_MS).advance(START_MS + SPAN_MS)
    }
    assert sum(len(v) for v in expected.values()) == published
    stored: dict[tuple[str, int], dict[str, object]] = {}
    for s in influx.query('SELECT * FROM "telemetry" GROUP BY "machine"'):
        for row in s.records():
            ts = row.pop("time")
            stored[(s.tags["machine"], ts)] = {k: v for k, v in row.items() if v is not None and k not in TAGS}
    assert stored.keys() == expected.keys()
    for key, values in expected.items():
        assert stored[key] == values, key
