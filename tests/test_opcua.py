"""OPC UA driver against a real asyncua server on 127.0.0.1: subscribed values with the
server's source timestamps, grouping into samples, scale and unit conversion, rejections,
reconnect and re-subscription after a server restart, and Historical Access backfill."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

from birlik.config import Config
from birlik.influx import InfluxClient
from birlik.topics import MachinePath
from gateway.drivers import Reading
from gateway.opcua import OpcUaDriver, opcua_config
from gateway.southbound import DriverConfigError, load_driver
from ops.servers import free_port
from ops.stack import birlik_command
from tests.helpers import running_ingest, wait_for

NS = "urn:birlik:test"
PUMP = MachinePath("acme", "kz-turkestan", "pumps", "pump-101")
COMP = MachinePath("acme", "kz-turkestan", "compressors", "comp-101")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# node name -> (variant type, initial raw value)
NODES: dict[str, tuple[ua.VariantType, Any]] = {
    "Pump101.BearingTemp": (ua.VariantType.Double, 149.0),  # degF
    "Pump101.Current": (ua.VariantType.Int32, 1234),  # 0.1 A
    "Pump101.Flow": (ua.VariantType.Float, 500.0),  # l/min
    "Comp101.OilTemp": (ua.VariantType.Double, 68.5),  # degC
    "Comp101.Mode": (ua.VariantType.String, "auto"),  # not a number: rejected
}


def driver_doc(port: int, **top: Any) -> dict[str, Any]:
    return {
        "driver": "opcua",
        "endpoint": f"opc.tcp://127.0.0.1:{port}/",
        "publishing_interval": "100ms",
        "timeout": "2s",
        "watchdog": "300ms",
        "reconnect": {"min": "200ms", "max": "500ms"},
        **top,
        "machines": [
            {
                "path": str(PUMP),
                "kind": "centrifugal_pump",
                "signals": {
                    "bearing_temp": {"node": "ns=2;s=Pump101.BearingTemp", "unit": "degF"},
                    "motor_current": {"node": "ns=2;s=Pump101.Current", "scale": 0.1},
                    "flow": {"node": f"nsu={NS};s=Pump101.Flow", "unit": "l/min"},  # namespace by URI
                },
            },
            {
                "path": str(COMP),
                "kind": "air_compressor",
                "signals": {
                    "oil_temp": {"node": "ns=2;s=Comp101.OilTemp"},
                    "load": {"node": "ns=2;s=Comp101.Mode"},
                    "discharge_temp": {"node": "ns=2;s=Comp101.Missing"},  # not on the server: refused
                },
            },
        ],
    }


def expected(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The catalogue values the driver should make of the nodes' raw values, per machine."""
    return {
        "pump-101": {
            "bearing_temp": pytest.approx((raw["Pump101.BearingTemp"] - 32) * 5 / 9),
            "motor_current": pytest.approx(raw["Pump101.Current"] * 0.1),
            "flow": pytest.approx(raw["Pump101.Flow"] * 0.06),
        },
        "comp-101": {"oil_temp": raw["Comp101.OilTemp"]},
    }


