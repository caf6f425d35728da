"""``birlik bench outage``: the ingest's memory and losses through a long InfluxDB outage.

One ``birlik ingest`` process, its own Mosquitto and InfluxDB. A steady stream of QoS 1
messages (``--rate``, one 12-reading conveyor sample each, as in ``bench ingest``) runs for
``--steady-seconds``; InfluxDB is then stopped for ``--outage-minutes`` while the stream goes
on, started again on the same port with the same data, and the stream runs ``--steady-seconds``
more. Every second the ingest's resident memory (``VmRSS``) and its counters (stats file) are
sampled; after the stream ends, the benchmark waits until every reading is visible. The
ingest holds at most ``ingest.window`` unacknowledged messages and the broker queues the rest,
so its memory must stay flat however long the outage lasts: the RSS slope over the outage
(least squares, after the window filled) is the figure that says so. docs/ingest.md ("Outage
benchmark") describes the method; the last line is::

    RESULT outage minutes=... rate_mps=... rss_before_mb=... rss_peak_outage_mb=... rss_end_outage_mb=...
        rss_slope_mb_per_10min=... window_peak=... published=... lost=... duplicated=... drain_s=...
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, overload

from ops import bench_ingest as bi

log = logging.getLogger("bench.outage")

SUMMARY = "birlik ingest through a long InfluxDB outage at a steady rate: memory flat, nothing lost, drain time"

DATABASE = "bench_outage"
#: Unacknowledged messages the publisher may have at the broker: enough to ride out the broker's
#: pauses while it saves a large queue to disk (``autosave_interval 1``), well below 65535.
PUBLISHER_WINDOW = 10_000
#: Device times are the due times in ms; one machine's consecutive messages are 26 messages
#: apart, so up to 26,000 messages/s every machine's timestamps are unique.
MAX_RATE = 26_000
PROGRESS_EVERY_S = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``birlik bench outage`` (on the shared ``bench`` parser)."""
    p.add_argument(
        "--outage-minutes", type=float, default=30, help="outage: how long InfluxDB is stopped (default: 30)"
    )
    p.add_argument("--rate", type=int, default=500, help="outage: messages published per second (default: 500)")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="outage: the ingest's window, passed as BIRLIK_INGEST_WINDOW (default: the ingest's own)",
    )
    p.add_argument(
        "--steady-seconds",
        type=float,
        default=30,
        help="outage: seconds of publishing with InfluxDB up, before and again after the outage (default: 30)",
    )


# --- the stream ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """The published messages, each computed from its index ``k`` (nothing is kept).

    Message ``k`` is due at ``start + k / rate`` (epoch s) and carries one sample of machine
    ``k % 26`` with that time as its device time (ms) and ``count_good = k + 1``; one gateway
    numbers them ``seq`` 1, 2, 3, ...
    """

    rate: int
    start: float
    machines: list[bi.Machine] = field(default_factory=bi.bench_machines)

    @cached_property
    def _start_ms(self) -> int:
        return int(self.start * 1000)

    @cached_property
    def _topics(self) -> list[bytes]:
        return [m.topic.encode() for m in self.machines]

    def machine(self, k: int) -> bi.Machine:
        return self.machines[k % len(self.machines)]

    def due(self, k: int) -> float:
        return self.start + k / self.rate

    def ts_ms(self, k: int) -> int:
        return self._start_ms + k * 1000 // self.rate

    def payload(self, k: int) -> bytes:
        from birlik.payload import encode_telemetry

        m = self.machine(k)
        values = bi.sample_values(m.index, k // len(self.machines), k + 1)
        return encode_telemetry(gateway=bi.GATEWAY, seq=k + 1, samples=[(self.ts_ms(k), values)], kind=bi.KIND)

    def packet(self, k: int) -> bytes:
        return bi.encode_publish(self._topics[k % len(self.machines)], self.payload(k), bi.packet_id(k))

    def workload(self, count: int) -> bi.Workload:
        """What the database must hold after the first ``count`` messages, for
        :func:`ops.bench_ingest.wrong_points` (no packets: they are encoded as they go out)."""
        expected = {(self.machine(k).id, self.ts_ms(k)): k + 1 for k in range(count)}
        return bi.Workload(
            "outage", 1, [], [], [], expected, count * (count + 1) // 2, count * len(bi.SIGNALS), schedule=None
        )


class PublishingStopped(Exception):
    """The benchmark ended the stream before its last message (the broker had fallen behind)."""


class Packets(Sequence[bytes]):
    """The stream's first ``count`` PUBLISH packets, encoded when the publisher takes them.

    :meth:`stop` ends the stream early: the publisher's next take waits until the broker has
    acknowledged everything sent, then raises :class:`PublishingStopped`, which ends its run.
    """

    def __init__(self, stream: Stream, count: int) -> None:
        self.stream, self.total = stream, count
        self._stop: tuple[bi.RawPublisher, float] | None = None

    def __len__(self) -> int:
        return self.total

    def stop(self, publisher: bi.RawPublisher, timeout_s: float = 120) -> None:
        self._stop = (publisher, time.monotonic() + timeout_s)

    def _check_stop(self) -> None:
        if self._stop is None:
            return
        publisher, deadline = self._stop
        while publisher.acked < publisher.sent and publisher.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        raise PublishingStopped(f"stopped after {publisher.sent:,} of {self.total:,} messages")

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        self._check_stop()
        if isinstance(index, slice):
            return [self.stream.packet(k) for k in range(*index.indices(self.total))]
        if not 0 <= index < self.total:
            raise IndexError(index)
        return self.stream.packet(index)


class Schedule(Sequence[float]):
    """When each of the stream's first ``count`` messages is due (epoch s)."""

    def __init__(self, stream: Stream, count: int) -> None:
        self.stream, self.total = stream, count

    def __len__(self) -> int:
        return self.total

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> list[float]: ...
    def __getitem__(self, index: int | slice) -> float | list[float]:
        if isinstance(index, slice):
            return [self.stream.due(k) for k in range(*index.indices(self.total))]
        if not 0 <= index < self.total:
            raise IndexError(index)
        return self.stream.due(index)


