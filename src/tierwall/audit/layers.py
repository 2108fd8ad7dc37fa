"""Which layer a piece of evidence speaks about: the code, the rendered configuration, or running hosts.

A passing Pulumi mock proves the program, not the stack it builds; a rendered nginx.conf proves the
template, not the server that loads it. The report names the layer of every test so that nobody
reads a proof about code as a proof about hosts.
"""

from __future__ import annotations

CODE, RENDERED, LIVE = "code", "rendered", "live"
EVIDENCE_LAYERS = (CODE, RENDERED, LIVE)

# controls.yaml names its layers after the tool that carries them; the audit speaks of what the
# evidence looked at. One table translates.
CONTROL_LAYER_TO_EVIDENCE = {"pulumi": CODE, "ansible": RENDERED, "live": LIVE}

# Test file -> layer, first matching prefix wins (paths relative to the repository, as pytest
# writes them into JUnit). Code: the Pulumi program under mocks and the pure policy functions
# (policy pack, stack config validation, topology model, segregation verdicts). Rendered: roles and
# templates rendered or run on this machine, never on the target's hosts; so is the reference
# application of app/tests, whose code runs here against throw-away PostgreSQL clusters, not on the
# target's app servers. Live: running hosts.
LAYER_BY_PATH: tuple[tuple[str, str], ...] = (
    ("tests/lab/", LIVE),
    ("tests/testinfra/", LIVE),
    ("tests/integration/", RENDERED),
    ("app/tests/", RENDERED),
    ("tests/unit/test_pulumi_program.py", CODE),
    ("tests/unit/test_policies.py", CODE),
    ("tests/unit/test_config.py", CODE),
    ("tests/unit/test_topology.py", CODE),
    ("tests/unit/test_segregation.py", CODE),
    ("tests/unit/", RENDERED),
)


class LayerError(ValueError):
    pass


def layer_of(test_file: str) -> str:
    """The layer of a test file; a file outside the table is refused rather than guessed."""
    path = test_file.replace("\\", "/").removeprefix("./")
    for prefix, layer in LAYER_BY_PATH:
        if path.startswith(prefix):
            return layer
    raise LayerError(
        f"{test_file}: no evidence layer is known for this path; add it to "
        "tierwall.audit.layers.LAYER_BY_PATH"
    )


def requires_live(control_layers: tuple[str, ...]) -> bool:
    """A control that lists the live layer is only proved when a running host was checked."""
    return LIVE in {CONTROL_LAYER_TO_EVIDENCE[layer] for layer in control_layers}