class UaServer:
    """An asyncua server with the test's nodes, in the test's event loop."""

    def __init__(self, port: int, *, history: bool = False) -> None:
        self.port = port
        self.history = history
        self.server = Server()
        self.nodes: dict[str, Node] = {}

    async def start(
        self,
        values: dict[str, Any],
        ts_ms: int,
        *,
        initial_ms: int | None = None,
        history_before: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> None:
        """Start with the nodes' raw values at ``initial_ms`` (default ``ts_ms``), then (as
        history) ``history_before``, then ``values`` at ``ts_ms``."""
        await self.server.init()
        self.server.set_endpoint(f"opc.tcp://127.0.0.1:{self.port}/")
        idx = await self.server.register_namespace(NS)
        assert idx == 2
        plant = await self.server.nodes.objects.add_object(idx, "Plant")
        for name, (vt, raw) in NODES.items():
            self.nodes[name] = await plant.add_variable(ua.NodeId(name, idx), name, ua.Variant(raw, vt))
        # Everything is in place before the server listens: a client connecting at once sees
        # the whole history.
        await self.write(raw_values(), ts_ms if initial_ms is None else initial_ms)
        if self.history:
            for node in self.nodes.values():
                await self.server.historize_node_data_change(node, period=None, count=1000)
        for past_ts, past in history_before:
            await asyncio.sleep(0.05)  # the history records one value per 10 ms publishing cycle
            await self.write(past, past_ts)
        await asyncio.sleep(0.05 if self.history else 0)
        await self.write(values, ts_ms)
        await asyncio.sleep(0.05 if self.history else 0)
        await self.server.start()

    async def write(self, values: dict[str, Any], ts_ms: int | None, status: int = ua.StatusCodes.Good) -> None:
        stamp = None if ts_ms is None else EPOCH + timedelta(milliseconds=ts_ms)
        for name, raw in values.items():
            vt = NODES[name][0]
            dv = ua.DataValue(ua.Variant(raw, vt), StatusCode=ua.StatusCode(status), SourceTimestamp=stamp)
            await self.nodes[name].write_value(dv)

    async def stop(self) -> None:
        await self.server.stop()


def raw_values(**changes: Any) -> dict[str, Any]:
    return {**{name: raw for name, (_, raw) in NODES.items()}, **changes}


async def collect(driver: OpcUaDriver, until: Callable[[list[Reading]], bool], timeout_s: float = 15) -> list[Reading]:
    out: list[Reading] = []
    deadline = time.monotonic() + timeout_s
    while not until(out):
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout_s} s; got {out}; stats {driver.stats()}")
        out.extend(driver.poll(0))
        await asyncio.sleep(0.05)
    return out


def by_machine(readings: list[Reading]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(m.path.machine, ts): values for m, ts, values in readings}


def has(*keys: tuple[str, int]) -> Callable[[list[Reading]], bool]:
    return lambda readings: all(k in by_machine(readings) for k in keys)


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_values_arrive_as_samples_with_the_servers_source_timestamps() -> None:
    port = free_port()
    server = UaServer(port)
    t0 = now_ms() - 5_000
    await server.start(raw_values(), t0)
    driver = OpcUaDriver(opcua_config(driver_doc(port), "test"))
    try:
        first = await collect(driver, has(("pump-101", t0), ("comp-101", t0)))
        samples = by_machine(first)
        want = expected(raw_values())
        # One sample per machine and timestamp, with every signal of it.
        assert samples == {("pump-101", t0): want["pump-101"], ("comp-101", t0): want["comp-101"]}
        assert {m.path for m, _, _ in first} == {PUMP, COMP}
        assert {m.kind for m, _, _ in first} == {"centrifugal_pump", "air_compressor"}

        # A data change: two nodes of the pump at one source time -> one sample.
        t1 = t0 + 1_000
        await server.write({"Pump101.BearingTemp": 158.0, "Pump101.Current": 1500}, t1)
        changed = by_machine(await collect(driver, has(("pump-101", t1))))
        assert changed[("pump-101", t1)] == {
            "bearing_temp": pytest.approx(70.0),
            "motor_current": pytest.approx(150.0),
        }
        # A bad status and a value that is not a number are counted rejections, not readings.
        t2 = t0 + 2_000
        await server.write({"Comp101.OilTemp": 99.0}, t2, status=ua.StatusCodes.BadSensorFailure)
        await server.write({"Comp101.OilTemp": 71.0}, t2 + 1)
        later = by_machine(await collect(driver, has(("comp-101", t2 + 1))))
        assert ("comp-101", t2) not in later and later[("comp-101", t2 + 1)] == {"oil_temp": 71.0}
        assert driver.rejections.counts["bad_status"] == 1
        assert driver.rejections.counts["not_a_number"] >= 1  # Comp101.Mode = "auto"
        assert driver.rejections.counts["subscribe_failed"] == 1  # Comp101.Missing; the others are read
        assert driver.link.connects == 1 and driver.link.losses == 0
    finally:
        driver.close()
        await server.stop()


