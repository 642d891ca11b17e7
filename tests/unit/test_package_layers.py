"""The pipeline's stages import downwards only, and nothing imports in a circle.

    cli -> agent, config, doctor, replay -> backends, outputs, quiet_gc -> enrich, fim, delivery
        -> kernel, otel, rules -> event, masks

A newcomer follows imports from the kernel to the collector; an upward import
(a decoder reaching into the agent, the OTel mapping into delivery) would
break that, so it fails here, naming the module and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "otel_fsnotify"
LAYERS = (
    ("cli",),
    ("agent", "config", "doctor", "replay", "health", "listeners"),
    ("backends", "outputs", "table", "status", "quiet_gc"),
    ("enrich", "fim", "delivery"),
    ("kernel", "otel", "rules"),
    ("event", "masks"),
)
RANK = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the otel_fsnotify modules a file imports."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]
            found.update(n for n in [target, *names] if n.startswith("otel_fsnotify."))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("otel_fsnotify."))
    return found


def _unit(module: str) -> str | None:
    """The stage a module belongs to (its first component below the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_every_module_belongs_to_a_stage():
    stray = [m for m in _all_modules() if _unit(m) not in RANK and _unit(m) not in (None, "__main__")]
    assert not stray, f"modules outside the stages of the pipeline: {stray}"


def test_no_module_imports_a_stage_above_it():
    upward = []
    for module, path in _all_modules().items():
        mine = RANK.get(_unit(module))
        if mine is None:
            continue
        for target in _imports(path):
            theirs = RANK.get(_unit(target))
            if theirs is not None and theirs < mine:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports pointing up the pipeline:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    modules = _all_modules()
    graph = {}
    for module, path in modules.items():
        # an import of a name inside a module counts as an import of the module
        graph[module] = {t if t in modules else t.rpartition(".")[0] for t in _imports(path)}
        graph[module] = {t for t in graph[module] if t in modules and t != module}
    # a package's __init__ importing its own submodules is how packages work
    for module in graph:
        graph[module] = {t for t in graph[module] if not t.startswith(module + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt])
                return True
            if nxt not in state and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for module in sorted(graph):
        if module not in state and visit(module, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)
