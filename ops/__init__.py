"""ops: the tools that run the platform, above every stage.

- :mod:`ops.cli`: the ``birlik`` command, one subcommand per service or tool
- :mod:`ops.demo`: ``birlik demo``, a simulated plant through the whole platform
- :mod:`ops.bench`: ``birlik bench <name>``, benchmarks on real servers
- :mod:`ops.servers`: the supervisor of local Mosquitto and InfluxDB child processes
- :mod:`ops.stack`: a whole platform (servers and services) as child processes

Nothing below this package imports it: the stages (``gateway``, ``ingest``, ``analytics``,
``simulators``, ``grafana``) import only the contract package :mod:`birlik`.
"""
