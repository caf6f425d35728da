"""Any bytes on any topic, through the real broker into a real ingest process: thousands of
generated bad messages between good ones. Every good reading lands, every bad message or
reading is kept with the reason the contract gives it, and the process never restarts."""

from __future__ import annotations

import json
import random
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest

from birlik.payload import PayloadError, decode_telemetry
from birlik.topics import MachinePath
from ops.servers import Supervisor
from tests.ingest_procs import (
    READINGS_PER_MESSAGE,
    Publisher,
    count_readings,
    dead_letters,
    ingest_env,
    ingest_process,
    message,
    wait_until,
)

pytestmark = pytest.mark.slow

FUZZ = MachinePath("fuzz", "kz-turkestan", "line-9", "pump-9")
TS = 1_763_900_000_000
GOOD_VALUES = {"bearing_temp": 50.0, "vibration_rms": 2.0, "state": "running"}


def _valid(rng: random.Random, seq: int) -> dict[str, object]:
    return {
        "v": 1,
        "gateway": "gw-fuzz",
        "seq": seq,
        "units": {"bearing_temp": "degC", "vibration_rms": "mm/s"},
        "samples": [{"ts": TS + seq * 10, "values": dict(GOOD_VALUES)}],
    }


def _mutations(rng: random.Random, seq: int) -> bytes:
    """One bad (or partly bad) payload; every branch is a kind of input seen in the field."""
    base = _valid(rng, seq)
    text = json.dumps(base)
    choice = rng.randrange(24)
    if choice == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if choice == 1:
        return text[: rng.randrange(1, len(text))].encode()
    if choice == 2:
        return json.dumps(rng.choice([[], [1, 2], "text", 42, None, True, 1.5])).encode()
    if choice == 3:
        return text.replace('"bearing_temp": 50.0', '"bearing_temp": 1' + "0" * rng.choice([30, 400, 5000])).encode()
    if choice == 4:
        return text.replace("50.0", rng.choice(["1e400", "-1e400", "NaN", "Infinity", "-Infinity"])).encode()
    if choice == 5:
        depth = rng.choice([100, 5000, 100_000])
        return ("[" * depth + "]" * depth).encode()
    if choice == 6:
        return text.replace("gw-fuzz", "gw-\udc80fuzz").encode("utf-8", "surrogatepass")
    if choice == 7:
        return b"\xef\xbb\xbf" + text.encode()
    if choice == 8:
        return text.encode("utf-16")
    if choice == 9:
        return text.replace('{"v": 1,', '{"v": 1, "v": 1,').encode()
    if choice == 10:
        return text.replace('"state": "running"', '"state": "running", "state": "fault"').encode()
    if choice == 11:
        state = rng.choice(["Running", "", "\ud800", "RUNNING", "run\nning"])
        return text.replace('"running"', json.dumps(state)).encode()
    if choice == 12:
        base["seq"] = rng.choice(["7", -1, 2**70, 1.5, None, True])
    elif choice == 13:
        base["v"] = rng.choice(["1", 2, 0, None, 1.0])
    elif choice == 14:
        base["samples"] = rng.choice([{}, [], "x", [1, 2], [{"ts": "now", "values": {"bearing_temp": 50.0}}]])
    elif choice == 15:
        sample = base["samples"][0]  # type: ignore[index]
        sample["ts"] = rng.choice([1.5e12, -1, 2**63, 10**20, 0, "1763900000000", None])
    elif choice == 16:
        sample = base["samples"][0]  # type: ignore[index]
        name = rng.choice(["bearing temp", "a,b=c", "x\ny", "", "Bearing_Temp", "é", '"quoted"', "\\"])
        sample["values"][name] = 1.0
    elif choice == 17:
        sample = base["samples"][0]  # type: ignore[index]
        sample["values"]["bearing_temp"] = rng.choice(["50", "50\nother=1", [50], {"x": 1}, None, True])
    elif choice == 18:
        base["units"] = rng.choice([{"bearing_temp": "degF", "vibration_rms": "mm/s"}, [], {"bearing_temp": 1}])
    elif choice == 19:
        samples = base["samples"]
        samples.append(dict(samples[0]))  # type: ignore[attr-defined]  # the same timestamp twice
    elif choice == 20:
        base["gateway"] = rng.choice(["", "GW", "gw 1", "gw/1", "x" * 100, 7])
    elif choice == 21:
        base["kind"] = rng.choice(["Pump", 3, "pump kind", "ok-kind"])
    elif choice == 22:
        base["samples"][0]["values"] = {"bearing_temp": 900.0, "motor_temp": -400}  # type: ignore[index]
    else:
        return json.dumps(base).encode() + rng.choice([b" trailing", b"}", b"\x00", b"\n{}"])
    return json.dumps(base, allow_nan=True).encode()


