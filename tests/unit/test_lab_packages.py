"""The lab's package cache: what the machines downloaded is kept, newest version per package,
and offered as a layer above the base image only when it holds packages (files only)."""

from __future__ import annotations

from pathlib import Path

from tierwall.lab import packages


def _deb(upper: Path, name: str, content: bytes = b"deb") -> Path:
    path = upper / packages.ARCHIVES / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_an_empty_cache_is_no_layer(tmp_path: Path) -> None:
    assert packages.lower_dirs(tmp_path / "cache", tmp_path / "base") == str(tmp_path / "base")


def test_nothing_downloaded_creates_nothing(tmp_path: Path) -> None:
    assert packages.harvest([tmp_path / "upper"], tmp_path / "cache") == 0
    assert not (tmp_path / "cache").exists()


def test_downloads_are_kept_and_become_the_layer_above_the_base(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _deb(tmp_path / "db-1", "squid_5.7-2+deb12u4_amd64.deb")
    _deb(tmp_path / "app-1", "libpq5_15.14-0+deb12u1_amd64.deb")
    assert packages.harvest([tmp_path / "db-1", tmp_path / "app-1"], cache) == 2
    kept = sorted(p.name for p in (cache / packages.ARCHIVES).glob("*.deb"))
    assert kept == ["libpq5_15.14-0+deb12u1_amd64.deb", "squid_5.7-2+deb12u4_amd64.deb"]
    assert packages.lower_dirs(cache, tmp_path / "base") == f"{cache}:{tmp_path / 'base'}"


def test_only_the_newest_version_of_a_package_is_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _deb(tmp_path / "one", "openssl_3.0.17-1~deb12u2_amd64.deb")
    packages.harvest([tmp_path / "one"], cache)
    _deb(tmp_path / "two", "openssl_3.0.17-1~deb12u3_amd64.deb")
    _deb(tmp_path / "two", "chrony_4.3-2+deb12u1_amd64.deb")
    _deb(tmp_path / "three", "openssl_3.0.17-1~deb12u1_amd64.deb")  # older: not kept
    assert packages.harvest([tmp_path / "two", tmp_path / "three"], cache) == 2
    kept = sorted(p.name for p in (cache / packages.ARCHIVES).glob("*.deb"))
    assert kept == ["chrony_4.3-2+deb12u1_amd64.deb", "openssl_3.0.17-1~deb12u3_amd64.deb"]


def test_an_epoch_in_the_file_name_is_compared_as_a_version(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _deb(tmp_path / "one", "libssl3_2%3a1.0-1_amd64.deb")
    _deb(tmp_path / "two", "libssl3_9.0-1_amd64.deb")  # no epoch: older than 2:1.0
    packages.harvest([tmp_path / "one"], cache)
    assert packages.harvest([tmp_path / "two"], cache) == 0
    assert [p.name for p in (cache / packages.ARCHIVES).glob("*.deb")] == ["libssl3_2%3a1.0-1_amd64.deb"]
