"""One error base: every exception class of the package derives from MoEDiffIRError; the CLI catches only it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import moediffir
from moediffir.errors import MissingWeightsError, MoEDiffIRError

REPO = Path(__file__).resolve().parents[1]


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
    from moediffir.models import weight_checks

    assert perceptual.MissingWeightsError is weight_checks.MissingWeightsError is MissingWeightsError
    assert issubclass(MissingWeightsError, FileNotFoundError)  # old `except FileNotFoundError` still works


def test_cli_catches_the_base_not_a_list_of_names():
    cli = REPO / "moediffir" / "cli"
    source = (cli / "__init__.py").read_text()
    assert "except MoEDiffIRError" in source
    assert not any("__import__" in p.read_text() for p in cli.glob("*.py"))
    for sub in ("training", "evaluation", "ablation"):
        assert not (REPO / "moediffir" / sub / "cli.py").exists() and not (REPO / "moediffir" / sub / "cli").exists()
    users = [p for p in (REPO / "moediffir").rglob("*.py")
             if cli not in p.parents and ("moediffir.cli" in p.read_text() or "argparse" in p.read_text())]
    assert users == [], f"library modules that parse arguments or import the command line: {users}"
