"""The upgrade drill: a Debian 12 lab holding data becomes a Debian 13 lab, in place, and keeps it.

`make upgrade-drill` builds a Debian 12 lab (TIERWALL_LAB_IMAGE=debian-12), converges it, and runs
this test; the live suites then run on the upgraded lab, so everything they prove holds after the
upgrade too. The test stores a client, a note and a contract through the proxy, runs
ansible/playbooks/upgrade-debian-13.yml as an operator would, and checks that every host runs
Debian 13, that the db holds exactly one cluster, of the release's PostgreSQL, in the encrypted
directory, that the notes stored before read back unchanged and new ones are stored, and that the
upgrade left no cleartext copy of the data behind (the old cluster is gone).
"""

from __future__ import annotations

import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest
from public_site import Api, converge

from tierwall.topology import DB

pytestmark = [pytest.mark.lab, pytest.mark.upgrade_drill]

ENCRYPTED_DIR = "/srv/pgdata-volume/postgresql"  # the postgresql role's __postgresql_encrypted_dir
RELEASE_POSTGRESQL = {"12": 15, "13": 17}  # the postgresql role's __postgresql_release_versions


def _run(lab: Any, host: str, command: str) -> str:
    done = lab.ssh(host, f"sudo sh -c {shlex.quote(command)}")
    assert done.returncode == 0, f"{host}: {command}: {done.stderr}"
    return done.stdout


def _releases(lab: Any) -> dict[str, str]:
    return {host: _run(lab, host, "cut -d. -f1 /etc/debian_version").strip() for host in lab.hosts}


def _clusters(lab: Any) -> list[list[str]]:
    """pg_lsclusters' rows on the db: version, name, port, status, owner, data directory, log."""
    out = _run(lab, lab.names(DB)[0], "pg_lsclusters --no-header")
    return [line.split() for line in out.splitlines() if line.strip()]


def _store(api: Api) -> tuple[str, str, str, dict[str, Any]]:
    ref = f"upg-{uuid.uuid4().hex[:16]}"
    text = f"written on Debian 12 {uuid.uuid4().hex}"
    created, _ = api.call("PUT", "/client", {"name": f"Upgrade {uuid.uuid4().hex}"}, Tierwall_Client_Ref=ref)
    assert created == 201
    status, note = api.call("POST", "/client/notes", {"text": text}, Tierwall_Client_Ref=ref)
    assert status == 201, note
    contract = {"package": "upgrade-drill", "price_cents": 12000, "started_on": "2026-11-01"}
    status, stored = api.call("POST", "/client/contracts", contract, Tierwall_Client_Ref=ref)
    assert status == 201, stored
    return ref, note["note_id"], text, stored


def test_debian_12_to_13_in_place_keeps_the_data_encrypted(lab: Any, tmp_path: Path) -> None:
    before = _releases(lab)
    if set(before.values()) != {"12"}:
        pytest.fail(f"the drill starts from a Debian 12 lab (make upgrade-drill builds one): {before}")
    tmp_path.chmod(0o700)
    api = Api(lab, tmp_path)
    api.healthy()
    ref, note_id, text, contract = _store(api)
    assert [(row[0], row[1]) for row in _clusters(lab)] == [(str(RELEASE_POSTGRESQL["12"]), "main")]

    converge(lab, "upgrade-debian-13.yml", timeout=3600)

    assert set(_releases(lab).values()) == {"13"}, _releases(lab)
    clusters = _clusters(lab)
    new = str(RELEASE_POSTGRESQL["13"])
    assert [(row[0], row[1], row[3]) for row in clusters] == [(new, "main", "online")], clusters
    assert clusters[0][5] == f"{ENCRYPTED_DIR}/{new}/main", clusters
    db = lab.names(DB)[0]
    status = _run(lab, db, f"fscrypt status {shlex.quote(ENCRYPTED_DIR)}")
    assert "is encrypted with fscrypt" in status, status
    for database in ("notes", "identity"):
        query = (
            "SELECT e.extversion = a.default_version FROM pg_extension e "
            "JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'pgaudit'"
        )
        current = _run(lab, db, shlex.join(["runuser", "-u", "postgres", "--", "psql", "-X", "-A", "-t",
                                            "-d", database, "-c", query]))  # fmt: skip
        assert current.strip() == "t", f"{database}: pgAudit's catalog objects are the old major's"
    leftovers = _run(lab, db, f"ls -1 {shlex.quote(ENCRYPTED_DIR)} /etc/postgresql /var/lib/postgresql")
    assert str(RELEASE_POSTGRESQL["12"]) not in leftovers.split(), f"the old cluster is left: {leftovers}"

    api.healthy()
    assert api.note_text(ref, note_id) == text
    status, contracts = api.call("GET", "/client/contracts", Tierwall_Client_Ref=ref)
    assert status == 200, contracts
    assert contract in contracts, contracts
    after = {"text": "written on Debian 13"}
    status, body = api.call("POST", "/client/notes", after, Tierwall_Client_Ref=ref)
    assert status == 201, body
    api.handover(ref)
