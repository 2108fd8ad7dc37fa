"""Every host, whatever its tier: sshd, the host firewall, forwarding, listeners, security updates."""

from __future__ import annotations

import json
from typing import Any

import nft_ruleset
import pytest
from jump_chain import next_hops

TIER_GROUP = "all"

WEAK_KEX = ("sha1", "ecdh-sha2-nistp", "group1-", "group14-")
JUMP_HOSTS = ("proxy", "app")  # the jump chain operator -> proxy -> app -> db


def _sshd_values(host: Any) -> dict[str, list[str]]:
    """Every value sshd -T reports per keyword (HostKey and friends repeat)."""
    result = host.run("/usr/sbin/sshd -T")  # the verify account: through sudo
    assert result.rc == 0, result.stderr
    values: dict[str, list[str]] = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        values.setdefault(key.lower(), []).append(value.strip())
    return values


def _sshd_settings(host: Any) -> dict[str, str]:
    return {key: values[0] for key, values in _sshd_values(host).items()}


@pytest.mark.control("AC-03")
def test_sshd_is_key_only_without_root(host: Any, host_name: str, hostvars: dict[str, Any]) -> None:
    """sshd as it really runs (sshd -T): keys only, no root, no passwords, no keyboard-interactive."""
    values = _sshd_values(host)
    s = {key: found[0] for key, found in values.items()}
    assert s["permitrootlogin"] == "no"
    assert s["passwordauthentication"] == "no"
    assert s["kbdinteractiveauthentication"] == "no"
    assert s["permitemptypasswords"] == "no"
    assert s["pubkeyauthentication"] == "yes"
    assert s["authenticationmethods"] == "publickey"
    # The production check's own account is admitted where the stack gave it a key, and only there.
    verify = ["verify"] if hostvars.get("common_verify_authorized_keys") else []
    # sshd -T reports each AllowUsers entry on a line of its own.
    assert [user for line in values["allowusers"] for user in line.split()] == ["ops", *verify]
    assert int(s["maxauthtries"]) <= 3


@pytest.mark.control("AC-03")
def test_sshd_forwards_only_on_the_jump_chain(host: Any, hostvars: dict[str, Any]) -> None:
    """Only proxy and app relay SSH (ssh -W, a local forward) for the hop to the next tier; nothing forwards
    X11, agents or tunnels.
    """
    s = _sshd_settings(host)
    expected = "local" if hostvars["tierwall_tier"] in JUMP_HOSTS else "no"
    assert s["allowtcpforwarding"] == expected
    # A forward opens the next hop's sshd, nothing else: not the app's port, not PostgreSQL.
    hops = next_hops(hostvars["tierwall_topology"], hostvars["tierwall_tier"])
    assert s["permitopen"].split() == (hops if expected == "local" else ["none"])
    assert s["x11forwarding"] == "no"
    assert s["allowagentforwarding"] == "no"
    assert s["allowstreamlocalforwarding"] == "no"
    assert s["permittunnel"] == "no"
    assert s["gatewayports"] == "no"


@pytest.mark.control("AC-03")
def test_sshd_offers_only_modern_algorithms(host: Any) -> None:
    """No SHA-1, NIST-curve or CBC algorithm is offered, so no downgrade is possible."""
    s = _sshd_settings(host)
    kex = s["kexalgorithms"].split(",")
    assert kex
    assert not [k for k in kex if any(w in k for w in WEAK_KEX)]
    assert not [c for c in s["ciphers"].split(",") if c.endswith("-cbc")]
    assert all(m.endswith("-etm@openssh.com") for m in s["macs"].split(","))
    assert int(s["logingracetime"]) <= 60
    assert int(s["clientaliveinterval"]) > 0
    # Unauthenticated connections: random drops from 10 on, none admitted from 60 on.
    start, _, full = (int(n) for n in s["maxstartups"].split(":"))
    assert start <= 10
    assert full <= 60


