"""The package's shape, read statically with ``ast``: no import cycle among its modules (imports inside functions
count too), no module over MAX_MODULE_LINES lines, no function over MAX_FUNCTION_LINES lines unless a comment
``# long function: <why>`` stands on the line above its ``def`` (or its first decorator)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from repo_paths import REPO_ROOT

PACKAGE = REPO_ROOT / "moediffir"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 100
LONG_FUNCTION_MARK = "# long function:"

#: Modules still over the limit, each with the reason it is not split yet. Keep this list short: a module leaves
#: it when it is split (the test fails for a listed module that is no longer long, so the list cannot go stale).
LONG_MODULES: dict[str, str] = {}

#: Import cycles still present (each a sorted list of modules), with the reason. Keep it empty: shared parts move
#: into a lower module, or one side receives what it needs as arguments.
KNOWN_CYCLES: list[list[str]] = []


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Nodes under ``if TYPE_CHECKING:`` (imports for annotations only, never executed)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids.update(id(n) for n in ast.walk(node))
    return ids


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports, at module level or inside functions."""

    def resolve(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    out: set[str | None] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(resolve(a.name) for a in node.names if a.name.startswith("moediffir"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("moediffir"):
                for a in node.names:  # ``from pkg import module`` imports the module
                    full = f"{target}.{a.name}"
                    out.add(full if full in modules else resolve(target))
    out.discard(None)
    out.discard(name)
    return {m for m in out if m is not None}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root, targets in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(targets)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_cycle_and_only_that():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_package_modules():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph["moediffir.pipelines.moediffir_pipeline"] >= {"moediffir.weights.model_folder"}  # sees imports
    cycles = [c for c in _cycles(graph) if c not in KNOWN_CYCLES]
    assert not cycles, "import cycles (each a group of modules that import each other): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_modules_are_small():
    lengths = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines()) for p in _modules().values()}
    too_long = {m: n for m, n in lengths.items() if n > MAX_MODULE_LINES and m not in LONG_MODULES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them): {too_long}"
    stale = [m for m in LONG_MODULES if lengths.get(m, 0) <= MAX_MODULE_LINES]
    assert not stale, f"no longer over {MAX_MODULE_LINES} lines: remove from LONG_MODULES: {stale}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_functions_are_short_or_say_why(path):
    lines = path.read_text().splitlines()
    long = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[first - 2].strip() if first >= 2 else ""
        size = node.end_lineno - node.lineno + 1
        if size > MAX_FUNCTION_LINES and not above.startswith(LONG_FUNCTION_MARK):
            long.append(f"{node.name} (line {node.lineno}, {size} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines without a '{LONG_FUNCTION_MARK} <why>' comment: {long}"


#: The package's floors, lowest first: a module imports only from its own floor or the floors below (imports inside
#: functions count too). Weight files sit above the networks they fill; the pipeline above both; training, the
#: evaluation, the ablations and the report above that; the commands on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors",),
    ("utils", "sharding"),
    ("config", "provenance"),
    ("codecs", "metrics"),
    ("data",),
    ("models",),
    ("weights",),
    ("pipelines",),
    ("training",),
    ("evaluation",),
    ("ablation", "studies"),
    ("report",),
    ("doctor", "reproduce", "restore_images", "notebook"),
    ("cli",),
)


def _floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its package {top!r} has no floor in LAYERS (add it there)")


def test_no_module_imports_from_a_floor_above_its_own():
    modules = _modules()
    upward = sorted(f"{name} -> {target}" for name, path in modules.items() if name != "moediffir"
                    for target in _imports(name, path, modules) if _floor(target) > _floor(name))
    assert not upward, "imports up the floors of LAYERS (move the shared part down, or pass it in): " + "; ".join(upward)


def test_the_floor_check_sees_an_upward_import():
    assert _floor("moediffir.models.denoiser") < _floor("moediffir.weights.model_folder") < _floor(
        "moediffir.pipelines.moediffir_pipeline")
    with pytest.raises(AssertionError, match="no floor"):
        _floor("moediffir.nowhere.module")


#: Calls that read or write files. ``models/`` holds networks only: what reads or writes weight files is in
#: ``weights/``. Reading the package's own data (``importlib.resources``: the shipped architecture configs and key
#: layouts) is not file work of a model.
FILE_CALLS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "load", "save", "load_file",
              "save_file", "safe_open", "from_pretrained", "save_pretrained", "atomic_directory", "mkdir", "unlink"}


def _file_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    resource_reads = {id(n) for node in ast.walk(tree) if isinstance(node, ast.Call)
                      and "resources.files" in ast.unparse(node.func) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in resource_reads:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in FILE_CALLS and ast.unparse(func) not in ("json.load", "json.loads"):
            found.append(f"{ast.unparse(func)} (line {node.lineno})")
    return found


def test_no_module_under_models_reads_or_writes_files():
    found = {p.name: calls for p in sorted((PACKAGE / "models").glob("*.py")) if (calls := _file_calls(p))}
    assert not found, f"file work under models/ (move it to weights/): {found}"


def test_the_file_check_sees_file_work(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import torch\ndef f(p):\n    return torch.load(p)\n")
    assert _file_calls(probe) == ["torch.load (line 3)"]
    probe.write_text("from importlib import resources\nt = resources.files('x').joinpath('a').read_text()\n")
    assert _file_calls(probe) == []


def test_the_design_page_maps_the_same_floors():
    """docs/design.md §11 lists the floors of LAYERS, in order, package by package."""
    text = (REPO_ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", text.split("## 11.", 1)[1], flags=re.MULTILINE)
    documented = [tuple(name.strip("`/ ") for name in cell.split(",")) for _, cell in rows]
    assert [int(n) for n, _ in rows] == list(range(1, len(LAYERS) + 1))
    assert documented == list(LAYERS)
