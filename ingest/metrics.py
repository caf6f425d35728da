"""The ingest's counters for Prometheus (``/metrics``), from prometheus-client.

Each service process has its own registry (not the library's global one), so tests and tools
can run several in one interpreter. Served only when ``ingest.metrics_listen`` is set.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from ingest.service import IngestStats

log = logging.getLogger("ingest.metrics")


class Metrics:
    def __init__(self, *, client_id: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"client_id": client_id}
        r = self.registry

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, ["client_id"], registry=r)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ["client_id"], registry=r)

        self._received = counter("birlik_ingest_messages_received", "MQTT messages received")
        self.acked = counter("birlik_ingest_messages_acked", "messages acknowledged after storing").labels(**labels)
        self._redelivered = counter("birlik_ingest_messages_redelivered", "messages received again, not counted twice")
        self._written = counter("birlik_ingest_readings_written", "readings written to InfluxDB")
        self._points = counter("birlik_ingest_points_written", "line-protocol points written to InfluxDB")
        self.write_retries = counter("birlik_ingest_write_retries", "writes retried (InfluxDB away, refusing)").labels(
            **labels
        )
        self._rejected = Counter(
            "birlik_ingest_rejected", "messages or readings kept as dead letters", ["client_id", "reason"], registry=r
        ).labels
        self._window = gauge("birlik_ingest_window_in_use", "messages received and not yet acknowledged")
        self._buffered = gauge("birlik_ingest_buffered_points", "points waiting to be written")
        self._gaps = gauge("birlik_ingest_sequence_gaps", "sequence numbers missing in what this process received")
        self._subscribed = gauge("birlik_ingest_subscribed", "1 while subscribed to the broker")
        self._influx_ok = gauge("birlik_ingest_influx_ok", "1 while InfluxDB accepts writes")
        self.write_seconds = Histogram(
            "birlik_ingest_write_seconds",
            "time to write one batch to InfluxDB",
            ["client_id"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        ).labels(**labels)
        self._labels = labels
        self._seen: dict[str, float] = {}

    def _advance(self, metric: Counter, name: str, total: float) -> None:
        """Counters follow the service's own totals (kept in IngestStats)."""
        delta = total - self._seen.get(name, 0)
        if delta > 0:
            metric.labels(**self._labels).inc(delta)
            self._seen[name] = total

    def update(self, s: IngestStats) -> None:
        self._advance(self._received, "received", s.messages_received)
        self._advance(self._redelivered, "redelivered", s.messages_redelivered)
        self._advance(self._written, "written", s.readings_written)
        self._advance(self._points, "points", s.points_written)
        for reason, n in s.rejected_by_reason.items():
            key = f"rejected:{reason}"
            delta = n - self._seen.get(key, 0)
            if delta > 0:
                self._rejected(client_id=self._labels["client_id"], reason=reason).inc(delta)
                self._seen[key] = n
        self._window.labels(**self._labels).set(s.window_in_use)
        self._buffered.labels(**self._labels).set(s.buffered_points)
        self._gaps.labels(**self._labels).set(s.seq_gaps)
        self._subscribed.labels(**self._labels).set(1 if s.subscribed else 0)
        self._influx_ok.labels(**self._labels).set(1 if s.influx_state == "ok" else 0)

    def serve(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        try:
            start_http_server(int(port), addr=host or "0.0.0.0", registry=self.registry)
        except OSError as exc:
            log.error("cannot serve metrics on %s: %s; going on without them", listen, exc)
            return
        log.info("Prometheus metrics on http://%s:%s/metrics", host or "0.0.0.0", port)
