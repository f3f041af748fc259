"""The layout keeps its promises: layers import downwards, reads never import writes, no cycles.

Measured on the source (the ``import`` statements), not on what happens to be loaded: a new
import that breaks a rule fails here, with the modules named.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cosmos_models"
# Each layer may import only the layers below it (and itself); cli and aio are peers on top.
LAYERS = {"models": 0, "db": 1, "services": 2, "cli": 3, "aio": 3, "api": 3}
BASE = {"errors"}  # foundations every layer uses
READS = {"services.queries", "services.progress_queries", "services.follow", "services.run_feed"}
WRITES = {
    "services.claims",
    "services.editing",
    "services.ingest",
    "services.partition_retention",
    "services.prune_rows",
    "services.lifecycle",
    "services.batch_transitions",
    "services.tracking",
    "services.maintenance",
    "services.restore",
}
MAX_LINES = 440  # "about 400": the archive module carries its format's documentation


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def runtime_imports(path: Path, known: set[str]) -> set[str]:
    """Package modules ``path`` imports at run time (``TYPE_CHECKING`` blocks left out)."""
    tree = ast.parse(path.read_text())
    hidden = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for imported in names:
            if not imported.startswith("cosmos_models"):
                continue
            name = imported.removeprefix("cosmos_models").lstrip(".")
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


GRAPH = {name: runtime_imports(path, set(modules())) - {name} for name, path in modules().items()}


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH[name]):
            if target == "":  # the facade imports everything; nothing imports it back
                continue
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def layer(name: str) -> int | None:
    head = name.split(".", maxsplit=1)[0]
    return LAYERS.get(head)


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_layers_import_only_downwards(name: str) -> None:
    mine = layer(name)
    if mine is None:
        return  # the facade and the foundations
    upward = sorted(
        target for target in GRAPH[name] if (layer(target) or 0) > mine and target not in BASE
    )
    assert upward == [], f"{name} imports a higher layer"
    assert not any(target == "" for target in GRAPH[name]), f"{name} imports the facade"


@pytest.mark.parametrize("name", sorted(READS))
def test_reads_never_import_writes(name: str) -> None:
    assert GRAPH[name] & WRITES == set()


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_says_its_concern_and_stays_small(name: str) -> None:
    path = modules()[name]
    tree = ast.parse(path.read_text())
    docstring = ast.get_docstring(tree)
    assert docstring, f"{path} has no module docstring"
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path} is past {MAX_LINES} lines"
