from tierwall.ansible_strategy import strategy_module

DOCUMENTATION = """
name: tierwall_linear
short_description: Ansible's linear strategy, run through Mitogen (TIERWALL_MITOGEN=0 turns Mitogen off)
description:
  - Task by task, every host finishing a task before the next starts, as Ansible's linear strategy.
  - Modules run in one Mitogen interpreter per host instead of a new python3 per task.
author: tierwall
"""

StrategyModule = strategy_module("linear")
