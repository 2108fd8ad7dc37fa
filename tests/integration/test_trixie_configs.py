"""The roles' configuration files, rendered for a Debian 13 (trixie) host, checked by trixie's own tools.

The lab runs Debian 12; this suite proves ahead of a switch that what the roles write on Debian 13 is
accepted there: OpenSSH 10's `sshd -t`, squid 6's `-k parse`, chrony 4.6's `chronyd -p`, apt's
parser, `visudo`, nftables 1.1's `nft -c`, apt-cacher-ng's own option reader, nginx 1.26's `nginx -t`
(without a warning: HTTP/2 as nginx 1.25.1 and later spell it), systemd 257's
`systemd-analyze verify` and journald's list of settings, and PostgreSQL 17 itself (a scratch
cluster made by pg_createcluster with the role's arguments, the role's validate script, pgAudit
loaded in single-user mode). sshd and chronyd must not even warn. It also checks that every
package the roles install exists in the release and that the application's locked wheels
install on its Python.

The tree is a debootstrap'd root file system given by TIERWALL_TRIXIE_ROOT. Unset: the suite is
skipped. Set but missing, not Debian, or lacking a package the roles install: every test fails and
says how to build it. Facts (release, codename) are read from the tree, so the same suite checks a
Debian 12 tree too. Commands run in the tree with `chroot`, inside `unshare --mount --net`: /proc is
mounted in a private mount namespace and nothing can send a packet. Each run works in a scratch
directory under the tree's /tmp and removes it; the scratch cluster is dropped again.

Build the tree (as root; measured on the 2-core development machine: debootstrap 97 s, the
packages 52 s, 950 MB):

    debootstrap --variant=minbase \\
      --include=systemd,systemd-sysv,dbus,openssh-server,iproute2,python3,sudo,ca-certificates \\
      trixie /var/tmp/tw-trixie http://deb.debian.org/debian
    printf '#!/bin/sh\\nexit 101\\n' > /var/tmp/tw-trixie/usr/sbin/policy-rc.d
    chmod 755 /var/tmp/tw-trixie/usr/sbin/policy-rc.d
    mkdir -p /var/tmp/tw-trixie/etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' \\
      > /var/tmp/tw-trixie/etc/postgresql-common/createcluster.d/50-tierwall.conf
    chroot /var/tmp/tw-trixie apt-get update
    DEBIAN_FRONTEND=noninteractive chroot /var/tmp/tw-trixie apt-get install -y --no-install-recommends \\
      openssh-server openssh-client sudo chrony unattended-upgrades ca-certificates iproute2 nftables \\
      squid apt-cacher-ng python3-venv libpq5 python3-apt python3-psycopg2 fscrypt e2fsprogs \\
      cryptsetup-bin util-linux postgresql-17 postgresql-client-17 postgresql-17-pgaudit \\
      nginx-light logrotate
    TIERWALL_TRIXIE_ROOT=/var/tmp/tw-trixie .venv/bin/pytest -q tests/integration/test_trixie_configs.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import add_all_plugin_dirs
from ansible.template import Templar, trust_as_template
from test_nginx_templates import render_tree

from tierwall.inventory import Access, build_inventory
from tierwall.topology import build_topology

# Only with a Debian 13 tree (make trixie-configs): deselected from the other suites, never skipped there.
pytestmark = pytest.mark.trixie_tree

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "ansible" / "roles"
GROUP_VARS = REPO / "ansible" / "playbooks" / "group_vars"
ROOT_VARIABLE = "TIERWALL_TRIXIE_ROOT"
# What the roles install (their vars files; the postgresql ones for the tree's release), plus the
# tools this suite runs (the docstring's apt-get line). The fixture refuses a tree that lacks one.
PACKAGES = (
    "openssh-server", "openssh-client", "sudo", "chrony", "unattended-upgrades", "ca-certificates",
    "iproute2",
    "nftables", "squid", "apt-cacher-ng", "python3-venv", "libpq5", "python3-apt", "python3-psycopg2",
    "fscrypt", "e2fsprogs", "cryptsetup-bin", "util-linux",
    "postgresql-17", "postgresql-client-17", "postgresql-17-pgaudit", "nginx-light", "logrotate",
)
TOPOLOGY = build_topology(app_count=2)
INVENTORY = build_inventory(
    TOPOLOGY,
    Access(proxy_public={"proxy-1": "203.0.113.10"}, admin_cidrs=("203.0.113.1/32",), domain="notes.lab.test",
           target="lab"),
)
HOSTS = {tier: name for name, host in TOPOLOGY.as_dict()["hosts"].items() for tier in [host["tier"]]}
PQ_KEX = ("mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com")


@dataclass
class Tree:
    """A Debian root file system and a scratch directory inside it."""

    root: Path
    scratch: Path
    release: str  # VERSION_ID: "13"
    codename: str  # VERSION_CODENAME: "trixie"

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """argv in the tree: private mount and network namespaces, /proc mounted for the command only."""
        # lo up: squid (BCP 177) and PostgreSQL expect a working loopback, even when they open no socket.
        script = ('ip link set lo up && mount -t proc proc "$0/proc" && mount -t tmpfs tmpfs "$0/dev/shm"'
                  ' && exec chroot "$0" "$@"')
        return subprocess.run(
            ["unshare", "--mount", "--net", "sh", "-c", script, str(self.root), *argv],
            input=stdin, capture_output=True, text=True, timeout=180, check=False,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"},
        )

    def put(self, name: str, text: str, mode: int = 0o644) -> str:
        """Write a file into the scratch directory; return its path as seen inside the tree."""
        path = self.scratch / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return "/" + str(path.relative_to(self.root))


def _os_release(root: Path) -> dict[str, str]:
    text = (root / "etc" / "os-release").read_text()
    return dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.M))


def _check_tree(root: Path) -> dict[str, str]:
    """The tree's os-release, after checking it can serve this suite; fails with how to fix it."""
    hint = f"{ROOT_VARIABLE}={root}: build it as this module's docstring shows"
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("checking configurations inside the tree needs root and unshare (chroot, namespaces)")
    if not (root / "etc" / "os-release").is_file() or not (root / "usr" / "bin" / "apt-get").exists():
        pytest.fail(f"{root} is not a Debian root file system; {hint}")
    release = _os_release(root)
    if release.get("ID") != "debian":
        pytest.fail(f"{root} is {release.get('ID')!r}, not Debian; {hint}")
    wanted = [p.replace("-17", f"-{_pg_version(release['VERSION_ID'])}") for p in PACKAGES]
    done = subprocess.run(
        ["chroot", str(root), "dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *wanted],
        capture_output=True, text=True, check=False,
    )
    installed = {line.split()[0] for line in done.stdout.splitlines() if line.split()[1:2] == ["ii"]}
    missing = sorted(set(wanted) - installed)
    if missing:
        pytest.fail(f"{root} lacks {' '.join(missing)}: chroot {root} apt-get install -y "
                    f"--no-install-recommends {' '.join(missing)}")
    return release


def _pg_version(release: str) -> int:
    mapping = DataLoader().load_from_file(str(ROLES / "postgresql" / "vars" / "main.yml"))
    return int(mapping["__postgresql_release_versions"].get(release, 0))


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    value = os.environ.get(ROOT_VARIABLE, "")
    if not value:
        pytest.skip(f"{ROOT_VARIABLE} is not set: no Debian 13 tree to check the configurations against")
    root = Path(value)
    release = _check_tree(root)
    (root / "tmp").mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="tierwall-release-check.", dir=root / "tmp"))
    scratch.chmod(0o755)
    try:
        yield Tree(root, scratch, release["VERSION_ID"], release.get("VERSION_CODENAME", ""))
    finally:
        shutil.rmtree(scratch)