# --- measuring -----------------------------------------------------------------------------


def least_squares_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The slope of the least-squares line through the points (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n != len(ys):
        raise ValueError("xs and ys differ in length")
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def filled_from(windows: Sequence[int], window: int) -> int:
    """Index of the first sample at which the window counts as full: 98 % of ``window``, or of
    the largest value seen when it never got there (the outage too short to fill it)."""
    if not windows:
        return 0
    threshold = 0.98 * min(window, max(windows))
    return next(i for i, w in enumerate(windows) if w >= threshold)


def rss_mb(pid: int) -> float:
    """The process's resident memory now (VmRSS), in MB; 0 when it is gone."""
    return bi.proc_memory_mb(pid, "VmRSS")


def process_state(pid: int) -> str:
    """The process's state letter from /proc (R running, S sleeping, D waiting for the disk ...); "" when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def written_bytes(pid: int) -> int:
    """Bytes the process has caused to be written to storage (``write_bytes`` of /proc/<pid>/io); 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def broker_queue_problem(rate: int, outage_s: float, payload_bytes: int) -> str | None:
    """Why the shipped broker would drop messages during this outage, or None when it would not."""
    from ops.servers import mosquitto_settings

    settings, source = mosquitto_settings()
    limits = dict(settings)
    queued = rate * outage_s
    max_messages = int(limits.get("max_queued_messages", "1000"))
    max_bytes = int(limits.get("max_queued_bytes", "0"))
    if max_messages > 0 and queued > max_messages:
        return (
            f"{rate} messages/s for {outage_s:.0f} s is {queued:,.0f} messages to queue, more than the broker's "
            f"max_queued_messages {max_messages:,} ({source}): the broker would drop messages. "
            f"Lower --rate or --outage-minutes (at most {max_messages / rate / 60:.1f} minutes at {rate} msg/s)"
        )
    if max_bytes > 0 and queued * payload_bytes > max_bytes:
        return (
            f"{queued:,.0f} messages of {payload_bytes} bytes exceed the broker's max_queued_bytes {max_bytes:,} "
            f"({source}): the broker would drop messages. Lower --rate or --outage-minutes"
        )
    return None


@dataclass
class Sample:
    t: float  # monotonic
    phase: str
    rss_mb: float
    window: int
    received: int
    acked: int


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Extra environment variables for the children started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class Watch:
    """Samples the ingest (RSS, stats file) and the broker every second and logs progress."""

    def __init__(
        self,
        ingest: bi.IngestGroup,
        broker_pid: int,
        broker_db: Path,
        publisher: bi.RawPublisher,
        window: int,
        outage_s: float,
    ) -> None:
        self.ingest = ingest
        self.pid = ingest.children[0].process.pid
        self.stats_path = ingest.stats_paths[0]
        self.broker_pid = broker_pid
        self.broker_db = broker_db
        self.publisher = publisher
        self.window = window
        self.outage_s = outage_s
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self.outage_at = 0.0
        self.broker_rss_peak = 0.0
        self.broker_db_peak = 0.0
        self.drain_target: int | None = None
        self.back_at = 0.0
        self.drain_s: float | None = None
        self.failed = False
        #: The broker's process state at every sample ("D": waiting for the disk), and what it wrote.
        self.broker_states: list[str] = []
        self.broker_written = 0
        #: Messages due by now (epoch s): how far behind its schedule the publisher is.
        self.planned: Callable[[], int] = lambda: 0
        self._last_log = time.monotonic()
        self._rss_peak = 0.0

    def tick(self, phase: str) -> Sample:
        from birlik.stats import read_stats

        stats = read_stats(self.stats_path)
        sample = Sample(
            time.monotonic(),
            phase,
            rss_mb(self.pid),
            int(stats.get("window_in_use") or 0),
            int(stats.get("messages_received") or 0),
            int(stats.get("messages_acked") or 0),
        )
        self.samples.append(sample)
        self._rss_peak = max(self._rss_peak, sample.rss_mb)
        broker_rss = rss_mb(self.broker_pid)
        self.broker_rss_peak = max(self.broker_rss_peak, broker_rss)
        self.broker_states.append(process_state(self.broker_pid))
        self.broker_written = written_bytes(self.broker_pid) or self.broker_written
        with contextlib.suppress(OSError):
            self.broker_db_peak = max(self.broker_db_peak, self.broker_db.stat().st_size / 1e6)
        if self.drain_target is not None and self.drain_s is None and sample.acked >= self.drain_target:
            self.drain_s = sample.t - self.back_at
            log.info(
                "drained: the ingest acknowledged the %s messages published until InfluxDB was back, %.1f s after it",
                f"{self.drain_target:,}",
                self.drain_s,
            )
        if sample.t - self._last_log >= PROGRESS_EVERY_S:
            self._last_log = sample.t
            self.progress(sample, broker_rss)
        return sample

    def progress(self, sample: Sample, broker_rss: float) -> None:
        phase = sample.phase
        if phase == "outage":
            phase = f"outage {_clock(sample.t - self.outage_at)} of {_clock(self.outage_s)}"
        published = self.publisher.acked
        planned = self.planned()
        behind = f", {planned - published:,} behind the schedule" if planned - published > self.window else ""
        try:
            broker_db = self.broker_db.stat().st_size / 1e6
        except OSError:
            broker_db = 0.0
        recent = self.broker_states[-30:]
        log.info(
            "%s [%s]: ingest RSS %.0f MB (peak %.0f), window %s/%s in use; the broker holds %s messages "
            "(published %s%s - acknowledged by the ingest %s); broker RSS %.0f MB, database %.0f MB, waiting for "
            "the disk in %d%% of the last %d s, %.1f GB written so far",
            _clock(sample.t - self.t0),
            phase,
            sample.rss_mb,
            self._rss_peak,
            f"{sample.window:,}",
            f"{self.window:,}",
            f"{max(0, published - sample.acked):,}",
            f"{published:,}",
            behind,
            f"{sample.acked:,}",
            broker_rss,
            broker_db,
            100 * recent.count("D") // max(1, len(recent)),
            len(recent),
            self.broker_written / 1e9,
        )

    def until(self, phase: str, done: Callable[[], bool], deadline: float) -> bool:
        """Sample every second until ``done()`` or ``deadline`` (monotonic); False when the
        deadline passed first or the ingest exited."""
        tick = time.monotonic()
        while not self.failed:
            self.tick(phase)
            if done():
                return True
            if not self.ingest.alive():
                child = self.ingest.children[0]
                log.error("the ingest exited (code %s); its log:\n%s", child.process.returncode, child.log_tail())
                self.failed = True
                break
            if time.monotonic() >= deadline:
                return False
            tick = max(tick + 1.0, time.monotonic())
            time.sleep(max(0.0, min(tick, deadline) - time.monotonic()))
        return False

    def phase(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == name]


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"


# --- the benchmark -------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, object]:
    from birlik.config import load_config
    from birlik.influx import InfluxClient, InfluxSettings
    from ops.servers import Supervisor

    outage_s = args.outage_minutes * 60
    steady_s = args.steady_seconds
    if not 1 <= args.rate <= MAX_RATE or outage_s <= 0 or steady_s <= 0:
        log.error("bench outage: --rate must be 1..%d, --outage-minutes and --steady-seconds above 0", MAX_RATE)
        raise SystemExit(2)
    extra_env = {"BIRLIK_INGEST_WINDOW": str(args.window)} if args.window is not None else {}
    # The window the ingest will have: its defaults and the environment it is started with.
    window = load_config(env={**os.environ, "BIRLIK_CONFIG": "", **extra_env}).ingest.window
    probe = Stream(args.rate, time.time())
    problem = broker_queue_problem(args.rate, outage_s, len(probe.payload(0)))
    if problem:
        log.error("bench outage: refused: %s", problem)
        raise SystemExit(2)
    total = round(args.rate * (2 * steady_s + outage_s))
    log.info(
        "%s messages at %d msg/s (12 readings each): %.0f s, InfluxDB stopped for %g min, %.0f s; ingest window %s",
        f"{total:,}",
        args.rate,
        steady_s,
        args.outage_minutes,
        steady_s,
        f"{window:,}",
    )

    state = Path(args.state_dir)
    for sub in ("influxdb", "mosquitto", "logs", "stats"):  # nothing of earlier runs
        shutil.rmtree(state / sub, ignore_errors=True)
    for old in state.glob("dead-letters-*.jsonl"):
        old.unlink()
    with Supervisor(state) as supervisor:
        broker_server = supervisor.start_mosquitto()
        influx_server = supervisor.start_influxdb()
        influx_port = int(influx_server.url.rsplit(":", 1)[1])
        broker = (broker_server.host, broker_server.port)
        with InfluxClient(InfluxSettings(url=influx_server.url, database=DATABASE, timeout_s=60)) as influx:
            influx.create_database()
        with _environment(**extra_env):
            group = bi.IngestGroup(supervisor, "outage", broker_server.url, influx_server.url, DATABASE, 1)
        try:
            stream = Stream(args.rate, time.time() + 1.0)
            publisher = bi.RawPublisher(
                *broker, f"bench-pub-outage-{os.getpid()}", window=PUBLISHER_WINDOW, stall_s=300
            )
            watch = Watch(
                group,
                broker_server.child.process.pid,
                supervisor.state_dir / "mosquitto" / "mosquitto.db",
                publisher,
                window,
                outage_s,
            )
            watch.planned = lambda: max(0, min(total, int((time.time() - stream.start) * stream.rate) + 1))
            packets = Packets(stream, total)
            job = bi.Background(publisher, packets, Schedule(stream, total))
            outcome = _phases(args, supervisor, stream, packets, watch, job, influx_port)
        finally:
            final = group.stop(broker)[0]
    _report_logs(state, group, final)
    return outcome


def _phases(
    args: argparse.Namespace,
    supervisor: Any,
    stream: Stream,
    packets: Packets,
    watch: Watch,
    job: bi.Background,
    influx_port: int,
) -> dict[str, object]:
    from birlik.influx import InfluxClient, InfluxSettings

    publisher = watch.publisher
    outage_s = args.outage_minutes * 60
    steady_s = args.steady_seconds
    pid = watch.pid
    never = lambda: False  # noqa: E731

    # Normal operation.
    outage_start = stream.start + steady_s
    watch.until("before", never, time.monotonic() + max(0.0, outage_start - time.time()))
    rss_before = bi.peak_rss_mb(pid)

    # The outage: InfluxDB stopped, the stream goes on.
    influx_child = next(c for c in supervisor.children if c.name == "influxdb")
    watch.outage_at = time.monotonic()
    supervisor.stop(influx_child)
    log.info("InfluxDB stopped for %g min; publishing goes on", args.outage_minutes)
    watch.until("outage", never, watch.outage_at + outage_s)
    outage = watch.phase("outage")
    rss_end = outage[-1].rss_mb if outage else 0.0
    hwm_end = bi.peak_rss_mb(pid)
    rss_peak_outage = max((s.rss_mb for s in outage), default=0.0)
    if hwm_end > rss_before:  # the peak between two samples
        rss_peak_outage = max(rss_peak_outage, hwm_end)

    # InfluxDB back, on the same port with the same data; the stream goes on a while.
    influx_server = supervisor.start_influxdb(port=influx_port)
    watch.back_at = time.monotonic()
    watch.drain_target = publisher.acked
    log.info(
        "InfluxDB back after %.0f s (stopped and started again); %s messages published so far",
        watch.back_at - watch.outage_at,
        f"{publisher.acked:,}",
    )
    # The stream ends on time: what the broker could not take by then is not published.
    total = len(packets)
    end = time.monotonic() + max(0.0, stream.due(total - 1) - time.time())
    if not watch.until("after", lambda: job.done, end + 5):
        log.warning(
            "the broker fell behind: %s of %s messages published at the end of the stream; stopping there",
            f"{publisher.acked:,}",
            f"{total:,}",
        )
        packets.stop(publisher)
        watch.until("after", lambda: job.done, time.monotonic() + 180)
    if isinstance(job.error, PublishingStopped):
        pass
    elif job.error is not None:
        log.error("the publisher failed: %r", job.error)
    elif not job.done:
        log.error("the publisher did not finish; closing its connection")
        with contextlib.suppress(OSError):
            publisher.sock.shutdown(socket.SHUT_RDWR)
        job.join(30)
    published = publisher.acked
    if published < 0.95 * total:
        log.warning(
            "the broker accepted only %.0f%% of the messages planned: the outage was a smaller load than asked for",
            100 * published / total,
        )
    log.info(
        "published %s/%s messages (%.0f msg/s from the first to the last acknowledgement; at most %.1f s late on the "
        "schedule)",
        f"{published:,}",
        f"{total:,}",
        published / max(1e-9, publisher.last_ack - publisher.first_send),
        publisher.late_s,
    )

    # Everything visible?
    workload = stream.workload(publisher.sent)
    points = published
    timeout_s = max(args.timeout, outage_s / 2)
    seen = {"points": 0, "at": 0.0}
    with InfluxClient(InfluxSettings(url=influx_server.url, database=DATABASE, timeout_s=60)) as influx:

        def all_visible() -> bool:
            if time.monotonic() - seen["at"] >= 2:
                seen["at"] = time.monotonic()
                with contextlib.suppress(Exception):
                    seen["points"] = bi.count_points(influx, DATABASE)
            # ... and the ingest's counters (its stats file, rewritten every second) show the drain.
            return seen["points"] >= points and watch.drain_s is not None

        if not watch.until("drain", all_visible, time.monotonic() + timeout_s):
            log.error("not every reading visible after %.0f s: %s/%s points", timeout_s, seen["points"], points)
        watch.tick("end")
        hwm_final = bi.peak_rss_mb(pid)
        stored = bi.count_readings(influx, DATABASE)
        duplicated = bi.wrong_points(influx, DATABASE, workload)
    published_readings = published * len(bi.SIGNALS)
    lost = max(0, published_readings - stored)

    # Memory over the outage, once the window had filled.
    windows = [s.window for s in outage]
    start = filled_from(windows, watch.window)
    if outage and max(windows) < 0.98 * watch.window:
        log.warning(
            "the window never filled during the outage (at most %s of %s): the RSS slope is over the %d samples after "
            "its largest value; a longer outage or a smaller --window measures more",
            f"{max(windows):,}",
            f"{watch.window:,}",
            len(outage) - start,
        )
    tail = outage[start:]
    slope = least_squares_slope([s.t for s in tail], [s.rss_mb for s in tail]) * 600
    window_peak = max((s.window for s in watch.samples), default=0)
    drain_s = watch.drain_s if watch.drain_s is not None else time.monotonic() - watch.back_at
    if watch.drain_s is None:
        log.error("the backlog of the outage was not drained; drain_s is the time until giving up")
    after = [s for s in watch.samples if s.phase in ("after", "drain", "end")]
    log.info(
        "ingest RSS: peak %.0f MB before the outage, %.0f MB during it, %.0f MB at its end, %.0f MB after it (the "
        "drain; VmHWM at the end %.0f MB); slope %+.2f MB per 10 min over %d samples (%.0f s) after the window "
        "filled; window peak %s of %s (%s during the outage, %s after it)",
        rss_before,
        rss_peak_outage,
        rss_end,
        max((s.rss_mb for s in after), default=0.0),
        hwm_final,
        slope,
        len(tail),
        tail[-1].t - tail[0].t if tail else 0,
        f"{window_peak:,}",
        f"{watch.window:,}",
        f"{max(windows, default=0):,}",
        f"{max((s.window for s in after), default=0):,}",
    )
    if window_peak > watch.window:
        log.warning(
            "the ingest held %s unacknowledged messages, more than its window of %s: the broker sent more than the "
            "Receive Maximum the ingest announced. Mosquitto 2.0.11 does so when it moves a queue into flight "
            "(db__message_delete_outgoing moves up to a whole window per PUBACK; "
            "https://github.com/eclipse-mosquitto/mosquitto/issues/2301), so after an outage the backlog reaches "
            "the ingest's memory at once",
            f"{window_peak:,}",
            f"{watch.window:,}",
        )
    _write_samples(supervisor.state_dir / "samples.csv", watch)
    states = watch.broker_states
    log.info(
        "broker: peak RSS %.0f MB, database file at most %.0f MB, %.1f GB written to disk (autosave), waiting for "
        "the disk in %d%% of the samples; stored %s of %s readings, lost %d, duplicated %d",
        watch.broker_rss_peak,
        watch.broker_db_peak,
        watch.broker_written / 1e9,
        100 * states.count("D") // max(1, len(states)),
        f"{stored:,}",
        f"{published_readings:,}",
        lost,
        duplicated,
    )
    return {
        "minutes": f"{args.outage_minutes:g}",
        "rate_mps": args.rate,
        "rss_before_mb": round(rss_before),
        "rss_peak_outage_mb": round(rss_peak_outage),
        "rss_end_outage_mb": round(rss_end),
        "rss_slope_mb_per_10min": f"{slope:.2f}",
        "window_peak": window_peak,
        "published": published_readings,
        "lost": lost,
        "duplicated": duplicated,
        "drain_s": f"{drain_s:.1f}",
    }


def _write_samples(path: Path, watch: Watch) -> None:
    """Every sample, one a second, for a plot: seconds since the start, phase, RSS, window, counters."""
    rows = ["t_s,phase,rss_mb,window_in_use,messages_received,messages_acked"]
    rows += [f"{s.t - watch.t0:.1f},{s.phase},{s.rss_mb:.1f},{s.window},{s.received},{s.acked}" for s in watch.samples]
    path.write_text("\n".join(rows) + "\n")
    log.info("samples: %s", path)


def _report_logs(state: Path, group: bi.IngestGroup, final: dict[str, Any]) -> None:
    """What the ingest and the broker said: reconnects, warnings, drops."""
    log.info(
        "ingest counters: received %s messages (%s redelivered), acknowledged %s, wrote %s readings, rejected %s, "
        "write retries %s",
        f"{int(final.get('messages_received') or 0):,}",
        f"{int(final.get('messages_redelivered') or 0):,}",
        f"{int(final.get('messages_acked') or 0):,}",
        f"{int(final.get('readings_written') or 0):,}",
        int(final.get("messages_rejected") or 0) + int(final.get("readings_rejected") or 0),
        f"{int(final.get('write_retries') or 0):,}",
    )
    ingest_log = group.children[0].log_path.read_text(errors="replace").splitlines()
    reconnects = sum("connected and subscribed again" in line for line in ingest_log)
    problems = [line for line in ingest_log if " WARNING " in line or " ERROR " in line]
    log.info(
        "ingest log: %d reconnects to the broker, %d warning/error lines%s",
        reconnects,
        len(problems),
        "".join(f"\n  {line}" for line in problems[:8]),
    )
    broker_log = (state / "logs" / "mosquitto.log").read_text(errors="replace").splitlines()
    dropped = [line for line in broker_log if "dropped" in line.lower()]
    if dropped:
        log.error("the broker dropped messages: %d log lines, e.g. %s", len(dropped), dropped[0])
    log.info(
        "broker log: %d lines%s",
        len(broker_log),
        "".join(f"\n  {line}" for line in broker_log if "New client" not in line and "New connection" not in line)[
            :2000
        ],
    )
