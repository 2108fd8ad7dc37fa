"""The lab's off-site backup store: an S3 endpoint on the lab's "internet".

A stack's db pushes its backups to S3 repositories in the two German locations (Hetzner Object
Storage); the lab's go here instead, never to a real public address. In network namespace
``tw-offsite`` at OFFSITE (203.0.113.60, on the ``tw-internet`` bridge like the sentinel):

* moto's S3 server, in memory, on the namespace's own loopback (plain HTTP);
* nginx in front of it, terminating TLS on OFFSITE:443 with a certificate for every repository
  endpoint of the lab's stack, signed by the lab's own "public" CA (``.lab/offsite/ca.pem``, the
  lab stack's ``caFile``). pgBackRest's TLS does not get along with moto's own (werkzeug) TLS.

Each bucket is created as a customer of the provider would create it: versioned, with Object
Lock on and a default retention in COMPLIANCE mode, so that a stored version can be neither
deleted nor overwritten before its retention ends. moto falls short of a real object store in two
ways the tests do not hide: it accepts any credentials (the db's and the owner's are not really
apart), and it lets any credential shorten a COMPLIANCE retention. The store lives as long as the lab
(moto keeps nothing on disk); ``tierwall lab down`` ends it.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tierwall.lab.addressing import OFFSITE, OFFSITE_NS, RUN_DIR
from tierwall.lab.network import listening
from tierwall.lab.state import State
from tierwall.lab.system import LabError
from tierwall.paths import LAB_DIR

MOTO_PORT = 9000
HTTPS_PORT = 443
CA_FILE = LAB_DIR / "offsite" / "ca.pem"
_CA_KEY = LAB_DIR / "offsite" / "ca.key"
_WORK = RUN_DIR / "offsite"
# What `ps` shows of each process the store runs: the state's pid names and their command lines.
PROCESSES = {"offsite-moto": "moto_server", "offsite-nginx": "nginx"}


# -- certificates ---------------------------------------------------------------------------------


def ensure_certificates(endpoints: Sequence[str]) -> None:
    """The lab's "public" CA (kept across labs, like a real CA) and a server certificate for
    exactly ``endpoints`` (reissued when they change)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    CA_FILE.parent.mkdir(parents=True, exist_ok=True)
    _WORK.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    # Certificates and CRLs only (key_cert_sign, crl_sign).
    _CA_USAGE = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    if not (CA_FILE.exists() and _CA_KEY.exists() and _has_key_identifier(CA_FILE)):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tierwall lab off-site store CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(_CA_KEY, ca_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))  # fmt: skip
        CA_FILE.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    ca = x509.load_pem_x509_certificate(CA_FILE.read_bytes())
    signer = serialization.load_pem_private_key(_CA_KEY.read_bytes(), password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise LabError(f"{_CA_KEY} is not the off-site CA's EC key: remove {CA_FILE.parent} and run up again")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, endpoints[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(e) for e in endpoints]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        # Python 3.13's default TLS context (VERIFY_X509_STRICT) wants the key identifiers, which
        # public CAs set.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    _write_private(_WORK / "server.key", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))  # fmt: skip
    (_WORK / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _has_key_identifier(path: Path) -> bool:
    """False for a CA made before its certificates carried key identifiers: it is made anew."""
    from cryptography import x509

    extensions = x509.load_pem_x509_certificate(path.read_bytes()).extensions
    return any(isinstance(e.value, x509.SubjectKeyIdentifier) for e in extensions)


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


# -- processes ------------------------------------------------------------------------------------


def nginx_config(endpoints: Sequence[str]) -> str:
    """TLS in front of moto: every request passed on unbuffered (backups are large), one access
    line per request with the client's address (the proxy's public address, nobody else's)."""
    return f"""\
# The lab's stand-in for a provider's endpoint, run by root for its private files under RUN_DIR.
user root;
worker_processes 1;
pid {_WORK}/nginx.pid;
error_log {_WORK}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {_WORK}/access.log;
    client_body_temp_path {_WORK}/client_body;
    proxy_temp_path {_WORK}/proxy;
    server {{
        listen {OFFSITE}:{HTTPS_PORT} ssl;
        server_name {" ".join(endpoints)};
        ssl_certificate {_WORK}/server.crt;
        ssl_certificate_key {_WORK}/server.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        location / {{
            proxy_pass http://127.0.0.1:{MOTO_PORT};
            proxy_set_header Host $host;
            proxy_http_version 1.1;
        }}
    }}
}}
"""


def start(state: State, endpoints: Sequence[str], buckets: Sequence[str], retention_days: int) -> None:
    """Start moto and nginx in the store's namespace (made by the network), then the buckets."""
    ensure_certificates(endpoints)
    (_WORK / "nginx.conf").write_text(nginx_config(endpoints))
    env = {**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"}
    moto = Path(sys.executable).with_name("moto_server")
    _spawn(state, "offsite-moto", [str(moto), "-H", "127.0.0.1", "-p", str(MOTO_PORT)], env)
    _wait_listening(f"127.0.0.1:{MOTO_PORT}")
    _spawn(state, "offsite-nginx", ["nginx", "-c", str(_WORK / "nginx.conf"), "-g", "daemon off;"], env)
    _wait_listening(f"{OFFSITE}:{HTTPS_PORT}")
    s3("create-buckets", buckets=list(buckets), retention_days=retention_days)


def _spawn(state: State, name: str, argv: list[str], env: dict[str, str]) -> None:
    log = (_WORK / f"{name}.log").open("ab")
    process = subprocess.Popen(
        ["ip", "netns", "exec", OFFSITE_NS, *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    state.pids[name] = process.pid
    state.save()


def _wait_listening(address: str, timeout: float = 20) -> None:
    if not listening(OFFSITE_NS, [address], timeout):
        raise LabError(f"the off-site store did not start listening on {address}: see {_WORK}/*.log")


# -- the S3 side, from inside the namespace ----------------------------------------------------------


def s3(action: str, **arguments: object) -> object:
    """Run one :mod:`tierwall.lab.offsite_s3` action inside the store's namespace (moto on its
    loopback: nothing crosses a network) and return its JSON answer."""
    result = subprocess.run(
        ["ip", "netns", "exec", OFFSITE_NS, sys.executable, "-m", "tierwall.lab.offsite_s3", action,
         json.dumps(arguments)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise LabError(f"off-site store: {action} failed: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout)
