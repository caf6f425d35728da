"""The alarm lifecycle (ISA-18.2) as pure bookkeeping, and its store and outbox on disk."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.alarms import Lifecycle, LifecycleSettings, Verdict, alarm_rate
from analytics.alarmservice import MACHINE_DASHBOARD_UID, dashboard_link, describe_signal, priority_of
from analytics.alarmstore import AlarmStore
from analytics.notifier import Notifier
from birlik.alarm import (
    Alarm,
    Command,
    alarm_topic,
    decode_alarm,
    decode_command,
    decode_state,
    encode_state,
    state_topic,
)
from birlik.payload import PayloadError
from birlik.topics import MachinePath
from tests.test_payload_fuzz import JUNK, Obj, fuzz, to_bytes

PUMP = MachinePath("acme", "kz-turkestan", "line-1", "pump-302")
T0 = 1_763_800_000_000
BAD = Verdict(True, "medium", "pump-302: bearing temp abnormal", "bearing_temp 71 degC")
GOOD = Verdict(False)


def feed(life: Lifecycle, pattern: str, *, start: int = 0, step_ms: int = 1000) -> list[Alarm]:
    """``pattern``: one character a sample, ``x`` abnormal, ``.`` normal."""
    out: list[Alarm] = []
    for i, c in enumerate(pattern):
        out += life.observe(PUMP, "condition", T0 + (start + i) * step_ms, BAD if c == "x" else GOOD)
    return out


def test_raise_acknowledge_return_close() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=3, window=5, clear_after=4))
    raised = feed(life, "..xxx")
    assert [(a.transition, a.state, a.seq) for a in raised] == [("raised", "unack_active", 1)]
    alarm = raised[0]
    acked, said = life.command(Command("acknowledge", alarm.alarm_id, user="aigerim", comment="on my way"), T0 + 9000)
    assert [(a.transition, a.state, a.user) for a in acked] == [("acknowledged", "ack_active", "aigerim")]
    assert "aigerim" in said
    back = feed(life, "....", start=10)
    assert [(a.transition, a.state) for a in back] == [("returned", "normal")]
    assert life.open_alarms() == []


def test_a_return_before_acknowledgement_waits_for_it() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=3, window=5, clear_after=4))
    alarm = feed(life, "xxx")[0]
    assert [(a.transition, a.state) for a in feed(life, "....", start=3)] == [("returned", "unack_rtn")]
    assert life.open_alarms()[0].state == "unack_rtn"
    done, _ = life.command(Command("acknowledge", alarm.alarm_id), T0 + 10_000)
    assert [(a.transition, a.state) for a in done] == [("acknowledged", "normal")]


def test_a_chattering_signal_raises_one_alarm_for_an_hour() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=5, window=10, clear_after=20, cooldown_s=600))
    # Over the threshold every few samples, for an hour at 1 Hz.
    out = feed(life, ("xx..x.x..x" * 360))
    assert [a.transition for a in out] == ["raised"]
    # It stops chattering: one return; chattering again within the cooldown is the same alarm.
    out = feed(life, "." * 30 + "xx..x.x..x" * 3, start=3600)
    assert [a.transition for a in out] == ["returned", "reactivated"]
    assert len({a.alarm_id for a in out}) == 1


def test_priority_rises_never_falls_while_active() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=1, window=1, clear_after=3))
    out = []
    for i, p in enumerate(["medium", "high", "medium", "critical", "high"]):
        out += life.observe(PUMP, "condition", T0 + i, Verdict(True, p))  # type: ignore[arg-type]
    assert [(a.transition, a.priority) for a in out] == [
        ("raised", "medium"),
        ("severity", "high"),
        ("severity", "critical"),
    ]


def test_trip_is_immediate_and_critical_and_planned_stop_suppresses() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=2, window=3, clear_after=2))
    trip = life.machine_state(PUMP, "fault", T0)
    assert [(a.kind, a.transition, a.priority) for a in trip] == [("trip", "raised", "critical")]
    assert life.machine_state(PUMP, "fault", T0 + 1) == []  # one alarm per machine and kind
    assert [a.transition for a in life.machine_state(PUMP, "running", T0 + 2)] == ["returned"]
    cond = feed(life, "xx", start=5)
    assert [a.transition for a in cond] == ["raised"]
    stopped = life.machine_state(PUMP, "stopped", T0 + 10_000)
    assert [(a.kind, a.transition, a.state) for a in stopped] == [("condition", "suppressed", "suppressed")]
    assert feed(life, "xxxxx", start=20) == []  # nothing raised during the planned stop
    resumed = life.machine_state(PUMP, "running", T0 + 40_000)
    assert [(a.transition, a.state) for a in resumed] == [("cleared", "normal")]


def test_shelving_silences_until_the_shelf_expires() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=2, window=3, clear_after=2))
    alarm = feed(life, "xx")[0]
    shelved, _ = life.command(Command("shelve", alarm.alarm_id, duration_s=3600, user="timur"), T0 + 2000)
    assert [(a.state, a.shelved_until_ms) for a in shelved] == [("shelved", T0 + 2000 + 3_600_000)]
    assert feed(life, "xx..xx" * 100, start=3) == []  # silenced
    assert life.tick(T0 + 3_000_000) == []
    expired = life.tick(T0 + 3_700_000)
    assert [(a.transition, a.state, a.comment) for a in expired] == [("unshelved", "unack_active", "shelf expired")]


def test_unacknowledged_alarms_escalate_once() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=1, window=1, escalate_after_s=1800))
    feed(life, "x")
    assert life.tick(T0 + 1_000_000) == []
    up = life.tick(T0 + 1_900_000)
    assert [(a.transition, a.state) for a in up] == [("escalated", "unack_active")]
    assert life.tick(T0 + 9_000_000) == []


def test_stale_machine() -> None:
    life = Lifecycle()
    assert [a.kind for a in life.stale(PUMP, T0, silent_s=400)] == ["stale"]
    assert life.stale(PUMP, T0 + 1, silent_s=500) == []
    assert [a.transition for a in life.stale(PUMP, T0 + 2, silent_s=None)] == ["returned"]


def test_alarm_rate_counts_floods() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=1, window=1))
    raised = []
    for i in range(15):
        path = MachinePath("acme", "kz-turkestan", "line-1", f"pump-{i}")
        raised += life.observe(path, "condition", T0 + i * 1000, Verdict(True))
    figures = alarm_rate(raised)
    assert figures["alarms"] == 15 and figures["peak_10min"] == 15 and figures["floods"] == 1


def test_store_restores_open_alarms_without_new_transitions(tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "alarms.sqlite")
    life = Lifecycle(LifecycleSettings(raise_after=2, window=3, clear_after=3))
    out = feed(life, "xx")
    out += life.command(Command("acknowledge", out[0].alarm_id, user="aigerim"), T0 + 5000)[0]
    store.commit(out, ["webhook"])
    store.close()

    again = AlarmStore(tmp_path / "alarms.sqlite")
    restored = Lifecycle(LifecycleSettings(raise_after=2, window=3, clear_after=3))
    restored.restore(again.latest())
    assert [(a.alarm_id, a.state, a.seq) for a in restored.open_alarms()] == [(out[0].alarm_id, "ack_active", 2)]
    assert feed(restored, "xxxx", start=10) == []  # still the same open alarm: nothing new
    assert [a.transition for a in feed(restored, "...", start=20)] == ["returned"]
    assert [a.key for a in again.transitions()] == [a.key for a in out]


class Recorder:
    def __init__(self, name: str, fail_first: int = 0, slow_s: float = 0.0) -> None:
        self.name = name
        self.fail_first = fail_first
        self.slow_s = slow_s
        self.got: list[str] = []
        self.lock = threading.Lock()

    def send(self, alarm: Alarm) -> None:
        time.sleep(self.slow_s)
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                raise ConnectionError("down")
            self.got.append(alarm.key)

    def close(self) -> None:
        pass


def test_outbox_delivers_in_order_retries_and_a_slow_channel_delays_only_itself(tmp_path: Path) -> None:
    store = AlarmStore(tmp_path / "alarms.sqlite")
    life = Lifecycle(LifecycleSettings(raise_after=1, window=1, clear_after=1))
    alarms = feed(life, "x.x.x.")
    flaky, slow, quick = Recorder("flaky", fail_first=2), Recorder("slow", slow_s=0.3), Recorder("quick")
    notifier = Notifier(store, [flaky, slow, quick], max_backoff_s=0.2)
    notifier.start()
    store.commit(alarms, notifier.names)
    notifier.wake()
    deadline = time.monotonic() + 1.0
    while len(quick.got) < len(alarms) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert quick.got == [a.key for a in alarms] and len(slow.got) < len(alarms)  # not held back by the slow one
    assert notifier.drain(20)
    assert flaky.got == slow.got == quick.got  # in order, each once, after the retries
    notifier.stop()
    assert store.outbox_counts() == {n: {"sent": len(alarms)} for n in ("flaky", "slow", "quick")}


def test_contract_round_trip_and_links() -> None:
    life = Lifecycle(LifecycleSettings(raise_after=1, window=1))
    alarm = life.observe(PUMP, "condition", T0, BAD)[0]
    assert decode_alarm(alarm_topic(PUMP), alarm.encode()) == alarm
    assert decode_state(state_topic(PUMP), encode_state(PUMP, [alarm], T0)) == [alarm]
    cmd = Command("shelve", alarm.alarm_id, user="u", comment="c", duration_s=60)
    assert decode_command(cmd.encode()) == cmd
    link = dashboard_link("http://grafana:3000/", PUMP, T0)
    assert link.startswith(f"http://grafana:3000/d/{MACHINE_DASHBOARD_UID}/") and "var-machine=pump-302" in link
    assert f"from={T0 - 6 * 3600_000}" in link and f"to={T0 + 3600_000}" in link
    from grafana._machine import UID

    assert UID == MACHINE_DASHBOARD_UID
    assert priority_of(7, 6) == "medium" and priority_of(13, 6) == "high" and priority_of(30, 6) == "critical"
    assert describe_signal("bearing_temp", 71.0, 53.0, 3.0) == (
        "bearing_temp 71 degC, 18 K above normal (53 degC), rising 3 K/h"
    )


@fuzz(300)
@given(document=st.dictionaries(st.text(max_size=12), JUNK, max_size=12), base=st.booleans())
def test_alarm_and_command_decoders_are_total(document: dict[str, Any], base: bool) -> None:
    if base:
        document = {"v": 1, "id": "a", "seq": 1, "kind": "condition", "state": "normal", "transition": "raised",
                    "priority": "low", "ts": 0, "title": "t", "text": "x", **document}  # fmt: skip
    payload = to_bytes(Obj(list(document.items())), False)
    for decode in (
        lambda: decode_alarm(alarm_topic(PUMP), payload),
        lambda: decode_state(state_topic(PUMP), payload),
        lambda: decode_command(payload),
    ):
        with contextlib.suppress(PayloadError):
            decode()


@pytest.mark.parametrize("payload", [b"", b"[]", b"\xff", b'{"v": 1, "action": "shelve", "alarm_id": "a"}'])
def test_bad_commands_are_refused(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_command(payload)


def test_a_planned_stop_suppresses_the_condition_not_the_sensors(tmp_path: Path) -> None:
    # A sensor's fault is not the machine's: a stop is when some of them show (an offset at
    # standstill), and the best time to fix them.
    from analytics.alarmservice import AlarmService
    from analytics.quality import SensorIssue
    from birlik.config import AlarmsConfig

    store = AlarmStore(tmp_path / "alarms.sqlite")
    service = AlarmService(AlarmsConfig(store=str(tmp_path / "alarms.sqlite")), store, [])
    issue = SensorIssue("vibration_rms", "offset", T0, "vibration_rms reads 1.1 mm/s at standstill")
    service.sample(PUMP, "centrifugal_pump", T0, {"state": "stopped"}, scored=None, sensor_issues=[issue])
    assert [(a.kind, a.transition) for a in store.transitions()] == [("sensor", "raised")]
    service.sample(PUMP, "centrifugal_pump", T0 + 60_000, {"state": "running"}, scored=None, sensor_issues=[issue])
    service.sample(PUMP, "centrifugal_pump", T0 + 120_000, {"state": "stopped"}, scored=None, sensor_issues=[issue])
    assert [(a.kind, a.transition) for a in store.transitions()] == [("sensor", "raised")]  # not suppressed
    service.sample(PUMP, "centrifugal_pump", T0 + 180_000, {"state": "stopped"}, scored=None, sensor_issues=[])
    assert [(a.kind, a.transition) for a in store.transitions()] == [("sensor", "raised"), ("sensor", "returned")]
    service.close(drain_s=0)


def test_progress_is_saved_a_row_per_machine_that_moved_and_read_back(tmp_path: Path) -> None:
    import json
    import sqlite3

    from analytics.alarmservice import AlarmService
    from birlik.config import AlarmsConfig

    path = tmp_path / "alarms.sqlite"
    fleet = [MachinePath("acme", "tashkent", "line-1", f"m-{i}") for i in range(3)]
    service = AlarmService(AlarmsConfig(store=str(path)), AlarmStore(path), [])
    service.save_cursors({p: T0 for p in fleet}, {p: {"detector": {"n": i}} for i, p in enumerate(fleet)})
    db = sqlite3.connect(path)
    db.executescript(  # every row the service writes from now on, counted
        "CREATE TABLE writes (machine TEXT); CREATE TRIGGER counted AFTER UPDATE ON progress "
        "BEGIN INSERT INTO writes VALUES (new.machine); END;"
    )
    before = db.execute("SELECT machine, cursor, model FROM progress ORDER BY machine").fetchall()
    assert [(m, c) for m, c, _ in before] == [(str(p), T0) for p in fleet]
    # Only m-1 moved: only its row changes; a model given for a machine that did not move
    # is saved with the cursor it has.
    service.save_cursors({p: T0 + (1000 if p is fleet[1] else 0) for p in fleet}, {fleet[2]: {"detector": {"n": 9}}})
    service.close(drain_s=0)
    assert sorted(m for (m,) in db.execute("SELECT machine FROM writes")) == [str(fleet[1]), str(fleet[2])]
    after = dict((m, (c, json.loads(x))) for m, c, x in db.execute("SELECT machine, cursor, model FROM progress"))
    assert after == {
        str(fleet[0]): (T0, {"detector": {"n": 0}}),
        str(fleet[1]): (T0 + 1000, {"detector": {"n": 1}}),  # its model kept
        str(fleet[2]): (T0, {"detector": {"n": 9}}),
    }
    again = AlarmService(AlarmsConfig(store=str(path)), AlarmStore(path), [])
    assert [again.cursor(p) for p in fleet] == [T0, T0 + 1000, T0]
    assert again.model(fleet[2]) == {"detector": {"n": 9}}
    again.close(drain_s=0)


def test_a_store_of_the_earlier_layout_is_read_as_it_was(tmp_path: Path) -> None:
    import json
    import sqlite3

    from analytics.alarmservice import AlarmService
    from birlik.config import AlarmsConfig

    path = tmp_path / "alarms.sqlite"
    store = AlarmStore(path)
    with sqlite3.connect(path) as db:  # as the earlier version wrote them
        db.execute("INSERT INTO state VALUES ('cursor', ?)", (json.dumps({str(PUMP): T0}),))
        db.execute("INSERT INTO state VALUES ('models', ?)", (json.dumps({str(PUMP): {"detector": {"n": 1}}}),))
    service = AlarmService(AlarmsConfig(store=str(path)), store, [])
    assert (service.cursor(PUMP), service.model(PUMP)) == (T0, {"detector": {"n": 1}})
    service.save_cursors({PUMP: T0 + 5000})  # from then on, a row per machine
    service.close(drain_s=0)
    again = AlarmService(AlarmsConfig(store=str(path)), AlarmStore(path), [])
    assert again.cursor(PUMP) == T0 + 5000
    again.close(drain_s=0)
