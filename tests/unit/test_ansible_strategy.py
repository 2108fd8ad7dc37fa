"""ansible/plugins/strategy: Ansible's own strategies, through Mitogen unless TIERWALL_MITOGEN=0."""

from __future__ import annotations

import configparser

import pytest
from ansible.plugins.strategy.free import StrategyModule as AnsibleFree
from ansible.plugins.strategy.linear import StrategyModule as AnsibleLinear
from ansible_mitogen.strategy import StrategyMixin

from tierwall.ansible_strategy import strategy_module
from tierwall.paths import REPO

ANSIBLE = REPO / "ansible"


@pytest.mark.parametrize(("name", "ansible_class"), [("free", AnsibleFree), ("linear", AnsibleLinear)])
def test_mitogen_wraps_ansibles_own_strategy(monkeypatch, name, ansible_class) -> None:
    monkeypatch.delenv("TIERWALL_MITOGEN", raising=False)
    cls = strategy_module(name)
    assert issubclass(cls, StrategyMixin)
    assert issubclass(cls, ansible_class)


@pytest.mark.parametrize("off", ["0", "false", "off", " No "])
def test_tierwall_mitogen_0_gives_ansibles_own_strategy(monkeypatch, off) -> None:
    monkeypatch.setenv("TIERWALL_MITOGEN", off)
    cls = strategy_module("free")
    assert not issubclass(cls, StrategyMixin)
    assert issubclass(cls, AnsibleFree)


def test_every_play_uses_a_tierwall_strategy() -> None:
    """ansible.cfg makes tierwall_linear the default and finds the plugins; plays that name a
    strategy name tierwall_free (a play naming ansible.builtin.free would bypass Mitogen)."""
    import yaml

    cfg = configparser.ConfigParser()
    cfg.read(ANSIBLE / "ansible.cfg")
    assert cfg["defaults"]["strategy"] == "tierwall_linear"
    plugins = ANSIBLE / cfg["defaults"]["strategy_plugins"]
    assert {p.name for p in plugins.glob("tierwall_*.py")} == {"tierwall_linear.py", "tierwall_free.py"}
    named = [
        play["strategy"]
        for playbook in (ANSIBLE / "playbooks").glob("*.yml")
        for play in yaml.safe_load(playbook.read_text()) or []
        if isinstance(play, dict) and "strategy" in play
    ]
    assert named
    assert set(named) == {"tierwall_free"}



def test_the_collection_list_is_made_once_per_play(monkeypatch) -> None:
    """Mitogen's per-task collection listing is replaced by one list made when a play starts; a
    Mitogen release without the function fails here instead of silently going slow again."""
    import ansible.collections.list
    import ansible_mitogen.planner

    from tierwall import ansible_strategy

    assert callable(ansible_mitogen.planner._load_collections)
    planner = ansible_mitogen.planner
    monkeypatch.setattr(planner, "_load_collections", planner._load_collections)
    listed = []

    def listing():
        listed.append(1)
        return [b"/collections/one", b"/collections/two"]

    monkeypatch.setattr(ansible.collections.list, "list_collection_dirs", listing)
    ansible_strategy._list_collections_once()
    invocations = [type("Invocation", (), {"_extra_sys_paths": set()})() for _ in range(3)]
    for invocation in invocations:
        ansible_mitogen.planner._load_collections(invocation)
    assert len(listed) == 1
    assert all(i._extra_sys_paths == {"/collections/one", "/collections/two"} for i in invocations)
