"""The lab's Debian release: TIERWALL_LAB_IMAGE picks it, the state records it, and the base image,
the package cache, the overlays, the lab's config and inventory all follow the record.

Nothing here touches the machine: paths point into temporary directories and lifecycle runs with
every step faked (the ``faked_lab`` fixture of conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tierwall.config import ALLOWED_IMAGES, DEFAULT_IMAGE
from tierwall.lab import image, inventory, lifecycle, machines, packages
from tierwall.lab.addressing import BASE_PACKAGES, BASE_STAMP
from tierwall.lab.state import State
from tierwall.lab.system import LabError
from tierwall.paths import LAB_DIR

# The hosts of the lab the faked_lab fixture builds (one app server): a lab recorded with these is
# the lab `up` would build.
HOSTS = [h.name for h in inventory.lab_config(None, 1).topology().hosts]


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """/var/cache/tierwall, moved into a temporary directory."""
    monkeypatch.setattr(image, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(packages, "CACHE_DIR", tmp_path)
    return tmp_path


# -- the setting and its mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "suite"), [("debian-12", "bookworm"), ("debian-13", "trixie")])
def test_each_image_is_a_debian_suite(name: str, suite: str) -> None:
    assert image.suite_of(name) == suite


def test_every_image_a_stack_may_name_has_a_suite() -> None:
    assert {image.suite_of(name) for name in ALLOWED_IMAGES} == {"trixie"}


@pytest.mark.parametrize(
    ("value", "wanted"),
    [(None, "debian-13"), ("", "debian-13"), ("debian-13", "debian-13"), (" debian-12 ", "debian-12")],
)
def test_the_environment_chooses_the_image(value: str | None, wanted: str) -> None:
    environ = {} if value is None else {image.IMAGE_VARIABLE: value}
    assert image.requested_image(environ) == wanted


@pytest.mark.parametrize("value", ["debian-14", "trixie", "13"])
def test_an_image_the_lab_cannot_build_is_refused_with_the_choices(value: str) -> None:
    with pytest.raises(LabError, match=r"TIERWALL_LAB_IMAGE=.* debian-12 or debian-13 .*export"):
        image.requested_image({image.IMAGE_VARIABLE: value})


# -- the base image and the package cache, per release ----------------------------------------------


def test_each_release_has_its_own_base_image_and_package_cache(cache: Path) -> None:
    assert image.base_dir("trixie") == cache / "base-trixie"
    assert packages.cache_dir("trixie") == cache / "packages-trixie"
    assert image.base_dir("bookworm") == cache / "base-bookworm"
    assert packages.cache_dir("bookworm") == cache / "packages-bookworm"


def test_a_cached_debian_12_base_image_stays_valid() -> None:
    """The recipe of bookworm is what it was when the suite was fixed: its cached base is not rebuilt."""
    assert image.recipe("bookworm") == {
        "suite": "bookworm", "variant": "minbase", "packages": sorted(BASE_PACKAGES), "version": 2,
    }


def test_one_releases_base_image_is_not_anothers(cache: Path) -> None:
    base = image.base_dir("bookworm")
    base.mkdir()
    (base / BASE_STAMP).write_text(json.dumps({"id": image.recipe_id("bookworm")}))
    assert image.is_ready("bookworm")
    assert not image.is_ready("trixie")
    assert not image.is_ready("trixie", base)


def test_the_base_images_apt_sources_name_its_suite() -> None:
    lines = image.sources("trixie").splitlines()
    assert [line.split()[2] for line in lines] == ["trixie", "trixie-updates", "trixie-security"]
    assert lines[2].split()[1].endswith("/debian-security")


def test_a_machine_sees_its_releases_packages_above_its_releases_base(cache: Path) -> None:
    state = State(image="debian-13")
    assert machines._lower_dirs(state) == str(cache / "base-trixie")
    archives = cache / "packages-trixie" / packages.ARCHIVES
    archives.mkdir(parents=True)
    (archives / "nginx_1.26.3-3_amd64.deb").write_bytes(b"deb")
    assert machines._lower_dirs(state) == f"{cache / 'packages-trixie'}:{cache / 'base-trixie'}"


# -- the state records it ----------------------------------------------------------------------------


def test_the_state_keeps_the_image(tmp_path: Path) -> None:
    State(phase="up", image="debian-13", hosts=HOSTS).save(tmp_path / "state.json")
    loaded = State.load(tmp_path / "state.json")
    assert loaded is not None
    assert loaded.image == "debian-13"


def test_a_state_from_before_the_setting_is_a_debian_12_lab(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"phase": "up", "app_count": 1, "hosts": HOSTS}))
    loaded = State.load(tmp_path / "state.json")
    assert loaded is not None
    assert loaded.image == "debian-12" != DEFAULT_IMAGE


def _saved(monkeypatch: pytest.MonkeyPatch) -> list[State]:
    states: list[State] = []
    monkeypatch.setattr(State, "save", lambda self, path=None: states.append(self))
    return states


def test_up_builds_the_requested_release_and_records_it(
    faked_lab: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(image.IMAGE_VARIABLE, "debian-13")
    built: list[str] = []
    monkeypatch.setattr(lifecycle, "ensure_base", lambda suite, rebuild=False: built.append(suite))
    states = _saved(monkeypatch)
    assert lifecycle.up() == 0
    assert built == ["trixie"]
    assert states, "up saved no state"
    assert {s.image for s in states} == {"debian-13"}
    assert states[-1].phase == "up"


def test_up_rebuilds_a_lab_of_another_release(
    faked_lab: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing of a bookworm lab is kept for a trixie one; its downloads go to bookworm's cache."""
    old = State(phase="up", image="debian-12", hosts=HOSTS, key_owner=str(LAB_DIR))
    monkeypatch.setattr(State, "load", classmethod(lambda cls, path=None: old))
    monkeypatch.setenv(image.IMAGE_VARIABLE, "debian-13")
    harvested: list[Path] = []
    monkeypatch.setattr(lifecycle.packages, "harvest", lambda uppers, cache: harvested.append(cache))
    states = _saved(monkeypatch)
    assert lifecycle.up() == 0
    err = capsys.readouterr().err
    assert "the lab runs debian-12, TIERWALL_LAB_IMAGE asks for debian-13: rebuilding it" in err
    assert "keeping machine disks" not in err
    assert [cache.name for cache in harvested] == ["packages-bookworm"]
    assert states[-1].image == "debian-13"


