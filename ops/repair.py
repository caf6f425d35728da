"""``birlik repair``: find the messages no ingest stored and ask their gateways to send them again.

Every ingest process writes, with each batch, which sequence numbers it stored: measurement
``sequence`` (tags gateway, boot, ingest; fields first, last). This service reads them all
(every ingest process of a shared stream), merges the runs per gateway boot, and finds the
**holes**: numbers not stored, below the highest number stored more than ``settle_s`` ago
(so messages still in flight are not asked for). For each gateway boot with holes it
publishes one repair request (QoS 1) on ``gateway_topic(gateway, "repair")``::

    {"v": 1, "boot": "<boot id>", "ranges": [[first, last], ...]}

and the gateway publishes those messages again from its disk log, marked ``replay``. At
most one request per gateway boot is outstanding: a boot is asked again only after
``retry_s`` if holes remain, and a hole asked for ``max_attempts`` times is given up (the
gateway no longer has it, or it cannot be stored). Logged: what was asked, what got closed.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from birlik import schema
from birlik.influx import InfluxClient
from birlik.topics import gateway_topic

log = logging.getLogger("repair")

Range = tuple[int, int]
Key = tuple[str, str]  # gateway, boot

#: Records are re-read this far back at every query: an ingest writes a record with the time
#: its batch was sealed, which can be visible a little later.
OVERLAP_MS = 5 * 60 * 1000
#: At most this many ranges in one request.
MAX_RANGES = 1000


def merge(runs: list[Range]) -> list[Range]:
    """Sorted, disjoint, non-adjacent runs covering the same numbers."""
    out: list[Range] = []
    for first, last in sorted(runs):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


def holes(covered: list[Range], below: int) -> list[Range]:
    """Numbers from 1 to ``below`` (inclusive) that ``covered`` (merged) does not cover."""
    out: list[Range] = []
    nxt = 1
    for first, last in covered:
        if first > below:
            break
        if first > nxt:
            out.append((nxt, min(first - 1, below)))
        nxt = max(nxt, last + 1)
    if nxt <= below:
        out.append((nxt, below))
    return out


def count(ranges: list[Range]) -> int:
    return sum(b - a + 1 for a, b in ranges)


@dataclass
class BootState:
    covered: list[Range] = field(default_factory=list)
    settled_max: int = 0
    #: (record time ms, last) of records not settled yet.
    recent: list[tuple[int, int]] = field(default_factory=list)
    asked: list[Range] = field(default_factory=list)
    asked_at: float = 0.0
    attempts: dict[Range, int] = field(default_factory=dict)
    given_up: list[Range] = field(default_factory=list)


class GapFinder:
    """Reads the ``sequence`` records and decides which repair requests to send."""

    def __init__(
        self,
        influx: InfluxClient,
        *,
        settle_s: float = 30.0,
        lookback_s: float = 24 * 3600.0,
        retry_s: float = 60.0,
        max_attempts: int = 5,
        gateways: list[str] | None = None,
    ) -> None:
        self.influx = influx
        self.settle_s = settle_s
        self.lookback_s = lookback_s
        self.retry_s = retry_s
        self.max_attempts = max_attempts
        self.gateways = set(gateways or [])
        self.boots: dict[Key, BootState] = {}
        self._since_ms: int | None = None
        self.requested = 0  # messages asked for, in all
        self.closed = 0  # of those, stored since
        self.abandoned = 0
        self.requests = 0

    def read(self, now_ms: int | None = None) -> None:
        """Read the records written since the last read (with an overlap), merge them."""
        now_ms = now_ms or int(time.time() * 1000)
        since = self._since_ms if self._since_ms is not None else now_ms - int(self.lookback_s * 1000)
        series = self.influx.query(
            f'SELECT "first", "last" FROM "{schema.SEQUENCE}" WHERE time > {since}ms GROUP BY "gateway", "boot"'
        )
        self._since_ms = now_ms - OVERLAP_MS
        for s in series:
            gateway, boot = s.tags.get("gateway", ""), s.tags.get("boot", "")
            if not gateway or not boot or (self.gateways and gateway not in self.gateways):
                continue
            state = self.boots.setdefault((gateway, boot), BootState())
            runs = []
            for ts, first, last in s.values:
                if first is None or last is None:
                    continue
                runs.append((int(first), int(last)))
                state.recent.append((int(ts), int(last)))
            state.covered = merge(state.covered + runs)
        settled_before = now_ms - int(self.settle_s * 1000)
        for state in self.boots.values():
            keep = []
            for ts, last in state.recent:
                if ts <= settled_before:
                    state.settled_max = max(state.settled_max, last)
                else:
                    keep.append((ts, last))
            state.recent = keep

    def requests_due(self, now: float | None = None) -> list[tuple[str, str, list[Range]]]:
        """``(gateway, boot, ranges)`` to ask for now, with the bookkeeping of what got closed."""
        now = now if now is not None else time.monotonic()
        due = []
        for (gateway, boot), state in self.boots.items():
            open_now = holes(state.covered, state.settled_max)
            if state.asked:
                still = _intersect(state.asked, open_now)
                closed = count(state.asked) - count(still)
                if closed:
                    self.closed += closed
                    log.info("%s boot %s: %d asked-for message(s) stored since", gateway, boot, closed)
                state.asked = still
                if state.asked and now - state.asked_at < self.retry_s:
                    continue  # one outstanding request per gateway boot
            wanted = []
            for r in open_now:
                if r in state.given_up:
                    continue
                tries = state.attempts.get(r, 0)
                if tries >= self.max_attempts:
                    state.given_up.append(r)
                    self.abandoned += count([r])
                    log.warning(
                        "%s boot %s: giving up on %d..%d after %d requests (not in the gateway's log any more?)",
                        gateway,
                        boot,
                        r[0],
                        r[1],
                        tries,
                    )
                    continue
                wanted.append(r)
            wanted = wanted[:MAX_RANGES]
            if not wanted:
                continue
            for r in wanted:
                state.attempts[r] = state.attempts.get(r, 0) + 1
            state.asked, state.asked_at = wanted, now
            self.requested += count(wanted)
            self.requests += 1
            due.append((gateway, boot, wanted))
        return due

    def stats(self) -> dict[str, Any]:
        open_holes = sum(count(holes(s.covered, s.settled_max)) for s in self.boots.values())
        return {
            "boots": len(self.boots),
            "requests": self.requests,
            "requested": self.requested,
            "closed": self.closed,
            "abandoned": self.abandoned,
            "open": open_holes,
        }


def _intersect(a: list[Range], b: list[Range]) -> list[Range]:
    out = []
    for a0, a1 in a:
        for b0, b1 in b:
            lo, hi = max(a0, b0), min(a1, b1)
            if lo <= hi:
                out.append((lo, hi))
    return out


def request_payload(boot: str, ranges: list[Range]) -> bytes:
    return json.dumps({"v": 1, "boot": boot, "ranges": [list(r) for r in ranges]}).encode()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "repair",
        parents=[common],
        help="gap repair: find telemetry no ingest stored, ask the gateways to publish it again",
        description="Read the ingest's 'sequence' records from InfluxDB, find the sequence numbers of each gateway "
        "boot that no ingest process stored, and publish repair requests to the gateways "
        "(birlik/_gateway/<gateway>/repair), which send those messages again from their disk logs.",
    )
    p.add_argument("--interval", type=float, default=None, help="seconds between looks (repair.interval_s; 10)")
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="ask only for holes below numbers stored this long ago, s (repair.settle_s; 30)",
    )
    p.add_argument(
        "--retry", type=float, default=None, help="ask a gateway boot again after this long, s (repair.retry_s; 60)"
    )
    p.add_argument(
        "--lookback",
        type=float,
        default=None,
        help="hours of sequence records read at the start (repair.lookback_h; 24)",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=None,
        help="give up a hole after this many requests (repair.max_attempts; 5)",
    )
    p.add_argument("--gateway", action="append", default=None, help="only this gateway (repeatable; default: all)")
    p.add_argument("--once", action="store_true", help="look once, send the requests, exit")
    p.add_argument("--client-id", default=None, help="MQTT client id (repair.client_id; birlik-repair)")
    p.add_argument("--stats-file", default=None, help="keep counters in this JSON file while running")
    p.set_defaults(func=run)


class RequestPublisher:
    """Publishes repair requests, QoS 1, MQTT v5; reconnects by itself."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        username: str = "",
        password: str = "",
        context: ssl.SSLContext | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password or None)
        if context is not None:
            self.client.tls_set_context(context)
        self.client.on_connect = lambda c, u, f, reason, p: self._connected.set() if not reason.is_failure else None
        self.client.on_disconnect = lambda c, u, f, reason, p: self._connected.clear()
        self.client.reconnect_delay_set(1, 10)
        self.client.connect_async(host, port)
        self.client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def publish(self, gateway: str, boot: str, ranges: list[Range]) -> None:
        self.client.publish(gateway_topic(gateway, "repair"), request_payload(boot, ranges), qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def repair_once(finder: GapFinder, publisher: RequestPublisher) -> int:
    """One look: read, decide, publish. Returns the number of requests sent."""
    finder.read()
    due = finder.requests_due()
    for gateway, boot, ranges in due:
        shown = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in ranges[:5])
        log.info(
            "asking %s for boot %s: %d message(s) in %d range(s): %s%s",
            gateway,
            boot,
            count(ranges),
            len(ranges),
            shown,
            " ..." if len(ranges) > 5 else "",
        )
        publisher.publish(gateway, boot, ranges)
    return len(due)


