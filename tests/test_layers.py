"""The package's shape: imports only go downwards through the layers, no import cycles, small modules.

Layers, highest first (a module may import its own package, any package of a lower layer, and
another package of its own layer as long as the packages form no cycle):

    cli -> studies / bench / audit / serve -> train / eval -> models / data / methods / world -> core

The imports are read with `ast` from the source files, so nothing is imported or run. Imports
inside a function ("lazy", usually to keep `uld --help` free of torch) obey the same rules; the
few that cannot are listed in `ALLOWED_UPWARD` with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: dict[str, int] = {
    "cli": 4,
    "studies": 3, "bench": 3, "audit": 3, "serve": 3,
    "train": 2, "eval": 2,
    "models": 1, "data": 1, "methods": 1, "world": 1,
    # core: the package root, errors, atomic I/O, tensor helpers, option parsing, reproducibility, test helpers
    "uld": 0, "errors": 0, "io": 0, "ops": 0, "options": 0, "repro": 0, "device": 0, "testing": 0,
}
"""Layer of each top-level part of `uld` (a sub-package or a module of the package root)."""

ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    ("uld.testing", "uld.data.tokenizer"):
        "tiny_tokenizer trains the library's own BPE tokenizer; tests need exactly that tokenizer",
    ("uld.testing", "uld.eval.lm"):
        "FakeLM implements the evaluation model interface, so it returns that interface's own request and result types",
}
"""(importing module, imported module) pairs allowed to go up a layer, each with its reason."""

MAX_LINES = 400
TOO_LONG_FOR_NOW: dict[str, int] = {
}
"""Modules allowed over `MAX_LINES` while they are being split, with their current ceiling."""


def _modules() -> dict[str, Path]:
    out = {}
    for f in sorted((SRC / "uld").rglob("*.py")):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, bool, int]]:
    """(module, imported uld module, lazy, line) for every `uld` import in the source.

    `from P import n` counts as importing `P.n` when that is a module, else `P`. Imports under
    `if TYPE_CHECKING:` are skipped (they never run)."""
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]

        def visit(node: ast.AST, lazy: bool, name=name, package=package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
                if isinstance(child, ast.Import):
                    found.extend((name, a.name, inner, child.lineno) for a in child.names if a.name.split(".")[0] == "uld")
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        parts = package.split(".")
                        base = ".".join(parts[: len(parts) - child.level + 1] + ([child.module] if child.module else []))
                    if base.split(".")[0] == "uld":
                        for a in child.names:
                            sub = f"{base}.{a.name}"
                            found.append((name, sub if sub in modules else base, inner, child.lineno))
                visit(child, inner)

        visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "uld"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _modules()}
    missing = sorted(parts - set(LAYERS))
    assert not missing, f"give {missing} a layer in LAYERS (tests/test_layers.py)"


def test_imports_only_go_down_the_layers():
    wrong = []
    for src, dst, lazy, line in _imports(_modules()):
        a, b = _part(src), _part(dst)
        if a == b or (src, dst) in ALLOWED_UPWARD or a not in LAYERS or b not in LAYERS:
            continue
        if LAYERS[b] > LAYERS[a]:
            wrong.append(f"{src}:{line} imports {dst}{' (inside a function)' if lazy else ''}")
    assert not wrong, "imports from a lower layer to a higher one:\n" + "\n".join(wrong)


def test_allowed_upward_imports_still_exist():
    """An exception that is no longer needed is removed from the list, so the list stays true."""
    seen = {(src, dst) for src, dst, _, _ in _imports(_modules())}
    assert not set(ALLOWED_UPWARD) - seen


def test_no_import_cycles_between_modules():
    """Module-level imports (those run at import time) form no cycle."""
    edges: dict[str, set[str]] = {}
    for src, dst, lazy, _ in _imports(_modules()):
        if not lazy and src != dst:
            edges.setdefault(src, set()).add(dst)
    assert _cycles(edges) == []


def test_no_import_cycles_between_packages():
    """Counting lazy imports too, no two parts of the package depend on each other."""
    edges: dict[str, set[str]] = {}
    for src, dst, _, _ in _imports(_modules()):
        a, b = _part(src), _part(dst)
        if a != b and (src, dst) not in ALLOWED_UPWARD:
            edges.setdefault(a, set()).add(b)
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_is_too_long():
    long = {}
    for path in _modules().values():
        rel = path.relative_to(SRC).as_posix()
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > TOO_LONG_FOR_NOW.get(rel, MAX_LINES):
            long[rel] = n
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_temporary_length_exceptions_are_still_needed():
    """Once a listed module is split below the limit, its exception goes."""
    modules = {p.relative_to(SRC).as_posix(): p for p in _modules().values()}
    stale = [rel for rel in TOO_LONG_FOR_NOW
             if rel not in modules or len(modules[rel].read_text(encoding="utf-8").splitlines()) <= MAX_LINES]
    assert not stale, f"remove {stale} from TOO_LONG_FOR_NOW: they are short enough now (or gone)"
