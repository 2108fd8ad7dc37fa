"""The lab's public site and its converges, as the lab suites that change the lab drive them.

``Api`` calls the application through the proxy from the lab's sentinel "internet", with the lab's
API token; ``converge`` runs a playbook on the whole lab and requires every host to end it
without failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tierwall.lab.inventory import INVENTORY
from tierwall.paths import ANSIBLE_DIR, LAB_DIR
from tierwall.topology import PROXY

SECRETS = LAB_DIR / "secrets"
LAB_CA = LAB_DIR / "pki" / "ca.crt"
RECAP = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=\d+\s+changed=\d+\s+unreachable=(?P<u>\d+)\s+failed=(?P<f>\d+)", re.M
)


def converge(
    lab: Any, playbook: str = "site.yml", timeout: float = 1200, hosts: set[str] | None = None
) -> str:
    """Run ``playbook`` on the lab; every host (or every one of ``hosts``, the playbook's) ends it
    unreachable=0 failed=0. Its output."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    ansible_playbook = Path(sys.executable).parent / "ansible-playbook"
    done = subprocess.run(
        [str(ansible_playbook), "-i", str(INVENTORY), str(ANSIBLE_DIR / "playbooks" / playbook)],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip
    recap = {m["host"]: (int(m["u"]), int(m["f"])) for m in RECAP.finditer(done.stdout)}
    assert set(recap) == (hosts or set(lab.hosts)), done.stdout[-4000:] + done.stderr[-2000:]
    assert all(r == (0, 0) for r in recap.values()), done.stdout[-4000:]
    return done.stdout


class Api:
    """The public site from the lab's sentinel "internet", with the lab's API token."""

    def __init__(self, lab: Any, workdir: Path) -> None:
        self.lab = lab
        self.workdir = workdir
        proxy = lab.names(PROXY)[0]
        self.resolve = f"{lab.vars['tierwall_domain']}:443:{lab.hosts[proxy]['tierwall_public_address']}"

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        config = self.workdir / f"curl-{uuid.uuid4().hex}.conf"
        config.touch(mode=0o600)
        token = (SECRETS / "app-api-token").read_text().strip()
        lines = [f'header = "Authorization: Bearer {token}"', 'header = "Content-Type: application/json"']
        lines += [f'header = "{name.replace("_", "-")}: {value}"' for name, value in headers.items()]
        config.write_text("\n".join(lines) + "\n")
        argv = ["curl", "--silent", "--max-time", "20", "--request", method, "--config", str(config),
                "--cacert", str(LAB_CA), "--resolve", self.resolve, "--write-out", "\n%{http_code}",
                f"https://{self.lab.vars['tierwall_domain']}{path}"]  # fmt: skip
        if body is not None:
            argv[-1:-1] = ["--data-binary", json.dumps(body)]
        try:
            done = self.lab.in_ns("sentinel", argv)
        finally:
            config.unlink(missing_ok=True)
        payload, _, status = done.stdout.rpartition("\n")
        return int(status or 0), json.loads(payload) if payload.strip() else None

    def healthy(self) -> None:
        """After a converge the app restarts and its pools connect in the background."""
        for _ in range(60):
            if self.call("GET", "/healthz")[0] == 200:
                return
            time.sleep(1)
        pytest.fail("the application does not report both databases healthy after the rotation")

    def client_with_note(self, text: str) -> tuple[str, str]:
        ref = f"rot-{uuid.uuid4().hex[:16]}"
        assert (
            self.call("PUT", "/client", {"name": f"Rotation {uuid.uuid4().hex}"}, Tierwall_Client_Ref=ref)[0]
            == 201
        )
        status, body = self.call("POST", "/client/notes", {"text": text}, Tierwall_Client_Ref=ref)
        assert status == 201, body
        return ref, body["note_id"]

    def note_text(self, ref: str, note_id: str) -> str:
        status, body = self.call("GET", "/client/note", Tierwall_Client_Ref=ref, Tierwall_Note_Id=note_id)
        assert status == 200, f"the note {note_id} no longer reads back: {status} {body}"
        return body["text"]

    def handover(self, ref: str) -> None:
        assert self.call("POST", "/client/handover", Tierwall_Client_Ref=ref)[0] == 200
