"""The gateway's disk log, store and forward, repair requests and the gap finder, without servers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from birlik.influx import Series
from birlik.payload import decode_telemetry, encode_telemetry
from birlik.topics import MachinePath
from gateway.buffer import ROW_OVERHEAD, DiskLog, read_log, replay_payload
from gateway.service import Forwarder
from ops.repair import GapFinder, holes, merge

TOPIC = MachinePath("acme", "kz-turkestan", "line-1", "pump-1").topic()
TS = 1_763_800_000_000


def _items(log: DiskLog, n: int) -> list[tuple[int, str, bytes, int]]:
    out = []
    for _ in range(n):
        seq = log.next_seq()
        payload = encode_telemetry(
            gateway="gw-t",
            boot=log.boot,
            seq=seq,
            kind="centrifugal_pump",
            samples=[(TS + seq, {"bearing_temp": 40.0})],
        )
        out.append((seq, TOPIC, payload, 1))
    return out


def test_each_opening_is_a_new_boot_numbered_from_1_and_the_log_survives(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    log = DiskLog(path)
    first_boot = log.boot
    entries = log.append_encoded(_items(log, 5))
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5] and log.depth == 5
    assert log.mark_acked([entries[0].id, entries[1].id]) == 2
    assert log.mark_acked([entries[0].id]) == 0  # a second PUBACK changes nothing
    log.close()

    log = DiskLog(path)
    assert log.boot != first_boot and log.boot.startswith("b2-")
    assert log.boots() == [first_boot, log.boot]
    assert log.depth == 3 and log.messages == 5
    assert [e.seq for e in log.backlog(0, 100)] == [3, 4, 5]
    assert log.next_seq() == 1  # the new boot starts at 1
    assert [e.seq for e in log.range(first_boot, 2, 4, 100)] == [2, 3, 4]
    assert log.count_range(first_boot, 4, 9) == 2
    log.close()
    assert len(read_log(path)) == 5


def test_full_log_evicts_acknowledged_first_then_drops_the_oldest_counted(tmp_path: Path) -> None:
    log = DiskLog(tmp_path / "gw.sqlite", max_bytes=20_000)
    entries = log.append_encoded(_items(log, 20))
    log.mark_acked([e.id for e in entries[:10]])
    log.append_encoded(_items(log, 200))
    assert log.bytes <= 20_000
    assert log.evicted == 10  # the acknowledged ones went first
    assert log.dropped > 0  # then the oldest unacknowledged, counted
    kept = log.entries()
    assert kept[-1].seq == 220 and kept[0].seq == 10 + log.dropped + 1  # oldest first
    assert log.messages == len(kept) == log.depth
    assert log.bytes == sum(len(e.payload) + len(e.topic) + ROW_OVERHEAD for e in kept)
    assert log.stats()["buffer_dropped"] == log.dropped


def test_retention_removes_old_messages(tmp_path: Path) -> None:
    log = DiskLog(tmp_path / "gw.sqlite", retention_s=0.05)
    entries = log.append_encoded(_items(log, 4))
    log.mark_acked([entries[0].id])
    time.sleep(0.1)
    log.prune(force=True)
    assert log.messages == 0 and log.depth == 0 and log.dropped == 3


def test_a_replayed_payload_is_the_same_message_marked_replay() -> None:
    payload = encode_telemetry(
        gateway="gw-t", boot="b1-x", seq=7, kind="centrifugal_pump", samples=[(TS, {"bearing_temp": 41.5})]
    )
    again = decode_telemetry(TOPIC, replay_payload(payload))
    live = decode_telemetry(TOPIC, payload)
    assert again.replay and not live.replay
    assert (again.seq, again.boot, again.samples) == (live.seq, live.boot, live.samples)


class FakePublisher:
    """The publisher's interface as the forwarder uses it, with a switch for the broker."""

    def __init__(self) -> None:
        from birlik.config import MqttConfig
        from gateway.publisher import PublishStats

        self.config = MqttConfig()
        self.stats = PublishStats()
        self.connected = False
        self.sent: list[tuple[int, bool]] = []
        self.inflight: set[int] = set()
        self.requests: list[bytes] = []
        self.max_pending = 10_000

    @property
    def pending(self) -> int:
        return len(self.inflight)

    def publish(self, topic: str, payload: bytes, readings: int, key: int, *, replay: bool = False) -> bool:
        if not self.connected or key in self.inflight:
            return False
        assert json.loads(payload).get("replay", False) is replay
        self.sent.append((key, replay))
        self.inflight.add(key)
        self.stats.messages += 1
        return True

    def in_flight(self, key: int) -> bool:
        return key in self.inflight

    def wait_window(self, timeout_s: float = 1.0) -> bool:
        return self.connected

    def take_acks(self) -> list[int]:
        acks, self.inflight = list(self.inflight), set()
        return acks

    def take_requests(self) -> list[bytes]:
        out, self.requests = self.requests, []
        return out


