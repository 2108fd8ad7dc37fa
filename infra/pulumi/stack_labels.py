"""Labels and Hetzner names shared by every resource of a stack.

Hetzner label keys are ``[prefix/]name``; the name segment may contain letters, digits, ``-``, ``_``
and ``.`` (1-63 characters, alphanumeric at both ends), so ``tierwall.tier`` is valid without a DNS
prefix (hcloud-go's label check: key ``^([a-z0-9A-Z]...[a-z0-9A-Z]/)?[a-z0-9A-Z]([-_.a-z0-9A-Z]{0,61}
[a-z0-9A-Z])?$``). Values follow the name rule and may be empty; tier and stack names satisfy it.

The keys themselves live in ``tierwall.labels``, shared with the policy pack.
"""

from __future__ import annotations

from tierwall.labels import NETWORK_LABEL, STACK_LABEL, TIER_LABEL

__all__ = ["NETWORK_LABEL", "STACK_LABEL", "TIER_LABEL", "hetzner_name", "labels"]


def labels(stack: str, **extra: str) -> dict[str, str]:
    """The stack label plus ``tier=`` / ``network=`` given as keyword arguments."""
    result = {STACK_LABEL: stack}
    for key, value in extra.items():
        result[{"tier": TIER_LABEL, "network": NETWORK_LABEL}[key]] = value
    return result


def hetzner_name(stack: str, suffix: str) -> str:
    """Hetzner names are unique per project: prefix them so two stacks can share a project."""
    return f"tierwall-{stack}-{suffix}"
