"""``birlik bench ingest``: its MQTT packets, its messages, its Node-RED flow, and a tiny run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from birlik.lineprotocol import telemetry_lines
from birlik.payload import decode_telemetry
from ops import bench_ingest as b
from ops.servers import Mosquitto

ROOT = Path(__file__).resolve().parent.parent


# --- packets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_remaining_length_is_mqtts_variable_byte_integer(n: int, encoded: str) -> None:
    assert b.remaining_length(n).hex() == encoded


def test_remaining_length_out_of_range() -> None:
    with pytest.raises(ValueError):
        b.remaining_length(268_435_456)


def test_publish_packet_bytes() -> None:
    packet = b.encode_publish("a/b", b"hi", 10)
    # PUBLISH, QoS 1; remaining length 9 = topic (2 + 3) + packet id (2) + payload (2)
    assert packet == bytes([0x32, 9, 0, 3]) + b"a/b" + bytes([0, 10]) + b"hi"
    assert b.encode_puback(258) == bytes([0x40, 2, 1, 2])


def test_packet_ids_cycle_through_1_to_65535() -> None:
    assert [b.packet_id(i) for i in (0, 1, 65_533, 65_534, 65_535, 65_536)] == [1, 2, 65_534, 65_535, 1, 2]
    with pytest.raises(ValueError):
        b.encode_publish("t", b"", 0)
    with pytest.raises(ValueError):
        b.encode_publish("t", b"", 65_536)


def test_pre_encoded_publishes_decode_to_their_topics_payloads_and_ids() -> None:
    single, _ = b.make_workloads(52)
    stream = b"".join(single.packets)
    packets, used = b.split_packets(stream)
    assert used == len(stream) and len(packets) == single.messages
    for k, packet in enumerate(packets):
        publish = b.parse_publish(packet)
        assert (publish.topic, publish.payload) == (single.topics[k], single.payloads[k])
        assert publish.qos == 1 and publish.packet_id == b.packet_id(k)


def test_split_packets_waits_for_whole_packets() -> None:
    big = b.encode_publish("birlik/t", bytes(300), 7)  # a two-byte remaining length
    stream = big + b.encode_puback(7) + big
    for cut in range(len(stream) + 1):
        first, used = b.split_packets(stream[:cut])
        rest, used2 = b.split_packets(stream[used:])
        assert used + used2 == len(stream)
        assert [p.type for p in first + rest] == [b.PUBLISH, b.PUBACK, b.PUBLISH]


# --- the messages -----------------------------------------------------------------------------


def test_both_shapes_carry_the_same_valid_samples() -> None:
    single, batched = b.make_workloads(520)
    assert single.messages == 520 and batched.messages == 52
    assert single.expected == batched.expected
    assert single.points == 520 and single.readings == batched.readings == 520 * len(b.SIGNALS)
    assert single.checksum == sum(range(1, 521))  # count_good of the k-th sample published is k
    assert len({t.split("/")[4] for t in single.topics}) == b.MACHINES
    for workload in (single, batched):
        seqs, kept = [], 0
        for topic, payload in zip(workload.topics, workload.payloads, strict=True):
            telemetry = decode_telemetry(topic, payload)
            assert not telemetry.rejections
            assert len(telemetry.samples) == workload.samples_per_message
            assert all(len(s.values) == len(b.SIGNALS) for s in telemetry.samples)
            seqs.append(telemetry.seq)
            kept += telemetry.reading_count
        assert seqs == list(range(1, workload.messages + 1)) and kept == workload.readings
    lines = b.line_protocol(single)
    assert len(lines) == 520 and b.line_protocol(batched) == lines  # the same points, in publishing order
    assert lines[0] == next(iter(telemetry_lines(decode_telemetry(single.topics[0], single.payloads[0]))))


def test_paced_messages_carry_the_time_they_are_due() -> None:
    paced = b.make_paced(100, 1.0, start=1_800_000_000.0)
    assert paced.messages == 100 and paced.schedule is not None
    assert paced.schedule[:3] == [1_800_000_000.0, 1_800_000_000.01, 1_800_000_000.02]
    for topic, payload, due in zip(paced.topics, paced.payloads, paced.schedule, strict=True):
        (sample,) = json.loads(payload)["samples"]
        assert abs(sample["ts"] - due * 1000) < 1.5, topic


def test_latency_from_polls_of_each_machines_newest_point() -> None:
    paced = b.make_paced(26, 2.0, start=1000.0)  # two points per machine, at 1000.0 + k/26 s
    first, second = {m: ts[0] for m, ts in paced.timelines.items()}, {m: ts[1] for m, ts in paced.timelines.items()}
    assert paced.visible(first) == 26 and paced.visible(second) == 52
    latencies = b.latencies_ms(paced, 1000.0, [(1001.0, first), (1002.2, second)])
    assert len(latencies) == 52
    # cv-001's first point (due at 1000.0) was seen at 1001.0: visible between its time and then.
    assert latencies[0] == pytest.approx(500, abs=1)
    assert b.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0 and b.percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


# --- the Node-RED flow --------------------------------------------------------------------------


def test_nodered_versions_are_pinned() -> None:
    deps = json.loads((ROOT / "ops" / "nodered" / "package.json").read_text())["dependencies"]
    assert set(deps) == {"node-red", "node-red-contrib-influxdb"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in deps.values()), deps
    assert deps["node-red"].startswith("4.")


def test_nodered_flow_is_the_users_flow_pointed_at_the_bench_servers() -> None:
    flow = b.nodered_flow(18830, 18086, "nodered")
    nodes = {n["id"]: n for n in flow}
    by_type = {n["type"]: n for n in flow}
    broker, influx = by_type["mqtt-broker"], by_type["influxdb"]
    assert (broker["broker"], broker["port"]) == ("127.0.0.1", "18830")
    assert (influx["hostname"], influx["port"], influx["database"], influx["influxdbVersion"]) == (
        "127.0.0.1",
        "18086",
        "nodered",
        "1.x",
    )
    mqtt_in = by_type["mqtt in"]
    assert (mqtt_in["topic"], mqtt_in["qos"], mqtt_in["broker"]) == (b.TOPIC_FILTER, "1", broker["id"])
    chain, node = [], mqtt_in
    while node["wires"]:
        (next_ids,) = node["wires"]
        node = nodes[next_ids[0]]
        chain.append(node["type"])
    assert chain == ["function", "join", "influxdb batch"]
    join = by_type["join"]
    assert (join["mode"], join["build"], join["count"], join["timeout"]) == ("custom", "array", "500", "1")
    assert by_type["influxdb batch"]["precision"] == "ms"
    settings = b.nodered_settings(Path("/tmp/x"), 1880)
    assert "httpAdminRoot: false" in settings and 'uiHost: "127.0.0.1"' in settings


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_nodered_function_turns_a_birlik_message_into_points() -> None:
    _, batched = b.make_workloads(260)
    func = next(n for n in b.nodered_flow(1883, 8086, "nodered") if n["type"] == "function")["func"]
    script = (
        f"const msg = {{topic: {json.dumps(batched.topics[0])}, payload: {batched.payloads[0].decode()}}};\n"
        f"const out = (function (msg) {{\n{func}\n}})(msg);\n"
        "console.log(JSON.stringify(out));"
    )
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30, check=True)
    (points,) = json.loads(done.stdout)
    message = json.loads(batched.payloads[0])
    assert len(points) == b.BATCH_SAMPLES
    _, tenant, site, line, machine, _ = batched.topics[0].split("/")
    for point, sample in zip(points, message["samples"], strict=True):
        assert point["payload"] == {
            "measurement": "telemetry",
            "tags": {"tenant": tenant, "site": site, "line": line, "machine": machine},
            "fields": sample["values"],
            "timestamp": sample["ts"],
        }


# --- over the real broker ---------------------------------------------------------------------


@pytest.mark.slow
def test_raw_publisher_delivers_every_message_once_to_paho(mosquitto: Mosquitto) -> None:
    single, _ = b.make_workloads(520)
    received: list[tuple[str, bytes, int]] = []
    subscribed, all_in = threading.Event(), threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        received.append((message.topic, message.payload, message.qos))
        if len(received) == single.messages:
            all_in.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-bench-paho", protocol=mqtt.MQTTv311)
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        client.subscribe(b.TOPIC_FILTER, qos=1)
        assert subscribed.wait(10)
        publisher = b.RawPublisher(mosquitto.host, mosquitto.port, "test-bench-raw", window=16)
        publisher.run(single.packets)
        assert publisher.acked == publisher.sent == single.messages
        assert all_in.wait(30)
    finally:
        client.loop_stop()
        client.disconnect()
    assert sorted(received) == sorted(zip(single.topics, single.payloads, [1] * single.messages, strict=True))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_bench_ingest_birlik_part_runs_and_loses_nothing(tmp_path: Path) -> None:
    """The benchmark's birlik part on a tiny stream: a well-formed RESULT line, nothing lost."""
    done = subprocess.run(
        [
            *[sys.executable, "-m", "ops.cli"],
            *["bench", "ingest", "--no-nodered", "--messages", "260", "--paced-seconds", "1"],
            *["--state-dir", str(tmp_path / "state"), "--timeout", "60"],
        ],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    keys = [
        "single_mps",
        "nodered_single_mps",
        "ratio_nodered_single",
        "batched_rps",
        "nodered_batched_rps",
        "ratio_nodered_batched",
        "db_bulk_rps",
        "ratio_db",
        "broker_qos1_mps",
        "lost",
        "duplicated",
        "peak_rss_mb",
        "p50_ms",
        "p99_ms",
    ]
    ratios = {"ratio_nodered_single", "ratio_nodered_batched", "ratio_db"}
    pattern = "RESULT ingest " + " ".join(f"{k}=" + (r"\d+\.\d\d" if k in ratios else r"\d+") for k in keys)
    assert re.fullmatch(pattern, last), last
    result = dict(item.split("=") for item in last.split()[2:])
    assert result["lost"] == "0" and result["duplicated"] == "0"
    assert int(result["single_mps"]) > 0 and int(result["batched_rps"]) > 0 and int(result["db_bulk_rps"]) > 0
    assert int(result["broker_qos1_mps"]) > 0 and int(result["peak_rss_mb"]) > 0
    assert int(result["p99_ms"]) >= int(result["p50_ms"]) > 0
    assert result["nodered_single_mps"] == "0" and result["ratio_nodered_single"] == "0.00"
