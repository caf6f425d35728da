"""The gateway-health decoder is total: any bytes on any topic give a report or a PayloadError."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from birlik.config import load_config
from birlik.health import HEALTH_FIELDS, GatewayHealth, decode_health, encode_health
from birlik.lineprotocol import encode_point
from birlik.payload import MIN_TS_MS, PayloadError, Reason
from birlik.topics import gateway_topic
from ingest.mqtt import Delivery
from ingest.service import IngestService
from tests.test_payload_fuzz import (
    JUNK,
    NAME,
    NUMBERS,
    TEXT,
    Obj,
    fuzz,
    maybe,
    repeats_a_key,
    to_bytes,
)

NOW_MS = 1_763_800_000_000
TOPIC = gateway_topic("gw-1", "health")


def decode(topic: str, payload: bytes) -> GatewayHealth | PayloadError:
    try:
        health = decode_health(topic, payload, now_ms=NOW_MS)
    except PayloadError as error:
        assert isinstance(error.reason, Reason) and error.detail
        return error
    # What is accepted can be written as one point of the ``gateway`` measurement.
    assert set(health.fields) == set(HEALTH_FIELDS)
    for key, value in health.fields.items():
        assert type(value) is (int if HEALTH_FIELDS[key] else float)
        assert value >= 0 and math.isfinite(value)
    encode_point("gateway", {"gateway": health.gateway, "boot": health.boot}, health.fields, health.ts_ms)
    return health


VALID: dict[str, st.SearchStrategy[Any]] = {
    "v": st.just(1),
    "gateway": st.just("gw-1"),
    "boot": NAME,
    "ts": st.integers(MIN_TS_MS, NOW_MS),
    **{
        key: st.integers(0, 2**63 - 1) if count else st.floats(0, 1e12) | st.integers(0, 10**6)
        for key, count in HEALTH_FIELDS.items()
    },
}


@st.composite
def documents(draw: st.DrawFn) -> Obj:
    pairs = [(key, maybe(draw, draw(valid), st.one_of(NUMBERS, TEXT, JUNK))) for key, valid in VALID.items()]
    if draw(st.integers(0, 9)) == 0:
        pairs.remove(draw(st.sampled_from(pairs)))
    if draw(st.integers(0, 9)) == 0:
        pairs.append(draw(st.sampled_from(pairs)))
    if draw(st.integers(0, 4)) == 0:
        pairs.append(("firmware", draw(JUNK)))  # a field a later gateway adds: ignored
    return Obj(draw(st.permutations(pairs)))


@fuzz(400)
@given(document=documents(), ascii_only=st.booleans())
def test_damaged_health_reports_decode_or_raise_payload_error(document: Obj, ascii_only: bool) -> None:
    result = decode(TOPIC, to_bytes(document, ascii_only))

    if repeats_a_key(document):
        assert isinstance(result, PayloadError)


@fuzz(300)
@given(
    payload=st.binary(max_size=200),
    topic=st.one_of(st.just(TOPIC), st.text(max_size=60), st.just("birlik/_gateway/GW/health")),
)
def test_any_bytes_on_any_topic(payload: bytes, topic: str) -> None:
    assert isinstance(decode(topic, payload), GatewayHealth | PayloadError)


@fuzz(100)
@given(values=st.fixed_dictionaries({k: st.integers(0, 2**40) for k in HEALTH_FIELDS}), boot=NAME)
def test_round_trip(values: dict[str, int], boot: str) -> None:
    health = decode(TOPIC, encode_health("gw-1", boot, NOW_MS - 5, values))

    assert isinstance(health, GatewayHealth)
    assert (health.gateway, health.boot, health.ts_ms) == ("gw-1", boot, NOW_MS - 5)
    assert health.fields == {k: v if HEALTH_FIELDS[k] else float(v) for k, v in values.items()}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"buffer_depth": -1}, Reason.WRONG_TYPE),
        ({"buffer_depth": 2**64}, Reason.WRONG_TYPE),
        ({"publish_rate": 10**400}, Reason.WRONG_TYPE),
        ({"ts": NOW_MS + 2 * 24 * 3600 * 1000}, Reason.BAD_TIMESTAMP),
        ({"gateway": "gw-2"}, Reason.BAD_TOPIC),
        ({"v": 2}, Reason.UNSUPPORTED_VERSION),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], reason: Reason) -> None:
    import json

    body = json.loads(encode_health("gw-1", "b-1", NOW_MS, {}))
    result = decode(TOPIC, json.dumps(body | change).encode())
    assert isinstance(result, PayloadError) and result.reason == reason


def test_the_ingest_writes_health_reports_and_dead_letters_bad_ones(tmp_path: Path) -> None:
    config = load_config(env={"BIRLIK_INGEST_DEAD_LETTERS": str(tmp_path / "dead.jsonl")})
    service = IngestService(config)
    good = encode_health("gw-1", "b-1", NOW_MS, {"buffer_depth": 7, "publish_rate": 2.5})
    service.handle(Delivery(TOPIC, good, 1, 1, 1, False, False))
    service.handle(Delivery(TOPIC, b'{"v": 1}', 2, 1, 1, False, False))
    batch = service._open
    assert [d.mid for d in batch.deliveries] == [1, 2]  # both acknowledged after the write
    assert len(batch.lines) == 1 and batch.lines[0].startswith("gateway,boot=b-1,gateway=gw-1 ")
    assert "buffer_depth=7i" in batch.lines[0] and "publish_rate=2.5" in batch.lines[0]
    assert service.stats.gateway_health_reports == 1
    assert service.stats.rejected_by_reason == {"missing_field": 1} and batch.dead_lettered
