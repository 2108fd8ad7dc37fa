"""The tierwall policy pack: `pulumi preview --policy-pack infra/policy` (from the repository root).

Only this file builds the PolicyPack: constructing it starts the analyzer's gRPC server and blocks,
so tests import ``policies`` instead.
"""

from policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="tierwall",
    description="tierwall's security promises for health data on Hetzner Cloud (Germany).",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=list(POLICIES),
)
