"""The database layout every stage agrees on (InfluxDB measurements, tags and fields).

``telemetry``  one point per machine sample.
               tags: tenant, site, line, machine, kind; fields: one per signal
               (see :mod:`birlik.signals`): gauges and totals float, counters integer,
               state string.
``anomaly``    one point per scored sample, written by analytics.
               tags: tenant, site, line, machine, kind, detector;
               fields: score (float), threshold (float), anomalous (bool), signal (string,
               the largest contributor).
``alert``      one point per alert transition, written by analytics.
               tags: tenant, site, line, machine, severity, state (raised|cleared);
               fields: id, detector, signal, message (strings), score (float).
``alarm``      one point per alarm transition (see :mod:`birlik.alarm`), written by analytics.
               tags: tenant, site, line, machine, kind, priority, state, transition;
               fields: id, key, title, text, user, comment (strings), seq (integer).
``health``     each machine's health indicator and remaining useful life, every 10 minutes
               of device time, written by analytics (see analytics/rul.py).
               tags: tenant, site, line, machine, kind; fields: indicator (score / threshold),
               health (1 healthy ... 0 failed), slope_per_h, and while the indicator rises
               rul_h, rul_low_h, rul_high_h (hours to failure and its band).
``sensor_issue`` a sensor issue raised or cleared by analytics' data-quality checks.
               tags: tenant, site, line, machine, kind, signal, issue (stuck, dropout,
               out_of_range, spikes, drift, scaling, offset), state (raised|cleared);
               fields: detail (string), started (integer, ms).
``ingest``     the ingest's own counters, every ``ingest.health_interval_s`` (platform health).
               tags: client_id; fields: messages_received, messages_acked, readings_written,
               readings_rejected, write_retries, seq_gaps, window_in_use, rejected_<reason> ...
               (integers and floats); timestamp: the ingest's clock.
``gateway``    each gateway's health reports (see :mod:`birlik.health`), as the ingest received
               them. tags: gateway, boot; fields: buffer_depth, buffer_backlog, buffer_bytes,
               messages, readings, acked, reconnects, replayed, dropped, repair_requests,
               repaired (integers), oldest_unsent_s, publish_rate (floats); timestamp: the
               gateway's clock.
``sequence``   which telemetry messages the ingest stored, as runs of sequence numbers, for gap
               repair across every ingest process: one point per run per batch.
               tags: gateway, boot, ingest (the ingest's client id); fields: first, last
               (integers, inclusive); timestamp: the ingest's clock.

All timestamps are the device time of the reading concerned, in milliseconds.
"""

TELEMETRY = "telemetry"
ANOMALY = "anomaly"
ALERT = "alert"
INGEST = "ingest"
SEQUENCE = "sequence"
GATEWAY = "gateway"
ALARM = "alarm"
HEALTH = "health"
SENSOR_ISSUE = "sensor_issue"

MACHINE_TAGS = ("tenant", "site", "line", "machine", "kind")
