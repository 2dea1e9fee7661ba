"""The house rules, checked on the source: no import circles, short functions and modules, imports at the top.

Static (ast) checks: fast, and they name the offending place. The package layout is described in the
README's file tree; fadkd/cli.py is the one module whose functions import (each verb its own stack).
"""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fadkd"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 310
# Imports inside functions: optional or heavy third-party dependencies loaded only when used.
LAZY_OK = {"datasets", "sklearn.metrics", "scipy.stats", "torch.utils.tensorboard", "importlib.metadata", "hydra"}
LAZY_MODULES = {"fadkd.cli"}  # the verbs: `fadkd --help` must not wait for torch


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def top_level_imports(path: Path) -> set[str]:
    """fadkd modules imported when `path` is imported (not under TYPE_CHECKING, not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.ClassDef) else []:
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("fadkd"):
                for alias in n.names:  # `from fadkd.models import attention` imports a module
                    sub = f"{n.module}.{alias.name}"
                    found.add(sub if sub in MODULES else n.module)
            elif isinstance(n, ast.Import):
                found |= {a.name for a in n.names if a.name.startswith("fadkd")}
    return {m for m in found if m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*stack, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_no_import_circles():
    graph = {name: top_level_imports(path) for name, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():  # the guard itself can fail
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_functions_and_modules_are_short():
    long = []
    for path in MODULES.values():
        lines = path.read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long, "over the house limits:\n" + "\n".join(long)


def test_imports_at_the_top():
    inside = []
    for name, path in MODULES.items():
        if name in LAZY_MODULES:
            continue
        for fn in ast.walk(ast.parse(path.read_text())):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for n in ast.walk(fn):
                if isinstance(n, ast.Import | ast.ImportFrom):
                    mod = n.module if isinstance(n, ast.ImportFrom) else n.names[0].name
                    if mod not in LAZY_OK and not any(mod.startswith(f"{ok}.") for ok in LAZY_OK):
                        inside.append(f"{path.relative_to(ROOT)}:{n.lineno} {fn.name}: {mod}")
    assert not inside, "imports inside functions (move them to the top):\n" + "\n".join(inside)


@pytest.mark.parametrize("name", [m for m in MODULES if m != "fadkd.__main__"])
def test_every_module_imports(name):
    importlib.import_module(name)