# -- rendering, as the roles render on a host of the tree's release ---------------------------------


def _host_vars(host: str) -> dict[str, Any]:
    for group in INVENTORY["all"]["children"].values():
        if host in group["hosts"]:
            return group["hosts"][host]
    raise KeyError(host)


def variables(tree: Tree, role: str, host: str, **overrides: Any) -> dict[str, Any]:
    """Role defaults < inventory < playbook group_vars (all, then the tier) < host < role vars, and the
    facts a host of the tree's release reports."""
    loader = DataLoader()

    def load(path: Path) -> dict[str, Any]:
        return dict(loader.load_from_file(str(path), trusted_as_template=True) or {}) if path.exists() else {}

    tier = _host_vars(host)["tierwall_tier"]
    found: dict[str, Any] = load(ROLES / role / "defaults" / "main.yml")
    found.update(INVENTORY["all"]["vars"])
    found.update(load(GROUP_VARS / "all.yml"))
    found.update(load(GROUP_VARS / f"{tier}.yml"))
    found.update(_host_vars(host))
    found.update(load(ROLES / role / "vars" / "main.yml"))
    found.update(
        ansible_managed="Ansible managed: do not edit",
        inventory_hostname=host,
        role_path=str(ROLES / role),
        playbook_dir=str(REPO / "ansible" / "playbooks"),
        tierwall_secrets_dir=str(tree.scratch / "secrets"),
        ansible_memtotal_mb=2048,
        ansible_facts={
            "distribution": "Debian",
            "distribution_major_version": tree.release,
            "distribution_release": tree.codename,
            "virtualization_role": "guest",
            "virtualization_type": "systemd-nspawn",
            "memtotal_mb": 2048,
        },
    )
    found.update(overrides)
    return found