def _forwarder(tmp_path: Path, rate: float = 100) -> tuple[Forwarder, FakePublisher, DiskLog]:
    pub = FakePublisher()
    log = DiskLog(tmp_path / "gw.sqlite")
    fwd = Forwarder("gw-t", pub, log, drain_rate=rate)  # type: ignore[arg-type]
    return fwd, pub, log


def test_buffered_while_away_then_drained_in_order_at_the_rate_as_replays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fwd, pub, log = _forwarder(tmp_path, rate=100)
    for _ in range(5):
        fwd.live(_items(log, 20))  # the broker is away: nothing sent, all in the log
    assert pub.sent == [] and log.depth == 100
    pub.connected = True
    fwd.live(_items(log, 3))  # live messages go at once, not replayed
    assert [r for _, r in pub.sent[:3]] == [False] * 3  # (the drain may start in the same call)
    t0 = time.monotonic()
    while not fwd.drained and time.monotonic() - t0 < 5:
        fwd.pump()
        time.sleep(0.01)
    took = time.monotonic() - t0
    replays = [k for k, r in pub.sent if r]
    assert replays == sorted(replays) and len(replays) == 100  # in order, each once
    assert 0.6 < took < 4, took  # 100 messages at 100/s (a second saved up at most)
    assert log.depth == 0
    text = caplog.text
    assert text.count("broker unreachable, buffering to disk") == 1
    assert text.count("connected to the broker") + text.count("connected again") == 1


def test_repair_requests_republish_what_the_log_has_and_count_the_rest(tmp_path: Path) -> None:
    fwd, pub, log = _forwarder(tmp_path, rate=10_000)
    pub.connected = True
    fwd.live(_items(log, 10))
    fwd.pump()
    pub.sent.clear()
    pub.requests = [
        json.dumps({"v": 1, "boot": log.boot, "ranges": [[2, 3], [9, 12]]}).encode(),
        json.dumps({"v": 1, "boot": "b99-gone", "ranges": [[1, 5]]}).encode(),
        b"not json",
        json.dumps({"v": 1, "boot": log.boot, "ranges": [[5, 1]]}).encode(),
    ]
    for _ in range(3):
        fwd.pump()
    ids = {e.seq: e.id for e in log.entries()}
    assert pub.sent == [(ids[2], True), (ids[3], True), (ids[9], True), (ids[10], True)]
    assert fwd.repaired == 4 and fwd.repair_missing == 2 + 5


def _series(gateway: str, boot: str, rows: list[list[Any]]) -> Series:
    return Series(
        name="sequence", tags={"gateway": gateway, "boot": boot}, columns=["time", "first", "last"], values=rows
    )


def test_merge_and_holes() -> None:
    assert merge([(5, 9), (1, 2), (3, 3), (8, 12), (20, 20)]) == [(1, 3), (5, 12), (20, 20)]
    assert holes([(1, 3), (5, 12), (20, 20)], 20) == [(4, 4), (13, 19)]
    assert holes([(3, 4)], 10) == [(1, 2), (5, 10)]
    assert holes([], 0) == []


def test_gap_finder_merges_every_ingest_and_asks_once_per_boot_after_settling() -> None:
    now = int(time.time() * 1000)
    old, fresh = now - 60_000, now - 1000
    answers = [
        [
            # two ingest processes sharing the stream; 4..5 and 9 missing; 12..15 is too fresh to judge
            _series("gw-a", "b1", [[old, 1, 3], [old, 6, 8], [old + 1, 10, 10], [old + 2, 11, 11], [fresh, 16, 20]]),
            _series("gw-b", "b7", [[old, 1, 100]]),
        ]
    ]

    class Influx:
        def query(self, q: str) -> list[Series]:
            assert '"sequence"' in q
            return answers.pop(0) if answers else []

    finder = GapFinder(Influx(), settle_s=30, retry_s=60)  # type: ignore[arg-type]
    finder.read(now)
    due = finder.requests_due(now=100.0)
    assert due == [("gw-a", "b1", [(4, 5), (9, 9)])]
    assert finder.requested == 3
    answers.append([])
    finder.read(now)
    assert finder.requests_due(now=110.0) == []  # outstanding: not asked again before retry
    answers.append([_series("gw-a", "b1", [[now, 4, 5]])])
    finder.read(now)
    assert finder.requests_due(now=200.0) == [("gw-a", "b1", [(9, 9)])]
    assert finder.closed == 2
