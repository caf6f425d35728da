"""``birlik alarms``: see and act on alarms from the command line.

``list`` shows the open alarms (from the retained ``.../alarm_state`` topics, or from the
alarm store with ``--store``); ``ack``, ``shelve``, ``unshelve`` and ``clear`` publish a
command on ``birlik/_alarms/command`` (QoS 1), which the analytics worker applies, stores
and notifies; ``rate`` prints the alarm-rate figures (EEMUA 191) from the store.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from birlik.alarm import Alarm

log = logging.getLogger("analytics.alarms")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "alarms",
        parents=[common],
        help="list, acknowledge, shelve, unshelve or clear alarms",
        description="See the open alarms and act on them. Commands travel to the analytics worker over MQTT "
        "(birlik/_alarms/command); it applies them, stores them and notifies them like every transition.",
        epilog="Examples: birlik alarms list; birlik alarms ack pump-302.condition.1763800000000 --user aigerim "
        "--comment 'bearing ordered'; birlik alarms shelve --machine acme/kz-turkestan/line-1/pump-302 --for 8h",
    )
    actions = p.add_subparsers(dest="action", metavar="<action>", required=True)
    ls = actions.add_parser("list", parents=[common], help="the open alarms")
    ls.add_argument("--store", default=None, help="read the alarm store (SQLite) instead of the broker")
    ls.add_argument("--json", action="store_true", help="one JSON object per alarm")
    ls.add_argument("--wait", type=float, default=2.0, help="seconds to collect retained state (default: 2)")
    ls.set_defaults(func=run_list)
    rate = actions.add_parser("rate", parents=[common], help="alarm-rate figures from the store (EEMUA 191)")
    rate.add_argument("--store", default=None, help="the alarm store (default: alarms.store in the config)")
    rate.set_defaults(func=run_rate)
    for name, text in (
        ("ack", "acknowledge"),
        ("shelve", "shelve (silence until an expiry)"),
        ("unshelve", "unshelve"),
        ("clear", "clear (close by hand)"),
    ):
        a = actions.add_parser(name, parents=[common], help=f"{text} an alarm, or every open alarm of a machine")
        a.add_argument("alarm_id", nargs="?", default="", help="the alarm's id (see 'birlik alarms list')")
        a.add_argument("--machine", default="", help="every open alarm of this machine: tenant/site/line/machine")
        a.add_argument("--kind", default="", help="with --machine: only this kind (condition, sensor, trip, stale)")
        a.add_argument("--user", default="", help="who does it (kept with the transition)")
        a.add_argument("--comment", default="", help="why (kept with the transition)")
        if name == "shelve":
            a.add_argument("--for", dest="duration", default="8h", help="how long, e.g. 30m, 8h, 2d (default: 8h)")
        a.set_defaults(func=run_command, command_action=name)


def run_command(args: argparse.Namespace) -> int:
    from analytics.mqttclient import paho_client
    from birlik.alarm import COMMAND_TOPIC, Command, decode_command
    from birlik.config import load_config
    from birlik.payload import PayloadError
    from birlik.plant import PlantError, parse_duration

    config = load_config(args.config)
    action = {"ack": "acknowledge"}.get(args.command_action, args.command_action)
    try:
        duration = parse_duration(args.duration, "--for") if action == "shelve" else 0.0
        cmd = Command(action, args.alarm_id, args.machine, args.kind, args.user, args.comment, duration)
        decode_command(cmd.encode())  # the worker checks it the same way
    except (PlantError, PayloadError) as exc:
        log.error("%s", exc)
        return 2
    client = paho_client(config.mqtt)
    try:
        client.connect(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive_s)
    except OSError as exc:
        log.error("cannot reach the broker at %s: %s", config.mqtt.url, exc)
        return 1
    client.loop_start()
    info = client.publish(COMMAND_TOPIC, cmd.encode(), qos=1)
    info.wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    if not info.is_published():
        log.error("the broker did not acknowledge the command in 10 s")
        return 1
    print(f"sent: {action} {args.alarm_id or args.machine}; the analytics worker applies it on its next poll")
    return 0


def run_list(args: argparse.Namespace) -> int:
    alarms: list[Alarm]
    if args.store:
        from analytics.alarmstore import AlarmStore

        store = AlarmStore(args.store)
        alarms = [a for a in store.latest() if a.open]
        store.close()
    else:
        got = _retained_state(args)
        if got is None:
            return 1
        alarms = got
    for a in sorted(alarms, key=lambda a: a.ts_ms):
        if args.json:
            print(json.dumps(a.as_dict(), ensure_ascii=False))
        else:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(a.ts_ms / 1000))
            print(f"{a.alarm_id:40} {a.priority:8} {a.state:12} {when} UTC  {a.path}  {a.text}")
    if not alarms and not args.json:
        print("no open alarms")
    return 0


def _retained_state(args: argparse.Namespace) -> list[Alarm] | None:
    import paho.mqtt.client as mqtt

    from analytics.mqttclient import paho_client
    from birlik.alarm import decode_state
    from birlik.config import load_config
    from birlik.payload import PayloadError
    from birlik.topics import ROOT

    config = load_config(args.config)
    alarms: list[Alarm] = []
    client = paho_client(config.mqtt)

    def on_message(c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        try:
            alarms.extend(decode_state(m.topic, bytes(m.payload)))
        except PayloadError as exc:
            log.warning("%s: %s", m.topic, exc)

    client.on_message = on_message
    client.on_connect = lambda c, u, f, r, p: c.subscribe(f"{ROOT}/+/+/+/+/alarm_state", qos=1)
    try:
        client.connect(config.mqtt.host, config.mqtt.port, keepalive=config.mqtt.keepalive_s)
    except OSError as exc:
        log.error("cannot reach the broker at %s: %s", config.mqtt.url, exc)
        return None
    client.loop_start()
    time.sleep(args.wait)
    client.disconnect()
    client.loop_stop()
    return alarms


def run_rate(args: argparse.Namespace) -> int:
    from analytics.alarms import alarm_rate
    from analytics.alarmstore import AlarmStore
    from birlik.config import load_config

    path = args.store or load_config(args.config).alarms.store
    store = AlarmStore(path)
    figures = alarm_rate(store.transitions())
    store.close()
    for k, v in figures.items():
        print(f"{k} = {v}")
    print("EEMUA 191 asks for under 6 alarms per hour per operator (one per 10 minutes), and no floods.")
    return 0
