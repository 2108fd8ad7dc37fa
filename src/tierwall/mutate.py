"""`tierwall mutate`: prove that each control can fail, by breaking it on purpose (audit/mutations.yaml)."""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from tierwall.audit.layers import EVIDENCE_LAYERS
from tierwall.errors import TierwallError
from tierwall.mutations.engine import ERROR, KILLED, NOT_RUN, SURVIVED, Outcome
from tierwall.paths import LAB_DIR, REPO

CATALOGUE = REPO / "audit" / "mutations.yaml"


def register(sub: argparse._SubParsersAction) -> None:
    mutate = sub.add_parser(
        "mutate",
        help="break each control on purpose in a scratch copy and check that its tests fail",
    )
    mutate.add_argument(
        "--layer", type=_layers, default=EVIDENCE_LAYERS, metavar="LAYERS",
        help="comma-separated layers to run (code, rendered, live; default: all)",
    )  # fmt: skip
    mutate.add_argument("--only", action="append", metavar="ID", help="run only this mutation (repeatable)")
    mutate.add_argument("--lab", action="store_true", help="also run the live mutations (needs the lab)")
    mutate.add_argument(
        "--baseline", type=Path, action="append", metavar="JUNIT",
        help="a live pass's JUnit written on this lab, as the live mutations' baseline; repeat it "
        "for every pass (default: run each selection once without a mutation)",
    )  # fmt: skip
    mutate.add_argument("--catalogue", default=str(CATALOGUE), metavar="YAML")
    mutate.add_argument("--controls", default=str(REPO / "audit" / "controls.yaml"), metavar="YAML")
    mutate.add_argument("-j", "--jobs", type=int, default=min(4, os.cpu_count() or 1), metavar="N")
    mutate.add_argument("-o", "--output", default=str(LAB_DIR / "reports" / "mutations.json"), metavar="JSON")
    mutate.set_defaults(func=_mutate)


def _layers(value: str) -> tuple[str, ...]:
    layers = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = sorted(set(layers) - set(EVIDENCE_LAYERS))
    if unknown or not layers:
        choices = ", ".join(EVIDENCE_LAYERS)
        raise argparse.ArgumentTypeError(f"unknown layer(s) {unknown}; choose from {choices}")
    return layers


def _mutate(args: argparse.Namespace) -> int:
    from tierwall.audit.controls import ControlsError, load_controls
    from tierwall.mutations.catalogue import CatalogueError, load_catalogue
    from tierwall.mutations.engine import MutationError, run_all

    started = time.monotonic()
    try:
        controls = load_controls(args.controls)
        catalogue = load_catalogue(Path(args.catalogue), {c.id for c in controls})
        chosen = _choose(catalogue, args.layer, args.only)
        shown: set[str] = set()

        def show(outcome: Outcome) -> None:
            shown.add(outcome.mutation.id)
            _print_outcome(outcome)

        outcomes = run_all(
            chosen, controls, REPO, lab=args.lab, jobs=args.jobs, on_outcome=show,
            live_baseline=args.baseline,
        )  # fmt: skip
    except (ControlsError, CatalogueError, MutationError) as exc:
        # The operator's input or the lab's absence, not a bug: one line and the way out.
        raise TierwallError(str(exc), "see audit/README.md, 'Mutation score'") from None
    seconds = time.monotonic() - started
    for outcome in outcomes:
        if outcome.verdict == NOT_RUN and outcome.mutation.id not in shown:
            _print_outcome(outcome)
    summary = _summary(outcomes, seconds)
    _print_summary(outcomes, summary)
    path = _write_json(Path(args.output), Path(args.catalogue), outcomes, summary)
    print(f"  written:   {path}")
    return 1 if summary["survived"] or summary["errors"] else 0


def _choose(catalogue, layers: tuple[str, ...], only: list[str] | None) -> list:
    if only:
        unknown = sorted(set(only) - {m.id for m in catalogue})
        if unknown:
            raise TierwallError(f"--only {unknown}: no such mutation", "ids are in audit/mutations.yaml")
    chosen = [m for m in catalogue if m.layer in layers and (not only or m.id in only)]
    if not chosen:
        raise TierwallError("no mutation matches --layer/--only", "see audit/mutations.yaml")
    return chosen


def _print_outcome(outcome: Outcome) -> None:
    m = outcome.mutation
    print(f"{outcome.verdict.upper():9} {outcome.seconds:6.1f}s  {m.id} ({m.control}, {m.layer})", flush=True)
    if outcome.verdict in (SURVIVED, ERROR, NOT_RUN):
        for line in outcome.note.splitlines()[-12:]:
            print(f"            {line}")


def _summary(outcomes: list[Outcome], seconds: float) -> dict:
    count = {v: sum(1 for o in outcomes if o.verdict == v) for v in (KILLED, SURVIVED, ERROR, NOT_RUN)}
    # A mutation that could not be judged counts as run and not killed: the score never flatters.
    ran = count[KILLED] + count[SURVIVED] + count[ERROR]
    return {
        "killed": count[KILLED], "survived": count[SURVIVED], "errors": count[ERROR],
        "not_run": count[NOT_RUN], "run": ran, "score": round(count[KILLED] / ran, 3) if ran else None,
        "seconds": round(seconds, 1),
    }  # fmt: skip


def _print_summary(outcomes: list[Outcome], summary: dict) -> None:
    score = f"{summary['killed']}/{summary['run']}" if summary["run"] else "nothing run"
    print(f"tierwall mutate: score {score} killed in {summary['seconds']:.0f}s"
          f" ({summary['not_run']} not run)")  # fmt: skip
    for outcome in outcomes:
        if outcome.verdict in (SURVIVED, ERROR):
            print(f"  {outcome.verdict}: {outcome.mutation.id} ({outcome.mutation.control}): "
                  f"{outcome.note.splitlines()[0] if outcome.note else ''}")  # fmt: skip


def _write_json(path: Path, catalogue: Path, outcomes: list[Outcome], summary: dict) -> Path:
    from tierwall.audit.provenance import collect

    # The scratch copies are made from the work tree as it is: say whether that is the commit.
    origin = collect(REPO, [("catalogue", catalogue)])
    document = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": origin.commit,
        "work_tree_modified": origin.modified,
        "catalogue_sha256": origin.files[0].sha256,
        "summary": summary,
        "mutations": [_as_dict(o) for o in outcomes],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _as_dict(outcome: Outcome) -> dict:
    m = outcome.mutation
    return {
        "id": m.id, "control": m.control, "layer": m.layer, "description": m.description,
        "verdict": outcome.verdict, "seconds": round(outcome.seconds, 1), "note": outcome.note,
        "failed_controls": list(outcome.failed_controls),
        "caught_by_unmarked_tests": list(outcome.caught_by_unmarked), "tests": list(m.tests),
    }  # fmt: skip
