"""The ingest's bookkeeping without servers: sequence tracking, redeliveries, batches, metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from birlik.config import Config, load_config
from birlik.payload import encode_telemetry
from birlik.topics import MachinePath
from ingest.mqtt import Delivery
from ingest.sequence import SequenceTracker
from ingest.service import IngestService
from ops.servers import free_port

PUMP = MachinePath("acme", "kz-turkestan", "line-1", "pump-1")
TS = 1_763_800_000_000


def _config(tmp_path: Path, **ingest: str) -> Config:
    env = {"BIRLIK_INGEST_DEAD_LETTERS": str(tmp_path / "dead.jsonl")}
    return load_config(env=env | {f"BIRLIK_INGEST_{k.upper()}": v for k, v in ingest.items()})


def _delivery(seq: int, *, boot: str | None = "b1", mid: int = 1, payload: bytes | None = None) -> Delivery:
    body = payload or encode_telemetry(
        gateway="gw-1", boot=boot, seq=seq, samples=[(TS + seq, {"bearing_temp": 50.0, "vibration_rms": 2.0})]
    )
    return Delivery(PUMP.topic(), body, mid, 1, 1, False, False)


def test_sequence_tracker_tells_new_repeated_and_missing() -> None:
    t = SequenceTracker()
    assert [t.observe("gw", "b1", n) for n in (1, 2, 5)] == [True, True, True]
    assert t.missing == 2 and t.gaps("gw", "b1") == [(3, 4)]
    assert t.observe("gw", "b1", 4) is True  # late, fills part of the gap
    assert t.gaps("gw", "b1") == [(3, 3)]
    assert t.observe("gw", "b1", 2) is False  # seen before: a redelivery
    assert t.observe("gw", "b2", 1) is True  # a new boot starts its own sequence
    assert t.repeats == 1 and t.missing == 1


def test_sequence_tracker_is_bounded() -> None:
    t = SequenceTracker(max_streams=3, max_missing=10)
    t.observe("gw", "b1", 0)
    t.observe("gw", "b1", 10**12)  # a wild jump remembers at most max_missing gaps
    assert t.missing == 10**12 - 1
    assert len(t.gaps("gw", "b1")) == 1
    for i in range(10):
        t.observe(f"gw{i}", None, 1)
    assert len(t._streams) == 3


def test_a_gateway_without_boot_id_that_restarts_is_not_a_repeat() -> None:
    t = SequenceTracker()
    for n in range(1, 5000):
        t.observe("old-gw", None, n)
    assert t.observe("old-gw", None, 1) is True
    assert t.restarts == 1


def test_a_redelivered_message_is_batched_again_but_not_counted_twice(tmp_path: Path) -> None:
    service = IngestService(_config(tmp_path))
    service.handle(_delivery(1, mid=1))
    service.handle(_delivery(2, mid=2))
    service.handle(_delivery(1, mid=7))  # the broker sent seq 1 again (a new connection)
    s = service.stats
    assert s.messages_received == 3 and s.messages_redelivered == 1
    assert s.readings_accepted == 4
    batch = service._open
    assert len(batch.lines) == 3 and batch.new_readings == 4  # written again (idempotent), counted once
    assert [d.mid for d in batch.deliveries] == [1, 2, 7]  # every delivery will be acknowledged, in order


def test_rejected_messages_keep_their_place_in_the_acknowledgement_order(tmp_path: Path) -> None:
    service = IngestService(_config(tmp_path))
    service.handle(_delivery(1, mid=1))
    service.handle(_delivery(0, mid=2, payload=b"not json"))
    service.handle(_delivery(2, mid=3))
    batch = service._open
    assert [d.mid for d in batch.deliveries] == [1, 2, 3]
    assert batch.dead_lettered and service.stats.rejected_by_reason == {"not_json": 1}


def test_a_batch_is_sealed_at_half_the_window(tmp_path: Path) -> None:
    service = IngestService(_config(tmp_path, window="10", batch_size="1000"))
    for n in range(1, 12):
        service.handle(_delivery(n, mid=n))
    assert [len(b.deliveries) for b in service._sealed] == [5, 5]
    assert len(service._open.deliveries) == 1


def test_a_bug_on_one_message_becomes_a_dead_letter_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = IngestService(_config(tmp_path))

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr("ingest.service.telemetry_lines", broken)
    service.on_delivery(_delivery(1, mid=1))
    assert service.stats.rejected_by_reason == {"internal_error": 1}
    assert [d.mid for d in service._open.deliveries] == [1]


def test_metrics_are_served_for_prometheus(tmp_path: Path) -> None:
    service = IngestService(_config(tmp_path))
    service.handle(_delivery(1))
    service.handle(_delivery(2, payload=b"{}"))
    service._publish_stats(force=True)
    port = free_port()
    service.metrics.serve(f"127.0.0.1:{port}")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'birlik_ingest_messages_received_total{client_id="birlik-ingest"} 2.0' in text
    assert 'birlik_ingest_rejected_total{client_id="birlik-ingest",reason="missing_field"} 1.0' in text
    assert 'birlik_ingest_window_in_use{client_id="birlik-ingest"} 2.0' in text
    assert "birlik_ingest_write_seconds_bucket" in text


def test_each_batch_records_which_sequence_numbers_it_stores(tmp_path: Path) -> None:
    service = IngestService(_config(tmp_path, client_id="ing-a"))
    for seq in (1, 2, 3, 7, 8):
        service.handle(_delivery(seq, mid=seq))
    service.handle(_delivery(4, boot=None, mid=9))  # no boot id: nothing to repair from
    service._seal()
    records = [line for line in service._sealed[0].lines if line.startswith("sequence,")]
    assert [r.split(" ")[1] for r in records] == ["first=1i,last=3i", "first=7i,last=8i"]
    assert all("boot=b1" in r and "gateway=gw-1" in r and "ingest=ing-a" in r for r in records)
    stamps = [int(r.split(" ")[2]) for r in records]
    assert stamps[1] > stamps[0]  # each run is a point of its own


def test_influxdb_credentials_travel_in_a_header_never_in_the_url() -> None:
    import base64

    from birlik.influx import InfluxClient, InfluxSettings

    with InfluxClient(InfluxSettings(url="http://127.0.0.1:1", username="writer", password="pw")) as client:
        request = client._http.build_request("POST", "/write", params={"db": "birlik"})
        request = next(client._http.auth.sync_auth_flow(request))  # type: ignore[union-attr]
    assert "pw" not in str(request.url) and "writer" not in str(request.url)
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(b"writer:pw").decode()
    with InfluxClient(InfluxSettings(url="http://127.0.0.1:1", token="t0ken")) as client:
        request = client._http.build_request("POST", "/write", params={"db": "birlik"})
    assert request.headers["Authorization"] == "Token t0ken" and "t0ken" not in str(request.url)


class _Consumer:
    """What the service asks of its MQTT consumer, recorded."""

    def __init__(self) -> None:
        self.paused = False
        self.acked: list[int] = []

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def ack(self, delivery: Delivery) -> bool:
        self.acked.append(delivery.mid)
        return True


def test_a_full_window_stops_reading_until_acknowledgements_free_it(tmp_path: Path) -> None:
    # Mosquitto 2.0 can send past the Receive Maximum while it drains a queue: the service
    # itself stops reading when it holds a full window.
    service = IngestService(_config(tmp_path, window="4", batch_size="1000"))
    consumer = _Consumer()
    service._consumer = consumer  # type: ignore[assignment]
    for n in range(1, 4):
        service.handle(_delivery(n, mid=n))
    assert not consumer.paused
    service.handle(_delivery(4, mid=4))
    assert consumer.paused and service._in_hand == 4
    service._acknowledge(service._sealed.popleft())
    service._acknowledge(service._sealed.popleft())
    assert not consumer.paused and service._in_hand == 0
    assert consumer.acked == [1, 2, 3, 4]
