"""The pki role, run for real on this machine against a temporary "host" directory.

The role's controller side (CA, CRL and host certificates) and its host side (installation) both
run locally with a local connection: no network. Checked: what is issued (names, usages, chain,
CRL distribution point), the key's permissions, the CRL (signature, revoked entries, renewal), a
second run changing nothing, and renewal inside the margin.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import playbook_run
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

HOST = "proxy-1"
CRL = "tierwall-ca.crl"
CRL_URL = f"http://notes.example.test/{CRL}"


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
    return playbook_run.converge(tmp_path, HOST, "-i", inventory, playbook)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_crl(tmp_path: Path) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl((tmp_path / "controller" / CRL).read_bytes())


def distribution_points(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in points for name in point.full_name or []]


def openssl(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("openssl is not installed: the role verifies its CRL with it (apt-get install openssl)")
    return subprocess.run([binary, *map(str, argv)], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    tmp_path = tmp_path_factory.mktemp("pki")
    first, _ = converge(tmp_path)
    second, _ = converge(tmp_path)
    return tmp_path, first, second


def copy_of_issued(issued: tuple[Path, int, int], tmp_path: Path) -> None:
    """Start ``tmp_path`` from the converged state of ``issued`` (CA, CRL, host files, modes)
    instead of converging it from nothing again: each converge costs seconds of CPU."""
    source, _, _ = issued
    for directory in ("controller", "host"):
        shutil.copytree(source / directory, tmp_path / directory, symlinks=True)


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
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
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


# -- the CRL --------------------------------------------------------------------------------------


def test_crl_is_signed_by_the_ca_and_installed_in_der_and_pem(issued: tuple[Path, int, int]) -> None:
    tmp_path, _, _ = issued
    ca = load(tmp_path / "controller" / "ca.crt")
    crl = load_crl(tmp_path)
    assert crl.is_signature_valid(ca.public_key())
    assert crl.issuer == ca.subject
    assert len(crl) == 0, "nothing is revoked by default"
    days = (crl.next_update_utc - crl.last_update_utc).days
    assert days == 90, f"nextUpdate {days} days after lastUpdate, expected pki_crl_validity_days"
    ca_path, host_crl = tmp_path / "host" / "ca.crt", tmp_path / "host" / CRL
    verified = openssl("crl", "-inform", "DER", "-in", host_crl, "-CAfile", ca_path, "-noout")
    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stderr
    assert (tmp_path / "host" / CRL).read_bytes() == (tmp_path / "controller" / CRL).read_bytes()
    pem = x509.load_pem_x509_crl((tmp_path / "host" / f"{CRL}.pem").read_bytes())
    assert pem == crl
    # What nginx's proxy_ssl_crl does (CRL check of every certificate in the chain): still valid.
    pem_path, host_cert = tmp_path / "host" / f"{CRL}.pem", tmp_path / "host" / f"{HOST}.crt"
    chain = openssl("verify", "-crl_check_all", "-CAfile", ca_path, "-CRLfile", pem_path, host_cert)
    assert chain.returncode == 0, chain.stdout + chain.stderr


def test_host_certificate_carries_the_crl_distribution_point(issued: tuple[Path, int, int]) -> None:
    tmp_path, _, _ = issued
    assert distribution_points(load(tmp_path / "host" / f"{HOST}.crt")) == [CRL_URL]


def test_no_distribution_point_off_the_lab(tmp_path: Path) -> None:
    """Off the lab no proxy serves the CRL (its site certificate comes from ACME): no dead URL."""
    converge(tmp_path, tierwall_target="prod")
    assert distribution_points(load(tmp_path / "host" / f"{HOST}.crt")) == []
    assert (tmp_path / "host" / CRL).exists(), "the CRL is kept and installed on every target"


def test_a_certificate_without_the_distribution_point_is_reissued_once(tmp_path: Path) -> None:
    """Certificates issued before the CRL existed get the extension at the next converge."""
    converge(tmp_path, pki_crl_url="")
    before = load(tmp_path / "host" / f"{HOST}.crt")
    assert distribution_points(before) == []
    changed, _ = converge(tmp_path)
    after = load(tmp_path / "host" / f"{HOST}.crt")
    assert changed > 0
    assert after.serial_number != before.serial_number
    assert distribution_points(after) == [CRL_URL]
    changed, _ = converge(tmp_path)
    assert changed == 0


def test_revoking_is_one_list_entry(issued: tuple[Path, int, int], tmp_path: Path) -> None:
    """A certificate named by path, a serial as integer and one as hex octets all land in the
    CRL; the revoked certificate then fails verification with CRL checking; entries keep their
    revocation dates and a second run changes nothing."""
    copy_of_issued(issued, tmp_path)
    revoked_copy = tmp_path / "revoked-proxy-1.crt"
    shutil.copy(tmp_path / "host" / f"{HOST}.crt", revoked_copy)
    serial = load(revoked_copy).serial_number
    revoked = [str(revoked_copy), 4242, "01:00:ff"]
    changed, _ = converge(tmp_path, pki_revoked_certificates=revoked)
    assert changed > 0, "a new revocation must change the CRL on the hosts"
    crl = load_crl(tmp_path)
    assert crl.is_signature_valid(load(tmp_path / "controller" / "ca.crt").public_key())
    assert {entry.serial_number for entry in crl} == {serial, 4242, 0x0100FF}
    check = openssl("verify", "-crl_check", "-CAfile", tmp_path / "host" / "ca.crt",
                    "-CRLfile", tmp_path / "host" / f"{CRL}.pem", revoked_copy)  # fmt: skip
    assert check.returncode != 0
    assert "certificate revoked" in check.stdout + check.stderr
    dates = {entry.serial_number: entry.revocation_date_utc for entry in crl}
    changed, _ = converge(tmp_path, pki_revoked_certificates=revoked)
    assert changed == 0
    assert load_crl(tmp_path) == crl
    # Dropping one entry re-signs the CRL; the others keep their dates.
    changed, _ = converge(tmp_path, pki_revoked_certificates=revoked[:2])
    assert changed > 0
    kept = {entry.serial_number: entry.revocation_date_utc for entry in load_crl(tmp_path)}
    assert kept == {serial: dates[serial], 4242: dates[4242]}


def test_crl_is_renewed_inside_the_margin_only(tmp_path: Path) -> None:
    converge(tmp_path, pki_crl_validity_days=20, pki_crl_renew_days=10)
    short = load_crl(tmp_path)
    changed, _ = converge(tmp_path, pki_crl_validity_days=20, pki_crl_renew_days=10)
    assert changed == 0, "20 days left, margin 10: not due"
    # 20 days left, margin 30: a fresh CRL with the default lifetime.
    changed, _ = converge(tmp_path)
    assert changed > 0
    renewed = load_crl(tmp_path)
    assert renewed.next_update_utc - short.next_update_utc > timedelta(days=60)
    assert renewed.next_update_utc > datetime.now(UTC) + timedelta(days=89)
    changed, _ = converge(tmp_path)
    assert changed == 0


def test_a_crl_of_an_earlier_ca_key_is_replaced(issued: tuple[Path, int, int], tmp_path: Path) -> None:
    """x509_crl alone would keep a CRL with the same issuer name and entries signed by a key
    that is gone; the role checks the signature."""
    copy_of_issued(issued, tmp_path)
    old_crl = (tmp_path / "controller" / CRL).read_bytes()
    (tmp_path / "controller" / "ca.key").unlink()
    (tmp_path / "controller" / "ca.crt").unlink()
    converge(tmp_path)
    assert (tmp_path / "controller" / CRL).read_bytes() != old_crl
    assert load_crl(tmp_path).is_signature_valid(load(tmp_path / "controller" / "ca.crt").public_key())
    changed, _ = converge(tmp_path)
    assert changed == 0
