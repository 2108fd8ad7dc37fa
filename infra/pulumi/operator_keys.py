"""The operators' SSH public keys as Hetzner SSH keys, installed for root at server creation.

cloud-init then creates the ``ops`` user with the same keys and forbids root login, so the keys
here only matter for the first boot. Hetzner refuses two SSH keys with the same fingerprint in one
project: give every stack its own Hetzner project (which also separates their API tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud
from component_options import child_name, child_options, component_options
from stack_labels import hetzner_name, labels


@dataclass(frozen=True)
class OperatorKeysArgs:
    stack: str
    public_keys: Sequence[str]


class OperatorKeys(pulumi.ComponentResource):
    TYPE = "tierwall:access:OperatorKeys"
    # Every type token this component had before TYPE (see component_options): none yet.
    PREVIOUS_TYPES: tuple[str, ...] = ()

    keys: list[hcloud.SshKey]

    def __init__(self, name: str, args: OperatorKeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(self.TYPE, name, None, component_options(opts, self.PREVIOUS_TYPES))
        self.keys = [
            hcloud.SshKey(
                child_name(name, str(index)),
                name=hetzner_name(args.stack, child_name(name, str(index))),
                public_key=key,
                labels=labels(args.stack),
                opts=child_options(self),
            )
            for index, key in enumerate(args.public_keys, start=1)
        ]
        self.ids: list[pulumi.Output[str]] = [key.id for key in self.keys]
        self.register_outputs({"ids": self.ids})