def render(tree: Tree, role: str, template: str, host: str, **overrides: Any) -> str:
    add_all_plugin_dirs(str(ROLES / role))
    templar = Templar(loader=DataLoader(), variables=variables(tree, role, host, **overrides))
    return templar.template(trust_as_template((ROLES / role / "templates" / template).read_text()))


def value(tree: Tree, role: str, name: str, host: str, **overrides: Any) -> Any:
    """A role variable as the role computes it on ``host``."""
    templar = Templar(loader=DataLoader(), variables=variables(tree, role, host, **overrides))
    return templar.template(trust_as_template("{{ " + name + " }}"))


def assert_ok(done: subprocess.CompletedProcess[str], what: str) -> None:
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


def offered(tree: Tree, kind: str) -> list[str]:
    done = tree.run("ssh", "-Q", kind)
    assert_ok(done, f"ssh -Q {kind}")
    return done.stdout.split()


# -- packages --------------------------------------------------------------------------------------

ROLE_PACKAGES = {
    "common": "__common_packages",
    "firewall": "__firewall_packages",
    "egress_proxy": "__egress_proxy_packages",
    "apt_proxy": "__apt_proxy_packages",
    "app": "__app_packages",
    "nginx": "__nginx_packages",
    "postgresql": "__postgresql_packages + __postgresql_encryption_packages.fscrypt"
                  " + __postgresql_encryption_packages.luks",
}


@pytest.mark.parametrize("role", sorted(ROLE_PACKAGES))
def test_every_package_the_role_installs_is_in_the_release(tree: Tree, role: str) -> None:
    """A name the release dropped or renamed would fail the converge at its first apt task."""
    host = HOSTS["db" if role == "postgresql" else "app"]
    names = value(tree, role, ROLE_PACKAGES[role], host)
    done = tree.run("apt-cache", "show", "--no-all-versions", *names)
    assert_ok(done, f"apt-cache show {' '.join(names)} (Debian {tree.release})")


def test_postgresql_version_is_the_releases(tree: Tree) -> None:
    """postgresql_version follows the release: the server binaries the role points at exist."""
    version = value(tree, "postgresql", "postgresql_version", HOSTS["db"])
    assert int(version) > 0, f"the postgresql role has no PostgreSQL version for Debian {tree.release}"
    bindir = value(tree, "postgresql", "__postgresql_bindir", HOSTS["db"])
    done = tree.run(f"{bindir}/postgres", "--version")
    assert_ok(done, f"{bindir}/postgres --version")
    assert re.search(rf"\) {int(version)}\.", done.stdout), done.stdout


# -- common ----------------------------------------------------------------------------------------


def _sshd_dropin(tree: Tree, host: str) -> str:
    kex = {"stdout_lines": offered(tree, "kex")}
    return render(tree, "common", "sshd-tierwall.conf.j2", host, __common_sshd_kex_offered=kex)


