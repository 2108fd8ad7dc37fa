"""Rotating a secret is a converge away: the platform keeps working and the old value is dead.

The lab's secrets are the files site.yml reads in .lab/secrets (a stack's are its vault file's,
rotated with `tierwall secrets rotate`: docs/operations/secrets.md). Each test writes a new value
the way an operator rotates it, converges site.yml and then checks, through the proxy as the
internet sees it, that the application still serves what was stored before and stores what comes
after; for a database password, that the old one no longer authenticates to PostgreSQL (tried from
the app server, over TLS, as the application connects) and the new one does; for the notes
keyring, that the old key still opens the note it wrapped and the next note is wrapped with the
new key. The lab keeps the rotated secrets: rotating back would be one more rotation.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from public_site import SECRETS, Api, converge

from tierwall.lab.inventory import ssh_argv
from tierwall.topology import APP, BACKEND, DB

# Each test restarts the application and changes what PostgreSQL accepts: never beside other tests.
pytestmark = [pytest.mark.lab, pytest.mark.disruptive]

APP_PYTHON = "/opt/tierwall-notes/venv/bin/python3"
HOST_CA = "/etc/ssl/tierwall/ca.crt"
# Run on the app server: log in to one database as one role, the password on stdin (never argv).
LOGIN = """
import sys, psycopg
host, user, dbname, ca = sys.argv[1:5]
try:
    psycopg.connect(host=host, user=user, dbname=dbname, password=sys.stdin.read().strip(),
                    sslmode="verify-full", sslrootcert=ca, connect_timeout=10).close()
except psycopg.OperationalError as exc:
    print(str(exc).strip()); sys.exit(3)
print("authenticated")
"""
def _write_secret(path: Path, value: str) -> None:
    """As the password lookup and the keyring task leave them: owner-only, one value."""
    temporary = path.with_name(f".{path.name}.rotating")
    temporary.touch(mode=0o600)
    temporary.write_text(value)
    os.replace(temporary, path)


@pytest.fixture
def api(lab: Any, tmp_path: Path) -> Api:
    tmp_path.chmod(0o700)
    site = Api(lab, tmp_path)
    site.healthy()
    return site


def _login(lab: Any, role: str, database: str, password: str) -> subprocess.CompletedProcess[str]:
    """``role`` logs in to ``database`` from the first app server, as the application does."""
    app = lab.names(APP)[0]
    db_address = str(lab.topology.host(lab.names(DB)[0]).address(BACKEND))
    remote = shlex.join(["sudo", APP_PYTHON, "-c", LOGIN, db_address, role, database, HOST_CA])
    argv = ssh_argv(lab.hosts[app], lab.vars, [remote], ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
    return subprocess.run(argv, input=password, capture_output=True, text=True, timeout=60, check=False)


def _key_id(lab: Any, note_id: str) -> str:
    assert re.fullmatch(r"[0-9a-f-]{36}", note_id)  # a uuid: safe inside the quoted query
    query = f"SELECT key_id FROM notes WHERE note_id = '{note_id}'"
    command = shlex.join(
        ["sudo", "runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t", "-d", "notes", "-c", query]
    )
    done = lab.ssh(lab.names(DB)[0], command)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(("secret", "role", "database"), [
    ("notes-db-password", "notes_app", "notes"),
    ("identity-db-password", "identity_app", "identity"),
])  # fmt: skip
def test_a_rotated_database_password_keeps_the_app_working_and_kills_the_old_one(
    lab: Any, api: Api, secret: str, role: str, database: str
) -> None:
    path = SECRETS / secret
    old = path.read_text().strip()
    assert _login(lab, role, database, old).returncode == 0, "the old password must work before the rotation"
    text = f"written before the {secret} rotation {uuid.uuid4().hex}"
    ref, note_id = api.client_with_note(text)

    new = "".join(
        secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(40)
    )
    _write_secret(path, new)
    converge(lab)
    api.healthy()

    assert api.note_text(ref, note_id) == text
    after = f"written after the {secret} rotation {uuid.uuid4().hex}"
    status, body = api.call("POST", "/client/notes", {"text": after}, Tierwall_Client_Ref=ref)
    assert status == 201, body
    refused = _login(lab, role, database, old)
    assert refused.returncode == 3, f"the old {secret} still authenticates: {refused.stdout}{refused.stderr}"
    assert "password authentication failed" in refused.stdout, refused.stdout
    accepted = _login(lab, role, database, new)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    api.handover(ref)


def test_a_rotated_notes_keyring_keeps_old_notes_readable_and_wraps_new_ones_with_the_new_key(
    lab: Any, api: Api
) -> None:
    path = SECRETS / "notes-master-key"
    keyring = path.read_text()
    old_id = keyring.strip().splitlines()[-1].split(":", 1)[0]
    text = f"wrapped with the old key {uuid.uuid4().hex}"
    ref, before = api.client_with_note(text)
    assert _key_id(lab, before) == old_id

    new_id = f"rot-{uuid.uuid4().hex[:12]}"
    line = f"{new_id}: {base64.b64encode(secrets.token_bytes(32)).decode()}"
    _write_secret(path, keyring.rstrip("\n") + "\n" + line + "\n")
    converge(lab)
    api.healthy()

    assert api.note_text(ref, before) == text, "the old key must still open the note it wrapped"
    status, body = api.call(
        "POST", "/client/notes", {"text": "wrapped with the new key"}, Tierwall_Client_Ref=ref
    )
    assert status == 201, body
    assert _key_id(lab, body["note_id"]) == new_id
    assert _key_id(lab, before) == old_id
    assert api.note_text(ref, body["note_id"]) == "wrapped with the new key"
    api.handover(ref)
