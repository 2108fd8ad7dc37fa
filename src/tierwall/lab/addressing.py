"""The lab's own constants: names, documentation-range addresses and machine-wide paths.

Everything the lab invents that is not in the topology model lives here, so every module
(and the tests) use one spelling. Host private addresses and CIDRs come from
:mod:`tierwall.topology`, never from here.

Names (stable; the tests, the segregation prober and ``down`` rely on them):

* ``tw-internet``       bridge in the root namespace carrying the lab's "internet",
                        203.0.113.0/26 (inside RFC 5737 TEST-NET-3). The operator (this machine's
                        root namespace) is 203.0.113.1, the proxies' gateway; proxy-N is
                        203.0.113.(10+N-1). Only a /26: this workplace's package registries answer
                        on 203.0.113.80 through the uplink, and ``up`` refuses any lab range that
                        holds the mirror's or a resolver's address.
* ``tw-sentinel``       network namespace of the sentinel host, 203.0.113.50, plain listeners on
                        TCP 80 and 443: it stands for "the rest of the internet".
* ``tw-offsite``        network namespace of the off-site backup store, 203.0.113.60: an S3
                        endpoint (TLS on 443) standing for the repositories in the two German
                        locations (tierwall.lab.offsite).
* ``tw-switch``         network namespace holding the private bridges ``br-frontend`` and
                        ``br-backend``; the root namespace has no interface on them at all.
* ``tw-<host>``         network namespace of machine ``<host>`` (e.g. ``tw-db-1``).
* ``twi-<host>``        root-namespace end of a machine's (or the sentinel's) veth on ``tw-internet``.
* ``f-<host>``/``b-<host>`` switch-namespace ends of a machine's frontend/backend veths.
* inside a machine:     ``eth-public``, ``eth-frontend``, ``eth-backend``.
* ``inet tierwall_lab`` the lab's nftables table in the root namespace (no other table is touched).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

INTERNET_BRIDGE = "tw-internet"
INTERNET_CIDR = ipaddress.IPv4Network("203.0.113.0/26")
OPERATOR = ipaddress.IPv4Address("203.0.113.1")  # root namespace, gateway of the proxies
SENTINEL = ipaddress.IPv4Address("203.0.113.50")
SENTINEL_NS = "tw-sentinel"
SENTINEL_PORTS = (80, 443)
OFFSITE = ipaddress.IPv4Address("203.0.113.60")
OFFSITE_NS = "tw-offsite"
SWITCH_NS = "tw-switch"
NS_PREFIX = "tw-"
ROOT_VETH_PREFIX = "twi-"
NFT_TABLE = "tierwall_lab"  # family inet
# Addresses the lab tests use for "the internet" route lookups; nothing is ever sent to them.
NO_ROUTE_PROBES = ("198.51.100.77", "192.0.2.1")

# Forbidden for any lab network: this machine's own uplink range is discovered at run time too.
UPLINK_EXAMPLE = ipaddress.ip_network("192.0.2.0/24")

# What debootstrap installs into the base image, for every release (tierwall.lab.image).
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "openssh-sftp-server",
    "iproute2",
    "python3",
    "sudo",
    "ca-certificates",
    "procps",
    "netbase",
    "iputils-ping",
)
MIRROR = os.environ.get("TIERWALL_DEBIAN_MIRROR", "http://deb.debian.org/debian")

# Machine-wide locations (outside the repository: shared by every clone on this machine).
CACHE_DIR = Path(os.environ.get("TIERWALL_LAB_CACHE", "/var/cache/tierwall"))
BASE_STAMP = ".tierwall-base-stamp"
RUN_DIR = Path(os.environ.get("TIERWALL_LAB_RUN", "/var/lib/tierwall/lab"))
STATE_FILE = RUN_DIR / "state.json"
# The db's "Hetzner Volume", sparse, unformatted: room for the backups' 1 GB bench beside its WAL.
VOLUME_SIZE = 4 * 1024**3

# Host packages (Debian names) and one command each proves present.
HOST_PACKAGES = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nft": "nftables",
    "ip": "iproute2",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "losetup": "mount",
    "nsenter": "util-linux",
    # TLS in front of the off-site store's S3 server; run only inside its namespace.
    "nginx": "nginx-light",
    # The lab's key escrow (tierwall escrow) encrypts to its recovery key with age.
    "age": "age",
}
# Installed for the lab's own use: their Debian units must not serve the machine itself.
HOST_SERVICES_OFF = ("nginx.service",)

IFACE = {"public": "eth-public", "frontend": "eth-frontend", "backend": "eth-backend"}
SWITCH_PREFIX = {"frontend": "f-", "backend": "b-"}


def netns(host: str) -> str:
    return f"{NS_PREFIX}{host}"


def switch_bridge(network: str) -> str:
    return f"br-{network}"


def proxy_public(index: int) -> ipaddress.IPv4Address:
    """Public address of proxy-<index> (1-based): 203.0.113.10, .11, ..."""
    return INTERNET_CIDR.network_address + 10 + index - 1
