"""The strategies behind ansible/plugins/strategy (tierwall_linear, tierwall_free): Mitogen.

Mitogen keeps one Python interpreter per host (and per become user) for the whole run and sends
it each module over the SSH connection, instead of starting ``python3`` and unpacking the module
anew for every task. Tasks, modules and results are Ansible's own; what travels and where is the
same SSH connection with the same sudo. On this lab it cuts a no-op converge by more than half
(bench/README.md).

``TIERWALL_MITOGEN=0`` in the environment runs Ansible's own strategy instead, unchanged: to rule
Mitogen out when a run misbehaves, or for an Ansible release Mitogen does not support yet.
"""

from __future__ import annotations

import os
from typing import Any


def strategy_module(name: str) -> type:
    """The StrategyModule class for Ansible's strategy ``name``, through Mitogen unless disabled."""
    if os.environ.get("TIERWALL_MITOGEN", "1").strip().lower() in {"0", "false", "no", "off"}:
        from ansible.plugins.loader import strategy_loader

        return strategy_loader.get(name, class_only=True)
    try:
        import ansible_mitogen.loaders
        import ansible_mitogen.strategy
    except ImportError as exc:  # pragma: no cover - only when the venv lacks the lock's packages
        raise ImportError(
            f"tierwall_{name}: Mitogen is not installed ({exc}); run `make deps`, "
            "or set TIERWALL_MITOGEN=0 to run Ansible's own strategy"
        ) from exc
    base = ansible_mitogen.loaders.strategy_loader.get(name, class_only=True)

    def run(self, iterator, play_context):
        _list_collections_once()
        return super(cls, self).run(iterator, play_context)

    cls: type[Any] = type("StrategyModule", (ansible_mitogen.strategy.StrategyMixin, base), {"run": run})
    return cls


def _list_collections_once() -> None:
    """Mitogen lists every installed collection (181 in the ansible package, reading each one's
    metadata) for every task that runs a collection module, in the task's forked worker, where
    nothing it learns survives: about 0.15 CPU-s a task. The list cannot change during a run, so
    it is made once, when a play starts, in the process the workers fork from."""
    import ansible.collections.list
    import ansible_mitogen.planner

    if not hasattr(ansible_mitogen.planner, "_load_collections"):
        return  # a Mitogen release without it; tests/unit/test_ansible_strategy.py says so
    dirs = tuple(path.decode() for path in ansible.collections.list.list_collection_dirs())

    def load_collections(invocation) -> None:
        invocation._extra_sys_paths.update(dirs)

    ansible_mitogen.planner._load_collections = load_collections