def run(args: argparse.Namespace) -> int:
    from birlik.config import load_config, override
    from birlik.process import terminate_gracefully
    from birlik.stats import StatsFile

    terminate_gracefully()
    config = load_config(args.config)
    flags = {
        "interval_s": args.interval,
        "settle_s": args.settle,
        "retry_s": args.retry,
        "lookback_h": args.lookback,
        "max_attempts": args.max_attempts,
        "client_id": args.client_id,
    }
    override(config, "repair", flags)  # each flag given wins over its [repair] setting
    rc = config.repair
    stats = StatsFile(args.stats_file)
    publisher = RequestPublisher(
        config.mqtt.host,
        config.mqtt.port,
        rc.client_id,
        config.mqtt.username,
        config.mqtt.password,
        config.mqtt.ssl_context(),
    )
    if not publisher.wait_connected(15):
        log.warning("the broker at %s is not there yet; requests wait until it is", config.mqtt.url)
    log.info(
        "repair: sequence records in %s/%s every %.0f s, settle %.0f s, retry %.0f s -> %s",
        config.influx.url,
        config.influx.database,
        rc.interval_s,
        rc.settle_s,
        rc.retry_s,
        config.mqtt.url,
    )
    try:
        with InfluxClient(config.influx.settings()) as influx:
            finder = GapFinder(
                influx,
                settle_s=rc.settle_s,
                lookback_s=rc.lookback_h * 3600,
                retry_s=rc.retry_s,
                max_attempts=rc.max_attempts,
                gateways=args.gateway,
            )
            while True:
                try:
                    repair_once(finder, publisher)
                except Exception as exc:  # InfluxDB away: say so, try again next time
                    log.warning("repair: cannot read the sequence records: %s", exc)
                stats.update({**finder.stats(), "running": True}, force=True)
                if args.once:
                    time.sleep(1)  # let the requests go out
                    break
                time.sleep(rc.interval_s)
    except KeyboardInterrupt:
        pass
    finally:
        publisher.close()
    s = finder.stats()
    log.info(
        "repair stopped: %d request(s) for %d message(s), %d closed, %d given up, %d still open",
        s["requests"],
        s["requested"],
        s["closed"],
        s["abandoned"],
        s["open"],
    )
    return 0
