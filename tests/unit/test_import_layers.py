"""Import direction: lower layers never import higher ones, and no module imports itself back (no cycles).

Every ``import`` / ``from ... import`` of a ``wnll_art`` module counts, at module level, inside functions
and under ``TYPE_CHECKING`` alike (a cycle that only lazy imports hide is still a cycle for readers).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "wnll_art"

# layer of each module prefix (the longest matching prefix wins); imports may only go to layers <= own
LAYERS: dict[str, int] = {
    "wnll_art._checks": 0,
    "wnll_art._argparse": 0,
    "wnll_art._device": 0,
    "wnll_art._random": 0,  # seeds, generators, the scoped global RNGs
    "wnll_art.registry": 0,
    "wnll_art._files": 0,  # run folders as files: atomic writes, the folder lock  # name -> item tables (attacks, protocols, defences, models)
    "wnll_art.data": 1,
    "wnll_art.models": 1,
    "wnll_art.zoo": 2,
    "wnll_art.wnll": 2,
    "wnll_art.tvm": 2,
    "wnll_art.eot": 2,
    "wnll_art.plots": 2,
    "wnll_art.defence": 3,
    "wnll_art.attacks": 3,  # the library-neutral attack interface (only _checks / _random below it)
    "wnll_art.zoo_trained": 3,
    "wnll_art.adapters": 4,
    "wnll_art.train": 5,
    # evaluation, in layers: configuration < victims/records/protocols < engine < report < jobs
    "wnll_art.evaluation": 5,
    "wnll_art.evaluation.config": 5,
    "wnll_art.evaluation.victims": 6,
    "wnll_art.evaluation.records": 6,
    "wnll_art.evaluation.protocols": 6,  # the attack and protocol registries
    "wnll_art.evaluation.parser": 6,  # the options of the configuration (used by the CLI and the scripts)
    "wnll_art.evaluation.engine": 7,
    "wnll_art.evaluation.checks": 7,
    "wnll_art.evaluation.setup": 8,
    "wnll_art.evaluation.report": 8,
    "wnll_art.evaluation.ladders": 8,  # the convergence ladders and budget re-runs read back from a run folder
    "wnll_art.evaluation.comparison": 8,  # the comparison of defences read back from records
    "wnll_art.evaluation.jobs": 9,
    "wnll_art.cli": 10,
    "wnll_art": 11,  # the package's lazy attribute table may name anything
}
JOBS = "wnll_art.evaluation.jobs"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name == "wnll_art" or name.startswith("wnll_art.")}


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) - {_module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        assert _layer(module) >= 0


@pytest.mark.parametrize("module", sorted(_graph()))
def test_imports_go_down(module: str) -> None:
    if module == "wnll_art":
        return
    up = {dep for dep in _graph()[module] if dep != "wnll_art" and _layer(dep) > _layer(module)}
    assert not up, f"{module} (layer {_layer(module)}) imports higher layers: {sorted(up)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` of ``graph`` (edges to unknown nodes ignored), or ``None``."""
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, set()) & set(graph)):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep, [*stack, dep])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_no_import_cycles() -> None:
    graph = {m: deps for m, deps in _graph().items() if m != "wnll_art"}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_every_evaluation_module_has_its_own_layer() -> None:
    for module in _graph():
        if module.startswith("wnll_art.evaluation."):
            prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
            assert prefix != "wnll_art.evaluation", f"{module}: add it to LAYERS"


# old module names kept for one release: each only re-exports its new module
ALIASES = {f"{JOBS}.defense_table": f"{JOBS}.defence_table"}


def test_jobs_never_import_each_other() -> None:
    graph = _graph()
    for module, deps in graph.items():
        if module.startswith(JOBS + "."):
            others = {d for d in deps if d.startswith(JOBS)} - {ALIASES.get(module)}
            assert not others, f"{module} imports other jobs: {sorted(others)}"
    for alias, target in ALIASES.items():  # an alias is an alias: one import, no code of its own
        assert graph[alias] == {target}, alias


def test_no_private_names_across_modules() -> None:
    """No ``from wnll_art.evaluation.x import _name`` anywhere (library, tests and scripts)."""
    roots = [PACKAGE, PACKAGE.parent / "tests", PACKAGE.parent / "evaluations"]
    found = []
    for path in (p for root in roots for p in root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wnll_art.evaluation"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                found += [f"{path.name}: from {node.module} import {name}" for name in private]
    assert not found, found


def test_no_evaluation_cycles() -> None:
    graph = {m: deps for m, deps in _graph().items() if m.startswith("wnll_art.evaluation")}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_the_checker_finds_cycles(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("from wnll_art.b import x\nimport wnll_art.c, os\n\ndef f():\n    from wnll_art import d\n")
    assert _imports(a) == {"wnll_art.b", "wnll_art.c", "wnll_art"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
