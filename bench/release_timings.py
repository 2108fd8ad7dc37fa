"""Debian 13 against Debian 12 in one run: lab up, fresh converge and no-op converge of each release.

    .venv/bin/python bench/release_timings.py [--rounds N]

For each release, in turn and ``--rounds`` times (alternating, so a slow spell of the machine
falls on both): ``tierwall lab down``, ``TIERWALL_LAB_IMAGE=<image> tierwall lab up`` (base image
and package cache of the release as they are), the fresh converge (``unlock-db.yml`` then
``site.yml``), then a no-op ``site.yml`` (every host changed=0). Target: Debian 13 is not slower
than Debian 12 by more than 10% in any phase (best of the rounds of each). Leaves a Debian 13 lab
up and converged.
"""

from __future__ import annotations

import argparse
import os
import time

from _common import BIN, BenchError, Figure, main, print_table, ratio, run, write_report
from lab_timings import converge, note, playbook

from tierwall.paths import REPO

IMAGES = ("debian-12", "debian-13")
MAX_SLOWDOWN = 1.10
PHASES = ("lab up", "fresh converge", "no-op converge")


def lab(image: str, *args: str) -> float:
    started = time.monotonic()
    run([str(BIN / "tierwall"), "lab", *args], timeout=1800, env={**os.environ, "TIERWALL_LAB_IMAGE": image})
    return time.monotonic() - started


def one_round(image: str) -> dict[str, float]:
    lab(image, "down")
    up = lab(image, "up")
    fresh, recap = converge()
    if any(r["failed"] for r in recap.values()):
        raise BenchError(f"{image}: the fresh converge failed: {recap}")
    noop, recap = playbook("site.yml")
    changed = {h: r["changed"] for h, r in recap.items() if r["changed"] or r["failed"]}
    if changed:
        raise BenchError(f"{image}: the re-converge changed or failed on {changed}: not a no-op")
    return dict(zip(PHASES, (up, fresh, noop), strict=True))


def body() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both releases (default 1)")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, float]]] = {image: [] for image in IMAGES}
    for number in range(1, args.rounds + 1):
        for image in IMAGES:
            print(f"round {number}: {image}", flush=True)
            runs[image].append(one_round(image))
            for phase, seconds in runs[image][-1].items():
                note(Figure(f"{image} {phase}", f"{seconds:.1f} s"))
    best = {image: {p: min(r[p] for r in rounds) for p in PHASES} for image, rounds in runs.items()}
    figures = []
    for phase in PHASES:
        slowdown = ratio(best["debian-13"][phase], best["debian-12"][phase])
        value = f"{best['debian-13'][phase]:.1f} s vs {best['debian-12'][phase]:.1f} s ({slowdown:.2f}x)"
        figures.append(Figure(f"{phase}: debian-13 vs debian-12", value, f"<= {MAX_SLOWDOWN:.2f}x",
                              slowdown <= MAX_SLOWDOWN))  # fmt: skip
    print_table(figures)
    write_report("release_timings", {"rounds": runs, "best": best, "figures": [f.__dict__ for f in figures]})
    return 0 if all(f.holds for f in figures) else 1


if __name__ == "__main__":
    os.chdir(REPO)
    main(body)
