"""Bad input and failures around the ingest: nothing crashes, bad data is kept with a
reason, and the good data around it lands."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from birlik.config import Config, load_config
from birlik.influx import InfluxClient
from birlik.payload import encode_telemetry
from birlik.topics import MachinePath
from ingest.deadletters import load as load_dead_letters
from ops.servers import Supervisor, free_port
from tests.helpers import publish_all, publisher, readings_in_db, running_ingest, wait_for

pytestmark = pytest.mark.slow

PUMP = MachinePath("acme", "kz-turkestan", "line-1", "pump-1")
TS = 1_763_800_000_000


def good(seq: int, temp: float = 60.5) -> bytes:
    return encode_telemetry(
        gateway="gw-1",
        seq=seq,
        kind="centrifugal_pump",
        samples=[(TS + seq * 1000, {"bearing_temp": temp, "vibration_rms": 2.0, "state": "running"})],
    )


def raw(message: dict[str, object]) -> bytes:
    return json.dumps(message).encode()


BAD: dict[str, tuple[str, bytes]] = {
    "not_json": (PUMP.topic(), b"\x00\xff not json {"),
    "not_object": (PUMP.topic(), b"[1, 2, 3]"),
    "missing_field": (PUMP.topic(), raw({"v": 1, "gateway": "gw-1", "units": {}, "samples": []})),
    "wrong_type": (PUMP.topic(), raw({"v": 1, "gateway": "gw-1", "seq": "seven", "units": {}, "samples": [{}]})),
    "unsupported_version": (PUMP.topic(), raw({"v": 99, "gateway": "gw-1", "seq": 1, "units": {}, "samples": [{}]})),
    "oversized": (PUMP.topic(), b"{" + b" " * 300_000 + b"}"),
    "unknown_machine": (MachinePath("acme", "kz-turkestan", "line-1", "ghost-9").topic(), good(50)),
}


async def test_bad_messages_are_kept_with_a_reason_and_good_ones_around_them_land(
    config: Config, influx: InfluxClient
) -> None:
    registry = {PUMP: "centrifugal_pump"}
    messages: list[tuple[str, bytes]] = []
    for i, (topic, payload) in enumerate(BAD.values()):
        messages.append((PUMP.topic(), good(2 * i + 1)))
        messages.append((topic, payload))
    # One message with a bad reading among good ones: only the bad reading is rejected.
    mixed = raw(
        {
            "v": 1,
            "gateway": "gw-1",
            "seq": 100,
            "units": {"bearing_temp": "degF", "vibration_rms": "mm/s", "motor_temp": "degC"},
            "samples": [
                {
                    "ts": TS + 100_000,
                    "values": {"bearing_temp": 140.0, "vibration_rms": 2.2, "motor_temp": 500.0, "flux": 1},
                }
            ],
        }
    )
    messages.append((PUMP.topic(), mixed))

    async with running_ingest(config, machines=registry) as ingest:
        client = publisher(config.mqtt, f"bad-{config.influx.database}")
        await asyncio.to_thread(publish_all, client, messages)
        client.disconnect()
        await wait_for(lambda: ingest.stats.messages_received == len(messages))
    # The service is still alive at this point (it drained and stopped cleanly), and:
    good_readings = 3 * len(BAD) + 1  # 3 per good message, plus vibration_rms of the mixed one
    assert readings_in_db(influx) == good_readings
    assert ingest.stats.readings_written == good_readings

    dead = load_dead_letters(config.ingest.dead_letters)
    message_reasons = sorted(e["reason"] for e in dead if e["kind"] == "message")
    assert message_reasons == sorted(BAD)
    reading_reasons = {e["signal"]: e["reason"] for e in dead if e["kind"] == "reading"}
    assert reading_reasons == {"bearing_temp": "wrong_unit", "motor_temp": "out_of_range", "flux": "unknown_signal"}
    for entry in dead:
        assert entry["detail"] and entry["topic"]
    not_json = next(e for e in dead if e["reason"] == "not_json")
    assert not_json["payload"] == "\x00\\xff not json {"  # kept for inspection, invalid UTF-8 escaped
    oversized = next(e for e in dead if e["reason"] == "oversized")
    assert oversized["payload_bytes"] == len(BAD["oversized"][1])


async def test_points_the_database_refuses_are_isolated_and_the_rest_of_the_batch_lands(
    config: Config, influx: InfluxClient
) -> None:
    # A field stored as a string first makes InfluxDB refuse later float values of it in the
    # same shard (a "field type conflict"): one poisoned series among good ones.
    influx.write([f'telemetry,machine=pump-1,site=kz-turkestan vibration_rms="loose" {TS - 1000}'])
    config.ingest.batch_size = 10_000
    config.ingest.flush_interval_s = 0.5
    messages = [(PUMP.topic(), good(seq)) for seq in range(1, 41)]
    other = MachinePath("acme", "kz-turkestan", "line-1", "pump-2")
    messages += [
        (other.topic(), encode_telemetry(gateway="gw-2", seq=seq, samples=[(TS + seq * 1000, {"motor_temp": 70.0})]))
        for seq in range(1, 41)
    ]
    async with running_ingest(config) as ingest:
        client = publisher(config.mqtt, f"conflict-{config.influx.database}")
        await asyncio.to_thread(publish_all, client, messages)
        client.disconnect()
        await wait_for(lambda: ingest.stats.readings_written + ingest.stats.readings_rejected == 40 * 3 + 40)
    # pump-1's points carry vibration_rms as a float: refused, each kept as a dead letter.
    dead = [e for e in load_dead_letters(config.ingest.dead_letters) if e["reason"] == "db_rejected"]
    assert len(dead) == 40
    assert "conflict" in dead[0]["detail"]
    assert ingest.stats.readings_written == 40  # every pump-2 reading landed
    assert influx.count("telemetry", "motor_temp") == 40


def _config_on_port(config: Config, tmp_path: Path, port: int, name: str, **ingest: str) -> Config:
    """The session broker, an InfluxDB of the test's own on ``port``, a fresh client id."""
    env = {
        "BIRLIK_MQTT_URL": config.mqtt.url,
        "BIRLIK_INFLUX_URL": f"http://127.0.0.1:{port}",
        "BIRLIK_INGEST_CLIENT_ID": f"{name}-{config.influx.database}",
        "BIRLIK_INGEST_DEAD_LETTERS": str(tmp_path / "dead.jsonl"),
        "BIRLIK_INGEST_FLUSH_INTERVAL_S": "0.1",
    }
    return load_config(env=env | {f"BIRLIK_INGEST_{k.upper()}": v for k, v in ingest.items()})


