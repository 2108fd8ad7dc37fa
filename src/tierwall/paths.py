"""Where things live. Lab state (keys, CA, secrets, inventories, reports) stays under .lab/,
which git ignores."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The lab's state may be moved (e.g. to a bigger disk) with TIERWALL_LAB_DIR.
LAB_DIR = Path(os.environ.get("TIERWALL_LAB_DIR", REPO / ".lab"))
LAB_CONFIG = REPO / "lab" / "stack.yaml"
ANSIBLE_DIR = REPO / "ansible"
EXAMPLE_STACK = REPO / "Pulumi.example.yaml"

# Names the inventory groups whose hosts tests/testinfra checks (comma-separated; unset: every
# host its modules name). A live mutation's revert checks the hosts it broke, while the next
# mutation may already be breaking others.
TEST_GROUPS_VARIABLE = "TIERWALL_TEST_GROUPS"
