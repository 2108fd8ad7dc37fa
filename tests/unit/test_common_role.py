"""What the common role writes on each tier, rendered as on a host: sshd's host key, forwarding and
limits. The live suites (tests/testinfra/test_base.py, test_ssh_forwarding.py) read the same
settings back from the running hosts."""

from __future__ import annotations

import pytest
import yaml
from role_render import ROLES, directives, inventory, render, value

from tierwall.topology import MGMT_COUNT, TIERS, build_topology

HOSTS = {tier: f"{tier}-1" for tier in TIERS}


def _sshd(host: str, **kwargs) -> list[tuple[str, str]]:
    return directives(render("common", "sshd-tierwall.conf.j2", host, **kwargs))


def _values(host: str, keyword: str, **kwargs) -> list[str]:
    return [rest for key, rest in _sshd(host, **kwargs) if key == keyword]


def _next_hops(tier: str, app_count: int) -> list[str]:
    """The SSH flows of the matrix from ``tier``: HOST:22 of every host they reach, on the flow's network."""
    topology = build_topology(app_count=app_count)
    return [
        f"{host.address(flow.network)}:{flow.port}"
        for flow in topology.flows_from(tier)
        if flow.port == topology.ports.ssh and flow.protocol == "tcp"
        for host in topology.hosts_in(flow.destination)
    ]


@pytest.mark.control("AC-03")
@pytest.mark.parametrize("tier", HOSTS)
def test_sshd_offers_the_ed25519_host_key_only(tier: str) -> None:
    """One HostKey, Ed25519, offered as ssh-ed25519 alone: an auditor's client finds no NIST-curve
    or RSA host key to choose."""
    assert _values(HOSTS[tier], "HostKey") == ["/etc/ssh/ssh_host_ed25519_key"]
    assert _values(HOSTS[tier], "HostKeyAlgorithms") == ["ssh-ed25519"]


@pytest.mark.control("AC-03")
@pytest.mark.parametrize("app_count", [1, 3])
@pytest.mark.parametrize("tier", HOSTS)
def test_forwards_reach_only_the_next_hops_sshd(tier: str, app_count: int) -> None:
    """The proxy forwards to the apps' and the management host's frontend :22, the app to the db's
    backend :22, from the topology's SSH flows; the db and the management host forward nothing."""
    host = HOSTS[tier]
    forwarding = _values(host, "AllowTcpForwarding", app_count=app_count)
    permit_open = _values(host, "PermitOpen", app_count=app_count)
    expected = _next_hops(tier, app_count)
    if tier in ("db", "mgmt"):
        assert (forwarding, permit_open, expected) == (["no"], ["none"], [])
    else:
        assert forwarding == ["local"]
        assert permit_open[0].split() == expected
        assert len(expected) == (app_count + MGMT_COUNT if tier == "proxy" else 1)


def test_the_next_hops_are_the_inventory_chains_hops() -> None:
    """What PermitOpen allows is what the inventory's ProxyCommand chain asks for (ssh -W to the
    next host's ansible_host:22): app and the management host from the proxy, db from the first app."""
    groups = inventory(2)["all"]["children"].values()
    hosts = {name: h for group in groups for name, h in group["hosts"].items()}
    from_proxy = value("common", "common_sshd_permit_open", "proxy-1")
    from_app = value("common", "common_sshd_permit_open", "app-1")
    assert {f"{hosts[a]['ansible_host']}:22" for a in ("app-1", "app-2", "mgmt-1")} == set(from_proxy)
    assert from_app == [f"{hosts['db-1']['ansible_host']}:22"]


@pytest.mark.control("AC-03")
def test_unauthenticated_connections_are_bounded() -> None:
    """MaxStartups 10:30:60: pre-auth connections are dropped at random from 10 and all from 60."""
    assert _values("proxy-1", "MaxStartups") == ["10:30:60"]
    assert _values("proxy-1", "TCPKeepAlive") == ["no"]


@pytest.mark.parametrize(
    ("overrides", "valid"),
    [
        ({}, True),
        ({"common_sshd_permit_open": []}, False),
        ({"common_sshd_permit_open": ["any"]}, False),
        ({"common_sshd_permit_open": ["10.10.1.20:22", "10.10.1.21 22"]}, False),
        ({"common_sshd_allow_tcp_forwarding": "no", "common_sshd_permit_open": []}, True),
        ({"common_sshd_max_startups": "10:30"}, False),
        ({"common_sshd_max_startups": "20"}, True),
    ],
)
def test_validate_refuses_forwarding_without_a_next_hop(overrides: dict, valid: bool) -> None:
    """validate.yml's conditions, evaluated as the role does, refuse what sshd would misread."""
    tasks = yaml.safe_load((ROLES / "common" / "tasks" / "validate.yml").read_text())
    checks = [t for t in tasks if t["name"] in ("SSH forwards reach the next hop of the jump chain only",
                                                 "MaxStartups has sshd's form")]  # fmt: skip
    assert len(checks) == 2
    conditions = [c for task in checks for c in task["ansible.builtin.assert"]["that"]]
    results = [value("common", f"({c}) | bool", "proxy-1", **overrides) for c in conditions]
    assert all(results) is valid, dict(zip(conditions, results, strict=True))


