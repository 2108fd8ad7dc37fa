"""The pki role, run for real on this machine against a temporary "host" directory.

The role's controller side (CA and host certificates) and its host side (installation) both run
locally with a local connection: no network. Checked: what is issued (names, usages, chain),
the key's permissions, a second run changing nothing, and renewal inside the margin.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tierwall.paths import REPO

ROLES = REPO / "ansible" / "roles"
HOST = "proxy-1"


def converge(tmp_path: Path, **extra: Any) -> tuple[int, str]:
    """Run the pki role once; return (changed count, output)."""
    host_vars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "tierwall_target": "lab",
        "tierwall_tier": "proxy",
        "tierwall_domain": "notes.example.test",
        "tierwall_addresses": {"frontend": "10.10.1.10"},
        "tierwall_public_address": "203.0.113.10",
        "pki_controller_dir": str(tmp_path / "controller"),
        "pki_host_dir": str(tmp_path / "host"),
        "pki_key_owner": pwd.getpwuid(os.getuid()).pw_name,
        "pki_key_group": grp.getgrgid(os.getgid()).gr_name,
        **extra,
    }
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {HOST: host_vars}}}))
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump([{"name": "pki", "hosts": "all", "gather_facts": False, "roles": ["pki"]}])
    )
    env = {
        **os.environ,
        "ANSIBLE_ROLES_PATH": str(ROLES),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }
    env.pop("ANSIBLE_CONFIG", None)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    recap = re.search(rf"^{HOST}\s*:.*changed=(\d+)", output, re.M)
    assert recap, output
    return int(recap.group(1)), output


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    tmp_path = tmp_path_factory.mktemp("pki")
    first, _ = converge(tmp_path)
    second, _ = converge(tmp_path)
    return tmp_path, first, second


def test_first_run_creates_and_second_run_changes_nothing(issued: tuple[Path, int, int]) -> None:
    _, first, second = issued
    assert first > 0
    assert second == 0, "a second converge must report changed=0"


def test_host_certificate_names_and_usages(issued: tuple[Path, int, int]) -> None:
    tmp_path, _, _ = issued
    cert = load(tmp_path / "host" / f"{HOST}.crt")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {
        HOST,
        f"{HOST}.tierwall.internal",
        "proxy.tierwall.internal",
        "notes.example.test",  # the proxy, in the lab only
    }
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.10.1.10"),
        ipaddress.ip_address("203.0.113.10"),
    }
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days <= 398, "scanners and browsers flag longer server certificates"


def test_host_certificate_chains_to_the_installed_ca(issued: tuple[Path, int, int]) -> None:
    tmp_path, _, _ = issued
    ca = load(tmp_path / "host" / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).critical
    load(tmp_path / "host" / f"{HOST}.crt").verify_directly_issued_by(ca)
    assert (tmp_path / "host" / "ca.crt").read_bytes() == (tmp_path / "controller" / "ca.crt").read_bytes()


def test_keys_are_private(issued: tuple[Path, int, int]) -> None:
    tmp_path, _, _ = issued
    assert (tmp_path / "host" / "private" / f"{HOST}.key").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "host" / "private").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "controller" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "controller").stat().st_mode & 0o777 == 0o700


def test_certificates_are_renewed_inside_the_margin_only(tmp_path: Path) -> None:
    converge(tmp_path, pki_cert_validity_days=20, pki_cert_renew_days=10)
    before = load(tmp_path / "host" / f"{HOST}.crt")
    ca_before = (tmp_path / "controller" / "ca.crt").read_bytes()
    # 20 days left, margin 30: renew, with the default lifetime.
    changed, _ = converge(tmp_path)
    after = load(tmp_path / "host" / f"{HOST}.crt")
    assert changed > 0
    assert after.serial_number != before.serial_number
    assert (after.not_valid_after_utc - after.not_valid_before_utc).days >= 364
    assert (tmp_path / "controller" / "ca.crt").read_bytes() == ca_before, "the CA was not due"
    changed, _ = converge(tmp_path)
    assert changed == 0


def test_a_stack_refuses_the_default_ca_directory(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="pki_controller_dir is not set for target 'prod'"):
        converge(tmp_path, tierwall_target="prod", pki_controller_dir="")
