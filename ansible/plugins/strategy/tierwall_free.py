from tierwall.ansible_strategy import strategy_module

DOCUMENTATION = """
name: tierwall_free
short_description: Ansible's free strategy, run through Mitogen (TIERWALL_MITOGEN=0 turns Mitogen off)
description:
  - Each host runs its tasks as fast as it can, as Ansible's free strategy.
  - Modules run in one Mitogen interpreter per host instead of a new python3 per task.
author: tierwall
"""

StrategyModule = strategy_module("free")