# -- kernel and file systems (HARD-02) -------------------------------------------------------------

# The modules CIS Debian 12 (1.1.1, 3.2) and Lynis (FILE-6430, NETW-3200) ask to be unloadable.
BLOCKED = ("cramfs", "freevxfs", "hfs", "hfsplus", "jffs2", "squashfs", "udf", "usb-storage", "firewire-core",
           "dccp", "sctp", "rds", "tipc")  # fmt: skip


def _ini(text: str) -> dict[str, dict[str, str]]:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return {section: dict(parser[section]) for section in parser.sections()}


@pytest.mark.control("HARD-02")
@pytest.mark.parametrize("container", [True, False], ids=["container", "vm"])
def test_router_advertisements_are_ignored(container: bool) -> None:
    """accept_ra = 0 for all, default and every interface, in containers too (a network key)."""
    lines = render("common", "sysctl.conf.j2", "app-1", container=container).splitlines()
    assert "-net.ipv6.conf.*.accept_ra = 0" in lines


@pytest.mark.control("HARD-02")
def test_core_dumps_are_off_beyond_sysctl() -> None:
    """systemd-coredump keeps nothing, login sessions and services get a hard core limit of 0."""
    coredump = _ini(render("common", "coredump.conf.j2", "db-1"))
    assert coredump == {"Coredump": {"Storage": "none", "ProcessSizeMax": "0"}}
    assert _ini(render("common", "system-coredump.conf.j2", "db-1")) == {"Manager": {"DefaultLimitCORE": "0"}}
    limits = [line.split() for line in render("common", "limits-core.conf.j2", "db-1").splitlines()
              if line.strip() and not line.startswith("#")]  # fmt: skip
    assert ["*", "hard", "core", "0"] in limits
    assert value("common", "__common_coredump_file", "db-1").startswith("/etc/systemd/coredump.conf.d/")
    assert value("common", "__common_limits_core_file", "db-1").startswith("/etc/security/limits.d/")


@pytest.mark.control("HARD-02")
def test_unused_modules_cannot_be_loaded() -> None:
    """Each module runs /bin/false when asked for and is blacklisted (no load by alias)."""
    lines = set(render("common", "modprobe-blocked.conf.j2", "proxy-1").splitlines())
    for module in BLOCKED:
        assert f"install {module} /bin/false" in lines, module
        assert f"blacklist {module}" in lines, module


@pytest.mark.control("HARD-02")
def test_shared_temporary_directories_are_nodev_nosuid_noexec() -> None:
    mounts = {m["path"]: m for m in value("common", "common_tmp_mounts", "db-1")}
    assert set(mounts) == {"/tmp", "/var/tmp", "/dev/shm"}
    for path, mount in mounts.items():
        assert {"nodev", "nosuid", "noexec"} <= set(mount["opts"].split(",")), path
    assert mounts["/var/tmp"]["fstype"] == "none"
    assert mounts["/var/tmp"]["opts"].startswith("bind,")
    assert value("common", "__common_tmp_mount_flags", "db-1") == ["nodev", "nosuid", "noexec"]


@pytest.mark.parametrize(
    ("mounts", "valid"),
    [
        (None, True),
        ([{"path": "/tmp", "src": "tmpfs", "fstype": "tmpfs", "opts": "nodev,nosuid"}], False),
        ([{"path": "/var/tmp", "src": "/var/tmp", "fstype": "none", "opts": "nodev,nosuid,noexec"}], False),
        ([{"path": "tmp", "src": "tmpfs", "fstype": "tmpfs", "opts": "nodev,nosuid,noexec"}], False),
    ],
    ids=["defaults", "no-noexec", "bind-without-bind", "relative"],
)
def test_validate_refuses_a_temporary_mount_without_the_flags(mounts: list | None, valid: bool) -> None:
    tasks = yaml.safe_load((ROLES / "common" / "tasks" / "validate.yml").read_text())
    name = "Every shared temporary directory is mounted nodev, nosuid and noexec"
    task = next(t for t in tasks if t["name"] == name)
    overrides = {} if mounts is None else {"common_tmp_mounts": mounts}
    entries = value("common", "common_tmp_mounts", "db-1", **overrides)
    results = [
        value("common", f"({c}) | bool", "db-1", item=entry, **overrides)
        for entry in entries
        for c in task["ansible.builtin.assert"]["that"]
    ]
    assert all(results) is valid
