"""Modbus TCP driver against a real pymodbus server on 127.0.0.1: register decoding (16 and
32 bits, both word orders), scale/offset and unit conversion, rejections, reconnects, and
``birlik gateway --driver`` end to end into InfluxDB."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from birlik.config import Config
from birlik.influx import InfluxClient
from birlik.topics import MachinePath
from gateway.drivers import Reading
from gateway.modbus import ModbusDriver, modbus_config
from gateway.southbound import DriverConfigError, load_driver
from ops.servers import free_port
from ops.stack import birlik_command
from tests.helpers import running_ingest, wait_for

UNIT = 7
COMP = MachinePath("acme", "kz-turkestan", "compressors", "comp-101")
SPARE = MachinePath("acme", "kz-turkestan", "compressors", "comp-102")


def words(fmt: str, value: float, order: str = "big") -> list[int]:
    """``value`` packed as big-endian bytes, as 16-bit registers in ``order``."""
    regs = list(struct.unpack(f">{struct.calcsize(fmt) // 2}H", struct.pack(fmt, value)))
    return regs if order == "big" else regs[::-1]


def registers(oil_temp: float = 68.5, pressure_raw: int = 725) -> tuple[list[int], list[int]]:
    """(holding registers from 0, input registers from 0) of the test device."""
    holding = [
        pressure_raw,  # 0: uint16, scale 0.01 -> bar
        *words(">f", oil_temp, "big"),  # 1-2: float32, big word order
        *words(">f", 91.25, "little"),  # 3-4: float32, little word order
        *words(">h", -4),  # 5: int16, degF -> degC
        *words(">i", -500, "big"),  # 6-7: int32 negative, scale 0.001 -> bar
        *words(">f", float("nan")),  # 8-9: float32 NaN -> rejected
        60000,  # 10: uint16 (would be negative as int16)
    ]
    inputs = [
        *words(">I", 123_456, "little"),  # 0-1: uint32, little word order, W -> kW
        999,  # 2: uint16, % load out of the catalogue's range -> rejected
    ]
    return holding, inputs


@contextlib.asynccontextmanager
async def modbus_server(port: int, holding: list[int], inputs: list[int]) -> AsyncIterator[ModbusTcpServer]:
    bits = [SimData(0, values=False, datatype=DataType.BITS)]
    device = SimDevice(
        id=UNIT,
        simdata=(
            bits,
            bits,
            [SimData(0, values=holding, datatype=DataType.REGISTERS)],
            [SimData(0, values=inputs, datatype=DataType.REGISTERS)],
        ),
    )
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    try:
        yield server
    finally:
        await server.shutdown()


def driver_doc(port: int, **top: Any) -> dict[str, Any]:
    return {
        "driver": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "unit_id": UNIT,
        "interval": "200ms",
        "timeout": "1s",
        "reconnect": {"min": "100ms", "max": "400ms"},
        **top,
        "machines": [
            {
                "path": str(COMP),
                "kind": "air_compressor",
                "signals": {
                    "discharge_pressure": {"address": 0, "type": "uint16", "scale": 0.01},
                    "oil_temp": {"address": 1, "type": "float32"},
                    "discharge_temp": {"address": 3, "type": "float32", "word_order": "little"},
                    "ambient_temp": {"address": 5, "type": "int16", "unit": "degF"},
                    "suction_pressure": {"address": 6, "type": "int32", "scale": 0.001},
                    "bearing_temp": {"address": 8, "type": "float32"},
                    "flow": {"address": 10, "type": "uint16"},
                    "power": {"address": 0, "table": "input", "type": "uint32", "word_order": "little", "unit": "W"},
                    "load": {"address": 2, "table": "input"},
                },
            },
            {
                "path": str(SPARE),
                "kind": "air_compressor",
                # Not on the device: the request is refused (exception response), and counted.
                "signals": {"motor_current": {"address": 500, "table": "input"}},
            },
        ],
    }


EXPECTED = {
    "discharge_pressure": 7.25,
    "oil_temp": 68.5,
    "discharge_temp": 91.25,
    "ambient_temp": (-4 - 32) * 5 / 9,
    "suction_pressure": -0.5,
    "flow": 60000.0,
    "power": 123.456,
}


async def collect(driver: ModbusDriver, until: Any, timeout_s: float = 10) -> list[Reading]:
    """Poll like the gateway loop until ``until(readings)`` holds."""
    out: list[Reading] = []
    deadline = time.monotonic() + timeout_s
    while not until(out):
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout_s} s; got {out[-3:]}; stats {driver.stats()}")
        out.extend(driver.poll(0))
        await asyncio.sleep(0.05)
    return out


def approx(values: dict[str, Any]) -> dict[str, Any]:
    return {k: pytest.approx(v, rel=1e-9, abs=1e-12) for k, v in values.items()}


async def test_registers_decode_scale_and_convert_into_one_sample_per_poll(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    holding, inputs = registers()
    async with modbus_server(port, holding, inputs):
        driver = ModbusDriver(modbus_config(driver_doc(port), "test"))
        before = int(time.time() * 1000)
        try:
            with caplog.at_level(logging.WARNING, "gateway.southbound"):
                readings = await collect(driver, lambda r: len(r) >= 3)
        finally:
            driver.close()
        after = int(time.time() * 1000)
    assert driver.machines()[0].path == COMP and driver.machines()[0].kind == "air_compressor"
    for machine, ts, values in readings:
        assert machine.path == COMP  # the spare machine's only register is refused: no sample
        assert values == approx(EXPECTED)
        assert all(type(v) is float for v in values.values())
        assert before <= ts <= after
    stamps = [ts for _, ts, _ in readings]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert 150 <= (stamps[-1] - stamps[0]) / (len(stamps) - 1) <= 500  # every 200 ms (on a busy machine, later)
    # Three read requests per poll: holding 0..10, input 0..2, input 500 (refused).
    assert len(driver.blocks) == 3
    counts = driver.rejections.counts
    assert counts["not_finite"] >= 3 and counts["out_of_range"] >= 3 and counts["read_refused"] >= 3
    assert set(counts) == {"not_finite", "out_of_range", "read_refused"}
    # Rate-limited: one log line per reason, however many polls.
    assert sum("rejected" in r.getMessage() for r in caplog.records) == 3


async def test_the_driver_waits_for_the_device_and_reconnects_after_it_restarts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    driver = ModbusDriver(modbus_config(driver_doc(port), "test"))
    caplog.set_level(logging.INFO, "gateway.southbound")
    try:
        driver.start()
        await asyncio.sleep(0.8)  # nothing listens yet: failed attempts, with back-off
        assert driver.poll(0) == [] and driver.link.failed_attempts >= 2 and driver.link.connects == 0
        holding, inputs = registers()
        async with modbus_server(port, holding, inputs):
            first = await collect(driver, lambda r: len(r) >= 2)
        assert first[-1][2]["oil_temp"] == 68.5
        await wait_for(lambda: not driver.link.connected, 10)
        await asyncio.sleep(0.6)
        driver.poll(0)
        holding, inputs = registers(oil_temp=70.0, pressure_raw=810)
        async with modbus_server(port, holding, inputs):
            again = await collect(driver, lambda r: len(r) >= 2)
        assert again[-1][2] == approx({**EXPECTED, "oil_temp": 70.0, "discharge_pressure": 8.1})
    finally:
        driver.close()
    assert driver.link.connects == 2 and driver.link.losses == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "gateway.southbound"]
    # One line per change of state, not one per attempt.
    assert sum("cannot connect to" in m for m in messages) == 1
    assert sum("lost the connection to" in m for m in messages) == 1
    assert sum("connected to modbus://" in m for m in messages) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": ""}, "host must be"),
        ({"word_order": "middle"}, "word_order: must be one of big, little"),
        ({"machines": [{"path": "a/b/c", "kind": "x", "signals": {}}]}, "expected tenant/site/line/machine"),
        (
            {"machines": [{"path": "a/b/c/d", "kind": "x", "signals": {"oil_temp": {"address": 1, "type": "int64"}}}]},
            "type: must be one of int16",
        ),
        (
            {"machines": [{"path": "a/b/c/d", "kind": "x", "signals": {"oil_temp": {"address": 1, "unit": "bar"}}}]},
            "unit 'bar' cannot be converted to the catalogue's 'degC' (convertible: K, degF",
        ),
        (
            {"machines": [{"path": "a/b/c/d", "kind": "x", "signals": {"state": {"address": 1}}}]},
            "not a numeric gauge or total",
        ),
        (
            {"machines": [{"path": "a/b/c/d", "kind": "x", "signals": {"oil_temp": {"adress": 1}}}]},
            "unknown keys ['adress']",
        ),
        (
            {
                "machines": [
                    {"path": "a/b/c/d", "kind": "x", "signals": {"oil_temp": {"address": 65535, "type": "float32"}}}
                ]
            },
            "address: expected an integer from 0 to 65534",
        ),
    ],
)
def test_a_broken_driver_file_is_reported_with_where(change: dict[str, Any], message: str) -> None:
    with pytest.raises(DriverConfigError) as exc:
        modbus_config({**driver_doc(502), **change}, "plc.yaml")
    assert message in str(exc.value) and str(exc.value).startswith("plc.yaml: ")


def test_neighbouring_registers_are_read_in_blocks_of_at_most_125() -> None:
    addresses = (0, 2, 30, 40, *range(200, 340, 10))  # gaps of 8 join, of 26 do not; spans stop at 125
    signals = {f"s{i}": {"address": a, "type": "float32"} for i, a in enumerate(addresses)}
    doc = driver_doc(502)
    # One machine per register, so the catalogue signal may repeat.
    doc["machines"] = [
        {"path": f"a/b/c/m{i}", "kind": "x", "signals": {"oil_temp": spec}} for i, spec in enumerate(signals.values())
    ]
    blocks = modbus_config(doc, "t").blocks()
    assert [(b.address, b.count) for b in blocks] == [(0, 4), (30, 12), (200, 122), (330, 2)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--driver", "missing.yaml"], "missing.yaml: no such driver file"),
        (["--driver", "x.yaml", "--replay", "x.csv", "--speed", "60"], "--replay, --speed: not with --driver"),
        (["--driver", "bad.yaml"], "'driver' must be one of opcua, modbus, got 'profibus'"),
    ],
)
def test_birlik_gateway_rejects_a_broken_driver_command_line(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("driver: profibus\n")
    result = subprocess.run(
        [*birlik_command(), "gateway", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_example_file_is_a_valid_modbus_driver() -> None:
    driver = load_driver(Path(__file__).resolve().parents[1] / "gateway" / "examples" / "modbus.yaml")
    assert isinstance(driver, ModbusDriver) and driver.machines()


@pytest.mark.slow
async def test_birlik_gateway_with_a_modbus_driver_file_writes_converted_values_to_influxdb(
    config: Config, influx: InfluxClient, tmp_path: Path
) -> None:
    port = free_port()
    holding, inputs = registers()
    doc = driver_doc(port, gateway="gw-modbus-test")
    doc["machines"] = doc["machines"][:1]
    driver_file = tmp_path / "modbus.yaml"
    driver_file.write_text(yaml.safe_dump(doc))
    async with running_ingest(config) as ingest, modbus_server(port, holding, inputs):
        before = int(time.time() * 1000)
        process = await asyncio.create_subprocess_exec(
            *birlik_command(),
            "gateway",
            "--driver",
            str(driver_file),
            "--seconds",
            "3",
            stderr=subprocess.PIPE,
            env={**os.environ, "BIRLIK_MQTT_URL": config.mqtt.url},
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
        after = int(time.time() * 1000)
        log = stderr.decode()
        assert process.returncode == 0, log
        assert "modbus: connected to modbus://127.0.0.1" in log, log  # exit status 0: every message acknowledged
        await wait_for(lambda: ingest.stats.readings_written >= 7 * 5, 20)
        written = -1
        while ingest.stats.readings_written != written:  # until the last messages are in too
            written = ingest.stats.readings_written
            await asyncio.sleep(0.5)
    assert ingest.stats.readings_rejected == 0 and ingest.stats.messages_rejected == 0  # units as declared
    [series] = influx.query('SELECT * FROM "telemetry" GROUP BY "machine"')
    assert series.tags["machine"] == COMP.machine
    rows = series.records()
    assert 5 <= len(rows) <= 20 and len(rows) * 7 == written  # 3 s at 200 ms: about 15 polls
    for row in rows:
        assert before <= row.pop("time") <= after
        values = {k: v for k, v in row.items() if v is not None and k not in {"tenant", "site", "line", "kind"}}
        assert values == approx(EXPECTED)
