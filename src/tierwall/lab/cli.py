"""``tierwall lab up | down | status | ssh | restart``."""

from __future__ import annotations

import argparse
import os

from tierwall.errors import TierwallError


def _up(args: argparse.Namespace) -> int:
    from tierwall.lab.lifecycle import up

    return up(rebuild_base=args.rebuild_base, apps=args.apps)


def _down(args: argparse.Namespace) -> int:
    from tierwall.lab.lifecycle import down

    return down()


def _status(args: argparse.Namespace) -> int:
    from tierwall.lab.lifecycle import status

    return status()


def _restart(args: argparse.Namespace) -> int:
    from tierwall.lab.lifecycle import restart

    return restart(args.host)


def _replace(args: argparse.Namespace) -> int:
    from tierwall.lab.lifecycle import replace

    return replace(args.host)


def _ssh(args: argparse.Namespace) -> int:
    import yaml

    from tierwall.lab.inventory import hosts_of, ssh_argv, write_lab_inventory

    inventory = yaml.safe_load(write_lab_inventory().read_text())
    hosts = hosts_of(inventory)
    if args.host not in hosts:
        raise TierwallError(f"no host {args.host!r} in the lab", f"name one of {', '.join(hosts)}")
    argv = ssh_argv(hosts[args.host], inventory["all"]["vars"], args.command)
    os.execvp(argv[0], argv)
    return 1  # not reached


def _apps(value: str) -> int:
    count = int(value)
    if not 1 <= count <= 9:
        raise argparse.ArgumentTypeError("--apps must be between 1 and 9")
    return count


def _release_help() -> str:
    """How the lab's release is chosen, for ``lab up --help`` (from the same table ``up`` reads)."""
    from tierwall.config import DEBIAN_SUITES, DEFAULT_IMAGE
    from tierwall.lab.image import IMAGE_VARIABLE

    images = ", ".join(
        f"{image} ({suite}{', the default' if image == DEFAULT_IMAGE else ''})"
        for image, suite in DEBIAN_SUITES.items()
    )
    return (
        f"The machines' Debian release is the environment variable {IMAGE_VARIABLE}, a stack's image: "
        f"{images}. The lab records it: a lab built for another image is rebuilt, and status, ssh, "
        f"restart and down act on the recorded one. Example: "
        f"sudo {IMAGE_VARIABLE}=debian-12 .venv/bin/tierwall lab up. Stacks run debian-13 only; a "
        f"Debian 12 lab is the upgrade drill's starting point (docs/operations/debian-13.md)."
    )


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="the local lab: the topology as nspawn machines on this machine (root)")
    commands = lab.add_subparsers(dest="lab_command", required=True)
    up = commands.add_parser(
        "up",
        help="build (or repair) the lab; idempotent",
        description="Build (or repair) the lab; idempotent.",
        epilog=_release_help(),
    )
    up.add_argument("--rebuild-base", action="store_true", help="rebuild the cached Debian base image")
    up.add_argument(
        "--apps", type=_apps, metavar="N", help="number of app servers (overrides lab/stack.yaml)"
    )
    up.set_defaults(func=_up)
    down = commands.add_parser("down", help="remove everything the lab created")
    down.set_defaults(func=_down)
    status = commands.add_parser("status", help="each host, its addresses and its state")
    status.set_defaults(func=_status)
    ssh = commands.add_parser("ssh", help="ssh to a lab host through the jump chain")
    ssh.add_argument("host")
    ssh.add_argument("command", nargs=argparse.REMAINDER)
    ssh.set_defaults(func=_ssh)
    restart = commands.add_parser(
        "restart", help="power one machine off and boot it again (same disk, namespace and volume)"
    )
    restart.add_argument("host")
    restart.set_defaults(func=_restart)
    replace = commands.add_parser(
        "replace",
        help="lose one machine with its disk (and a db's volume) and boot a fresh one in its place",
    )
    replace.add_argument("host")
    replace.set_defaults(func=_replace)
