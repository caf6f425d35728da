"""birlik: the contract every stage of the platform speaks.

- :mod:`birlik.topics`: the MQTT topic namespace
- :mod:`birlik.signals`: the signal catalogue (units, types, ranges)
- :mod:`birlik.payload`: telemetry and alert payloads, validation
- :mod:`birlik.lineprotocol`: InfluxDB line protocol
- :mod:`birlik.schema`: the database layout
"""

__version__ = "0.1.0"
