"""MQTT 3.1.1: a gateway forced to it, and one that falls back to it when the broker refuses
MQTT 5, as brokers of the 3.1.1 era do (CONNACK return code 1, "unacceptable protocol version").

No broker of that era is packaged for Debian any more, so the legacy broker here is a small
TCP front to the real Mosquitto that answers a version-5 CONNECT the way a 3.1.1 broker must
(MQTT 3.1.1, section 3.1.2.2) and passes every other connection through unchanged.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest

from birlik.stats import read_stats
from ops.servers import Supervisor, free_port
from tests.ingest_procs import ingest_env, ingest_process
from tests.test_gateway_durability import GW, _db, assert_every_logged_reading_stored_once, start_gateway

pytestmark = pytest.mark.slow


class LegacyBroker:
    """Listens on a port of its own; refuses MQTT 5 CONNECTs, forwards the rest to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.levels: list[int] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        try:
            while len(head) < 9:  # fixed header (2+), protocol name "MQTT" (6), level (1)
                chunk = client.recv(4096)
                if not chunk:
                    client.close()
                    return
                head += chunk
            length_bytes = 1
            while head[length_bytes] & 0x80:
                length_bytes += 1
            level = head[1 + length_bytes + 6]
            self.levels.append(level)
            if level == 5:
                client.sendall(bytes([0x20, 0x02, 0x00, 0x01]))  # CONNACK, refused: unacceptable protocol version
                client.close()
                return
            upstream = socket.create_connection(self.upstream)
            upstream.sendall(head)
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._server.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def test_gateway_falls_back_to_3_1_1_when_the_broker_refuses_5_and_loses_nothing(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto(port=free_port())
        influx = sup.start_influxdb()
        ingest_process(sup, ingest_env(broker.url, influx.url, db, tmp_path, "ingest"), tmp_path, "ingest").start()
        legacy = LegacyBroker((broker.host, broker.port))
        try:
            state = tmp_path / "gw"
            gateway, stats = start_gateway(sup, "gateway", legacy.url, state, seconds=8, protocol="auto")
            assert gateway.process.wait(90) == 0
        finally:
            legacy.close()
        text = gateway.log_path.read_text()
        assert text.count("does not speak MQTT 5; using MQTT 3.1.1") == 1
        assert "refused the connection" not in text
        assert legacy.levels[0] == 5 and set(legacy.levels[1:]) == {4}  # 4: MQTT 3.1.1
        final = read_stats(stats)
        assert final["mqtt_protocol"] == "3.1.1" and final["unacked"] == 0 and final["reconnects"] == 0
        assert_every_logged_reading_stored_once(state, influx.url, db)


def test_gateway_forced_to_3_1_1_and_forced_to_5(tmp_path: Path) -> None:
    db = _db()
    with Supervisor(tmp_path / "s") as sup:
        broker = sup.start_mosquitto(port=free_port())
        influx = sup.start_influxdb()
        ingest_process(sup, ingest_env(broker.url, influx.url, db, tmp_path, "ingest"), tmp_path, "ingest").start()
        state = tmp_path / "gw"
        gateway, stats = start_gateway(sup, "gateway", broker.url, state, seconds=5, protocol="3.1.1")
        assert gateway.process.wait(90) == 0
        assert read_stats(stats)["mqtt_protocol"] == "3.1.1"
        assert "(MQTT 3.1.1, QoS 1)" in gateway.log_path.read_text()
        assert_every_logged_reading_stored_once(state, influx.url, db)

        # Forced to 5 in front of a 3.1.1 broker: refused, said once, the readings kept in the log.
        legacy = LegacyBroker((broker.host, broker.port))
        try:
            forced, stats5 = start_gateway(sup, "gateway-5", legacy.url, tmp_path / "gw5", seconds=4, protocol="5")
            assert forced.process.wait(90) == 1
        finally:
            legacy.close()
        text = forced.log_path.read_text()
        assert text.count("refused the connection: Unsupported protocol version") == 1
        assert len(legacy.levels) >= 2 and set(legacy.levels) == {5}
        final = read_stats(stats5)
        assert final["unacked"] > 0 and final["unacked"] == final["buffer_depth"]
        assert GW in text