@pytest.mark.parametrize("tier", ["proxy", "app", "db", "mgmt"])
def test_sshd_accepts_the_dropin(tree: Tree, tier: str) -> None:
    """The role's own validate step (the drop-in first, then the release's sshd_config) passes, and
    sshd -T shows the post-quantum hybrids first and the role's ciphers and MACs exactly."""
    host = HOSTS[tier]
    dropin = tree.put(f"sshd-{tier}.conf", _sshd_dropin(tree, host))
    checker = tree.put("sshd-check", render(tree, "common", "sshd-check-dropin.sh.j2", host), 0o755)
    assert_ok(tree.run(checker, dropin), f"{checker} {dropin} (the role's validate)")
    wrapper = tree.put(f"sshd-{tier}-main.conf", f"Include {dropin}\nInclude /etc/ssh/sshd_config\n")
    done = tree.run("sshd", "-T", "-f", wrapper)
    assert_ok(done, "sshd -T")
    assert done.stderr.strip() == "", f"sshd -T warns (a deprecated or unsupported keyword?):\n{done.stderr}"
    effective = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    kex = effective["kexalgorithms"].split(",")
    pq_offered = [k for k in PQ_KEX if k in offered(tree, "kex")]
    assert pq_offered, f"OpenSSH on Debian {tree.release} offers no post-quantum hybrid"
    assert kex[: len(pq_offered)] == pq_offered, f"post-quantum hybrids are not first: {kex}"
    defaults = variables(tree, "common", host)
    assert effective["ciphers"].split(",") == defaults["common_sshd_ciphers"]
    assert effective["macs"].split(",") == defaults["common_sshd_macs"]
    assert effective["permitrootlogin"] == "no"
    assert effective["passwordauthentication"] == "no"
    assert effective["hostkey"] == "/etc/ssh/ssh_host_ed25519_key"
    assert effective["hostkeyalgorithms"] == "ssh-ed25519"
    assert effective["maxstartups"] == "10:30:60"
    hops = value(tree, "common", "common_sshd_permit_open", host)
    # The db and the management host are no jump hosts: nobody's SSH goes on from them.
    jump_host = tier in ("proxy", "app")
    assert effective["permitopen"].split() == (hops if jump_host else ["none"]), effective["permitopen"]
    assert jump_host is (hops != [])


def test_dropin_kex_is_only_what_the_release_offers(tree: Tree) -> None:
    """Every listed algorithm this OpenSSH lacks is one the role knows is newer; nothing else is dropped."""
    host = HOSTS["app"]
    kex = {"stdout_lines": offered(tree, "kex")}
    effective = value(tree, "common", "__common_sshd_kex_effective", host, __common_sshd_kex_offered=kex)
    unknown = value(tree, "common", "__common_sshd_kex_unknown", host, __common_sshd_kex_offered=kex)
    assert unknown == []
    assert effective == [k for k in variables(tree, "common", host)["common_sshd_kex_algorithms"]
                         if k in kex["stdout_lines"]]


@pytest.mark.parametrize("tier", ["proxy", "app", "db", "mgmt"])
def test_chrony_accepts_its_configuration(tree: Tree, tier: str) -> None:
    """chronyd parses the file with the options /etc/default/chrony gives it (the role's validate)."""
    host = HOSTS[tier]
    conf = tree.put(f"chrony-{tier}.conf", render(tree, "common", "chrony.conf.j2", host))
    options = re.search(r'^DAEMON_OPTS="([^"]*)"', render(tree, "common", "chrony-default.j2", host), re.M)
    assert options, "chrony-default.j2 sets no DAEMON_OPTS"
    done = tree.run("chronyd", *options.group(1).split(), "-p", "-f", conf)
    assert_ok(done, f"chronyd -p -f ({tier})")
    assert done.stderr.strip() == "", f"chronyd -p warns ({tier}):\n{done.stderr}"


def test_chrony_unit_still_needs_the_container_override(tree: Tree) -> None:
    """The container drop-in clears ConditionCapability=: the release's unit must still set it."""
    unit = tree.path("/usr/lib/systemd/system/chrony.service").read_text()
    assert "ConditionCapability=CAP_SYS_TIME" in unit
    assert "$DAEMON_OPTS" in unit, "chrony.service no longer reads DAEMON_OPTS from /etc/default/chrony"