@pytest.mark.control("AC-03")
def test_sshd_offers_the_ed25519_host_key_only(host: Any) -> None:
    """sshd loads one host key, Ed25519, and offers it as ssh-ed25519 alone; asked over loopback for
    every key type (ssh-keyscan), it answers with that one: no NIST curve, no RSA to choose."""
    values = _sshd_values(host)
    assert values["hostkey"] == ["/etc/ssh/ssh_host_ed25519_key"]
    assert values["hostkeyalgorithms"] == ["ssh-ed25519"]
    scan = host.run("ssh-keyscan -T 5 -t rsa,ecdsa,ed25519 127.0.0.1")
    offered = {line.split()[1] for line in scan.stdout.splitlines() if line and not line.startswith("#")}
    assert offered == {"ssh-ed25519"}, scan.stdout + scan.stderr


def _interfaces(host: Any) -> dict[str, str]:
    """IPv4 address -> interface name, as the host reports them."""
    result = host.run("ip -j -4 addr show")
    assert result.rc == 0, result.stderr
    links = json.loads(result.stdout)
    return {a["local"]: link["ifname"] for link in links for a in link.get("addr_info", [])}


def _ruleset(host: Any) -> dict[str, Any]:
    result = host.run("/usr/sbin/nft -j list ruleset")  # the verify account: through sudo
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)


def _reading(host: Any, hostvars: dict[str, Any], topology: dict[str, Any]) -> Any:
    """The whole live ruleset (every table), read back into flows of the matrix."""
    addresses = hostvars["tierwall_addresses"]
    public = hostvars.get("tierwall_public_address")
    by_address = _interfaces(host)
    interfaces = {network: by_address[address] for network, address in addresses.items()}
    if public:
        interfaces["public"] = by_address[public]
    return nft_ruleset.read_flows(
        _ruleset(host), topology, hostvars["tierwall_tier"], addresses, interfaces,
        public_address=public, admin_cidrs=hostvars["tierwall_admin_cidrs"],
    )


