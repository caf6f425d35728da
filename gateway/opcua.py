"""OPC UA driver: data-change subscriptions of an OPC UA server's nodes as machine readings.

A driver file (``birlik gateway --driver FILE``, see ``gateway/examples/opcua.yaml`` and
``docs/driver-opcua.md``) names the server's endpoint and, per machine, the node of each
catalogue signal with an optional ``scale``/``offset`` and the ``unit`` the server uses::

    driver: opcua
    endpoint: opc.tcp://plc-1.plant.local:4840/
    publishing_interval: 500ms
    machines:
      - path: acme/kz-turkestan/pumps/pump-101
        kind: centrifugal_pump
        signals:
          bearing_temp: {node: "ns=2;s=Pump101.BearingTemp", unit: degF}

The client (asyncua) runs in a thread of its own with its own asyncio loop. Each value's time
is its SourceTimestamp (else its ServerTimestamp, else the local time of arrival); values of one
machine with the same time form one sample. When the server goes away the driver logs it once,
reconnects with back-off forever, subscribes again, and (``history: {backfill: true}``) reads
the values of the disconnected interval back from the server's Historical Access.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from birlik.plant import Machine
from gateway.drivers import Reading
from gateway.southbound import (
    Backoff,
    DriverConfigError,
    Link,
    Rejections,
    SampleBuffer,
    SignalConversion,
    backoff,
    check_keys,
    conversion,
    duration,
    machines,
    read_yaml,
    section,
)

log = logging.getLogger("gateway.opcua")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEYS = {
    "driver",
    "gateway",
    "endpoint",
    "publishing_interval",
    "sampling_interval",
    "timeout",
    "watchdog",
    "reconnect",
    "history",
    "machines",
}


@dataclass(frozen=True)
class NodeSignal:
    """One server node read as one catalogue signal of one machine."""

    machine: Machine
    node: str  # "ns=2;s=Pump.Temp", "ns=2;i=1005", or "nsu=urn:...;s=..." (namespace by URI)
    conversion: SignalConversion


@dataclass(frozen=True)
class OpcUaConfig:
    endpoint: str
    signals: tuple[NodeSignal, ...]
    publishing_interval_s: float = 0.5
    #: How often the server samples each node (``None``: the publishing interval).
    sampling_interval_s: float | None = None
    timeout_s: float = 5.0
    #: How often the connection is probed when no data arrives.
    watchdog_s: float = 1.0
    reconnect: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))
    #: After a reconnect, read the disconnected interval back (Historical Access).
    backfill: bool = False
    #: ... at most this far back.
    backfill_max_s: float = 3600.0
    gateway: str | None = None
    source: str = ""

    def machines(self) -> list[Machine]:
        out: list[Machine] = []
        for s in self.signals:
            if s.machine not in out:
                out.append(s.machine)
        return out


def load_opcua(path: str) -> OpcUaConfig:
    doc = read_yaml(path)
    return opcua_config(doc, path)


def opcua_config(doc: Mapping[str, Any], where: str) -> OpcUaConfig:
    check_keys(doc, where, _KEYS, {"driver", "endpoint", "machines"})
    endpoint = doc["endpoint"]
    if not isinstance(endpoint, str) or not endpoint.startswith("opc.tcp://"):
        raise DriverConfigError(f"{where}: endpoint must be an opc.tcp:// URL, got {endpoint!r}")
    history = section(doc, "history", where, {"backfill", "max"})
    if not isinstance(history.get("backfill", False), bool):
        raise DriverConfigError(f"{where}: history.backfill must be true or false")

    def parse_signal(signal: str, spec: Mapping[str, Any], sw: str) -> tuple[str, SignalConversion]:
        node = spec.get("node")
        if not isinstance(node, str) or not node.strip():
            raise DriverConfigError(f"{sw}: 'node' must be a node id such as \"ns=2;s=Pump.Temp\"")
        _check_node_id(node.strip(), sw)
        return node.strip(), conversion(spec, sw, signal)

    signals: list[NodeSignal] = []
    nodes: dict[str, str] = {}
    for machine, parsed, _ in machines(doc, where, {"node"}, parse_signal):
        for signal, (node, conv) in parsed.items():
            if node in nodes:
                raise DriverConfigError(f"{where}: node {node!r} is mapped twice ({nodes[node]} and {signal})")
            nodes[node] = f"{machine.path} {signal}"
            signals.append(NodeSignal(machine, node, conv))
    sampling = doc.get("sampling_interval")
    gateway = doc.get("gateway")
    return OpcUaConfig(
        endpoint=endpoint,
        signals=tuple(signals),
        publishing_interval_s=duration(doc.get("publishing_interval"), f"{where}: publishing_interval", 0.5),
        sampling_interval_s=None
        if sampling is None
        else duration(sampling, f"{where}: sampling_interval", 0.0, positive=False),
        timeout_s=duration(doc.get("timeout"), f"{where}: timeout", 5.0),
        watchdog_s=duration(doc.get("watchdog"), f"{where}: watchdog", 1.0),
        reconnect=backoff(doc, where),
        backfill=bool(history.get("backfill", False)),
        backfill_max_s=duration(history.get("max"), f"{where}: history.max", 3600.0),
        gateway=None if gateway is None else str(gateway),
        source=where,
    )


def opcua_from_dict(doc: Mapping[str, Any], where: str) -> OpcUaDriver:
    return OpcUaDriver(opcua_config(doc, where))


def _check_node_id(text: str, where: str) -> None:
    from asyncua import ua

    if text.startswith("nsu="):
        uri, sep, rest = text[4:].partition(";")
        if not (uri and sep and rest):
            raise DriverConfigError(f"{where}: node {text!r}: expected nsu=<namespace URI>;<identifier>")
        text = f"ns=1;{rest}"
    try:
        ua.NodeId.from_string(text)
    except Exception:  # asyncua raises several kinds for a malformed id
        raise DriverConfigError(f"{where}: node {text!r} is not an OPC UA node id (e.g. ns=2;s=Pump.Temp)") from None


def _ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


class _Handler:
    """asyncua subscription callbacks, run in the driver's loop."""

    def __init__(self, driver: OpcUaDriver, lost: asyncio.Event) -> None:
        self.driver = driver
        self.lost = lost

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.driver._on_value(node.nodeid, data.monitored_item.Value)

    def status_change_notification(self, status: Any) -> None:
        code = getattr(status, "Status", status)
        if hasattr(code, "is_good") and not code.is_good():
            self.lost.set()