async def test_ingest_waits_for_influxdb_and_loses_nothing_when_it_comes_back(config: Config, tmp_path: Path) -> None:
    port = free_port()
    cfg = _config_on_port(config, tmp_path, port, "outage")
    with Supervisor(tmp_path / "late-influx") as supervisor:
        # First InfluxDB comes up, ingest subscribes; then InfluxDB goes away mid-stream.
        first = supervisor.start_influxdb(port=port)
        async with running_ingest(cfg) as ingest:
            client = publisher(cfg.mqtt, f"outage-pub-{config.influx.database}")
            await asyncio.to_thread(publish_all, client, [(PUMP.topic(), good(seq)) for seq in range(1, 21)])
            await wait_for(lambda: ingest.stats.readings_written == 60)
            supervisor.stop(first.child)
            await asyncio.to_thread(publish_all, client, [(PUMP.topic(), good(seq)) for seq in range(21, 61)])
            await wait_for(lambda: ingest.stats.messages_received == 60)
            await wait_for(lambda: ingest.stats.write_retries > 0)
            assert ingest.stats.readings_written == 60  # the rest is waiting, not dropped
            supervisor.start_influxdb(port=port)  # same data directory: the first 60 are still there
            await wait_for(lambda: ingest.stats.readings_written == 180, timeout_s=60)
            client.disconnect()
        with InfluxClient(cfg.influx.settings()) as influx:
            assert readings_in_db(influx) == 180
    assert ingest.stats.left_in_broker == 0


async def test_two_ingest_processes_share_the_stream_without_loss_or_duplicates(
    config: Config, influx: InfluxClient, tmp_path: Path
) -> None:
    import dataclasses

    config.ingest.share_group = "ingest"
    second = dataclasses.replace(
        config,
        ingest=dataclasses.replace(
            config.ingest, client_id=config.ingest.client_id + "-b", dead_letters=str(tmp_path / "b.jsonl")
        ),
    )
    messages = [(PUMP.topic(), good(seq)) for seq in range(1, 201)]
    async with running_ingest(config) as a, running_ingest(second) as b:
        client = publisher(config.mqtt, f"share-{config.influx.database}")
        await asyncio.to_thread(publish_all, client, messages)
        client.disconnect()
        await wait_for(lambda: a.stats.messages_received + b.stats.messages_received == 200)
    assert a.stats.messages_received > 0 and b.stats.messages_received > 0  # both took a share
    assert readings_in_db(influx) == 3 * 200


async def test_stopping_while_influxdb_is_down_leaves_the_messages_in_the_broker_for_the_next_start(
    config: Config, tmp_path: Path
) -> None:
    port = free_port()
    cfg = _config_on_port(config, tmp_path, port, "unwritten", stop_timeout_s="1")
    with Supervisor(tmp_path / "gone-influx") as supervisor:
        server = supervisor.start_influxdb(port=port)
        async with running_ingest(cfg) as ingest:
            supervisor.stop(server.child)
            client = publisher(cfg.mqtt, f"unwritten-pub-{config.influx.database}")
            await asyncio.to_thread(publish_all, client, [(PUMP.topic(), good(seq)) for seq in range(1, 31)])
            client.disconnect()
            await wait_for(lambda: ingest.stats.messages_received == 30)
            stopping = time.monotonic()
        # Stopped with InfluxDB still down: within the deadline, and nothing was acknowledged.
        assert time.monotonic() - stopping < 1 + 3
        assert ingest.stats.messages_acked == 0 and ingest.stats.left_in_broker == 30
        assert list(tmp_path.glob("*.lp")) == []
        # The broker sends them again to the next start, which writes them.
        supervisor.start_influxdb(port=port)
        async with running_ingest(cfg) as again:
            await wait_for(lambda: again.stats.messages_acked == 30)
        with InfluxClient(cfg.influx.settings()) as influx:
            assert readings_in_db(influx) == 90


async def test_the_ingest_writes_its_own_counters_to_influxdb(config: Config, influx: InfluxClient) -> None:
    config.ingest.health_interval_s = 0.2
    async with running_ingest(config) as ingest:
        client = publisher(config.mqtt, f"health-{config.influx.database}")
        await asyncio.to_thread(publish_all, client, [(PUMP.topic(), good(seq)) for seq in range(1, 11)])
        client.disconnect()
        await wait_for(lambda: ingest.stats.messages_acked == 10)
        await asyncio.sleep(0.6)
    series = influx.query('SELECT last("messages_acked") FROM "ingest" GROUP BY "client_id"')
    assert series and series[0].tags["client_id"] == config.ingest.client_id
    assert series[0].values[0][1] >= 1
