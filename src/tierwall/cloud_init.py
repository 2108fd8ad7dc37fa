"""First-boot user data (cloud-init) for every server: the ops user, sshd hardening, its host key.

Hetzner's Debian images lets root log in with a key and ships a ``50-cloud-init.conf``
drop-in that can turn password login back on. Our drop-in is named to sort before it: sshd
keeps the first value it reads for a keyword, so ours wins. The ``common`` Ansible role later
manages the same file. The lab applies this same document to its machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

OPS_USER = "ops"
SSHD_DROPIN_PATH = "/etc/ssh/sshd_config.d/10-tierwall.conf"
# The one host key a server has and offers (the common role keeps it so): auditors' clients and the
# operators' known_hosts see Ed25519 only, from the first boot on.
HOST_KEY_TYPE = "ed25519"
HOST_KEY_PATH = f"/etc/ssh/ssh_host_{HOST_KEY_TYPE}_key"
SUDOERS_PATH = f"/etc/sudoers.d/90-{OPS_USER}"

SSHD_FIRST_BOOT = f"""\
# tierwall first-boot hardening (cloud-init); managed afterwards by the common role.
# Sorts before 50-cloud-init.conf: sshd keeps the first value it reads.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthenticationMethods publickey
AllowUsers {OPS_USER}
X11Forwarding no
HostKey {HOST_KEY_PATH}
"""


def cloud_config(ssh_public_keys: Sequence[str], ops_user: str = OPS_USER) -> dict[str, Any]:
    if not ssh_public_keys:
        raise ValueError("cloud_config: at least one SSH public key is required for the ops user")
    return {
        "users": [
            {
                "name": ops_user,
                "gecos": "tierwall operator",
                "shell": "/bin/bash",
                "groups": ["sudo"],
                "lock_passwd": True,
                "ssh_authorized_keys": list(ssh_public_keys),
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
        # The image's host keys are deleted and only an Ed25519 one is made (cloud-init's default
        # makes RSA and ECDSA keys too).
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [HOST_KEY_TYPE],
        "write_files": [
            {
                "path": SSHD_DROPIN_PATH,
                "permissions": "0600",
                "owner": "root:root",
                "content": SSHD_FIRST_BOOT,
            },
            # Key-only accounts have no password to type: become needs NOPASSWD.
            {
                "path": SUDOERS_PATH,
                "permissions": "0440",
                "owner": "root:root",
                "content": f"{ops_user} ALL=(ALL) NOPASSWD:ALL\n",
            },
        ],
        "runcmd": [["systemctl", "reload-or-restart", "ssh"]],
    }


def user_data(ssh_public_keys: Sequence[str], ops_user: str = OPS_USER) -> str:
    """The ``user_data`` string handed to hcloud.Server (and applied by the lab)."""
    return "#cloud-config\n" + yaml.safe_dump(cloud_config(ssh_public_keys, ops_user), sort_keys=False)