def test_a_value_without_source_time_takes_the_server_time_then_the_local_time() -> None:
    driver = OpcUaDriver(opcua_config(driver_doc(4840), "test"))
    [s] = [s for s in driver.config.signals if s.conversion.signal == "oil_temp"]
    node_id = ua.NodeId("Comp101.OilTemp", 2)
    driver._by_node = {node_id: s}
    server_time = EPOCH + timedelta(milliseconds=1_763_800_000_123)
    driver._on_value(node_id, ua.DataValue(ua.Variant(60.0, ua.VariantType.Double), ServerTimestamp=server_time))
    before = now_ms()
    driver._on_value(node_id, ua.DataValue(ua.Variant(61.0, ua.VariantType.Double)))
    [(_, ts1, v1), (_, ts2, v2)] = driver.buffer.take(everything=True)
    assert (ts1, v1) == (1_763_800_000_123, {"oil_temp": 60.0})
    assert before <= ts2 <= now_ms() and v2 == {"oil_temp": 61.0}


async def test_the_driver_reconnects_resubscribes_and_reads_the_gap_from_the_servers_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "gateway.southbound")
    port = free_port()
    t0 = now_ms() - 20_000
    server = UaServer(port, history=True)
    await server.start(raw_values(), t0)
    driver = OpcUaDriver(opcua_config(driver_doc(port, history={"backfill": True, "max": "1h"}), "test"))
    try:
        await collect(driver, has(("pump-101", t0), ("comp-101", t0)))
        await server.stop()
        await wait_for(lambda: not driver.link.connected, 10)
        await asyncio.sleep(0.5)  # a few failed attempts while the server is away
        # The restarted server kept recording while the gateway was away (its history holds
        # values from the gap), then has a newer current value.
        gap = [t0 + 5_000, t0 + 6_000, t0 + 7_000]
        current = t0 + 8_000
        server = UaServer(port, history=True)
        await server.start(
            raw_values(**{"Comp101.OilTemp": 80.0}),
            current,
            initial_ms=t0,
            history_before=[
                (ts, {"Comp101.OilTemp": 70.0 + i, "Pump101.Current": 1000 + i}) for i, ts in enumerate(gap)
            ],
        )
        want = [("comp-101", current), *[("comp-101", ts) for ts in gap], *[("pump-101", ts) for ts in gap]]
        readings = by_machine(await collect(driver, has(*want)))
        for i, ts in enumerate(gap):
            assert readings[("comp-101", ts)] == {"oil_temp": 70.0 + i}
            assert readings[("pump-101", ts)] == {"motor_current": pytest.approx((1000 + i) * 0.1)}
        assert readings[("comp-101", current)] == {"oil_temp": 80.0}
        assert driver.backfilled >= 2 * len(gap)
        # Nothing before the gap again (the values at t0 were received before the restart).
        assert not [key for key in readings if key[1] <= t0]

        # Subscribed again: live changes arrive.
        t2 = now_ms()
        await server.write({"Pump101.Flow": 600.0}, t2)
        resumed = by_machine(await collect(driver, has(("pump-101", t2))))
        assert resumed[("pump-101", t2)] == {"flow": pytest.approx(36.0)}
    finally:
        driver.close()
        await server.stop()
    assert driver.link.connects == 2 and driver.link.losses == 1 and driver.link.failed_attempts >= 1
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.southbound"]
    assert sum("lost the connection to" in m for m in messages) == 1  # once, not once per attempt
    assert sum("connected to opc.tcp://" in m for m in messages) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"endpoint": "http://x"}, "endpoint must be an opc.tcp:// URL"),
        ({"history": {"backfill": "yes"}}, "history.backfill must be true or false"),
        ({"publishing_interval": "soon"}, "publishing_interval: 'soon' is not a duration"),
        (
            {"machines": [{"path": "a/b/c/d", "kind": "x", "signals": {"oil_temp": {"node": "ns=2;q=7"}}}]},
            "is not an OPC UA node id",
        ),
        (
            {"machines": [{"path": "a/b/c/d", "kind": "x", "signals": {"oil_temp": {"node": "i=1", "unit": "psi"}}}]},
            "unit 'psi' cannot be converted to the catalogue's 'degC'",
        ),
        (
            {
                "machines": [
                    {"path": "a/b/c/d", "kind": "x", "signals": {"oil_temp": {"node": "i=1"}}},
                    {"path": "a/b/c/e", "kind": "x", "signals": {"oil_temp": {"node": "i=1"}}},
                ]
            },
            "node 'i=1' is mapped twice",
        ),
    ],
)
def test_a_broken_driver_file_is_reported_with_where(change: dict[str, Any], message: str) -> None:
    with pytest.raises(DriverConfigError) as exc:
        opcua_config({**driver_doc(4840), **change}, "plc.yaml")
    assert message in str(exc.value) and str(exc.value).startswith("plc.yaml")