class OpcUaDriver:
    """Readings from OPC UA data-change notifications (see the module's description)."""

    name = "opcua"

    def __init__(self, config: OpcUaConfig, *, settle_s: float = 0.1) -> None:
        self.config = config
        self.buffer = SampleBuffer(settle_s)
        self.rejections = Rejections("opcua")
        self.link = Link("opcua", config.endpoint, config.reconnect.min_s, config.reconnect.max_s)
        self.notifications = 0
        self.backfilled = 0
        self.history_unsupported = 0
        self._by_node: dict[Any, NodeSignal] = {}
        self._last_ts: dict[str, int] = {}  # per node string: the last source time received
        self._resume_ms: dict[str, int] | None = None  # a backfill still to do
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False

    # --- the Driver protocol -----------------------------------------------------------

    def machines(self) -> list[Machine]:
        return self.config.machines()

    def poll(self, until_ms: int) -> list[Reading]:
        """The samples that arrived since the last poll (live data: ``until_ms`` is not used;
        each reading carries the server's time)."""
        if self._thread is None:
            self.start()
        return self.buffer.take()

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        # asyncua logs every failed attempt and lost publish request (with tracebacks); the
        # driver logs the connection's changes of state itself. Left alone if configured.
        ua_log = logging.getLogger("asyncua")
        if ua_log.level == logging.NOTSET:
            ua_log.setLevel(logging.CRITICAL)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="opcua-driver", daemon=True)
        self._thread.start()
        ready.wait(5)
        log.info(
            "opcua: %d machines, %d nodes from %s, publishing interval %g s%s",
            len(self.machines()),
            len(self.config.signals),
            self.config.endpoint,
            self.config.publishing_interval_s,
            ", history backfill on" if self.config.backfill else "",
        )

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the client thread (disconnecting from the server) and log the counters."""
        self._stopping = True
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        self._thread = None
        log.info("opcua: stopped; %s", ", ".join(f"{k} {v}" for k, v in self.stats().items()))

    def stats(self) -> dict[str, int]:
        return {
            "notifications": self.notifications,
            "readings": self.buffer.readings,
            "duplicates": self.buffer.duplicates,
            "backfilled": self.backfilled,
            "rejected": self.rejections.total,
            "connects": self.link.connects,
            "connection_losses": self.link.losses,
            "failed_connects": self.link.failed_attempts,
        }

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        if self._stopping:
            self._stop.set()
        ready.set()
        while not self._stop.is_set():
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the driver never dies of a device problem
                self.link.down(exc)
            if self._stop.is_set():
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.link.next_delay())

    async def _session(self) -> None:
        """One connection: connect, subscribe, (backfill), wait until lost or stopped."""
        from asyncua import ua
        from asyncua.client.client import Client

        assert self._stop is not None
        client = Client(self.config.endpoint, timeout=self.config.timeout_s, watchdog_intervall=self.config.watchdog_s)
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            lost.set()

        client.connection_lost_callback = on_lost
        connected = False
        # Where each node's data stopped before this connection (the subscription's first
        # notifications move it on before the backfill reads the history).
        resume_ms = self._resume_ms if self._resume_ms is not None else dict(self._last_ts)
        try:
            await client.connect()
            connected = True
            nodes = []
            by_node: dict[Any, NodeSignal] = {}
            namespaces: dict[str, int] = {}
            for s in self.config.signals:
                node_id = s.node
                if node_id.startswith("nsu="):
                    uri, _, rest = node_id[4:].partition(";")
                    if uri not in namespaces:
                        namespaces[uri] = await client.get_namespace_index(uri)
                    node_id = f"ns={namespaces[uri]};{rest}"
                node = client.get_node(node_id)
                nodes.append(node)
                by_node[node.nodeid] = s
            self._by_node = by_node
            sub = await client.create_subscription(self.config.publishing_interval_s * 1000, _Handler(self, lost))
            sampling = self.config.sampling_interval_s
            sampling_ms = (self.config.publishing_interval_s if sampling is None else sampling) * 1000
            results = await sub.subscribe_data_change(nodes, sampling_interval=ua.Double(sampling_ms))
            for node, result in zip(nodes, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    s = by_node[node.nodeid]
                    detail = f"{s.machine.path} {s.conversion.signal} {s.node}: {getattr(result, 'name', result)}"
                    self.rejections.reject("subscribe_failed", detail)
            lost_at = self.link.lost_at_ms
            self.link.up(f"{len(nodes)} nodes subscribed")
            if self.config.backfill and lost_at is not None:
                self._resume_ms = resume_ms  # kept for the next connection if this one fails now
                await self._backfill(client, nodes, lost_at, resume_ms)
                self._resume_ms = None
            stop_wait = asyncio.ensure_future(self._stop.wait())
            lost_wait = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({stop_wait, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop_wait.cancel()
                lost_wait.cancel()
            if lost.is_set() and not self._stop.is_set():
                self.link.down("the server stopped answering")
        finally:
            if connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), self.config.timeout_s)
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect_sessionless(), 1.0)

    async def _backfill(self, client: Any, nodes: list[Any], lost_at_ms: int, resume_ms: dict[str, int]) -> None:
        """Read each node's history from its last value before the loss until now."""
        from asyncua.ua.uaerrors import UaStatusCodeError

        now_ms = int(time.time() * 1000)
        floor_ms = now_ms - int(self.config.backfill_max_s * 1000)
        for node in nodes:
            s = self._by_node[node.nodeid]
            start_ms = max(resume_ms.get(s.node, lost_at_ms) + 1, floor_ms)
            try:
                values = await node.read_raw_history(
                    _EPOCH + timedelta(milliseconds=start_ms),
                    _EPOCH + timedelta(milliseconds=now_ms),
                    return_bounds=False,
                )
            except UaStatusCodeError as exc:
                self.history_unsupported += 1
                self.rejections.reject("history_unavailable", f"{s.machine.path} {s.conversion.signal}: {exc}")
                continue
            before = self.buffer.readings
            for dv in values:
                self._on_value(node.nodeid, dv, count=False)
            self.backfilled += self.buffer.readings - before
        log.info(
            "opcua: read back %d values of the disconnected interval (since %s)",
            self.backfilled,
            (_EPOCH + timedelta(milliseconds=lost_at_ms)).isoformat(timespec="seconds"),
        )

    def _on_value(self, node_id: Any, dv: Any, *, count: bool = True) -> None:
        try:
            if count:
                self.notifications += 1
            s = self._by_node.get(node_id)
            if s is None:
                return
            what = f"{s.machine.path} {s.conversion.signal} (node {s.node})"
            status = dv.StatusCode
            if status is not None and not status.is_good():
                self.rejections.reject("bad_status", f"{what}: status {getattr(status, 'name', status)}")
                return
            stamp = dv.SourceTimestamp or dv.ServerTimestamp
            ts = _ms(stamp) if stamp is not None else int(time.time() * 1000)
            raw = dv.Value.Value if dv.Value is not None else None
            value, reason = s.conversion.check(raw)
            if value is None:
                self.rejections.reject(reason, f"{what}: {raw!r}")
                return
            self._last_ts[s.node] = max(ts, self._last_ts.get(s.node, ts))
            self.buffer.add(s.machine, ts, s.conversion.signal, value)
        except Exception as exc:  # a malformed notification must not stop the subscription
            self.rejections.reject("malformed", f"{node_id}: {exc!r}")
