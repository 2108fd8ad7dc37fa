"""The stack config, read through Pulumi's public API and validated before any resource exists.

Every key tierwall knows is read with ``pulumi.Config("tierwall")``. That API only answers for the
keys it is asked about, so it can never notice a misspelt one (``tierwall:appCont: 3`` would
silently fall back to the default): the names of all keys the stack sets come from the whole config
map the CLI hands the program. Both go to the same validation ``tierwall check-config`` runs.
"""

from __future__ import annotations

import os
import re

import pulumi

from tierwall.config import KEYS, NAMESPACE, ConfigError, StackConfig, from_pulumi_values

# The Pulumi CLI's Python language host hands the program its whole stack config (project defaults
# merged in) as a JSON object in this variable; pulumi.runtime.get_config_env() is the SDK's public
# reader of it, and pulumi.Config falls back to it too.
ENGINE_CONFIG_VARIABLE = "PULUMI_CONFIG"

# The stack name ends up in Hetzner server names (RFC 1123 hostnames, at most 63 characters) and in
# label values. 32 characters leave room for the longest name we derive
# ("tierwall-<stack>-networks-frontend").
_STACK_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


class StackConfigRefused(pulumi.RunError):
    """The stack config is invalid; raised before the program declares a single resource.

    A RunError makes the CLI print the message alone, without a Python traceback.
    """

    def __init__(self, stack: str, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"stack {stack!r}: {len(problems)} error(s)\n{lines}\n"
            f"Fix them in Pulumi.{stack}.yaml; nothing was deployed."
        )


def stack_config_values(stack: str) -> dict[str, str]:
    """The ``tierwall:`` values of this run, keyed ``tierwall:<key>``, as the engine passes them.

    Known keys are read with ``pulumi.Config.get`` rather than ``require``: ``require`` stops at
    the first missing key, and the validation reports every problem at once. Every other key of the
    namespace is taken from the whole map, so that the validation can name it as unknown.
    """
    bag = pulumi.Config(NAMESPACE)
    values = {f"{NAMESPACE}:{key}": value for key in KEYS if (value := bag.get(key)) is not None}
    for full_key, value in _whole_config(stack).items():
        if full_key.startswith(f"{NAMESPACE}:") and full_key not in values:
            values[full_key] = value
    return values


def _whole_config(stack: str) -> dict[str, str]:
    # No public API lists the keys of an inline Automation API program's config (it arrives by RPC,
    # not in the environment): refuse to run there rather than skip the unknown-key check.
    if ENGINE_CONFIG_VARIABLE not in os.environ:
        raise StackConfigRefused(
            stack,
            [
                f"{ENGINE_CONFIG_VARIABLE} is not set, so unknown {NAMESPACE}: keys cannot be found: "
                "run the program with the Pulumi CLI (or a local-workspace Automation API stack)"
            ],
        )
    return pulumi.runtime.get_config_env()


def load_stack_config(stack: str) -> StackConfig:
    """Validate the stack name and the whole ``tierwall:`` namespace; raise StackConfigRefused."""
    problems: list[str] = []
    if not _STACK_NAME.match(stack):
        problems.append(
            f"stack name {stack!r} is used in Hetzner server names and labels: "
            "use 1-32 lowercase letters, digits and hyphens (e.g. prod)"
        )
    try:
        config = from_pulumi_values(stack_config_values(stack), source=f"stack {stack!r}")
    except ConfigError as exc:
        raise StackConfigRefused(stack, [*problems, *(str(issue) for issue in exc.issues)]) from None
    if problems:
        raise StackConfigRefused(stack, problems)
    return config
