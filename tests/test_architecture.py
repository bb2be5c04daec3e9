"""The shape of the house: no import circle among advisor's modules (imports inside functions count), and the
commands that need no model never import torch or llama.cpp."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "advisor"


def import_graph() -> dict[str, set[str]]:
    """module -> the advisor modules it imports anywhere in its body (function-level imports included)."""
    modules = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = known(name)
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_among_advisor_modules():
    graph = import_graph()
    assert len(graph) > 30  # the walk found the package
    assert cycles(graph) == []


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_leaf_modules_import_no_other_advisor_module():
    graph = import_graph()
    for leaf in ("advisor.textutil", "advisor.errors"):
        assert graph[leaf] == set(), (leaf, graph[leaf])
    assert graph["advisor.fileio"] <= {"advisor.textutil"}
    assert graph["advisor.hf"] <= {"advisor.errors", "advisor.textutil"}


def test_the_cost_model_stays_pure():
    graph = import_graph()
    io_modules = {"torch", "transformers", "os", "io", "pathlib", "subprocess", "socket", "sqlite3", "shutil"}
    for path in (ROOT / "costmodel").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & io_modules, (path.name, ast.unparse(node))
            elif isinstance(node, ast.ImportFrom) and not node.level:
                assert (node.module or "").split(".")[0] not in io_modules, (path.name, ast.unparse(node))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", (path.name, ast.unparse(node))
    for module, targets in graph.items():
        if module.startswith("advisor.costmodel"):
            assert targets <= {"advisor.precision", "advisor.spec", "advisor.costmodel", "advisor.costmodel.memory",
                               "advisor.costmodel.speed"}, (module, targets)  # fmt: skip


def test_commands_without_a_model_never_import_torch_or_llama_cpp():
    code = (
        "import sys\n"
        "import advisor.cli, advisor.bench_cli, advisor.chat_cli, advisor.session, advisor.bench, advisor.chat\n"
        "import advisor.engines, advisor.artifacts\n"
        "print(sorted(m for m in ('torch', 'transformers', 'llama_cpp') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