def test_up_keeps_a_healthy_lab_of_the_requested_release(
    faked_lab: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = State(phase="up", image="debian-13", hosts=HOSTS, key_owner=str(LAB_DIR))
    monkeypatch.setattr(State, "load", classmethod(lambda cls, path=None: old))
    monkeypatch.setattr(lifecycle, "health", lambda state, topology: [])
    monkeypatch.setenv(image.IMAGE_VARIABLE, "debian-13")
    assert lifecycle.up() == 0
    assert capsys.readouterr().out == "lab is up, nothing to do\n"
    assert "stop_all" not in faked_lab


def test_up_refuses_an_unknown_image_before_touching_anything(
    faked_lab: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(image.IMAGE_VARIABLE, "debian-11")
    with pytest.raises(LabError, match="debian-11"):
        lifecycle.up()
    assert faked_lab == ["require_root"]


# -- the lab's config and inventory ------------------------------------------------------------------


@pytest.mark.parametrize("name", [*ALLOWED_IMAGES, "debian-12"])
def test_the_labs_config_and_inventory_carry_the_image(name: str) -> None:
    """Debian 12 too, which a stack may not name: the upgrade drill's lab starts on it."""
    config = inventory.lab_config(None, 1, name)
    assert config.image == name
    assert inventory.lab_inventory(config, None, ["192.0.2.53"])["all"]["vars"]["tierwall_lab_image"] == name


def test_the_inventory_follows_the_recorded_image_not_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`tierwall lab ssh` and `tierwall inventory --lab` describe the lab as built."""
    key = tmp_path / "id_ed25519.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest tierwall-lab-ops\n")
    monkeypatch.setattr(inventory, "PUBLIC_KEY", key)
    verify_key = tmp_path / "verify_ed25519.pub"
    verify_key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIverify tierwall-lab-verify\n")
    monkeypatch.setattr(inventory, "VERIFY_PUBLIC_KEY", verify_key)
    monkeypatch.setattr(inventory, "VERIFY_PRIVATE_KEY", tmp_path / "verify_ed25519")
    (tmp_path / "verify_ed25519").write_text("not read\n")
    monkeypatch.setattr("tierwall.lab.network.resolvers", lambda: ["192.0.2.53"])
    recorded = State(phase="up", image="debian-13")
    monkeypatch.setattr(State, "load", classmethod(lambda cls, path=None: recorded))
    monkeypatch.delenv(image.IMAGE_VARIABLE, raising=False)
    written = yaml.safe_load(inventory.write_lab_inventory(tmp_path / "inventory.yml").read_text())
    assert written["all"]["vars"]["tierwall_lab_image"] == "debian-13"