def _topic(rng: random.Random) -> str:
    if rng.random() < 0.9:
        return FUZZ.topic()
    return rng.choice(
        [
            "birlik/ACME/site/line/machine/telemetry",
            "birlik/a b/site/line/machine/telemetry",
            "birlik/é/site/line/machine/telemetry",
            "birlik/x=y,z/site/line/machine/telemetry",
            "birlik/" + "t" * 200 + "/site/line/machine/telemetry",
        ]
    )


def test_thousands_of_bad_messages_between_good_ones_over_the_real_broker(tmp_path: Path) -> None:
    rng = random.Random(20261201)
    db = f"fuzz_{uuid.uuid4().hex[:8]}"
    published: list[tuple[str, bytes]] = []
    good_readings = 0
    for seq in range(1, 4001):
        if seq % 4 == 0:
            published.append(message(seq // 4))
            good_readings += READINGS_PER_MESSAGE
        else:
            published.append((_topic(rng), _mutations(rng, seq)))
    published.insert(2000, (FUZZ.topic(), b"{" * 10 + b"\x00" * (20 * 1024 * 1024)))  # a 20 MB blob

    # What the contract says of every bad one: the expected dead letters, by reason.
    expected: Counter[str] = Counter()
    fuzz_readings = 0
    for topic, payload in published:
        try:
            t = decode_telemetry(topic, payload, max_bytes=256 * 1024)
        except PayloadError as exc:
            expected[exc.reason] += 1
            continue
        expected.update(r.reason for r in t.rejections)
        if t.path == FUZZ:
            fuzz_readings += t.reading_count
    assert sum(expected.values()) > 2500

    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto()
        influx = sup.start_influxdb()
        pub = Publisher(broker.host, broker.port)
        # A crasher left retained on the broker is the first thing a fresh ingest receives.
        retained = (FUZZ.topic(), b"[" * 200_000)
        pub.publish([retained], retain=True)
        expected["not_json"] += 1
        env = ingest_env(broker.url, influx.url, db, tmp_path, "fuzz", max_payload_bytes=str(256 * 1024))
        ingest = ingest_process(sup, env, tmp_path, "ingest").start()
        pub.publish(published)
        total = len(published) + 1
        wait_until(lambda: ingest.stats.get("messages_acked", 0) == total, timeout_s=120, what="all acknowledged")
        assert ingest.running and ingest.starts == [ingest.pid]
        assert count_readings(influx.url, db) == good_readings + fuzz_readings
        # Restarted on its session: the retained crasher is not delivered again.
        code, _ = ingest.terminate()
        assert code == 0
        ingest.start()
        ingest.kill(signal.SIGTERM)
        pub.publish([(FUZZ.topic(), b"")], retain=True)  # clears the retained message
        pub.close()

    kept = dead_letters(tmp_path / "fuzz.dead.jsonl")
    assert Counter(e["reason"] for e in kept) == expected
    assert all(e["detail"] for e in kept)
    assert "Traceback" not in ingest.log()
