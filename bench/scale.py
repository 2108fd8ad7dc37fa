"""Converge time and edge throughput with 1 app server against 3.

    .venv/bin/python bench/scale.py [--apps 1 3] [--duration 10] [--connections 16]

For each app count: a fresh lab with that many app servers (``tierwall lab down``, ``up --apps N``),
a full converge (timed), a no-op re-converge (timed, changed=0 required), then ``bench/edge.py``
(its report gives the proxy path's requests/s and latency, nginx balancing over every app server).
Finally the lab is rebuilt with lab/stack.yaml's app count and converged, so it is left usable.

On this 2-core machine every lab machine shares the same two cores: more app servers cannot add
CPU, so the throughput figure shows the cost of balancing, not capacity. On Hetzner each app server
brings its own cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from _common import BIN, REPORT_DIR, BenchError, Figure, cleanup, main, print_table, run, write_report
from lab_timings import converge, lab, playbook

from tierwall.paths import REPO


def edge(duration: int, connections: int) -> dict[str, Any]:
    """Run bench/edge.py; the proxy path's figures from its report."""
    report = REPORT_DIR / "edge.json"
    report.unlink(missing_ok=True)
    started = time.monotonic()
    done = run(
        [
            str(BIN / "python"),
            str(REPO / "bench" / "edge.py"),
            "--duration",
            str(duration),
            "--connections",
            str(connections),
        ],
        timeout=1800,
        check=False,
    )
    if done.returncode != 0 or not report.exists():
        raise BenchError(
            f"bench/edge.py failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-2000:]}"
        )
    data = json.loads(report.read_text())
    data["wall_s"] = round(time.monotonic() - started, 1)
    return data


def restore() -> None:
    print("== restoring the lab of lab/stack.yaml", flush=True)
    failures = cleanup(
        [
            ("tierwall lab down", lambda: lab("down")),
            ("tierwall lab up", lambda: lab("up")),
            ("converge", converge),
        ]
    )
    if failures:
        print("the lab was not restored: run `tierwall lab down && make converge`")


def body() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, nargs="+", default=[1, 3], help="app counts to compare")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument(
        "--no-restore",
        action="store_true",
        help="leave the last lab as it is (no rebuild with lab/stack.yaml)",
    )
    args = parser.parse_args()
    if any(n < 1 or n > 9 for n in args.apps):
        raise BenchError("--apps: each count must be between 1 and 9 (the lab's address plan)")

    results: dict[int, dict[str, Any]] = {}
    try:
        for count in args.apps:
            print(f"== {count} app server(s): fresh lab", flush=True)
            lab("down")
            lab("up", "--apps", str(count))
            fresh, recap = converge()
            if any(r["failed"] for r in recap.values()):
                raise BenchError(f"the converge with {count} app servers failed: {recap}")
            noop, recap = playbook("site.yml")
            changed = {h: r["changed"] for h, r in recap.items() if r["changed"]}
            if changed:
                raise BenchError(f"the re-converge with {count} app servers changed {changed}")
            print(f"== {count} app server(s): edge", flush=True)
            results[count] = {
                "converge_fresh_s": round(fresh, 1),
                "noop_s": round(noop, 1),
                "edge": edge(args.duration, args.connections),
            }
            print(f"   {json.dumps({k: v for k, v in results[count].items() if k != 'edge'})}", flush=True)
    finally:
        if not args.no_restore:
            restore()

    figures: list[Figure] = []

    for count, data in results.items():
        figures.append(
            Figure(f"{count} app: full converge of a fresh lab", f"{data['converge_fresh_s']:.0f} s")
        )
        figures.append(Figure(f"{count} app: no-op re-converge", f"{data['noop_s']:.1f} s"))
        for path, paths in data["edge"]["results"].items():
            proxy = paths["proxy"]
            figures.append(
                Figure(
                    f"{count} app: {path} through the proxy",
                    f"{proxy['rps']:.0f} req/s, p99 {proxy['p99_us'] / 1000:.0f} ms",
                )
            )
    print()
    print_table(figures)
    write_report(
        "scale",
        {"results": {str(k): v for k, v in results.items()}, "figures": [f.__dict__ for f in figures]},
    )
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    main(body)
