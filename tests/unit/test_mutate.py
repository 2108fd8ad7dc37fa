"""The mutation engine (tierwall mutate): the catalogue stays applicable, and a verdict means what it says.

The full catalogue is not run here (minutes, not seconds: `tierwall mutate` does that); one cheap
real mutation shows that a killed verdict needs the control's own test to fail in the scratch copy,
and a harmless one that a green control is reported as a survivor.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tierwall.audit.controls import load_controls
from tierwall.mutations.catalogue import CatalogueError, load_catalogue
from tierwall.mutations.engine import KILLED, NOT_RUN, SURVIVED, MutationError, run_all
from tierwall.mutations.scratch import PatchError, apply_patches
from tierwall.paths import REPO

CONTROLS = load_controls(REPO / "audit" / "controls.yaml")
CONTROL_IDS = {c.id for c in CONTROLS}
CATALOGUE = load_catalogue(REPO / "audit" / "mutations.yaml", CONTROL_IDS)
# Fast: the validator's LOC-01 test on six locations, no Pulumi, no nginx.
LOC_TESTS = ["tests/unit/test_config.py", "-k", "non_german_locations"]


def _catalogue(tmp_path: Path, *entries: dict) -> Path:
    path = tmp_path / "mutations.yaml"
    path.write_text(yaml.safe_dump({"mutations": list(entries)}, sort_keys=False))
    return path


def _entry(mutation_id: str, replace: str, with_: str, layer: str = "code", tests=LOC_TESTS) -> dict:
    return {
        "id": mutation_id, "control": "LOC-01", "layer": layer, "description": mutation_id,
        "apply": {"kind": "text", "file": "src/tierwall/config.py", "replace": replace, "with": with_},
        "tests": list(tests),
    }  # fmt: skip


@pytest.mark.parametrize("mutation", CATALOGUE, ids=lambda m: m.id)
def test_every_mutation_still_applies_to_the_tree(tmp_path: Path, mutation) -> None:
    """A patch whose text the code no longer holds would silently test nothing: it must apply as written."""
    for patch in mutation.patches:
        (tmp_path / patch.file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / patch.file, tmp_path / patch.file)
    apply_patches(tmp_path, mutation.patches)
    for patch in mutation.patches:
        assert (tmp_path / patch.file).read_text() != (REPO / patch.file).read_text(), patch.file
    for test_file in mutation.test_files:
        assert (REPO / test_file).is_file(), f"{mutation.id}: {test_file} does not exist"


def test_the_catalogue_breaks_every_control_that_has_code_or_rendered_tests() -> None:
    broken = {m.control for m in CATALOGUE}
    for control in ("NET-01", "NET-02", "NET-03", "NET-04", "NET-07", "LOC-01", "ENC-01", "TLS-01",
                    "TLS-02", "TLS-03", "HDR-01", "RATE-01", "RET-03", "FW-01", "AC-03"):  # fmt: skip
        assert control in broken, f"no mutation breaks {control}"


def test_a_test_file_of_another_layer_is_refused(tmp_path: Path) -> None:
    wrong = _entry("wrong-layer", "x", "y", layer="rendered")
    with pytest.raises(CatalogueError, match=r"test_config\.py is a code test, the mutation is rendered"):
        load_catalogue(_catalogue(tmp_path, wrong), CONTROL_IDS)


def test_a_patch_that_no_longer_matches_is_an_error(tmp_path: Path) -> None:
    (mutation,) = load_catalogue(_catalogue(tmp_path, _entry("gone", "no such text", "y")), CONTROL_IDS)
    (tmp_path / "src" / "tierwall").mkdir(parents=True)
    shutil.copy(REPO / "src" / "tierwall" / "config.py", tmp_path / "src" / "tierwall" / "config.py")
    with pytest.raises(PatchError, match="expected 1 occurrence"):
        apply_patches(tmp_path, mutation.patches)


def _live(mutation_id: str, **extra) -> dict:
    entry = _entry(mutation_id, "x", "y", layer="live", tests=["tests/testinfra/test_base.py"])
    return {**entry, "converge": {"limit": "db", "tags": ["common_sshd"]}, **extra}


COMMAND = {"kind": "command", "hosts": "db", "run": "nft insert rule inet tierwall input accept"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**_live("no-converge"), "converge": None}, "converge needs limit"),
        ({k: v for k, v in _live("no-converge").items() if k != "converge"}, "needs converge"),
        ({**_entry("code-with-command", "x", "y"), "apply": COMMAND}, "belong to live mutations only"),
        ({**_live("command-without-hosts"), "apply": {"kind": "command", "run": "true"}}, "hosts"),
        ({**_live("bad-revert"), "revert": {"kind": "text", "file": "x"}}, "a command needs"),
    ],
    ids=lambda v: v["id"] if isinstance(v, dict) else "",
)
def test_a_live_part_in_the_wrong_place_is_refused(tmp_path: Path, entry: dict, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(_catalogue(tmp_path, entry), CONTROL_IDS)


def test_commands_and_the_revert_are_read(tmp_path: Path) -> None:
    copy = {"kind": "command", "hosts": "db", "module": "ansible.builtin.copy", "run": "src=a dest=b"}
    entry = {**_live("drift"), "apply": [COMMAND, copy], "revert": {**COMMAND, "run": "true"}}
    (mutation,) = load_catalogue(_catalogue(tmp_path, entry), CONTROL_IDS)
    assert mutation.patches == ()
    assert [(c.module, c.run) for c in mutation.commands] == [
        ("ansible.builtin.shell", COMMAND["run"]), ("ansible.builtin.copy", "src=a dest=b"),
    ]  # fmt: skip
    assert [c.run for c in mutation.revert] == ["true"]
    assert (mutation.converge.limit, mutation.converge.tags) == ("db", ("common_sshd",))


def test_live_mutations_need_the_lab_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing is sent to a lab that is not up: the run stops before the first converge."""
    from tierwall.lab import state

    monkeypatch.setattr(state.State, "load", classmethod(lambda cls, *a, **k: None))
    catalogue = load_catalogue(_catalogue(tmp_path, {**_live("drift"), "apply": COMMAND}), CONTROL_IDS)
    with pytest.raises(MutationError, match="the lab is not up"):
        run_all(catalogue, CONTROLS, REPO, lab=True)


def test_a_real_mutation_is_killed_and_a_harmless_one_survives(tmp_path: Path) -> None:
    allowed = '{"fsn1": "Falkenstein, DE", "nbg1": "Nuremberg, DE"}'
    entries = (
        _entry("hel1-allowed", allowed, allowed[:-1] + ', "hel1": "Helsinki, FI"}'),
        _entry("comment-only", "# Hosted in Germany:", "# Hosted anywhere:"),
        _live("needs-lab"),
    )
    catalogue = load_catalogue(_catalogue(tmp_path, *entries), CONTROL_IDS)
    before = (REPO / "src" / "tierwall" / "config.py").read_text()

    killed, survived, not_run = run_all(catalogue, CONTROLS, REPO, jobs=2)

    assert (killed.verdict, killed.failed_controls) == (KILLED, ("LOC-01",)), killed.note
    assert survived.verdict == SURVIVED
    assert survived.note == "every test of LOC-01 passed with the mutation in place"
    assert not_run.verdict == NOT_RUN
    assert (REPO / "src" / "tierwall" / "config.py").read_text() == before, "the work tree was modified"
