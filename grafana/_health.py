"""Platform health: is every ingest process alive, keeping up, and writing to InfluxDB.

For the operators: every ``ingest.health_interval_s`` (10 s by default) each ingest process
writes its own counters to the ``ingest`` measurement, tagged with its client id (see
``IngestService._health``). The *Ingest process* selector filters every panel. The counters
count from the start of the process, so the graphs show them per second; a restart starts
them again from zero, which the graphs skip.

The health points travel with the readings: while InfluxDB is away they wait in the ingest
too, and appear (with their own times) once it is back.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from birlik.config import IngestConfig
from birlik.schema import INGEST
from grafana._influxql import InfluxQL, group_by, matches, maximum, per_second, where
from grafana._panels import (
    LAST_SEEN_STEPS,
    dashboard_skeleton,
    finish,
    query_variable,
    row,
    stat_panel,
    table_panel,
    time_series,
    transformation,
)

UID = "birlik-platform-health"
TITLE = "Platform health"

_SELECTED = (matches("client_id", "client_id"),)
_DEFAULTS = IngestConfig()

#: Every rejected_<reason> field: one count per reason, written once the reason happened.
_REJECTED = "/^rejected_/"

# Seconds from each process's newest health point to the end of the time range. In every
# interval (newest first) "newer" counts the health points of that interval and all later
# ones, "here" those of that interval alone: they are equal in the interval of the newest
# point and in the empty ones after it, so counting those intervals, less one, gives the
# intervals without a health point since.
_NEWER = (
    'SELECT CUMULATIVE_SUM(COUNT("messages_received")) AS "newer", COUNT("messages_received") AS "here" '
    f'FROM "{INGEST}" {where(*_SELECTED)} {group_by("client_id", fill="0")} ORDER BY time DESC'
)
_LAST_SEEN = (
    f'SELECT (COUNT("newer") - 1) * $__interval_ms / 1000 AS "last_seen" FROM ({_NEWER}) '
    'WHERE "newer" <= "here" GROUP BY "client_id" ORDER BY time DESC'
)


def _rates(*fields: str) -> InfluxQL:
    """Counters of each selected process, per second."""
    select = ", ".join(per_second(f) for f in fields)
    alias = "$tag_client_id" if len(fields) == 1 else "$tag_client_id $col"
    return InfluxQL(f'SELECT {select} FROM "{INGEST}" {where(*_SELECTED)} {group_by("client_id")}').alias(alias)


def _peak(field: str) -> InfluxQL:
    """The largest value of each selected process in each interval."""
    return InfluxQL(f'SELECT {maximum(field)} FROM "{INGEST}" {where(*_SELECTED)} {group_by("client_id")}').alias(
        "$tag_client_id"
    )


def platform_health() -> models.Dashboard:
    """The "Platform health" dashboard."""
    return finish(
        dashboard_skeleton(
            UID,
            TITLE,
            "The ingest processes: alive or not, messages in and acknowledged, readings written, "
            "rejections, backlog and writes to InfluxDB.",
        )
        .with_variable(
            query_variable(
                "client_id",
                "Ingest process",
                f'SHOW TAG VALUES FROM "{INGEST}" WITH KEY = "client_id"',
                multi=True,
                include_all=True,
            )
        )
        .with_row(row("Alive"))
        .with_panel(
            stat_panel(
                "Last seen",
                InfluxQL(_LAST_SEEN).alias("$tag_client_id"),
                description=f"Seconds since each ingest process last wrote its health point (one every "
                f"{_DEFAULTS.health_interval_s:g} s by default). A process that stopped or hangs writes none: "
                f"yellow after {LAST_SEEN_STEPS[1][0]:g} s, red after {LAST_SEEN_STEPS[2][0]:g} s. When every "
                "process turns yellow at once, look at InfluxDB first: the health points wait in the ingest "
                "with the readings while InfluxDB is away. Exact to the second over the last hour, rounded to "
                "the graph's interval over longer ranges. A process that stopped before the time range "
                "began is not shown: widen the range.",
                unit="s",
                steps=LAST_SEEN_STEPS,
                span=24,
            )
            # One-second intervals up to an hour's range, at most 3600 of them over longer ones.
            .interval("1s")
            .max_data_points(3600)
        )
        .with_row(row("Traffic"))
        .with_panel(
            time_series(
                "Messages received per second",
                _rates("messages_received"),
                description="MQTT messages each process received from the broker. A message carries one "
                "or more samples of one machine. Zero while the machines run: the gateways or the broker "
                "are not sending.",
                unit="suffix: msg/s",
                span=8,
            )
        )
        .with_panel(
            time_series(
                "Messages acknowledged per second",
                _rates("messages_acked"),
                description="Messages acknowledged to the broker. A message is acknowledged only once all "
                "its readings are stored in InfluxDB or kept as dead letters; until then the broker keeps "
                "it. Below the received rate for long: the process falls behind and its window fills.",
                unit="suffix: msg/s",
                span=8,
            )
        )
        .with_panel(
            time_series(
                "Readings written per second",
                _rates("readings_written"),
                description="Readings stored in InfluxDB (one reading: one signal of one sample).",
                unit="suffix: readings/s",
                span=8,
            )
        )
        .with_row(row("Rejected and redelivered"))
        .with_panel(
            time_series(
                "Rejected per second",
                _rates("messages_rejected", "readings_rejected"),
                description="Whole messages rejected (not JSON, wrong topic, unknown machine...) and single "
                "readings rejected (unknown signal, wrong unit, out of range...). Everything rejected is "
                "kept in the dead-letter file with the reason.",
                unit="suffix: /s",
            )
        )
        .with_panel(
            time_series(
                "Rejected per second, by reason",
                InfluxQL(
                    f'SELECT NON_NEGATIVE_DERIVATIVE(LAST({_REJECTED}), 1s) FROM "{INGEST}" '
                    f"{where(*_SELECTED)} {group_by('client_id')}"
                ).alias("$tag_client_id $col"),
                description="Rejections for each reason. Reasons about a whole message (not_json, "
                "bad_topic, unknown_machine...) count messages; reasons about one reading (unknown_signal, "
                "wrong_unit, out_of_range...) count readings. A reason shows up once it has happened.",
                unit="suffix: /s",
            ).with_transformation(
                transformation(
                    "renameByRegex",
                    {"regex": "^(.+) non_negative_derivative_rejected_(.+)$", "renamePattern": "$1: $2"},
                )
            )
        )
        .with_panel(
            table_panel(
                "Rejected since start, by reason",
                InfluxQL(f'SELECT LAST({_REJECTED}) FROM "{INGEST}" {where(*_SELECTED)} GROUP BY "client_id"'),
                description="Messages or readings each process rejected, by reason, since it started "
                "(a restart counts from zero again). An empty cell: that reason has not happened.",
            )
            .with_transformation(transformation("organize", {"excludeByName": {"Time": True}}))
            .with_transformation(
                transformation("renameByRegex", {"regex": "^last_rejected_(.+)$", "renamePattern": "$1"})
            )
        )
        .with_panel(
            time_series(
                "Messages received again per second",
                _rates("messages_redelivered", "messages_replayed"),
                description="messages_redelivered: messages received a second time (same gateway, boot and "
                "sequence number), e.g. sent again by the broker after the process reconnected or "
                "restarted; written again, which stores nothing twice, and not counted again. A burst "
                "after a restart is normal, a steady rate is not. messages_replayed: messages a gateway "
                "sent again from its own log to fill a gap (gap repair), e.g. after the broker was away.",
                unit="suffix: msg/s",
            )
        )
        .with_row(row("Backlog and writes"))
        .with_panel(
            time_series(
                "Window in use",
                _peak("window_in_use"),
                description="Messages received and not yet acknowledged, the most in each interval. The "
                f"window is ingest.window messages ({_DEFAULTS.window} by default): when it is full the "
                "broker stops sending and keeps the rest. Full for long: InfluxDB is slow or away (see "
                "write retries), or the process cannot keep up.",
                unit="short",
            )
        )
        .with_panel(
            time_series(
                "Buffered points",
                _peak("buffered_points"),
                description="Points waiting in the process to be written to InfluxDB, the most in each "
                "interval. They pile up while InfluxDB is slow or away and drain once it is back.",
                unit="short",
            )
        )
        .with_panel(
            time_series(
                "Write latency",
                _peak("write_seconds_last"),
                description="How long the latest write to InfluxDB took, the longest in each interval. A "
                "window of W messages and a write time of L seconds allow about W / L messages per second.",
                unit="s",
                span=8,
            )
        )
        .with_panel(
            time_series(
                "Write retries per second",
                _rates("write_retries"),
                description="Writes to InfluxDB that failed and are tried again. Rising: InfluxDB is away "
                "or refusing the writes (stopped, disk full, wrong database or token); see the ingest's "
                "log. Nothing is lost: the process acknowledges nothing until the write succeeds, so the "
                "broker keeps the messages, but the window fills and new data waits in the broker.",
                unit="suffix: /s",
                span=8,
            )
        )
        .with_panel(
            time_series(
                "Sequence gaps",
                _peak("seq_gaps"),
                description="Sequence numbers missing from what the process received: messages a gateway "
                "numbered that have not arrived here (yet); a late arrival closes its gap. With several "
                "processes sharing the stream each sees only part of it, so gaps say nothing there.",
                unit="short",
                span=8,
            )
        )
    )