def test_journald_knows_every_setting_of_the_dropin(tree: Tree) -> None:
    """journald skips a key it does not know with a log line only: every key of the role's drop-in is
    one the release's journald.conf lists (it lists them all, commented out, with their defaults)."""
    # Where Debian 13 ships it, then where later systemd releases put it.
    places = ("/etc/systemd/journald.conf", "/usr/lib/systemd/journald.conf")
    shipped = next(tree.path(p) for p in places if tree.path(p).exists())
    known = set(re.findall(r"^#?([A-Za-z]+)=", shipped.read_text(), re.M))
    keys = re.findall(r"^([A-Za-z]+)=", render(tree, "common", "journald.conf.j2", HOSTS["db"]), re.M)
    assert keys, "journald.conf.j2 sets nothing"
    assert [k for k in keys if k not in known] == [], f"keys journald of Debian {tree.release} does not know"


def test_apt_configuration_parses(tree: Tree) -> None:
    """The apt.conf.d files pass apt-config (the role's validate), on the app (proxy set) and proxy."""
    for host in (HOSTS["app"], HOSTS["proxy"]):
        for template in ("apt-proxy.conf.j2", "20auto-upgrades.j2", "52tierwall-unattended-upgrades.j2"):
            path = tree.put(f"apt-{host}-{template}", render(tree, "common", template, host))
            done = tree.run("apt-config", "--config-file", path, "dump")
            assert_ok(done, f"apt-config {template} ({host})")


def test_debian_sources_name_the_releases_suites(tree: Tree) -> None:
    """apt reads the deb822 file alone and would fetch the release, -updates and -security suites
    (--print-uris, in a network namespace of its own: nothing is fetched), signed by a keyring the
    release ships."""
    text = render(tree, "common", "debian.sources.j2", HOSTS["db"])
    path = tree.put("sources.list.d/debian.sources", text)
    (tree.scratch / "lists" / "partial").mkdir(parents=True)
    lists = "/" + str((tree.scratch / "lists").relative_to(tree.root))
    done = tree.run(
        "apt-get", "-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={Path(path).parent}",
        "-o", f"Dir::State::Lists={lists}", "--print-uris", "update",
    )
    assert_ok(done, "apt-get --print-uris update")
    suites = set(re.findall(r"/dists/([^/]+)/InRelease'", done.stdout))
    assert suites == {tree.codename, f"{tree.codename}-updates", f"{tree.codename}-security"}, done.stdout
    assert not re.search(r"^(W|E):", done.stderr, re.M), done.stderr
    for keyring in re.findall(r"^Signed-By: (\S+)", text, re.M):
        assert tree.path(keyring).exists(), f"{keyring} is not in Debian {tree.release}"


def test_sudoers_file_passes_visudo(tree: Tree) -> None:
    path = tree.put("sudoers-ops", render(tree, "common", "sudoers-ops.j2", HOSTS["app"]), 0o440)
    assert_ok(tree.run("visudo", "-cf", path), "visudo -cf")


def test_sysctl_applier_exists(tree: Tree) -> None:
    """The handler runs /lib/systemd/systemd-sysctl on the drop-in."""
    assert tree.path("/lib/systemd/systemd-sysctl").exists()


# -- firewall --------------------------------------------------------------------------------------


def _interfaces(host: str) -> dict[str, str]:
    names = {"public": "eth0", "frontend": "ens10", "backend": "enp7s0"}
    vars_ = _host_vars(host)
    held = dict(vars_["tierwall_addresses"])
    if vars_.get("tierwall_public_address"):
        held["public"] = vars_["tierwall_public_address"]
    return {network: names[network] for network in held}


@pytest.mark.parametrize("host", sorted(TOPOLOGY.as_dict()["hosts"]))
def test_nft_accepts_the_ruleset(tree: Tree, host: str) -> None:
    """The release's nft checks each host's ruleset (the role's validate: nft -c -f)."""
    text = render(tree, "firewall", "nftables.conf.j2", host, __firewall_interfaces=_interfaces(host))
    path = tree.put(f"nftables-{host}.conf", text)
    assert_ok(tree.run("nft", "-c", "-f", path), f"nft -c -f ({host})")


# -- egress_proxy and apt_proxy --------------------------------------------------------------------


# Squid 6 reminds that HTTP asks proxies for a Via header; `via off` is deliberate (the inside's host
# names stay inside) and the only warning allowed.
SQUID_ACCEPTED_WARNINGS = ("WARNING: HTTP requires the use of Via",)


