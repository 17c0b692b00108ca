"""What an ablation sweep is and how its runs are keyed (paper §4.3, Fig. 6, Tables 2-3).

:class:`Sweep` / :class:`Variant` / :class:`EvalSpec` define a sweep; a variant's **run key** hashes its
result-relevant config (:func:`result_relevant`: the config without :data:`KEY_EXCLUDED`), the training images
and the exact (sets, tasks, images) it is evaluated on (:func:`plan_evaluations`); its **train key** hashes only
what stage-I training sees. :mod:`moediffir.ablation.sweep` runs and gathers the sweeps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from moediffir.config import Config, apply_overrides, config_to_dict
from moediffir.errors import MoEDiffIRError
from moediffir.utils.digests import json_digest

KEY_LENGTH = 16
#: Config keys (dotted) or whole sections left out of the run and train keys: they say where files are or how
#: fast things go, not what is computed. ``ablation`` is resolved into the other sections by the sweep;
#: ``stage2`` does not touch a stage-I model.
KEY_EXCLUDED: tuple[str, ...] = (
    "results_dir", "runs_dir", "device", "ablation", "stage2",
    "data.root", "data.datasets_dir", "data.out_dir", "data.workers", "data.hific_dir", "data.hm_encoder",
    "data.vvc_encoder", "data.allow_missing_codecs", "data.png_compress_level",
    "stage1.out_dir", "stage1.log_every", "stage1.checkpoint_every", "stage1.keep_checkpoints",
    "eval.metric_weights_dir", "eval.lpips_dir",
)
#: Sections and top-level keys that training depends on (the train key).
TRAIN_SECTIONS: tuple[str, ...] = ("seed", "data", "model", "stage1")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


class SweepError(MoEDiffIRError, RuntimeError):
    """A sweep cannot run as defined; the message names the sweep, variant or file and the fix."""


# ------------------------------------------------------------------------------------------ definitions
@dataclass(frozen=True)
class EvalSpec:
    """One evaluation of every variant: the tasks of ``kinds`` (and ``codecs``, if given) on ``sets``."""

    name: str  # "seen", "cross_degree", "cross_type"
    sets: tuple[str, ...]
    kinds: tuple[str, ...] = ("seen",)
    codecs: tuple[str, ...] = ()  # () = any codec


@dataclass(frozen=True)
class Variant:
    """A named point of a sweep: dotted config overrides, the curve or table it belongs to, a display label."""

    name: str
    overrides: Mapping[str, Any]
    group: str = ""  # e.g. "N" / "K" (Fig. 6a / 6b), "design", "v2t_dp"
    label: str = ""  # display name; "" -> name

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class Sweep:
    """Named variants evaluated the same way; ``overrides`` apply to every variant before its own.

    ``reference`` names the variant the others are compared to (the paired bootstrap differences of the report,
    :mod:`moediffir.ablation.spread`); "" compares none.
    """

    name: str
    title: str
    variants: tuple[Variant, ...]
    evaluations: tuple[EvalSpec, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    reference: str = ""

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise SweepError(f"sweep name {self.name!r}: use lower-case letters, digits and '_' (not first)")
        names = [v.name for v in self.variants]
        if not names:
            raise SweepError(f"sweep {self.name!r} has no variants")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SweepError(f"sweep {self.name!r}: variant names {dup} appear twice")
        if not self.evaluations:
            raise SweepError(f"sweep {self.name!r} has no evaluation (EvalSpec)")
        if self.reference and self.reference not in names:
            raise SweepError(f"sweep {self.name!r}: its reference {self.reference!r} is not one of its variants {names}")

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise SweepError(f"sweep {self.name!r} has no variant {name!r}; it has {[v.name for v in self.variants]}")


# ------------------------------------------------------------------------------------------ keys
def variant_config(cfg: Config, sweep: Sweep, variant: Variant) -> Config:
    """The resolved config of one variant: ``cfg`` + the sweep's overrides + the variant's (validated)."""
    return apply_overrides(cfg, {**dict(sweep.overrides), **dict(variant.overrides)})


def result_relevant(cfg: Config, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """``config_to_dict(cfg)`` without :data:`KEY_EXCLUDED` (and only ``sections``, when given)."""
    d = config_to_dict(cfg)
    if sections is not None:
        d = {k: v for k, v in d.items() if k in sections}
    for key in KEY_EXCLUDED:
        parts = key.split(".")
        if len(parts) == 1:
            d.pop(key, None)
        elif isinstance(d.get(parts[0]), dict):
            d[parts[0]].pop(parts[1], None)
    return d


def benchmark_manifest(cfg: Config) -> pd.DataFrame:
    from moediffir.data.manifest import ManifestError, read_manifest

    try:
        return read_manifest(cfg.benchmark_dir)
    except (ManifestError, FileNotFoundError) as exc:
        raise SweepError(
            f"{cfg.benchmark_dir / 'manifest.csv'}: no finished CIR benchmark for profile {cfg.profile!r}; build it "
            f"first with `moediffir data build --profile {cfg.profile}` (or run notebook 01)"
        ) from exc


def training_data_digest(cfg: Config, manifest: pd.DataFrame | None = None) -> str:
    """Hash of the training images stage I reads (seen pairs of split ``train``: paths and SHA-256)."""
    df = benchmark_manifest(cfg) if manifest is None else manifest
    rows = df[(df["split"] == "train") & (df["kind"] == "seen")]
    if rows.empty:
        raise SweepError(f"{cfg.benchmark_dir / 'manifest.csv'}: no seen training pairs; build the train split")
    pairs = sorted(zip(rows["path"].astype(str), rows["sha256"].astype(str), rows["gt_sha256"].astype(str)))
    return json_digest(pairs)


def train_key(cfg: Config, manifest: pd.DataFrame | None = None) -> str:
    """Key of the stage-I model a variant trains: what training sees, nothing else."""
    return json_digest({"config": result_relevant(cfg, TRAIN_SECTIONS), "train_data": training_data_digest(cfg, manifest)},
                       KEY_LENGTH)


@dataclass(frozen=True)
class PlannedEval:
    """One :class:`EvalSpec` resolved against the built benchmark."""

    spec: str
    sets: tuple[str, ...]
    tasks: tuple[str, ...]
    items: str  # digest of the evaluated images (paths and SHA-256 of LQ and GT)
    n_items: int
    missing: tuple[str, ...] = ()  # why part of the spec is not evaluated (set or tasks not built)

    def as_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "sets": list(self.sets), "tasks": list(self.tasks), "items": self.items,
                "n_items": self.n_items, "missing": list(self.missing)}


def plan_evaluations(cfg: Config, sweep: Sweep, manifest: pd.DataFrame | None = None) -> list[PlannedEval]:
    """Resolve each :class:`EvalSpec` to the (sets, tasks) built in the benchmark (``ablation.tasks`` filters).

    A set or kind that is not built is skipped and named in ``missing`` (the tables say so); a spec with
    nothing to evaluate is kept with empty ``sets``.
    """
    from moediffir.evaluation.protocol import sort_tasks

    df = benchmark_manifest(cfg) if manifest is None else manifest
    test = df[df["split"] == "test"]
    wanted_tasks = set(cfg.ablation.tasks)
    plans = []
    for spec in sweep.evaluations:
        sets, tasks, missing = [], set(), []
        for s in spec.sets:
            rows = test[(test["set"] == s) & test["kind"].isin(spec.kinds)]
            if spec.codecs:
                rows = rows[rows["codec"].isin(spec.codecs)]
            if wanted_tasks:
                rows = rows[rows["task"].isin(wanted_tasks)]
            if (test["set"] == s).sum() == 0:
                missing.append(f"set {s} is not in the benchmark")
            elif rows.empty:
                missing.append(f"no {'/'.join(spec.kinds)} task{' of ' + '/'.join(spec.codecs) if spec.codecs else ''} "
                               f"built for {s}" + (" among ablation.tasks" if wanted_tasks else ""))
            else:
                sets.append(s)
                tasks |= set(rows["task"])
        items_digest, n_items = "", 0
        if sets:
            from moediffir.evaluation.protocol import select_items

            items = select_items(cfg.benchmark_dir, sets, sorted(tasks), cfg.eval.max_images, cfg.data.preset)
            n_items = len(items)
            items_digest = json_digest(sorted(zip(items["path"], items["sha256"], items["gt_sha256"])))
        plans.append(PlannedEval(spec.name, tuple(sets), tuple(sort_tasks(tasks, cfg.data.preset)), items_digest,
                                 n_items, tuple(missing)))
    return plans


def evaluation_calls(plans: Sequence[PlannedEval]) -> list[tuple[str, tuple[str, ...], list[str], list[PlannedEval]]]:
    """Evaluations on the same sets become one evaluator call: ``(name, sets, tasks, specs)`` per call."""
    from moediffir.evaluation.protocol import sort_tasks

    groups: dict[tuple[str, ...], list[PlannedEval]] = {}
    for p in plans:
        if p.sets:
            groups.setdefault(p.sets, []).append(p)
    return [("+".join(p.spec for p in specs), sets, sort_tasks({t for p in specs for t in p.tasks}), specs)
            for sets, specs in groups.items()]


def run_key(cfg: Config, plans: Sequence[PlannedEval], manifest: pd.DataFrame | None = None) -> str:
    """Key of one run: the result-relevant config, the training images and the exact evaluation."""
    return json_digest({
        "config": result_relevant(cfg),
        "train_data": training_data_digest(cfg, manifest),
        "evaluation": [p.as_dict() for p in plans],
    }, KEY_LENGTH)
