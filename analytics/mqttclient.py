"""The analytics side's paho client, set up from the configuration in one place."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from birlik.config import MqttConfig


def paho_client(config: MqttConfig, client_id: str = "", *, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT v5 client with the configured credentials and TLS, reconnecting after 1-10 s."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if config.username:
        client.username_pw_set(config.username, config.password or None)
    context = config.ssl_context()
    if context is not None:
        client.tls_set_context(context)
    client.reconnect_delay_set(1, 10)
    return client