@pytest.mark.control("FW-01")
def test_firewall_holds_no_rule_the_reader_cannot_evaluate(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """Every rule that can decide a packet's fate is one the FW-01 reader evaluates exactly.

    A rule it cannot model (a named set, a mark, NAT, a wildcard interface) could accept what the
    flow comparison does not see, so its presence alone fails the control.
    """
    assert _reading(host, hostvars, topology).not_understood == []


@pytest.mark.control("FW-01")
def test_firewall_is_default_deny_and_accepts_exactly_the_matrix(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """The live ruleset drops by default in, out and forward and accepts exactly this tier's flows.

    Hetzner's Cloud Firewall does not filter private networks: this ruleset is what separates the tiers.
    Every table counts: a packet is accepted only if every base chain of its hook accepts it.
    """
    tier = hostvars["tierwall_tier"]
    reading = _reading(host, hostvars, topology)
    assert reading.policies == {"input": "drop", "forward": "drop", "output": "drop"}
    assert reading.problems == []
    assert reading.flows == nft_ruleset.matrix_flows(topology, tier)


@pytest.mark.control("FW-01")
@pytest.mark.verify_never("reads /etc/nftables.conf, root's alone (mode 0750); the live ruleset proves FW-01")
def test_firewall_survives_a_reboot(host: Any) -> None:
    """nftables.service loads /etc/nftables.conf at boot, so a restart does not open the host."""
    assert host.service("nftables").is_enabled
    config = host.file("/etc/nftables.conf")
    assert config.exists
    assert config.user == "root"
    assert "table inet tierwall" in config.content_string


@pytest.mark.control("FW-01")
def test_nothing_listens_that_the_matrix_does_not_declare(
    host: Any, hostvars: dict[str, Any], topology: dict[str, Any]
) -> None:
    """Every TCP listener on a non-loopback address is a port some flow of the matrix opens to this tier.

    A daemon that listens without a flow is either dead weight or a hole waiting for a firewall mistake.
    """
    tier = hostvars["tierwall_tier"]
    declared = {
        int(f["port"]) for f in topology["flows"] if f["destination"] == tier and f["protocol"] == "tcp"
    }
    result = host.run("ss -H -l -t -n")
    assert result.rc == 0, result.stderr
    undeclared = []
    for line in result.stdout.splitlines():
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        address = address.strip("[]").split("%")[0]
        if address.startswith("127.") or address == "::1":
            continue
        if int(port) not in declared:
            undeclared.append(local)
    assert undeclared == [], f"listening without a declared flow to {tier}: {undeclared}"


@pytest.mark.control("NET-08")
def test_no_forwarding(host: Any) -> None:
    """ip_forward is 0: no host routes between networks (the app host, on both private networks, above all).
    """
    assert host.file("/proc/sys/net/ipv4/ip_forward").content_string.strip() == "0"
    v6 = host.file("/proc/sys/net/ipv6/conf/all/forwarding")
    if v6.exists:
        assert v6.content_string.strip() == "0"


@pytest.mark.control("NET-08")
def test_forwarding_stays_off_after_reboot(host: Any) -> None:
    """The setting is persisted in sysctl.d, which systemd-sysctl applies at boot (containers included)."""
    dropin = host.file("/etc/sysctl.d/90-tierwall.conf")
    assert dropin.exists
    assert "net.ipv4.ip_forward = 0" in dropin.content_string.splitlines()


# Where `systemctl edit`, a file under /run and `systemctl set-property` put drop-ins.
DROPIN_ROOTS = [f"{top}/systemd/{kind}" for top in ("/etc", "/run") for kind in ("system", "system.control")]


@pytest.mark.control("IAC-01")
def test_every_service_drop_in_is_one_a_role_declares(host: Any) -> None:
    """A drop-in changes a service (its sandbox, its ExecStart) without touching the unit file:
    `systemctl edit`, a file under /run, `systemctl set-property`. Every service drop-in in /etc
    and /run, and every one systemd applies to a loaded service outside the packages' /usr/lib,
    is one the last converge declared (site.yml removes the others)."""
    declared = host.file("/var/lib/tierwall/systemd-dropins.declared")
    assert declared.exists, "no declared list: converge with site.yml"
    wanted = set(declared.content_string.split())
    found = host.run("find" + " %s" * len(DROPIN_ROOTS) + " -path '*service.d/*.conf' 2>/dev/null || true",
                     *DROPIN_ROOTS)  # fmt: skip
    on_disk = set(found.stdout.split())
    applied = host.run("systemctl show -p DropInPaths --value '*.service'")
    assert applied.rc == 0, applied.stderr
    in_force = {p for p in applied.stdout.split() if not p.startswith(("/usr/lib/", "/lib/"))}
    assert on_disk == wanted, f"undeclared: {sorted(on_disk - wanted)}, missing: {sorted(wanted - on_disk)}"
    assert in_force <= wanted, f"applied but not declared: {sorted(in_force - wanted)}"


@pytest.mark.control("PAT-01")
def test_security_updates_install_unattended(host: Any) -> None:
    """Security updates are fetched and installed daily without an operator, from the security archive only.
    """
    assert host.package("unattended-upgrades").is_installed
    result = host.run("apt-config dump")
    assert result.rc == 0, result.stderr
    lines = result.stdout.splitlines()
    assert 'APT::Periodic::Unattended-Upgrade "1";' in lines
    assert 'APT::Periodic::Update-Package-Lists "1";' in lines
    origins = [line for line in lines if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")]
    assert origins
    assert all("label=Debian-Security" in line for line in origins)
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert host.service(timer).is_enabled, timer


@pytest.mark.control("PAT-01")
def test_no_security_update_is_pending(host: Any) -> None:
    """Patched before serving: as the converge left it, the host has nothing newer to take from the
    security archive (apt's simulated upgrade, against the package lists the converge used)."""
    result = host.run("apt-get -s -o Debug::NoLocking=1 upgrade")
    assert result.rc == 0, result.stderr
    pending = [line for line in result.stdout.splitlines()
               if line.startswith("Inst ") and "Debian-Security" in line]
    assert not pending, "security updates pending:\n" + "\n".join(pending)
