"""One error base: every exception class of the package derives from MoEDiffIRError; the CLI catches only it."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil

from repo_paths import REPO_ROOT as REPO

import moediffir
from moediffir.errors import MissingWeightsError, MoEDiffIRError


def _package_exceptions() -> dict[str, list[type]]:
    """``name -> classes`` of every exception class defined in a module of the package."""
    found: dict[str, list[type]] = {}
    for info in pkgutil.walk_packages(moediffir.__path__, "moediffir."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found.setdefault(name, []).append(obj)
    return found


def test_every_package_exception_derives_from_one_base_and_names_are_unique():
    found = _package_exceptions()
    assert len(found) >= 25  # the walk saw the package's modules
    outside = sorted(n for n, classes in found.items() for c in classes if not issubclass(c, MoEDiffIRError))
    assert outside == [], f"exception classes without the MoEDiffIRError base: {outside}"
    clashes = sorted(n for n, classes in found.items() if len(classes) > 1)
    assert clashes == [], f"two different exception classes share a name: {clashes}"


def test_missing_weights_is_one_class_for_networks_and_metrics():
    from moediffir.metrics import perceptual
    from moediffir.weights import weight_checks

    assert perceptual.MissingWeightsError is weight_checks.MissingWeightsError is MissingWeightsError
    assert issubclass(MissingWeightsError, FileNotFoundError)  # old `except FileNotFoundError` still works


_PARSERS = ("argparse", "optparse")


def _is_cli(module: str) -> bool:
    return module == "moediffir.cli" or module.startswith("moediffir.cli.")


def _is_banned(module: str) -> bool:
    return _is_cli(module) or module.split(".")[0] in _PARSERS


def _cli_or_parser_imports(source: str) -> list[str]:
    """What a module's code imports of the command line (``moediffir.cli``) or of an argument parser, read with
    ``ast``: imports anywhere (inside functions too) and ``import_module`` / ``__import__`` of such a name. A
    string that launches the command line in a subprocess (``python -m moediffir.cli ...``) imports nothing."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if _is_banned(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [f"{node.module}.{a.name}" for a in node.names if _is_banned(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.Call) and (getattr(node.func, "attr", None) == "import_module"
                                             or getattr(node.func, "id", None) in ("import_module", "__import__")):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and _is_banned(first.value):
                found.append(first.value)
    return found


def test_the_import_check_sees_imports_not_command_lines():
    for source in ("import argparse", "from argparse import ArgumentParser", "from moediffir.cli import main",
                   "from moediffir import cli", "import moediffir.cli.common",
                   "def f():\n    from moediffir.cli.common import Namespace",
                   "importlib.import_module('moediffir.cli')", "__import__('argparse')"):
        assert _cli_or_parser_imports(source), source
    for source in ("subprocess.run([sys.executable, '-m', 'moediffir.cli', 'restore'])",
                   "# the docs mention argparse and moediffir.cli", "from moediffir.client import x",
                   "from moediffir import config"):
        assert not _cli_or_parser_imports(source), source


def test_cli_catches_the_base_not_a_list_of_names():
    """The command line is the one place that parses arguments and turns the kit's errors into one line: library
    modules neither parse arguments nor import it (a module may still run it in a subprocess, as a user would)."""
    cli = REPO / "moediffir" / "cli"
    source = (cli / "__init__.py").read_text()
    assert "except MoEDiffIRError" in source
    assert not any("__import__" in p.read_text() for p in cli.glob("*.py"))
    for sub in ("training", "evaluation", "ablation"):
        assert not (REPO / "moediffir" / sub / "cli.py").exists() and not (REPO / "moediffir" / sub / "cli").exists()
    users = {str(p.relative_to(REPO)): found for p in sorted((REPO / "moediffir").rglob("*.py"))
             if cli not in p.parents and (found := _cli_or_parser_imports(p.read_text()))}
    assert users == {}, f"library modules that parse arguments or import the command line: {users}"
