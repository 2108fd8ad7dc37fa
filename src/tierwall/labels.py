"""Hetzner label keys of every tierwall resource. The Pulumi program sets them, the policy pack
identifies a server's tier and a network's role by them, and the hcloud inventory plugin can group
by them. Hetzner accepts dots in a key's name segment without a DNS prefix."""

TIER_LABEL = "tierwall.tier"
STACK_LABEL = "tierwall.stack"
NETWORK_LABEL = "tierwall.network"
