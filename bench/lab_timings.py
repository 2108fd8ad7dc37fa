"""How long the lab takes to come up, converge and verify, each phase beside its budget and floor.

    .venv/bin/python bench/lab_timings.py [--skip-cold] [--suites] [--make-lab]

Destroys and rebuilds the lab (its machines; the base image too unless --skip-cold) and leaves it
up and converged. Steps, in this order:

1. ``tierwall lab down``, then ``up`` (``--rebuild-base`` unless --skip-cold: debootstrap, its floor);
2. full converge of the fresh lab (``unlock-db.yml`` then ``site.yml``, as ``make converge``), with
   the lab's package cache as it is (/var/cache/tierwall/packages-<suite>);
3. no-op re-converge of ``site.yml``, twice (budget 30 s each, every host changed=0); floor: the
   per-task cost of Ansible here (a play of 21 ``ping`` tasks against one of 1) times the tasks
   of the busiest host;
4. with ``--suites``: ``make unit`` (budget 30 s) and ``make live-passes`` (both live passes,
   budget 120 s);
5. the apt floor: on a fresh proxy machine, download and install every package the converge added
   on any host into an empty archive directory (one host, direct egress, no cache): what a
   converge without a cache cannot beat; the fresh converge's budget is twice that. Then a warm
   ``down`` + ``up`` (floor: the machines' own boot);
6. with ``--make-lab``: ``make lab`` from a stopped lab (base image cached; budget 5 min);
   otherwise a second full converge of a fresh lab.

The summary gives the per-host share of the converges; bench/scale.py measures the marginal cost
of one more app server. Figures are wall-clock seconds on this machine; only the ratios carry over.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from typing import Any

from _common import (
    ANSIBLE_ENV,
    BIN,
    BenchError,
    Figure,
    Lab,
    main,
    playbook_argv,
    print_table,
    run,
    write_report,
)

from tierwall.lab.image import base_dir, requested_image, suite_of
from tierwall.lab.packages import ARCHIVES, cache_dir
from tierwall.paths import LAB_DIR, REPO

# The release the bench's own `tierwall lab up` builds (TIERWALL_LAB_IMAGE, inherited).
SUITE = suite_of(requested_image())

PLAYBOOKS = REPO / "ansible" / "playbooks"
# Budgets (the fast-feedback targets, on the 2-core development machine).
NOOP_TARGET_S = 30.0
UNIT_TARGET_S = 30.0
LIVE_TARGET_S = 120.0
FRESH_TO_FLOOR = 2.0  # a fresh converge within twice the apt floor measured in the same run
MAKE_LAB_CACHED_S = 300.0
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)"
)


def note(figure: Figure) -> None:
    """Print a figure as soon as it is measured (a run stopped later still shows it)."""
    print(f"   {figure.figure}: {figure.value}  ({figure.target})", flush=True)


def timed(argv: list[str], *, timeout: float, env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.monotonic()
    done = run(argv, timeout=timeout, env=env)
    return time.monotonic() - started, done.stdout + done.stderr


def lab(*args: str, timeout: float = 1800) -> tuple[float, str]:
    return timed([str(BIN / "tierwall"), "lab", *args], timeout=timeout)


def playbook(name: str, *, timeout: float = 3600) -> tuple[float, dict[str, dict[str, int]]]:
    """Run one playbook against the lab; its time and the recap per host (fails on failed hosts)."""
    seconds, output = timed(
        playbook_argv(PLAYBOOKS / name),
        timeout=timeout,
        env=ANSIBLE_ENV,
    )
    recap = {}
    for line in output.splitlines():
        match = RECAP.match(line)
        if match:
            ok, changed, unreachable, failed, skipped = map(int, match.groups()[1:])
            recap[match.group(1)] = {
                "ok": ok,
                "changed": changed,
                "failed": failed + unreachable,
                "skipped": skipped,
            }
    if not recap:
        raise BenchError(f"{name}: no PLAY RECAP in the output")
    return seconds, recap


def converge() -> tuple[float, dict[str, dict[str, int]]]:
    unlock, _ = playbook("unlock-db.yml")
    seconds, recap = playbook("site.yml")
    return unlock + seconds, recap


def per_task_seconds(tasks: int = 21) -> float:
    """Ansible's cost of one more task on every host at once (pipelining, ControlPersist as
    configured): a play of ``tasks`` ping tasks against a play of one, both after a warm-up run."""

    def play_seconds(count: int) -> float:
        lines = ["- hosts: all", "  gather_facts: false", "  tasks:"]
        lines += [f"    - {{name: ping {i}, ansible.builtin.ping: {{}}}}" for i in range(count)]
        with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=LAB_DIR) as handle:
            handle.write("\n".join(lines) + "\n")
            handle.flush()
            seconds, _ = timed(playbook_argv(handle.name), timeout=600, env=ANSIBLE_ENV)
        return seconds

    play_seconds(1)  # SSH masters up, caches warm
    return max(0.0, (play_seconds(tasks) - play_seconds(1)) / (tasks - 1))


def manual_packages(script_runner: Any) -> set[str]:
    return set(script_runner("apt-mark showmanual").split())


def base_manual_packages() -> set[str]:
    done = run(["chroot", str(base_dir(SUITE)), "apt-mark", "showmanual"], timeout=60)
    return set(done.stdout.split())


def boot_seconds(lab_: Lab) -> float:
    """The slowest machine's own boot: systemd's "Startup finished in ..." (a container has only
    the userspace part; a VM also prints kernel and total, whose total follows "=")."""
    slowest = 0.0
    for host in lab_.hosts:
        text = lab_.ssh(host, "systemd-analyze time", timeout=60)
        match = re.search(r"=\s*([\d.]+)(ms|s)\b", text) or re.search(r"in\s+([\d.]+)(ms|s)\b", text)
        if not match:
            raise BenchError(f"{host}: cannot read systemd-analyze time: {text.strip()}")
        slowest = max(slowest, float(match.group(1)) / (1000 if match.group(2) == "ms" else 1))
    return slowest


def budget(figure: str, seconds: float, limit: float | None, floor: str = "") -> Figure:
    """A phase beside its budget (and its floor, where it has one); printed at once."""
    target = f"<= {limit:.0f} s" if limit is not None else "-"
    if floor:
        target = f"{target}; {floor}" if limit is not None else floor
    made = Figure(figure, f"{seconds:.1f} s", target, None if limit is None else seconds <= limit)
    note(made)
    return made


def timed_make(target: str, timeout: float = 3600) -> float:
    started = time.monotonic()
    done = run(["make", "--no-print-directory", target], timeout=timeout, env=ANSIBLE_ENV, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BenchError(f"make {target} failed, no figure:\n{tail}")
    return time.monotonic() - started


def apt_floor(lab_: Lab, packages: set[str]) -> float:
    """Every package the converge added, downloaded and installed on one fresh proxy machine
    with direct egress, into an empty archive directory (the lab's package cache left out)."""
    proxy = lab_.first("proxy")
    started = time.monotonic()
    lab_.ssh(
        proxy,
        "export DEBIAN_FRONTEND=noninteractive; mkdir -p /var/tmp/apt-floor/partial; apt-get update -qq; "
        "apt-get install -y -qq --no-install-recommends -o Dir::Cache::Archives=/var/tmp/apt-floor/ "
        f"{' '.join(sorted(packages))} >/dev/null",
        timeout=1800,
    )
    return time.monotonic() - started


def noop_runs(count: int = 2) -> tuple[list[float], int]:
    runs, busiest = [], 0
    for _ in range(count):
        seconds, recap = playbook("site.yml")
        changed = {h: r["changed"] for h, r in recap.items() if r["changed"] or r["failed"]}
        if changed:
            raise BenchError(f"a re-converge changed or failed on {changed}: not a no-op, no figure")
        runs.append(round(seconds, 1))
        busiest = max(r["ok"] + r["skipped"] for r in recap.values())
    return runs, busiest


def added_packages(lab_: Lab) -> set[str]:
    base = base_manual_packages()
    added: set[str] = set()
    for host in lab_.hosts:
        added |= manual_packages(lambda script, h=host: lab_.ssh(h, script)) - base
    return added


def body() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--skip-cold", action="store_true", help="keep the cached base image (no debootstrap)"
    )
    parser.add_argument("--suites", action="store_true", help="also time the unit and live suites")
    parser.add_argument("--make-lab", action="store_true", help="also time `make lab` from a stopped lab")
    args = parser.parse_args()
    figures: list[Figure] = []
    data: dict[str, Any] = {"package_cache_debs": len(list((cache_dir(SUITE) / ARCHIVES).glob("*.deb")))}

    print("1. tearing the lab down, up again", flush=True)
    lab("down")
    seconds, output = lab("up", *([] if args.skip_cold else ["--rebuild-base"]))
    image = re.search(r"base image built in (\d+) s", output)
    data.update(up_s=round(seconds, 1), debootstrap_s=int(image.group(1)) if image else None)
    label = "lab up, base image cached" if args.skip_cold else "cold lab up (base image rebuilt)"
    floor = f"floor: debootstrap {data['debootstrap_s']} s" if image else ""
    figures.append(budget(label, seconds, None, floor))

    print("2. full converge of the fresh lab", flush=True)
    fresh, recap = converge()
    if any(r["failed"] for r in recap.values()):
        raise BenchError(f"the first converge failed: {recap}")
    hosts = len(recap)
    lab_ = Lab()
    packages = added_packages(lab_)
    data.update(converge_fresh_s=round(fresh, 1), hosts=hosts, packages_added=sorted(packages))

    print("3. no-op re-converge, twice", flush=True)
    noops, busiest = noop_runs()
    per_task = per_task_seconds()
    data.update(noop_s=noops, busiest_host_tasks=busiest, per_task_s=round(per_task, 3))
    for number, seconds in enumerate(noops, 1):
        floor = f"floor {per_task * busiest:.1f} s ({per_task:.2f} s x {busiest} tasks)"
        figures.append(budget(f"no-op re-converge, run {number}", seconds, NOOP_TARGET_S, floor))

    if args.suites:
        print("4. unit tests and the live suites", flush=True)
        data["unit_s"] = round(timed_make("unit"), 1)
        figures.append(budget("tests/unit", data["unit_s"], UNIT_TARGET_S))
        data["live_s"] = round(timed_make("live-passes"), 1)
        figures.append(budget("live suites (both passes)", data["live_s"], LIVE_TARGET_S))

    print("5. the apt floor on a fresh proxy machine, then down + up", flush=True)
    lab("down")
    lab("up")
    data["apt_floor_s"] = round(apt_floor(Lab(), packages), 1)
    limit = FRESH_TO_FLOOR * data["apt_floor_s"]
    figures.insert(1, budget("full converge of a fresh lab", fresh, limit,
                             f"floor: apt alone {data['apt_floor_s']:.0f} s"))  # fmt: skip
    down_s, _ = lab("down")
    up_s, _ = lab("up")
    data.update(down_s=round(down_s, 1), up_warm_s=round(up_s, 1), boot_s=round(boot_seconds(Lab()), 1))
    figures.append(budget("warm lab up", up_s, None, f"floor: boot {data['boot_s']:.1f} s"))
    figures.append(budget("lab down", down_s, None))

    if args.make_lab:
        print("6. make lab from a stopped lab (base image cached)", flush=True)
        lab("down")
        data["make_lab_s"] = round(timed_make("lab"), 1)
        figures.append(budget("make lab, base image cached", data["make_lab_s"], MAKE_LAB_CACHED_S))
    else:
        print("6. full converge again (the lab stays usable)", flush=True)
        again, _ = converge()
        data["converge_fresh_again_s"] = round(again, 1)
        figures.append(budget("full converge of a fresh lab, again", again, limit))

    print(f"\nper host ({hosts} hosts): fresh converge {fresh / hosts:.0f} s, no-op "
          f"{min(noops) / hosts:.1f} s; the marginal cost of one more host: bench/scale.py")  # fmt: skip
    print_table(figures)
    data["figures"] = [f.__dict__ for f in figures]
    write_report("lab_timings", data)
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    main(body)