def test_squid_parses_its_configuration(tree: Tree) -> None:
    """squid -k parse (the role's validate) succeeds and warns about nothing but the deliberate `via off`."""
    path = tree.put("squid.conf", render(tree, "egress_proxy", "squid.conf.j2", HOSTS["proxy"]))
    done = tree.run("squid", "-k", "parse", "-f", path)
    assert_ok(done, "squid -k parse")
    complaints = [line for line in done.stderr.splitlines() if re.search(r"WARNING|ERROR|FATAL", line)
                  and not any(accepted in line for accepted in SQUID_ACCEPTED_WARNINGS)]
    assert complaints == [], "\n".join(complaints)


def test_apt_cacher_ng_reads_its_configuration(tree: Tree) -> None:
    """apt-cacher-ng's own option reader accepts acng.conf alone in its directory (it stops at an
    unknown key) and reads back the refusals the role relies on."""
    conf = tree.put("acng/acng.conf", render(tree, "apt_proxy", "acng.conf.j2", HOSTS["app"]))
    directory = str(Path(conf).parent)
    acngtool = "/usr/lib/apt-cacher-ng/acngtool"
    for name, wanted in (("ForceManaged", "1"), ("PassThroughPattern", "^$"), ("RedirMax", "0")):
        done = tree.run(acngtool, "printvar", name, "-c", directory)
        assert_ok(done, f"acngtool printvar {name}")
        assert done.stdout.strip() == wanted, f"{name}: {done.stdout!r}"
    packages = tree.path("/var/lib/dpkg/info/apt-cacher-ng.templates").read_text()
    assert "Template: apt-cacher-ng/tunnelenable" in packages, "the preseeded debconf question is gone"


# -- nginx -----------------------------------------------------------------------------------------


def _nginx_t(tree: Tree, version: str) -> subprocess.CompletedProcess[str]:
    """`nginx -t` of the tree on templates/nginx rendered for nginx ``version`` as
    test_nginx_templates renders them (its certificates and CRL included), paths as the tree sees them."""
    prefix = tree.scratch / f"nginx-{version}"
    render_tree(prefix, 2, nginx_version=version)
    for path in (prefix / "conf").rglob("*.conf"):
        path.write_text(path.read_text().replace(str(tree.root), ""))
    inside = "/" + str(prefix.relative_to(tree.root))
    return tree.run("nginx", "-t", "-p", inside, "-c", f"{inside}/conf/nginx.conf")


def test_nginx_version_is_the_releases(tree: Tree) -> None:
    """nginx_version follows the release: the nginx the tree installs is that major.minor."""
    expected = value(tree, "nginx", "nginx_version", HOSTS["proxy"])
    done = tree.run("nginx", "-v")
    assert_ok(done, "nginx -v")
    assert re.search(rf"nginx/{re.escape(str(expected))}\.", done.stderr), f"{expected}: {done.stderr}"


def test_nginx_accepts_its_configuration_without_a_warning(tree: Tree) -> None:
    """The files rendered for the release's nginx pass its `nginx -t` (the role's validate) and warn
    about nothing: no deprecated `listen ... http2` on nginx 1.25.1 and later."""
    done = _nginx_t(tree, value(tree, "nginx", "nginx_version", HOSTS["proxy"]))
    assert_ok(done, "nginx -t")
    assert "[warn]" not in done.stderr, done.stderr


def test_nginx_shows_why_http2_follows_the_version(tree: Tree) -> None:
    """The form for the other side of 1.25.1 is wrong on this release: the listen parameter is
    deprecated (a warning at every reload), or `http2 on;` is an unknown directive."""
    newer = value(tree, "nginx", "__nginx_http2_directive", HOSTS["proxy"])
    done = _nginx_t(tree, "1.22" if newer else "1.26")
    if newer:
        assert_ok(done, "nginx -t")
        assert 'the "listen ... http2" directive is deprecated' in done.stderr, done.stderr
    else:
        assert done.returncode != 0, done.stderr
        assert 'unknown directive "http2"' in done.stderr, done.stderr


# -- systemd units ---------------------------------------------------------------------------------


def _verify_unit(tree: Tree, name: str, text: str) -> None:
    path = tree.put(f"units/{name}", text)
    done = tree.run("systemd-analyze", "verify", "--man=no", path)
    complaints = [line for line in (done.stdout + done.stderr).splitlines()
                  if name in line or "Unknown" in line or "ignoring" in line.lower()]
    assert done.returncode == 0, f"{name}:\n{done.stdout}{done.stderr}"
    assert complaints == [], f"{name}:\n{done.stdout}{done.stderr}"


