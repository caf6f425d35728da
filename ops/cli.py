"""The ``birlik`` command: one subcommand per service or tool."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from birlik import __version__
from birlik.config import ConfigError, load_config
from birlik.process import setup_logging, terminate_gracefully

Handler = Callable[[argparse.Namespace], int]


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="TOML configuration file (default: $BIRLIK_CONFIG; settings also come from BIRLIK_<SECTION>_<KEY>)",
    )
    common.add_argument(
        "--log-level",
        default=os.environ.get("BIRLIK_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log detail (default: info)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    import analytics.alarmcli
    import analytics.cli
    import gateway.cli
    import grafana.cli
    import ingest.cli
    import ops.bench
    import ops.demo
    import ops.repair
    import simulators.cli

    parser = argparse.ArgumentParser(
        prog="birlik",
        description=(
            "Industrial telemetry for the Central Asia industrial cooperation centre: "
            "simulators -> gateway -> MQTT -> ingest -> InfluxDB -> analytics -> alerts, "
            "with Grafana dashboards."
        ),
        epilog="Run 'birlik <command> --help' for a command's options. Start with 'birlik demo'.",
    )
    parser.add_argument("--version", action="version", version=f"birlik {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    common = common_options()
    ops.demo.register(sub, common)
    gateway.cli.register(sub, common)
    ingest.cli.register(sub, common)
    analytics.cli.register(sub, common)
    analytics.alarmcli.register(sub, common)
    simulators.cli.register(sub, common)
    grafana.cli.register(sub, common)
    ops.repair.register(sub, common)
    register_servers(sub, common)
    ops.bench.register(sub, common)
    register_config(sub, common)
    return parser


def register_servers(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "servers",
        parents=[common],
        help="run a local Mosquitto and InfluxDB until Ctrl-C",
        description="Start Mosquitto and InfluxDB as child processes on free (or given) ports, "
        "with data under --state-dir, print how to reach them, and stop them on Ctrl-C.",
    )
    p.add_argument(
        "--state-dir", type=Path, default=Path(".state/servers"), help="data and logs (default: %(default)s)"
    )
    p.add_argument("--mqtt-port", type=int, default=0, help="broker port (default: a free one)")
    p.add_argument("--influx-port", type=int, default=0, help="InfluxDB HTTP port (default: a free one)")
    p.set_defaults(func=run_servers)


def run_servers(args: argparse.Namespace) -> int:
    from ops.servers import Supervisor

    terminate_gracefully()
    with Supervisor(args.state_dir) as supervisor:
        broker = supervisor.start_mosquitto(port=args.mqtt_port or None)
        influx = supervisor.start_influxdb(port=args.influx_port or None)
        print(f"export BIRLIK_MQTT_URL={broker.url}")
        print(f"export BIRLIK_INFLUX_URL={influx.url}")
        print("# servers running; Ctrl-C stops them", flush=True)
        try:
            while all(c.running for c in supervisor.children):
                time.sleep(0.5)
            logging.getLogger("birlik").error("a server exited; see the logs in %s/logs", args.state_dir)
            return 1
        except KeyboardInterrupt:
            return 0


def register_config(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "config",
        parents=[common],
        help="print the settings in force and where each came from",
        description="Print the effective configuration (defaults, file, environment), secrets hidden.",
    )
    p.set_defaults(func=print_config)


def print_config(args: argparse.Namespace) -> int:
    from birlik.config import describe

    print(describe(load_config(args.config)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    handler: Handler = args.func
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"birlik {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the output was piped into a command that stopped reading (head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
