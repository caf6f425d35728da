"""``birlik dashboards``: write (or check) the Grafana provisioning tree."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_OUT = Path("grafana/provisioning")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "dashboards",
        parents=[common],
        help="generate the Grafana dashboards and provisioning files (or --check them)",
        description=(
            "Build the Grafana dashboards (centre overview, machine detail, predictive\n"
            "maintenance, platform health) from code and write Grafana's provisioning tree:\n\n"
            "  OUT/datasources/birlik-influxdb.yaml   the InfluxDB data source (InfluxQL, v1 API)\n"
            "  OUT/dashboards/birlik.yaml             the dashboard provider\n"
            "  OUT/dashboards/*.json                  the dashboards\n\n"
            "Mount OUT at /etc/grafana/provisioning and restart Grafana (docker-compose.yml\n"
            "does this). The files under grafana/provisioning are committed: after changing a\n"
            "dashboard, run this command and commit the result; the tests run it with --check."
        ),
        epilog=(
            "examples:\n"
            "  birlik dashboards                      # rewrite grafana/provisioning\n"
            "  birlik dashboards --check              # exit 1 if the committed files are stale\n"
            "  birlik dashboards --out /tmp/prov --influx-url http://10.0.0.5:8086\n"
            "  birlik dashboards --out /tmp/prov --influx-token-env INFLUX_TOKEN   # InfluxDB 2.x/3.x"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="root of the provisioning tree (default: %(default)s)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="write nothing; list the files that differ from what the code generates and exit 1 if any",
    )
    p.add_argument(
        "--influx-url",
        metavar="URL",
        default=os.environ.get("BIRLIK_GRAFANA_INFLUX_URL", "http://influxdb:8086"),
        help="InfluxDB URL as seen from the Grafana server, not from this machine "
        "(default: $BIRLIK_GRAFANA_INFLUX_URL, else http://influxdb:8086, the docker-compose service)",
    )
    p.add_argument(
        "--database",
        metavar="NAME",
        default=os.environ.get("BIRLIK_GRAFANA_DATABASE", "birlik"),
        help="InfluxDB database (2.x: the DBRP-mapped name) (default: $BIRLIK_GRAFANA_DATABASE, else birlik)",
    )
    p.add_argument(
        "--influx-token-env",
        metavar="VAR",
        default="",
        help="InfluxDB 2.x/3.x: send 'Authorization: Token ${VAR}', VAR being an environment "
        "variable of the Grafana server (the token itself is never written)",
    )
    p.add_argument(
        "--dashboards-path",
        metavar="PATH",
        default="/etc/grafana/provisioning/dashboards",
        help="where Grafana finds the dashboard JSON files (default: %(default)s)",
    )
    p.set_defaults(func=run_dashboards)


def run_dashboards(args: argparse.Namespace) -> int:
    # The SDK is imported here, not at the top, so that `birlik --help` stays fast.
    from grafana._provisioning import (
        ProvisioningOptions,
        check_provisioning,
        provisioning_files,
        write_provisioning,
    )

    options = ProvisioningOptions(
        influx_url=args.influx_url,
        database=args.database,
        token_env=args.influx_token_env,
        dashboards_path=args.dashboards_path,
    )
    files = provisioning_files(options)
    out: Path = args.out
    if args.check:
        problems = check_provisioning(out, files)
        for problem in problems:
            print(f"{out}/{problem}", file=sys.stderr)
        if problems:
            print(
                f"birlik dashboards: {len(problems)} file(s) out of date; run "
                f"'birlik dashboards --out {out}' and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"birlik dashboards: {len(files)} files in {out} are up to date")
        return 0
    changed = write_provisioning(out, files)
    for relative in changed:
        print(f"wrote {out / relative}")
    print(f"birlik dashboards: {len(files)} files in {out}, {len(changed)} changed")
    return 0
