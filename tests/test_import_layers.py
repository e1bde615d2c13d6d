"""The package's own imports: no cycles, and no module importing a stage above its own.

Read with `ast` from the source (every import statement, also those inside functions), so the
check needs nothing imported and sees the lazy imports too."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnexp

PACKAGE = Path(cnnexp.__file__).parent
# The stages from the bottom up: a module may import its own stage and those below it. Within a
# stage, packages may import each other as long as no cycle forms.
LAYERS = [
    {"cnnexp", "errors", "checks", "console", "host_memory", "background_errors"},  # leaves
    {"kernels"},  # oneDNN CPU kernels
    {"data", "models"},  # datasets; networks
    {"runs"},  # run folders: layout, summary, checkpoints, metrics, fingerprint
    {"training"},  # the builder, steps, the train loop, loading a trained run
    {"inspection", "evaluation", "reports", "visualize", "bench"},  # what looks at models and runs
    {"config"},  # a train config checked as a whole
    {"app"},  # the Hydra glue commands share
    {"commands"},  # one module per subcommand
    {"cli", "__main__"},  # the command table
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py") if "conf" not in path.relative_to(PACKAGE).parts}


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The cnnexp modules `module` imports (`from cnnexp.x import y` is cnnexp.x.y when y is a module)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("cnnexp")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            if not base.startswith("cnnexp"):
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return found - {module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {module: _imports(module, path, known) & known for module, path in modules.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cnnexp"


def test_every_module_belongs_to_a_stage():
    unplaced = sorted({_stage(module) for module in _graph()} - set(LAYER_OF))
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                  if LAYER_OF[_stage(target)] > LAYER_OF[_stage(module)])


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    """Every cycle a depth-first walk meets, as `a -> b -> a`."""
    cycles, state = [], {}  # module -> "open" (on the current path) or "done"

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_no_module_imports_a_higher_stage():
    upward = _upward(_graph())
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The checks above can fail: a planted cycle and a planted upward import are found."""
    graph = {"cnnexp.data.a": {"cnnexp.data.b"}, "cnnexp.data.b": {"cnnexp.data.a", "cnnexp.training.c"},
             "cnnexp.training.c": set()}
    assert _cycles(graph) == ["cnnexp.data.a -> cnnexp.data.b -> cnnexp.data.a"]
    assert _upward(graph) == ["cnnexp.data.b -> cnnexp.training.c"]