def test_app_unit_verifies(tree: Tree) -> None:
    """systemd of the release knows every sandboxing setting of the app's unit."""
    venv = tree.scratch / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "tierwall-notes").write_text("#!/bin/sh\n")
    (venv / "bin" / "tierwall-notes").chmod(0o755)
    text = render(tree, "app", "tierwall-notes.service.j2", HOSTS["app"],
                  __app_venv="/" + str(venv.relative_to(tree.root)))
    _verify_unit(tree, "tierwall-notes.service", text)


def test_postgresql_units_verify(tree: Tree) -> None:
    """The retention jobs and the volume's mount unit; the cluster unit's drop-in names real keys."""
    host = HOSTS["db"]
    job = value(tree, "postgresql", "__postgresql_retention_jobs", host)[0]
    libexec = "/" + str((tree.scratch / "libexec").relative_to(tree.root))
    (tree.scratch / "libexec").mkdir()
    script = tree.scratch / "libexec" / f"tierwall-retention-{job['name']}"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    extra = {"item": job, "__postgresql_libexec": libexec, "tierwall_volume_device": "/dev/vdb"}
    _verify_unit(tree, f"tierwall-retention-{job['name']}.service",
                 render(tree, "postgresql", "tierwall-retention.service.j2", host, **extra))
    _verify_unit(tree, f"tierwall-retention-{job['name']}.timer",
                 render(tree, "postgresql", "tierwall-retention.timer.j2", host, **extra))
    _verify_unit(tree, "tierwall-pgdata-volume.service",
                 render(tree, "postgresql", "tierwall-pgdata-volume.service.j2", host, **extra))
    unit = value(tree, "postgresql", "__postgresql_unit", host)
    assert tree.path(f"/usr/lib/systemd/system/{unit.split('@')[0]}@.service").exists(), unit


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture
def cluster(tree: Tree) -> Iterator[dict[str, Any]]:
    """A scratch cluster made as the role makes it (its pg_createcluster arguments), never started."""
    host = HOSTS["db"]
    name = f"twcheck{os.getpid()}"
    data = "/" + str((tree.scratch / "pgdata" / name).relative_to(tree.root))
    (tree.scratch / "pgdata").mkdir()
    shutil.chown(tree.scratch / "pgdata", *_postgres_ids(tree))
    overrides = {"postgresql_cluster_name": name, "__postgresql_data_directory": data}
    version = str(value(tree, "postgresql", "postgresql_version", host))
    argv = _createcluster_argv(tree, host, overrides)
    done = tree.run(*argv)
    try:
        assert_ok(done, " ".join(argv))
        yield {"host": host, "name": name, "version": version, "data": data, "overrides": overrides}
    finally:
        tree.run("pg_dropcluster", version, name)
        shutil.rmtree(tree.path(f"/etc/postgresql/{version}/{name}"), ignore_errors=True)


def _postgres_ids(tree: Tree) -> tuple[int, int]:
    passwd = tree.path("/etc/passwd").read_text()
    fields = next(line.split(":") for line in passwd.splitlines() if line.startswith("postgres:"))
    return int(fields[2]), int(fields[3])


def _createcluster_argv(tree: Tree, host: str, overrides: dict[str, Any]) -> list[str]:
    """The argv of tasks/cluster.yml's pg_createcluster task, templated for ``host``."""
    tasks = DataLoader().load_from_file(str(ROLES / "postgresql" / "tasks" / "cluster.yml"))
    (task,) = [t for t in tasks if t["name"].startswith("Create the cluster in ")]
    templar = Templar(loader=DataLoader(), variables=variables(tree, "postgresql", host, **overrides))
    return [str(templar.template(trust_as_template(arg))) for arg in task["ansible.builtin.command"]["argv"]]


def _single_user(tree: Tree, cluster: dict[str, Any], sql: str) -> subprocess.CompletedProcess[str]:
    """One statement in single-user mode: shared_preload_libraries load, no socket is opened."""
    bindir = value(tree, "postgresql", "__postgresql_bindir", cluster["host"])
    conf = f"/etc/postgresql/{cluster['version']}/{cluster['name']}/postgresql.conf"
    return tree.run("runuser", "-u", "postgres", "--", f"{bindir}/postgres", "--single", "-j",
                    f"--config-file={conf}", "postgres", stdin=sql + "\n")


