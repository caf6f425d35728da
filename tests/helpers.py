"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from birlik.config import Config, MqttConfig
from birlik.influx import InfluxClient
from birlik.topics import MachinePath
from ingest.service import IngestService


@contextlib.asynccontextmanager
async def running_ingest(
    config: Config, *, machines: Mapping[MachinePath, str] | None = None
) -> AsyncIterator[IngestService]:
    """An ingest service running in this event loop until the block ends (then drained)."""
    service = IngestService(config, machines=machines)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the service's error
    assert ready in done, "ingest did not subscribe within 30 s"
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.05)


def publisher(config: MqttConfig, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.connect(config.host, config.port)
    client.loop_start()
    return client


def publish_all(client: mqtt.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(10)


def readings_in_db(influx: InfluxClient, measurement: str = "telemetry") -> int:
    return influx.count_readings(measurement)
