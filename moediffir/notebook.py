"""What the first cell of every notebook does (docs/design.md §2, notebooks), in one call instead of six copies.

Each notebook's first code cell moves to the repository root (so that the config's relative paths resolve when
the notebook was opened from ``notebooks/``), then calls :func:`setup_notebook` before importing anything heavy:
it quiets third-party notices (:mod:`moediffir.utils.logs`, which must happen before diffusers is imported),
resolves the profile and the parameters cell's overrides into the config, and returns what the notebooks use
throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from moediffir.config import Config, resolve_config
from moediffir.utils.logs import quiet_third_party


class NotebookSetup(NamedTuple):
    cfg: Config
    random_weights: bool  # cfg.model.random_weights: every number and figure says so
    figures_dir: Path  # <results>/<profile>/figures
    tables_dir: Path  # <results>/<profile>/tables
    device: str  # cfg.device resolved ("auto" -> cuda when one is visible), for the notebooks' own illustrations


def setup_notebook(profile: str, overrides: Mapping[str, Any] | None = None) -> NotebookSetup:
    """Quiet third-party notices, resolve ``profile`` + ``overrides``; see the module docstring."""
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
