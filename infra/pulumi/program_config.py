"""The stack config, read whole from the Pulumi runtime and validated before any resource exists.

``pulumi.Config`` only answers for the keys it is asked about, so it can never notice a misspelt
key (``tierwall:appCont: 3`` would silently fall back to the default). The program therefore reads
the engine's entire config bag and hands it to the same validation ``tierwall check-config`` runs.
"""

from __future__ import annotations

import re
from typing import Any

import pulumi
import pulumi.runtime.config as runtime_config

from tierwall.config import ConfigError, StackConfig, from_pulumi_values

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


def engine_config_values() -> dict[str, Any]:
    """Every config value the engine gives this run, keyed ``namespace:key``.

    The CLI's Python language host passes the whole stack config as JSON in ``PULUMI_CONFIG``; the
    Automation API and the unit tests' mocks set the runtime's config map instead. Both are read.
    """
    values: dict[str, Any] = dict(pulumi.runtime.get_config_env())
    values.update(runtime_config.CONFIG.get())
    return values


def load_stack_config(stack: str) -> StackConfig:
    """Validate the stack name and the whole ``tierwall:`` namespace; raise StackConfigRefused."""
    problems: list[str] = []
    if not _STACK_NAME.match(stack):
        problems.append(
            f"stack name {stack!r} is used in Hetzner server names and labels: "
            "use 1-32 lowercase letters, digits and hyphens (e.g. prod)"
        )
    try:
        config = from_pulumi_values(engine_config_values(), source=f"stack {stack!r}")
    except ConfigError as exc:
        raise StackConfigRefused(stack, [*problems, *(str(issue) for issue in exc.issues)]) from None
    if problems:
        raise StackConfigRefused(stack, problems)
    return config