def test_the_example_file_is_a_valid_opcua_driver() -> None:
    driver = load_driver(Path(__file__).resolve().parents[1] / "gateway" / "examples" / "opcua.yaml")
    assert isinstance(driver, OpcUaDriver) and driver.machines()


@pytest.mark.slow
async def test_birlik_gateway_with_an_opcua_driver_file_writes_server_times_and_values_to_influxdb(
    config: Config, influx: InfluxClient, tmp_path: Path
) -> None:
    port = free_port()
    t0 = now_ms() - 60_000
    server = UaServer(port)
    await server.start(raw_values(), t0)
    driver_file = tmp_path / "opcua.yaml"
    driver_file.write_text(yaml.safe_dump(driver_doc(port, gateway="gw-opcua-test")))
    try:
        async with running_ingest(config) as ingest:
            process = await asyncio.create_subprocess_exec(
                *birlik_command(),
                "gateway",
                "--driver",
                str(driver_file),
                "--seconds",
                "6",
                stderr=subprocess.PIPE,
                env={**os.environ, "BIRLIK_MQTT_URL": config.mqtt.url},
            )
            try:
                await wait_for(lambda: ingest.stats.readings_written >= 4, 30)  # the values at t0
                t1 = now_ms() - 1_000
                await server.write({"Pump101.BearingTemp": 158.0, "Comp101.OilTemp": 72.25}, t1)
                await wait_for(lambda: ingest.stats.readings_written >= 6, 30)
            finally:
                _, stderr = await asyncio.wait_for(process.communicate(), 60)
            log = stderr.decode()
            assert process.returncode == 0, log  # 0: every message acknowledged
            assert "opcua: connected to opc.tcp://127.0.0.1" in log, log
    finally:
        await server.stop()
    # Units as declared in the payloads (degC, A, m3/h), readings as converted.
    assert ingest.stats.readings_rejected == 0 and ingest.stats.messages_rejected == 0
    stored = {}
    for series in influx.query('SELECT * FROM "telemetry" GROUP BY "machine"'):
        for row in series.records():
            ts = row.pop("time")
            stored[(series.tags["machine"], ts)] = {
                k: v for k, v in row.items() if v is not None and k not in {"tenant", "site", "line", "kind"}
            }
    want = expected(raw_values())
    assert stored == {
        ("pump-101", t0): want["pump-101"],
        ("comp-101", t0): want["comp-101"],
        ("pump-101", t1): {"bearing_temp": pytest.approx(70.0)},
        ("comp-101", t1): {"oil_temp": 72.25},
    }
