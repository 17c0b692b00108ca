"""``moediffir report``: every table and figure of the evaluation, rebuilt from the saved numbers (docs/design.md §7).

Reads only saved numbers -- ``<results>/<profile>/metrics/`` (``results.csv``, ``per_image.csv``, ``routing.csv``,
``prompt_similarity.csv``, ``visual.json`` + ``visual/`` crops) and the training logs under ``<runs>/<profile>/`` --
never the model, the benchmark or the restored images -- and writes

* ``tables/``: Table 1, the per-level tables (one per codec), Table 4 -- CSV, Markdown, LaTeX
  (:mod:`moediffir.report.tables`);
* ``figures/``: the visual grids (Fig. 4), bpp against quality, the prompt similarity heatmaps (Fig. 8), the
  expert usage per task -- PNG, PDF and the plotted numbers as CSV (:mod:`moediffir.report.figures`); the
  sampler study where notebook 06 ran it (``tables/sampler_study.csv``, :mod:`moediffir.report.study_figures`);
  the training figures of notebooks 00, 02 and 03 from the logs under ``<runs>/<profile>/`` where training ran
  (:mod:`moediffir.report.training_report`).

The same saved numbers always give byte-identical files. Files of these kinds left from an earlier evaluation
that this one does not produce (e.g. the table of a codec no longer evaluated) are removed. It holds the lock of
the results folder while it writes (:func:`~moediffir.utils.locks.folder_lock`; an evaluation that draws its
report already holds it), so it never redraws under a running evaluation or sweep.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from moediffir.config import Config
from moediffir.errors import MoEDiffIRError
from moediffir.report import figures, study_figures, tables, training_report
from moediffir.report.table_notes import is_random, trained_here_note
from moediffir.utils.locks import folder_lock

METRICS_DIR = "metrics"
TABLES_DIR = "tables"
FIGURES_DIR = "figures"
_GENERATED = {TABLES_DIR: ("table1.*", "table4.*", "table_levels_*.*"),
              FIGURES_DIR: ("fig4_visual_*", "fig8_prompt_similarity.*", "bpp_quality.*", "expert_usage.*")}


class ReportError(MoEDiffIRError, FileNotFoundError):
    """The saved numbers are missing; the message names the file and the command that writes it."""


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip", dtype={"level": str, "stem": str, "task": str},
                       keep_default_na=False, na_values=[""])


def regenerate_report(cfg: Config, results_dir: str | Path | None = None, paper_root: str | Path | None = None) -> list[Path]:
    """Write every table and figure from the saved numbers of ``results_dir`` (default ``<results>/<profile>``).

    Returns the paths written. ``paper_root`` points at another copy of the paper's transcriptions (tests).

    Raises:
        ReportError: ``metrics/results.csv`` is missing (run ``moediffir evaluate`` or notebook 06 first).
        FolderLockedError: another run writes the results folder (the message names it); nothing was changed.
    """
    out = Path(results_dir) if results_dir is not None else cfg.profile_results_dir
    with folder_lock(out, what="results folder"):
        return _regenerate_locked(cfg, out, paper_root)


def _regenerate_locked(cfg: Config, out: Path, paper_root: str | Path | None) -> list[Path]:
    """The report of :func:`regenerate_report` from ``out``, inside the lock of that folder."""
    mdir = out / METRICS_DIR
    res_path = mdir / "results.csv"
    if not res_path.is_file():
        raise ReportError(f"{res_path}: no saved results; run `moediffir evaluate --profile {cfg.profile}` "
                          "(or notebook 06) first")
    results = _read_csv(res_path)
    weights = is_random(results) or trained_here_note(results)  # figure titles: random, or trained here
    sets = [s for s in cfg.eval.test_sets if s in set(results["set"])] or None
    written: list[Path] = []
    written += tables.write_all_tables(results, out / TABLES_DIR, sets, paper_root)

    fig_dir = out / FIGURES_DIR
    if (mdir / "visual.json").is_file():
        index = json.loads((mdir / "visual.json").read_text())
        written += figures.visual_grid(index, mdir, fig_dir, weights)
    if (mdir / "per_image.csv").is_file():
        per_image = _read_csv(mdir / "per_image.csv")
        if len(per_image):
            written += figures.bpp_quality(per_image, fig_dir, weights)
    if (mdir / "prompt_similarity.csv").is_file():
        sim = _read_csv(mdir / "prompt_similarity.csv")
        if len(sim):
            written += figures.prompt_similarity(sim, fig_dir, weights)
    if (mdir / "routing.csv").is_file():
        routing = _read_csv(mdir / "routing.csv")
        if len(routing):
            written += figures.expert_usage(routing, fig_dir, weights)
    if (out / TABLES_DIR / "sampler_study.csv").is_file():  # notebook 06's sampler study, where it ran
        written += study_figures.sampler_study(_read_csv(out / TABLES_DIR / "sampler_study.csv"),
                                               cfg.eval.sampler_study_task, fig_dir)
    written += training_report.training_figures(cfg, fig_dir)

    keep = {p.resolve() for p in written}
    for sub, patterns in _GENERATED.items():
        for pattern in patterns:
            for p in (out / sub).glob(pattern):
                if p.is_file() and p.resolve() not in keep:
                    p.unlink()
    return written
