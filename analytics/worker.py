"""The analytics worker: read new readings from InfluxDB, score them, store the scores,
raise alerts.

Each poll sends one request with a query per machine (``time > <that machine's last
scored sample>``), so a machine that stops reporting holds back no other. Machines are
discovered from the series in the database. Every scored sample becomes an ``anomaly``
point; alert transitions become ``alert`` points and go out through the alert channels.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analytics.alarmservice import AlarmService
from analytics.alerts import AlertChannel, AlertTracker
from analytics.detectors import Detector
from analytics.features import HEAT_LAWS, Heat, features
from analytics.quality import BATCH_MIN, DataQualityMonitor, SensorIssue
from analytics.reference import LineReferences
from analytics.refit import Refit
from analytics.rul import RulTracker
from analytics.stream import TelemetryStream, run_stream
from birlik import schema
from birlik.config import AnalyticsConfig
from birlik.influx import InfluxClient, InfluxUnavailable, quote_ident, quote_string
from birlik.lineprotocol import encode_point, format_field
from birlik.payload import Alert, Telemetry
from birlik.stats import StatsFile
from birlik.topics import MachinePath, TopicError

log = logging.getLogger("analytics")

#: Points per write request: well below InfluxDB's request size limit (25 MB by default).
WRITE_CHUNK = 10_000
#: Signal names as line-protocol string fields (a few dozen catalogue names).
_SIGNAL_FIELDS: dict[str, str] = {}


@dataclass
class AnalyticsStats:
    polls: int = 0
    samples_read: int = 0
    samples_scored: int = 0
    anomalous_samples: int = 0
    #: Sensor issues raised by the data-quality checks.
    sensor_issues: int = 0
    #: Machines whose detector went on from its saved state after a restart.
    models_restored: int = 0
    #: Machines whose data-quality checks went on from what they had learned before a restart.
    quality_restored: int = 0
    #: Models replaced by a refit (analytics.refit_every_h), and refits refused.
    refits: int = 0
    refits_refused: int = 0
    alerts_raised: int = 0
    alerts_cleared: int = 0
    machines: int = 0
    alerts_by_machine: dict[str, int] = field(default_factory=dict)
    last_ts_by_machine: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Machine:
    path: MachinePath
    kind: str
    detector: Detector
    last_ts: int
    #: Samples from this device time on count as thermally settled (None: not running).
    settled_from: int | None = 0
    #: Health indicator trend and remaining useful life.
    rul: RulTracker = field(default_factory=RulTracker)
    #: Sensor checks (stuck, dropout, out of range, spikes, drift, scaling, offset); None: off.
    quality: DataQualityMonitor | None = None
    #: Whether what ``quality`` learned is in the alarm store.
    quality_saved: bool = False
    model_ts: int | None = None  # last_ts when its detector state was last saved
    #: The measurement and tags of its anomaly points, in line protocol (built on first use).
    anomaly_head: str | None = None
    #: Smoothed squared currents, for the detector's heating laws (every sample feeds it).
    heat: Heat = field(default_factory=Heat)
    #: The refit policy (analytics.refit_every_h); None: the model is never refitted.
    refit: Refit | None = None

    @property
    def tags(self) -> dict[str, str]:
        p = self.path
        return {"tenant": p.tenant, "site": p.site, "line": p.line, "machine": p.machine}


def _issue_point(m: _Machine, issue: SensorIssue) -> str:
    """A sensor issue raised or cleared, as a point of the ``sensor_issue`` measurement."""
    tags = {
        "tenant": m.path.tenant,
        "site": m.path.site,
        "line": m.path.line,
        "machine": m.path.machine,
        "kind": m.kind,
        "signal": issue.signal,
        "issue": issue.kind,
        "state": issue.state,
    }
    return encode_point(schema.SENSOR_ISSUE, tags, {"detail": issue.detail, "started": issue.started_ms}, issue.ts_ms)


def _series_key_tags(key: str) -> dict[str, str]:
    # "telemetry,kind=x,line=y,..." -> tags; names are topic levels, which need no unescaping.
    return dict(part.split("=", 1) for part in key.split(",")[1:] if "=" in part)


class AnalyticsWorker:
    def __init__(
        self,
        influx: InfluxClient,
        config: AnalyticsConfig,
        *,
        detector_factory: Callable[[int], Detector],
        channels: Sequence[AlertChannel] = (),
        since_ms: int,
        max_rows: int = 5000,
        alarms: AlarmService | None = None,
    ) -> None:
        self.influx = influx
        self.config = config
        self.detector_factory = detector_factory
        self.channels = list(channels)
        self.since_ms = since_ms
        self.max_rows = max_rows
        #: The alarm lifecycle (ISA-18.2), stored and notified; None: alerts only.
        self.alarms = alarms
        #: How often the detectors' states are saved with the cursors (wall seconds).
        self.models_every_s = 60.0
        self._models_saved = time.monotonic()
        #: Samples handled since the cursors were last saved.
        self._unsaved = 0
        self.stats = AnalyticsStats()
        self.tracker = AlertTracker(
            raise_after=config.raise_after,
            clear_after=config.clear_after,
            threshold=config.threshold,
            detector=config.detector,
        )
        self._machines: dict[MachinePath, _Machine] = {}
        self._stats_file = StatsFile(config.stats_file or None)
        #: The lines' ambient readings: each machine's ambient sensor judged against its neighbours'.
        self.references = LineReferences()

    def discover(self) -> None:
        """Find machines that have reported since the last look."""
        series = self.influx.query(f"SHOW SERIES FROM {quote_ident(schema.TELEMETRY)}")
        for s in series:
            for (key,) in s.values:
                tags = _series_key_tags(key)
                try:
                    path = MachinePath(tags["tenant"], tags["site"], tags["line"], tags["machine"])
                except (KeyError, TopicError):
                    continue
                if path not in self._machines:
                    self.machine(path, tags.get("kind", ""))
        self.stats.machines = len(self._machines)

    def _restore_model(self, m: _Machine) -> None:
        """Go on with what the detector had learned before a restart (not relearning from
        whatever the machine does now, which may be a developing fault)."""
        saved = self.alarms.model(m.path) if self.alarms is not None else None
        load = getattr(m.detector, "load_state", None)
        if not isinstance(saved, dict) or load is None:
            return
        try:
            load(saved["detector"])
            settled = saved.get("settled_from", 0)
            m.settled_from = settled if isinstance(settled, int) or settled is None else 0
            m.heat.load_state(saved.get("heat"))
            if m.refit is not None:
                m.refit.load_state(saved.get("refit"))
            self.stats.models_restored += 1
        except (KeyError, ValueError) as exc:
            log.warning("%s: the saved detector state cannot be used (%s); learning again", m.path, exc)
            m.detector = self.detector_factory(self.config.warmup_samples)

    def _restore_quality(self, m: _Machine) -> None:
        """Go on with what the data-quality checks had learned before a restart (not
        learning a sensor that went bad meanwhile as normal)."""
        saved = self.alarms.quality(m.path) if self.alarms is not None and m.quality is not None else None
        if saved is None:
            return
        try:
            m.quality = DataQualityMonitor.loads(saved)
            m.quality_saved = True
            self.stats.quality_restored += 1
        except ValueError as exc:
            log.warning("%s: %s; the data-quality checks learn again", m.path, exc)

    def _models(self) -> dict[MachinePath, Any]:
        out: dict[MachinePath, Any] = {}
        for m in self._machines.values():
            if m.model_ts == m.last_ts:
                continue  # nothing scored since its last save
            m.model_ts = m.last_ts
            state = getattr(m.detector, "state", None)
            if callable(state):
                out[m.path] = {"detector": state(), "settled_from": m.settled_from, "heat": m.heat.state()}
                if m.refit is not None:
                    out[m.path]["refit"] = m.refit.state()
        return out

    def write(self, lines: list[str]) -> None:
        """Points to InfluxDB, at most ``WRITE_CHUNK`` a request (a request too large is refused)."""
        for i in range(0, len(lines), WRITE_CHUNK):
            self.influx.write(lines[i : i + WRITE_CHUNK])

    def _after_batch(self, machines: list[_Machine]) -> None:
        """Once the batch's points are written: the alarms' clock, and the cursors (with the
        detectors' states now and then) saved."""
        if self.alarms is None:
            return
        self.alarms.tick()
        now = time.monotonic()
        models = None
        if now - self._models_saved >= self.models_every_s and self._unsaved:
            models, self._models_saved = self._models(), now
        if self._unsaved:  # nothing scored since the last save: nothing to save
            self.alarms.save_cursors({m.path: m.last_ts for m in machines}, models)
            self._unsaved = 0
        for m in machines:  # saved once, when learned: it is not learned again
            if m.quality is not None and not m.quality_saved and not m.quality.learning:
                self.alarms.save_quality(m.path, m.quality.dumps())
                m.quality_saved = True

    def poll_once(self) -> int:
        """Score every new sample once; returns how many samples were read."""
        self.discover()
        machines = list(self._machines.values())
        if not machines:
            return 0
        statements = [
            f"SELECT * FROM {quote_ident(schema.TELEMETRY)} WHERE "
            f"tenant = {quote_string(m.path.tenant)} AND site = {quote_string(m.path.site)} AND "
            f"line = {quote_string(m.path.line)} AND machine = {quote_string(m.path.machine)} AND "
            f"time > {m.last_ts}ms ORDER BY time ASC LIMIT {self.max_rows}"
            for m in machines
        ]
        results = self.influx.query_all(";".join(statements))
        lines: list[str] = []
        alerts: list[Alert] = []
        read = 0
        got: list[tuple[_Machine, list[int], list[dict[str, Any]]]] = []
        for machine, series in zip(machines, results, strict=True):
            stamps: list[int] = []
            rows: list[dict[str, Any]] = []
            for s in series:
                columns = s.columns
                for row in s.values:
                    values = {
                        c: v
                        for c, v in zip(columns, row, strict=True)
                        if v is not None and c not in schema.MACHINE_TAGS
                    }
                    stamps.append(int(values.pop("time")))
                    rows.append(values)
            got.append((machine, stamps, rows))
            if stamps and self.config.data_quality:
                self.references.add(machine.path, stamps, rows)
        for machine, stamps, rows in got:
            if stamps:
                read += len(stamps)
                machine.last_ts = max(machine.last_ts, max(stamps))
                self.samples(machine, stamps, rows, lines, alerts)
            if machine.last_ts >= self.since_ms:
                self.stats.last_ts_by_machine[str(machine.path)] = machine.last_ts
        self.references.prune()
        if lines:
            self.write(lines)
        self._after_batch(machines)
        for alert in alerts:
            self._emit(alert)
        self.stats.polls += 1
        self.stats.samples_read += read
        self._stats_file.update({**self.stats.as_dict(), "running": True})
        return read

    def machine(self, path: MachinePath, kind: str) -> _Machine:
        """The machine's state, created (and restored from a saved model) when first seen."""
        m = self._machines.get(path)
        if m is None:
            start = self.since_ms - 1
            done = self.alarms.cursor(path) if self.alarms is not None else None
            if done is not None and done > start:  # scored before a restart: go on from there
                start = done
            m = _Machine(
                path,
                kind,
                self.detector_factory(self.config.warmup_samples),
                start,
                quality=DataQualityMonitor() if self.config.data_quality else None,
            )
            if self.config.refit_every_h > 0:
                m.refit = Refit(
                    self.detector_factory,
                    warmup=self.config.warmup_samples,
                    every_h=self.config.refit_every_h,
                    max_drift=self.config.refit_max_drift,
                    threshold=self.config.threshold,
                )
            if done is not None and done > self.since_ms - 1:
                self._restore_model(m)
                self._restore_quality(m)
            self._machines[path] = m
            self.stats.machines = len(self._machines)
        return m

    def sample(
        self,
        m: _Machine,
        ts: int,
        values: dict[str, Any],
        lines: list[str],
        alerts: list[Alert],
        refs: Mapping[str, float] | None = None,
    ) -> None:
        """Everything done with one sample: sensor checks (``refs``: what the neighbours'
        sensors read, see :mod:`analytics.reference`), scoring, health, alarms."""
        quality = m.quality
        if quality is None:
            self._judged(m, ts, values, lines, alerts, frozenset(), None)
            return
        for issue in quality.update(ts, values, refs):
            self.stats.sensor_issues += issue.state == "raised"
            lines.append(_issue_point(m, issue))
        self._judged(m, ts, values, lines, alerts, quality.faulty_signals, quality.open_issues)

    def samples(
        self, m: _Machine, ts: list[int], values: list[dict[str, Any]], lines: list[str], alerts: list[Alert]
    ) -> None:
        """:meth:`sample` for a run of one machine's samples: the sensor checks judge them
        in columns (:meth:`DataQualityMonitor.update_many`), then each is scored, in order,
        with the sensor issues open at its time."""
        quality = m.quality
        refs = self.references.refs(m.path, ts) if quality is not None else None
        if quality is None or len(ts) < BATCH_MIN:
            for i, (t, v) in enumerate(zip(ts, values, strict=True)):
                self.sample(m, t, v, lines, alerts, refs[i] if refs is not None else None)
            return
        opened = {(i.signal, i.kind): i for i in quality.open_issues}
        faulty, issues = quality.faulty_signals, quality.open_issues
        events = dict(quality.update_many(ts, values, refs))
        for j, (t, v) in enumerate(zip(ts, values, strict=True)):
            changed = events.get(j)
            if changed:
                for issue in changed:
                    self.stats.sensor_issues += issue.state == "raised"
                    lines.append(_issue_point(m, issue))
                    if issue.state == "raised":
                        opened[(issue.signal, issue.kind)] = issue
                    else:
                        opened.pop((issue.signal, issue.kind), None)
                faulty, issues = frozenset(s for s, _ in opened), tuple(opened.values())
            self._judged(m, t, v, lines, alerts, faulty, issues)

    def _judged(
        self,
        m: _Machine,
        ts: int,
        values: dict[str, Any],
        lines: list[str],
        alerts: list[Alert],
        faulty: frozenset[str],
        issues: Sequence[SensorIssue] | None,
    ) -> None:
        """Scoring, health and alarms of a sample whose sensors have been checked."""
        self._unsaved += 1
        scored = self._score(m, ts, values, lines, alerts, faulty)
        if self.alarms is not None:
            self.alarms.sample(m.path, m.kind, ts, values, scored=scored, estimate=m.rul.latest, sensor_issues=issues)

    def emit(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self._emit(alert)

    # --- live, from the broker (analytics/stream.py) ---------------------------------------

    def score_telemetry(self, telemetry: object, lines: list[str], alerts: list[Alert]) -> int:
        """Every sample of one decoded telemetry message, in arrival order; how many."""
        assert isinstance(telemetry, Telemetry)
        return self.score_batch([telemetry], lines, alerts)

    def score_batch(self, messages: Sequence[object], lines: list[str], alerts: list[Alert]) -> int:
        """Every sample of a batch of decoded telemetry messages, each machine's in arrival
        order (a machine's samples are judged together: see :meth:`samples`); how many.
        A bug hit on one machine's samples is logged and costs only those."""
        groups: dict[MachinePath, tuple[_Machine, list[int], list[dict[str, Any]]]] = {}
        for telemetry in messages:
            assert isinstance(telemetry, Telemetry)
            group = groups.get(telemetry.path)
            if group is None:
                group = groups[telemetry.path] = (self.machine(telemetry.path, telemetry.kind or ""), [], [])
            for sample in telemetry.samples:
                group[1].append(sample.ts_ms)
                group[2].append(dict(sample.values))
        if self.config.data_quality:
            try:
                for m, ts, values in groups.values():
                    if ts:
                        self.references.add(m.path, ts, values)
            except Exception:  # a bug must not stop the worker: the ambient references are a nicety
                log.exception("unexpected error keeping the lines' ambient readings; skipped")
        done = 0
        for m, ts, values in groups.values():
            if not ts:
                continue
            try:
                self.samples(m, ts, values, lines, alerts)
            except Exception:  # a bug must not stop the worker or the other machines
                log.exception("%s: unexpected error scoring %d samples; skipped", m.path, len(ts))
            m.last_ts = max(m.last_ts, max(ts))
            done += len(ts)
        self.references.prune()
        self.stats.samples_read += done
        return done

    def run_live(self, stream: TelemetryStream, should_stop: Callable[[], bool] = lambda: False) -> AnalyticsStats:
        """Score the broker's telemetry as it arrives until ``should_stop()`` (or SIGTERM)."""
        log.info(
            "analytics: %s detector (warm-up %d samples, threshold %.1f), live from %s (%s, MQTT v5, QoS 1, "
            "acknowledged after the scores are written) -> %s; channels: %s",
            self.config.detector,
            self.config.warmup_samples,
            self.config.threshold,
            stream.config.url,
            stream.topic_filter,
            self.influx.settings.url,
            ", ".join(c.name for c in self.channels) or "none",
        )

        def after(alerts: list[Alert]) -> None:
            self._after_batch(list(self._machines.values()))
            self.emit(alerts)
            self.stats.polls += 1
            self._stats_file.update({**self.stats.as_dict(), "running": True})

        with contextlib.suppress(KeyboardInterrupt):
            run_stream(stream, score=self.score_batch, write=self.write, after_batch=after, should_stop=should_stop)
        return self._stopped()

    def _score(
        self,
        m: _Machine,
        ts: int,
        values: dict[str, Any],
        lines: list[str],
        alerts: list[Alert],
        faulty: frozenset[str],
    ) -> tuple[float, float, str, float | None] | None:
        """Score one sample (if running and settled): score, threshold, the signal behind it and
        that signal's normal level in its own unit; None when the sample is not scored."""
        heat = m.heat.update(ts, values)  # stopped samples too: a stopped motor cools
        if values.get("state", "running") != "running":
            m.settled_from = None
            return None
        x = (f if callable(f := getattr(m.detector, "features", None)) else features)(values)
        if x is not None and heat:
            for target, driver in HEAT_LAWS.items():
                if target in x and driver in values:
                    x.update(heat)
                    break
        if x is not None and faulty:
            # A sensor under a data-quality issue stays out of the machine model (and a
            # faulty current out of the heating law).
            x = {k: v for k, v in x.items() if k not in faulty and k.split("^", 1)[0] not in faulty} or None
        if x is None:
            return None
        if m.settled_from is None:  # just started again: temperatures are still rising
            m.settled_from = ts + int(self.config.settle_s * 1000)
        detector = m.detector
        if not detector.ready:
            # Learn only from settled running samples, or a baseline learned during a warm-up
            # transient would make the settled machine look abnormal. A machine first seen
            # running is taken as settled.
            if ts >= m.settled_from:
                detector.learn_one(x)
            return None
        both = getattr(detector, "score_and_explain", None)
        if both is not None:  # one pass instead of two
            score, signal = both(x)
        else:
            score, signal = detector.score_one(x), detector.explain_one(x)
        if m.refit is not None and ts >= m.settled_from:
            verdict = m.refit.observe(detector, ts, x, score)
            if verdict is not None:
                if verdict.model is not None:
                    m.detector, m.anomaly_head = verdict.model, None
                    self.stats.refits += 1
                    log.info("%s: model %s", m.path, verdict.reason)
                else:
                    self.stats.refits_refused += 1
                    log.warning("%s: model kept, not refitted: %s", m.path, verdict.reason)
        anomalous = score > self.config.threshold
        self.stats.samples_scored += 1
        self.stats.anomalous_samples += anomalous
        head = m.anomaly_head
        if head is None:  # the measurement and tags of this machine's anomaly points, built once
            head = m.anomaly_head = (
                encode_point(schema.ANOMALY, {**m.tags, "kind": m.kind, "detector": detector.name}, {"x": 0}).rsplit(
                    " ", 1
                )[0]
                + f" threshold={format_field(float(self.config.threshold))},signal="
            )
        signal_field = _SIGNAL_FIELDS.get(signal)
        if signal_field is None:  # catalogue names, quoted once
            signal_field = format_field(signal)
            if len(_SIGNAL_FIELDS) < 1000:
                _SIGNAL_FIELDS[signal] = signal_field
        lines.append(
            f"{head}{signal_field},score={round(float(score), 4)!r},anomalous={'true' if anomalous else 'false'} {ts}"
        )
        alert = self.tracker.update(m.path, ts, score, signal)
        if alert is not None:
            alerts.append(alert)
            lines.append(
                encode_point(
                    schema.ALERT,
                    {**m.tags, "severity": alert.severity, "state": alert.state},
                    {
                        "id": alert.alert_id,
                        "detector": alert.detector,
                        "signal": alert.signal,
                        "message": alert.message,
                        "score": round(alert.score, 4),
                    },
                    ts,
                )
            )
        estimate = m.rul.update(ts, score, self.config.threshold)
        if estimate is not None:  # one point per machine every RulTracker.step_s of device time
            health: dict[str, float | int | str | bool] = {
                "indicator": round(estimate.indicator, 4),
                "health": round(estimate.health, 4),
                "slope_per_h": round(estimate.slope_per_h, 6),
            }
            if estimate.rul_h is not None:
                health.update(
                    rul_h=round(estimate.rul_h, 2),
                    rul_low_h=round(estimate.rul_low_h or 0.0, 2),
                    rul_high_h=round(estimate.rul_high_h or 0.0, 2),
                )
            lines.append(encode_point(schema.HEALTH, {**m.tags, "kind": m.kind}, health, estimate.ts_ms))
        normal = getattr(detector, "normal", None)
        level = normal(signal) if callable(normal) and signal else None
        ambient = values.get("ambient_temp")
        if level is not None and signal.endswith("_temp") and isinstance(ambient, int | float):
            level += float(ambient)  # the features are rises over the ambient temperature
        return score, self.config.threshold, signal, level

    def _emit(self, alert: Alert) -> None:
        key = str(alert.path)
        if alert.state == "raised":
            self.stats.alerts_raised += 1
            self.stats.alerts_by_machine[key] = self.stats.alerts_by_machine.get(key, 0) + 1
        else:
            self.stats.alerts_cleared += 1
        for channel in self.channels:
            try:
                channel.send(alert)
            except Exception as exc:  # a broken channel must not stop the others or the worker
                log.error("alert channel %s failed: %s", channel.name, exc)

    def run(self, should_stop: Callable[[], bool] = lambda: False, *, once: bool = False) -> AnalyticsStats:
        """Poll until ``should_stop()`` (or Ctrl-C / SIGTERM); with ``once``, until caught up."""
        log.info(
            "analytics: %s detector (warm-up %d samples, threshold %.1f, alert after %d / clear after %d samples), "
            "polling %s every %.1f s from %s; channels: %s",
            self.config.detector,
            self.config.warmup_samples,
            self.config.threshold,
            self.config.raise_after,
            self.config.clear_after,
            self.influx.settings.url,
            self.config.poll_interval_s,
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.since_ms / 1000)) + "Z",
            ", ".join(c.name for c in self.channels) or "none",
        )
        try:
            while not should_stop():
                started = time.monotonic()
                try:
                    read = self.poll_once()
                except InfluxUnavailable as exc:
                    log.warning("InfluxDB unavailable: %s; retrying", exc)
                    read = 0
                if once and read == 0:
                    break
                if read < self.max_rows and not once:  # caught up: wait for the next poll
                    end = started + self.config.poll_interval_s
                    while not should_stop() and time.monotonic() < end:
                        time.sleep(min(0.1, max(end - time.monotonic(), 0)))
        except KeyboardInterrupt:
            pass
        return self._stopped()

    def _stopped(self) -> AnalyticsStats:
        if self.alarms is not None:  # what the detectors learned, for the next start
            self.alarms.save_cursors({m.path: m.last_ts for m in self._machines.values()}, self._models())
        s = self.stats
        by_machine = Counter(s.alerts_by_machine)
        log.info(
            "analytics stopped: %d polls, %d samples read, %d scored, %d anomalous, %d alerts raised (%s), %d cleared",
            s.polls,
            s.samples_read,
            s.samples_scored,
            s.anomalous_samples,
            s.alerts_raised,
            ", ".join(f"{k.split('/')[-1]} {v}" for k, v in by_machine.most_common()) or "none",
            s.alerts_cleared,
        )
        self._stats_file.update({**s.as_dict(), "running": False}, force=True)
        return s