def test_postgresql_accepts_the_roles_settings(tree: Tree, cluster: dict[str, Any]) -> None:
    """The role's drop-in and pg_hba.conf in a cluster of the release's PostgreSQL: the role's validate
    script passes, pgAudit loads, and the server reports no error in any file and no unknown setting."""
    host, overrides = cluster["host"], cluster["overrides"]
    conf_dir = tree.path(f"/etc/postgresql/{cluster['version']}/{cluster['name']}")
    dropin = render(tree, "postgresql", "postgresql-tierwall.conf.j2", host, **overrides)
    candidate = tree.put("50-tierwall.conf", dropin)
    script = render(tree, "postgresql", "tierwall-postgresql-check.sh.j2", host, **overrides)
    checker = tree.put("pg-check", script, 0o755)
    assert_ok(tree.run(checker, candidate), "the role's tierwall-postgresql-check")

    (conf_dir / "conf.d" / "50-tierwall.conf").write_text(dropin)
    (conf_dir / "pg_hba.conf").write_text(render(tree, "postgresql", "pg_hba.conf.j2", host, **overrides))
    names = re.findall(r"^([a-z_.]+) =", dropin, re.M)
    query = (
        "SELECT 'problem: ' || coalesce(name, '') || ' ' || error FROM pg_file_settings"
        " WHERE error IS NOT NULL"
        " UNION ALL SELECT 'problem: hba ' || line_number || ' ' || error FROM pg_hba_file_rules"
        " WHERE error IS NOT NULL"
        " UNION ALL SELECT 'known: ' || name FROM pg_settings"
    )
    done = _single_user(tree, cluster, query)
    assert_ok(done, "postgres --single")
    output = done.stdout + done.stderr
    assert "problem:" not in output, output
    assert "WARNING" not in output, output
    known = set(re.findall(r'"known: ([a-z_.]+)"', output))
    assert known, output
    assert [n for n in names if n not in known] == [], f"settings PostgreSQL {cluster['version']} lacks"


# -- the application's Python ----------------------------------------------------------------------


def _locked_wheels(package: str) -> dict[str, list[str]]:
    """Package -> wheel file names in uv.lock, for ``package`` and everything it depends on."""
    lock = {p["name"]: p for p in tomllib.loads((REPO / "uv.lock").read_text())["package"]}
    todo, seen = [package], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in lock:
            continue
        seen.add(name)
        todo += [d["name"] for d in lock[name].get("dependencies", [])]
    seen.discard(package)
    return {n: [w["url"].rsplit("/", 1)[1] for w in lock[n].get("wheels", [])] for n in sorted(seen)}


def test_app_wheels_install_on_the_releases_python(tree: Tree) -> None:
    """The app role installs uv.lock's pins with --only-binary=:all:: each needs a wheel the release's
    Python accepts (judged by that Python's own pip, in a venv made as the role makes it)."""
    venv = "/" + str((tree.scratch / "app-venv").relative_to(tree.root))
    assert_ok(tree.run("python3", "-m", "venv", venv), "python3 -m venv")
    wheels = _locked_wheels("tierwall-notes")
    judge = (
        "import sys\n"
        "from pip._vendor.packaging.tags import sys_tags\n"
        "from pip._vendor.packaging.utils import parse_wheel_filename\n"
        "ok = set(sys_tags())\n"
        "for line in sys.stdin:\n"
        "    name, *files = line.split()\n"
        "    if not any(ok & set(parse_wheel_filename(f)[3]) for f in files):\n"
        "        print(name)\n"
    )
    stdin = "".join(f"{name} {' '.join(files)}\n" for name, files in wheels.items())
    done = tree.run(f"{venv}/bin/python", "-c", judge, stdin=stdin)
    assert_ok(done, "the release's pip judging uv.lock's wheels")
    assert done.stdout.split() == [], (
        f"uv.lock has no wheel for Debian {tree.release}'s Python for: {' '.join(done.stdout.split())} "
        "(the lock's requires-python leaves that Python out)"
    )
