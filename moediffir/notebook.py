"""What the first cell of every notebook does (docs/design.md §2, notebooks), in one call instead of six copies.

Each notebook's first code cell calls :func:`setup_notebook` before importing anything heavy: it moves to the
repository root (so that the config's relative paths resolve when the notebook was opened from ``notebooks/``),
quiets third-party notices (:mod:`moediffir.utils.quiet`, which must happen before diffusers is imported),
resolves the profile and the parameters cell's overrides into the config, and returns what the notebooks use
throughout.

Under papermill it also checks the parameters passed with ``-p NAME VALUE``: papermill only warns about a name
the notebook does not declare and runs on with the default, so :func:`check_injected_parameters` turns that into
an error naming the parameter (the kernel's input history holds the parameters cell and papermill's injected
``# Parameters`` cell right after it).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from moediffir.config import Config, ConfigError, resolve_config
from moediffir.utils.quiet import quiet_third_party


class NotebookSetup(NamedTuple):
    cfg: Config
    random_weights: bool  # cfg.model.random_weights: every number and figure says so
    figures_dir: Path  # <results>/<profile>/figures
    tables_dir: Path  # <results>/<profile>/tables
    device: str  # cfg.device resolved ("auto" -> cuda when one is visible), for the notebooks' own illustrations


INJECTED_HEADER = "# Parameters"  # the first line of the cell papermill injects after the parameters cell


class NotebookParameterError(ConfigError):
    """A parameter passed to a notebook (papermill ``-p``) that the notebook's parameters cell does not declare."""


def _assigned_names(source: str) -> list[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def check_injected_parameters(history: Sequence[str]) -> None:
    """Raise :class:`NotebookParameterError` when papermill injected a name the parameters cell lacks.

    ``history``: the sources of the cells run so far, in order (IPython's ``In``). Without an injected cell
    (an interactive session) there is nothing to check.
    """
    cells = [c for c in history if isinstance(c, str)]
    for i in range(len(cells) - 1, 0, -1):
        if cells[i].lstrip().startswith(INJECTED_HEADER):
            declared = _assigned_names(cells[i - 1])
            unknown = [n for n in _assigned_names(cells[i]) if n not in declared]
            if unknown:
                raise NotebookParameterError(
                    f"unknown notebook parameter(s) {', '.join(map(repr, unknown))} (papermill -p); this "
                    f"notebook's parameters are: {', '.join(declared)}")
            return


def _kernel_history() -> list[str]:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - notebooks always have IPython
        return []
    shell = get_ipython()
    return list(shell.user_ns.get("In", [])) if shell is not None else []


def setup_notebook(profile: str, overrides: Mapping[str, Any] | None = None) -> NotebookSetup:
    """Check papermill's parameters, move to the repository root, quiet third-party notices, resolve ``profile`` +
    ``overrides``; see the module docstring."""
    check_injected_parameters(_kernel_history())
    if not Path("moediffir").is_dir() and Path("../moediffir").is_dir():
        os.chdir("..")  # opened from notebooks/: paths in the config are relative to the repository root
    quiet_third_party()
    cfg = resolve_config(profile, dict(overrides or {}))
    from moediffir.utils.devices import resolve_device  # imports torch, after the notices are quieted

    return NotebookSetup(
        cfg=cfg,
        random_weights=cfg.model.random_weights,
        figures_dir=cfg.profile_results_dir / "figures",
        tables_dir=cfg.profile_results_dir / "tables",
        device=str(resolve_device(cfg.device)),
    )
