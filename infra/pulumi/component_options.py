"""How tierwall's components name their children and pass them options.

A child's URN holds its parent's *type* chain but not the parent's *name*, so two instances of one
component whose children had fixed names would claim the same URNs. Every child is therefore named
from its component's name, and Pulumi's own convention (``<component name>-<part>``) is followed:
when a component is renamed with an alias, Pulumi derives each child's old name by swapping that
prefix, so the children follow their parent instead of being replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi

from tierwall.topology import Host


def child_name(component: str, part: str) -> str:
    return f"{component}-{part}"


def host_child_name(component: str, host: Host) -> str:
    """``proxy-1`` in component ``proxy``, ``proxy-blue-1`` in ``proxy-blue``.

    Topology host names are ``<tier>-<n>``; the component's name takes the tier's place. The
    program names each tier's component after its tier, so the servers keep the URNs (and Hetzner
    names) of the stacks deployed before this rule existed.
    """
    prefix = f"{host.tier}-"
    if not host.name.startswith(prefix):
        raise ValueError(f"host {host.name!r} is not named <tier>-<n> for tier {host.tier!r}")
    return child_name(component, host.name[len(prefix) :])


def child_options(parent: pulumi.Resource, **options: Any) -> pulumi.ResourceOptions:
    """``parent=parent`` merged with a child's own options.

    The component's own ``opts`` are deliberately not copied to its children: their aliases name
    the component's old type or name, not a child's, and the parent link alone already hands the
    children the component's providers.
    """
    own = pulumi.ResourceOptions(**options)
    return pulumi.ResourceOptions.merge(pulumi.ResourceOptions(parent=parent), own)


def component_options(
    opts: pulumi.ResourceOptions | None, previous_types: Sequence[str]
) -> pulumi.ResourceOptions:
    """The caller's options plus one alias per type token the component carried before.

    A type token is part of every child's URN (``<component type>$<child type>::<name>``): renaming
    it without an alias makes Pulumi replace every child, delete-protected ones included.
    """
    aliases = [pulumi.Alias(type_=previous) for previous in previous_types]
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=aliases))
