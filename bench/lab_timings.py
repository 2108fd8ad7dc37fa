"""How long the lab takes to come up and to converge, each beside its floor.

    .venv/bin/python bench/lab_timings.py [--skip-cold] [--suites] [--skip-apt-floor]

Destroys and rebuilds the lab (its machines, not the base image unless cold) and leaves it up and
converged. Steps, in this order:

1. cold ``tierwall lab up --rebuild-base`` (debootstrap included); floor: debootstrap alone (the
   time ``up`` reports for the image);
2. full converge of that fresh lab (``unlock-db.yml`` then ``site.yml``, as ``make converge``);
3. no-op re-converge of ``site.yml``, twice (target: 30 s or less, every host changed=0); floor: the
   per-task cost of Ansible on this machine (a play of 20 ``ping`` tasks on every host) times the
   number of tasks the busiest host ran;
4. with ``--suites``: the verification suites (tests/lab and tests/testinfra, lifecycle excluded);
5. warm ``tierwall lab down`` + ``up`` (cached image); floor: the machines' own boot time;
6. the apt floor: on a fresh proxy machine, ``apt-get install`` of every package the converge added
   on any host (one host, direct egress, no proxy chain): what a converge cannot beat; then
   ``down`` + ``up`` again;
7. a full converge of the fresh lab again (a second figure; the lab is left up and converged).

Figures are wall-clock seconds on this machine; only the ratios carry over to another.
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

from tierwall.lab.image import BASE_DIR
from tierwall.paths import LAB_DIR, REPO

PLAYBOOKS = REPO / "ansible" / "playbooks"
NOOP_TARGET_S = 30.0
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
    done = run(["chroot", str(BASE_DIR), "apt-mark", "showmanual"], timeout=60)
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


def body() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--skip-cold", action="store_true", help="keep the cached base image (no debootstrap)"
    )
    parser.add_argument("--suites", action="store_true", help="also time the verification suites")
    parser.add_argument("--skip-apt-floor", action="store_true", help="skip step 6")
    args = parser.parse_args()
    figures: list[Figure] = []
    data: dict[str, Any] = {}

    print("1. tearing the lab down, cold up", flush=True)
    lab("down")
    up_args = [] if args.skip_cold else ["--rebuild-base"]
    seconds, output = lab("up", *up_args)
    image = re.search(r"base image built in (\d+) s", output)
    data["up_cold_s"] = None if args.skip_cold else round(seconds, 1)
    data["debootstrap_s"] = int(image.group(1)) if image else None
    if not args.skip_cold:
        figures.append(
            Figure(
                "cold lab up (no image cache)",
                f"{seconds:.0f} s",
                f"floor: debootstrap {data['debootstrap_s']} s",
            )
        )
        note(figures[-1])

    print("2. full converge of the fresh lab", flush=True)
    fresh, recap = converge()
    if any(r["failed"] for r in recap.values()):
        raise BenchError(f"the first converge failed: {recap}")
    data["converge_fresh_s"] = [round(fresh, 1)]
    lab_ = Lab()
    added = set()
    base = base_manual_packages()
    for host in lab_.hosts:
        added |= manual_packages(lambda script, h=host: lab_.ssh(h, script)) - base
    data["packages_added"] = sorted(added)

    print("3. no-op re-converge, twice", flush=True)
    noops = []
    for _ in range(2):
        seconds, recap = playbook("site.yml")
        changed = {h: r["changed"] for h, r in recap.items() if r["changed"] or r["failed"]}
        if changed:
            raise BenchError(f"a re-converge changed or failed on {changed}: not a no-op, no figure")
        noops.append(round(seconds, 1))
    busiest = max(r["ok"] for r in recap.values())
    per_task = per_task_seconds()
    data.update(noop_s=noops, busiest_host_tasks=busiest, per_task_s=round(per_task, 3))
    best = min(noops)
    figures.append(
        Figure(
            "no-op re-converge, site.yml (best of 2)",
            f"{best:.1f} s",
            f"<= {NOOP_TARGET_S:.0f} s",
            best <= NOOP_TARGET_S,
        )
    )
    note(figures[-1])
    figures.append(
        Figure(
            "  floor: per-task cost x tasks of the busiest host",
            f"{per_task * busiest:.1f} s",
            f"{per_task:.2f} s x {busiest}",
        )
    )
    note(figures[-1])

    if args.suites:
        print("4. verification suites", flush=True)
        started = time.monotonic()
        done = run(
            [
                str(BIN / "pytest"),
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/lab",
                "tests/testinfra",
                "-m",
                "not lab_lifecycle",
                f"--ansible-inventory={LAB_DIR / 'inventory.yml'}",
            ],
            timeout=3600,
            env=ANSIBLE_ENV,
            check=False,
        )
        seconds = time.monotonic() - started
        summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
        data.update(suites_s=round(seconds, 1), suites_summary=summary, suites_passed=done.returncode == 0)
        figures.append(
            Figure("verification suites (tests/lab + tests/testinfra)", f"{seconds:.0f} s", summary)
        )
        note(figures[-1])

    print("5. warm down + up", flush=True)
    down_s, _ = lab("down")
    up_s, _ = lab("up")
    boot = boot_seconds(Lab())
    data.update(down_s=round(down_s, 1), up_warm_s=round(up_s, 1), boot_s=round(boot, 1))
    figures.append(Figure("warm lab up (cached image)", f"{up_s:.1f} s", f"floor: boot {boot:.1f} s"))
    note(figures[-1])
    figures.append(Figure("lab down", f"{down_s:.1f} s"))
    note(figures[-1])

    if not args.skip_apt_floor:
        print("6. apt floor on a fresh proxy machine", flush=True)
        lab_ = Lab()
        proxy = lab_.first("proxy")
        packages = " ".join(sorted(added))
        started = time.monotonic()
        lab_.ssh(
            proxy,
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
            f"apt-get install -y -qq --no-install-recommends {packages} >/dev/null",
            timeout=1800,
        )
        data["apt_floor_s"] = round(time.monotonic() - started, 1)
        lab("down")
        lab("up")

    print("7. full converge again (a second figure; the lab stays usable)", flush=True)
    fresh2, recap = converge()
    if any(r["failed"] for r in recap.values()):
        raise BenchError(f"the second fresh converge failed: {recap}")
    data["converge_fresh_s"].append(round(fresh2, 1))
    fresh_best = min(data["converge_fresh_s"])
    floor = f"floor: apt alone {data['apt_floor_s']:.0f} s" if "apt_floor_s" in data else "-"
    figures.insert(
        1 if not args.skip_cold else 0,
        Figure(
            f"full converge of a fresh lab (best of {len(data['converge_fresh_s'])})",
            f"{fresh_best:.0f} s",
            floor,
        ),
    )

    print()
    print_table(figures)
    data["figures"] = [f.__dict__ for f in figures]
    write_report("lab_timings", data)
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    main(body)
