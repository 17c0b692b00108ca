"""Ablation sweeps: named config variants, each a resumable stage-I run keyed by its config (paper §4.3).

Implements the machinery behind Fig. 6 and Tables 2-3 (the variants themselves are in
:mod:`moediffir.ablation.variants`). A :class:`Sweep` is a list of named :class:`Variant` s -- each a dict of
dotted config overrides applied on top of the caller's resolved config and the sweep's own overrides -- and a
list of evaluations (:class:`EvalSpec`: test sets x task kinds), all defined with their keys in
:mod:`moediffir.ablation.sweep_plan`. :func:`run_sweep`:

1. resolves every variant's config. Its **run key** hashes that config without the settings that do not change
   results (:data:`~moediffir.ablation.sweep_plan.KEY_EXCLUDED`: where inputs and outputs live, worker counts, logging and checkpoint cadence,
   the device, the ``ablation`` section whose effect is already resolved into the other sections), together
   with the content of the benchmark it trains and is evaluated on (the manifest's SHA-256 of every image
   used) and the exact (sets, tasks) it is evaluated on. Variants with equal keys are one run (N = 7, K = 3 is
   a point of both Fig. 6 curves);
2. a run lives in ``<runs_dir>/<profile>/sweeps/<sweep>/<key>/``: ``config.json`` and ``run.json`` (what it
   is), ``routing.csv`` (expert usage per task, for MoE variants), ``per_image.csv`` (the evaluator's
   per-image rows, :mod:`moediffir.ablation.per_image`) and, written atomically and *last*, ``result.csv``
   (the evaluator's per-task rows) then ``result.json``. A run with a ``result.json`` of its key (and the
   per-image rows it records) is finished and reused as is;
3. the model is trained by :func:`moediffir.training.stage1.train_stage1` into
   ``<runs_dir>/<profile>/sweeps/_models/<train key>/<profile>/model``. The **train key** hashes only what
   training sees (seed, data, model, stage1 and the training images), so sweeps that evaluate one model
   differently (Table 2's MoE-Prompt is Table 3's first row) train it once. Training always runs with
   ``resume=True``: a variant killed half-way continues from its newest checkpoint; ``trained.json``, written
   after the model folder, marks the model done. The evaluator writes its restored images beside the model
   (``_models/<train key>/eval/``; it skips images already restored by the same model and settings), so
   a model evaluated by two sweeps restores each image once and an interrupted evaluation resumes;
4. :func:`gather_sweep` collects the rows of every finished run into one tidy file
   ``<results_dir>/<profile>/ablations/<sweep>.csv`` with the variant's parameters as columns (plus
   ``<sweep>.json``: the sweep, its variants, their keys and states, and ``<sweep>_per_image.csv``), from
   which :mod:`moediffir.report.ablations` draws the figures and tables.

Every variant is a stage-I model decoded by the plain VAE decoder: the ablated parts (prompt design, N, K, V2T,
DP) are all trained in stage I, and the decoder compensator of stage II would be the same for every variant
(Table 4 studies it separately). A sweep holds the lock of ``<results_dir>/<profile>`` throughout
(:func:`~moediffir.utils.locks.folder_lock`), as ``evaluate`` and ``report`` do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from moediffir.ablation.per_image import PER_IMAGE_CSV, ROWS_FIELD, evaluator_rows, gather_per_image, is_kept
from moediffir.ablation.sweep_plan import (
    PlannedEval,
    Sweep,
    SweepError,
    Variant,
    benchmark_manifest,
    evaluation_calls,
    plan_evaluations,
    run_key,
    train_key,
    variant_config,
)
from moediffir.config import Config, apply_overrides, save_config
from moediffir.utils.digests import read_record
from moediffir.utils.io import atomic_write_csv, atomic_write_json
from moediffir.utils.locks import folder_lock

SWEEPS_DIR = "sweeps"
MODELS_DIR = "_models"
RESULT_CSV = "result.csv"
RESULT_JSON = "result.json"
RUN_JSON = "run.json"
ROUTING_CSV = "routing.csv"  # expert usage per task of the run's evaluation (from the evaluator's routing.csv)
TRAINED_JSON = "trained.json"
FEW_STEPS = 1_000  # up to this many training steps a variant is labelled "a few training steps"

TrainFn = Callable[..., Path]  # train_stage1(cfg, resume=..., progress=...) -> model folder
EvaluateFn = Callable[..., pd.DataFrame]  # evaluate_model(model_dir, cfg, sets=..., tasks=..., out_dir=...)


# ------------------------------------------------------------------------------------------ folders
def sweeps_root(cfg: Config) -> Path:
    """``<runs_dir>/<profile>/sweeps``."""
    return cfg.run_dir / SWEEPS_DIR


def run_folder(cfg: Config, sweep: Sweep, key: str) -> Path:
    return sweeps_root(cfg) / sweep.name / key


def model_root(cfg: Config, tkey: str) -> Path:
    """Where the stage-I model of a train key is trained: ``sweeps/_models/<train key>``."""
    return sweeps_root(cfg) / MODELS_DIR / tkey


def training_config(vcfg: Config, base: Config, tkey: str) -> Config:
    """The variant's config with ``runs_dir`` pointing at its model root (stage-I run dir, model folder).

    Every variant shares the profile's stage-0 prior (where it is trained here): ``prior.out_dir`` is pinned to
    the base run's stage-0 folder, so moving ``runs_dir`` does not move the prior the variants load.
    """
    overrides: dict = {"runs_dir": str(model_root(base, tkey)), "stage1.out_dir": ""}
    if base.prior.enabled:
        overrides["prior.out_dir"] = str(base.prior_dir.parent)
    return apply_overrides(vcfg, overrides)


def results_path(cfg: Config, sweep_name: str) -> Path:
    """The tidy file ``<results_dir>/<profile>/ablations/<sweep>.csv``."""
    return cfg.profile_results_dir / "ablations" / f"{sweep_name}.csv"


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        raise SweepError(f"the trainer wrote its model to {path}, outside the variant's model root {root}; "
                         "stage-I model folders must live under <runs_dir>/<profile>") from None


def weights_label(cfg: Config) -> str:
    """How far a variant is from the paper's model, written beside every number it produces."""
    from moediffir.provenance import RANDOM, TRAINED, backbone_provenance

    steps = cfg.stage1.max_steps
    backbone = backbone_provenance(cfg)
    if backbone == TRAINED:
        return f"diffusion prior trained here (not SD 2.1-base), {steps} training steps"
    if backbone == RANDOM:
        few = "a few training steps" if steps <= FEW_STEPS else "trained"
        return f"random-weight backbone, {few}: says nothing about the method ({steps} steps)"
    paper_steps = 400_000
    if steps < paper_steps:
        return f"pretrained SD backbone, {steps} training steps (paper: {paper_steps})"
    return f"pretrained SD backbone, {steps} training steps"


# ------------------------------------------------------------------------------------------ plan / status
@dataclass
class RunPlan:
    """One unique run of a sweep (one key) and the variants that share it."""

    key: str
    train_key: str
    config: Config
    variants: list[Variant]
    evaluations: list[PlannedEval]
    folder: Path
    model_root: Path

    @property
    def done(self) -> bool:
        info = read_record(self.folder / RESULT_JSON)
        return bool(info and info.get("key") == self.key and (self.folder / RESULT_CSV).is_file()
                    and is_kept(self.folder, info))

    @property
    def model_dir(self) -> Path:
        """The trained model folder named by ``trained.json`` (relative to the model root)."""
        info = read_record(self.model_root / TRAINED_JSON) or {}
        return self.model_root / info.get("model_dir", "model")

    @property
    def trained(self) -> bool:
        info = read_record(self.model_root / TRAINED_JSON)
        return bool(info and info.get("train_key") == self.train_key and self.model_dir.is_dir())

    @property
    def state(self) -> str:
        """``done``, ``trained`` (evaluation pending), ``partial`` (checkpoints exist) or ``pending``."""
        if self.done:
            return "done"
        if self.trained:
            return "trained"
        from moediffir.training.checkpoint import latest_checkpoint

        if any(latest_checkpoint(p / "checkpoints") for p in self.model_root.glob("*/stage1")):
            return "partial"
        return "pending"


def plan_sweep(cfg: Config, sweep: Sweep) -> list[RunPlan]:
    """The unique runs of ``sweep`` in variant order (variants with equal keys share one run)."""
    manifest = benchmark_manifest(cfg)
    runs: dict[str, RunPlan] = {}
    for v in sweep.variants:
        vcfg = variant_config(cfg, sweep, v)
        plans = plan_evaluations(vcfg, sweep, manifest)
        key = run_key(vcfg, plans, manifest)
        if key in runs:
            runs[key].variants.append(v)
            continue
        tkey = train_key(vcfg, manifest)
        runs[key] = RunPlan(key, tkey, vcfg, [v], plans, run_folder(cfg, sweep, key), model_root(cfg, tkey))
    return list(runs.values())


def sweep_status(cfg: Config, sweep: Sweep) -> pd.DataFrame:
    """One row per variant: name, group, label, key, train key, state (see :attr:`RunPlan.state`)."""
    rows = []
    for run in plan_sweep(cfg, sweep):
        state = run.state
        for v in run.variants:
            rows.append({"variant": v.name, "group": v.group, "label": v.display, "key": run.key,
                         "train_key": run.train_key, "state": state, "folder": str(run.folder)})
    order = {v.name: i for i, v in enumerate(sweep.variants)}
    return pd.DataFrame(rows).sort_values("variant", key=lambda s: s.map(order)).reset_index(drop=True)


# ------------------------------------------------------------------------------------------ running
@dataclass
class SweepReport:
    """What :func:`run_sweep` did: keys run now, keys reused, and the tidy results."""

    sweep: str
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)  # train keys trained (or resumed) now
    results: pd.DataFrame | None = None
    path: Path | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"sweep {self.sweep}: {len(self.ran)} run(s) now, {len(self.reused)} reused, "
                f"{len(self.trained)} model(s) trained, {self.seconds:.1f} s; results: {self.path}")


def _default_train(cfg: Config, resume: bool = True, progress: bool = True) -> Path:
    from moediffir.training.stage1 import train_stage1

    return train_stage1(cfg, resume=resume, progress=progress)


def _default_evaluate(model_dir: Path, cfg: Config, sets=None, tasks=None, out_dir=None) -> pd.DataFrame:
    from moediffir.evaluation.evaluator import evaluate_model

    return evaluate_model(model_dir, cfg, sets=sets, tasks=tasks, out_dir=out_dir)


def ensure_trained(
    run: RunPlan, base: Config, train_fn: TrainFn, progress: bool, log: Callable[[str], None]
) -> tuple[Path, bool]:
    """The model folder of ``run`` (trained or resumed now if needed); True when training ran."""
    marker = run.model_root / TRAINED_JSON
    if run.trained:
        return run.model_dir, False
    tcfg = training_config(run.config, base, run.train_key)
    log(f"[sweep] training {run.train_key} ({', '.join(v.name for v in run.variants)}): "
        f"{tcfg.stage1.max_steps} steps, resumed if it has a checkpoint")
    save_config(tcfg, run.model_root)
    t0 = time.perf_counter()
    model_dir = Path(train_fn(tcfg, resume=True, progress=progress))
    summary = read_record(tcfg.run_dir / "stage1" / "summary.json") or {}
    atomic_write_json(marker, {  # model_dir relative to the model root: the runs folder may move
        "train_key": run.train_key, "model_dir": _relative(model_dir, run.model_root), "steps": tcfg.stage1.max_steps,
        "seconds": round(time.perf_counter() - t0, 2), "weights": weights_label(tcfg),
        "eval_loss_start": summary.get("eval_loss_start"), "eval_loss_end": summary.get("eval_loss_end"),
    })
    return model_dir, True


def _execute(run: RunPlan, sweep: Sweep, base: Config, train_fn: TrainFn, evaluate_fn: EvaluateFn,
             progress: bool, log: Callable[[str], None]) -> bool:
    """Train (or reuse) and evaluate one run; write ``result.csv`` then ``result.json``. True if trained now."""
    t0 = time.perf_counter()
    run.folder.mkdir(parents=True, exist_ok=True)
    save_config(run.config, run.folder)
    atomic_write_json(run.folder / RUN_JSON, {
        "sweep": sweep.name, "key": run.key, "train_key": run.train_key,
        "variants": [{"name": v.name, "group": v.group, "label": v.display, "overrides": dict(v.overrides)}
                     for v in run.variants],
        "evaluation": [p.as_dict() for p in run.evaluations],
    })
    model_dir, trained_now = ensure_trained(run, base, train_fn, progress, log)
    t_train = time.perf_counter() - t0
    frames, routing, per_image = [], [], []
    (run.folder / ROUTING_CSV).unlink(missing_ok=True)
    for p in run.evaluations:
        if not p.sets:
            log(f"[sweep] {sweep.name}/{run.key}: nothing to evaluate for {p.spec} ({'; '.join(p.missing)})")
    for name, sets, tasks, specs in evaluation_calls(run.evaluations):
        log(f"[sweep] evaluating {run.key} on {name}: sets {list(sets)}, {len(tasks)} task(s), "
            f"{sum(p.n_items for p in specs)} image(s)")
        eval_dir = run.model_root / "eval"
        df = pd.DataFrame(evaluate_fn(model_dir, run.config, sets=list(sets), tasks=list(tasks), out_dir=eval_dir))
        routing_csv = eval_dir / "metrics" / "routing.csv"
        if routing_csv.is_file():  # expert usage of exactly these images, kept with the run
            routing.append(pd.read_csv(routing_csv, dtype={"level": str, "task": str}).assign(evaluation=name))
        if "scope" in df.columns:  # per-task rows only: the report averages exactly each spec's tasks
            df = df[df["scope"] == "task"]
        parts = []
        for p in specs:
            part = df[df["set"].isin(p.sets) & df["task"].astype(str).isin(p.tasks)]
            if part.empty:
                raise SweepError(f"{run.folder}: the evaluator returned no rows for {p.spec} "
                                 f"(sets {list(p.sets)}, tasks {list(p.tasks)})")
            parts.append(part.assign(evaluation=p.spec))
        frames += parts
        images = evaluator_rows(eval_dir, pd.concat(parts, ignore_index=True), specs)  # the bootstrap's input
        per_image += [images] if images is not None and len(images) else []
    result = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    images = pd.concat(per_image, ignore_index=True) if per_image else pd.DataFrame()
    trained_info = read_record(run.model_root / TRAINED_JSON) or {}
    if routing:
        atomic_write_csv(run.folder / ROUTING_CSV, pd.concat(routing, ignore_index=True))
    if len(images):
        atomic_write_csv(run.folder / PER_IMAGE_CSV, images)
    else:
        (run.folder / PER_IMAGE_CSV).unlink(missing_ok=True)
    atomic_write_csv(run.folder / RESULT_CSV, result)
    atomic_write_json(run.folder / RESULT_JSON, {  # last: its presence means the run is finished
        "key": run.key, "train_key": run.train_key, "sweep": sweep.name,
        "variants": [v.name for v in run.variants], "model_dir": _relative(model_dir, run.model_root),
        "rows": len(result), ROWS_FIELD: len(images),
        "weights": weights_label(run.config), "device": run.config.device,
        "seconds": {"train": round(t_train, 2), "total": round(time.perf_counter() - t0, 2)},
        "eval_loss_start": trained_info.get("eval_loss_start"), "eval_loss_end": trained_info.get("eval_loss_end"),
        "evaluation": [p.as_dict() for p in run.evaluations],
    })
    return trained_now


def run_sweep(
    cfg: Config,
    sweep: Sweep,
    *,
    train_fn: TrainFn | None = None,
    evaluate_fn: EvaluateFn | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> SweepReport:
    """Run every variant of ``sweep`` that is not finished, then gather the tidy results file.

    Finished runs (``result.json``) are reused; a run interrupted after training only evaluates; a run
    interrupted during training resumes from its newest checkpoint. An exception stops the sweep (rerun the same
    call to continue where it stopped). Another run writing the results folder refuses it (``FolderLockedError``).

    Args:
        cfg: resolved config of the profile (with the caller's overrides).
        sweep: e.g. ``moediffir.ablation.variants.build_sweep("prompts_nk", cfg)``.
        train_fn / evaluate_fn: default :func:`~moediffir.training.stage1.train_stage1` and
            :func:`~moediffir.evaluation.evaluator.evaluate_model` (tests inject counters here).
    """
    with folder_lock(cfg.profile_results_dir, what="results folder"):  # evaluate and report write there too
        t0 = time.perf_counter()
        train_fn = train_fn or _default_train
        evaluate_fn = evaluate_fn or _default_evaluate
        report = SweepReport(sweep.name)
        runs = plan_sweep(cfg, sweep)
        log(f"[sweep] {sweep.name}: {len(sweep.variants)} variant(s), {len(runs)} unique run(s) under "
            f"{sweeps_root(cfg) / sweep.name}")
        for i, run in enumerate(runs, 1):
            names = ", ".join(v.name for v in run.variants)
            if run.done:
                log(f"[sweep] ({i}/{len(runs)}) {names}: finished earlier ({run.key}), reused")
                report.reused.append(run.key)
                continue
            log(f"[sweep] ({i}/{len(runs)}) {names}: running ({run.key})")
            if _execute(run, sweep, cfg, train_fn, evaluate_fn, progress, log):
                report.trained.append(run.train_key)
            report.ran.append(run.key)
        report.results = gather_sweep(cfg, sweep, runs)
        report.path = results_path(cfg, sweep.name)
        report.seconds = time.perf_counter() - t0
        log(f"[sweep] {report.summary()}")
        return report


# ------------------------------------------------------------------------------------------ gathering
def param_columns(sweep: Sweep) -> dict[str, str]:
    """Dotted key -> column name of every key a variant overrides (the last part, unless two keys share it)."""
    keys = list(dict.fromkeys(k for v in sweep.variants for k in v.overrides))
    last = [k.split(".")[-1] for k in keys]
    return {k: (name if last.count(name) == 1 else k.replace(".", "_")) for k, name in zip(keys, last)}


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return list(obj) if isinstance(obj, tuple) else obj


def gather_sweep(cfg: Config, sweep: Sweep, runs: Sequence[RunPlan] | None = None) -> pd.DataFrame:
    """Write ``<results_dir>/<profile>/ablations/<sweep>.csv`` (+ ``.json``, ``_per_image.csv``) from every
    finished run.

    Columns: ``sweep, variant, group, label, key, train_key, train_steps, <parameters>, evaluation,
    weights_label`` then the evaluator's columns. Unfinished variants are absent (their state is in the JSON).
    """
    runs = plan_sweep(cfg, sweep) if runs is None else runs
    cols = param_columns(sweep)
    frames, states = [], []
    for run in runs:
        done = run.done
        info = read_record(run.folder / RESULT_JSON) if done else None
        for v in run.variants:
            states.append({"variant": v.name, "group": v.group, "label": v.display, "key": run.key,
                           "train_key": run.train_key, "state": run.state if not done else "done",
                           "evaluation": [p.as_dict() for p in run.evaluations],
                           "params": {c: _get(run.config, k) for k, c in cols.items()},
                           "weights_label": weights_label(run.config),
                           "eval_loss_start": (info or {}).get("eval_loss_start"),
                           "eval_loss_end": (info or {}).get("eval_loss_end")})
        if not done:
            continue
        try:
            res = pd.read_csv(run.folder / RESULT_CSV, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            continue
        for v in run.variants:
            head = {"sweep": sweep.name, "variant": v.name, "group": v.group, "label": v.display, "key": run.key,
                    "train_key": run.train_key, "train_steps": run.config.stage1.max_steps}
            head.update({c: _get(run.config, k) for k, c in cols.items()})
            head["weights_label"] = weights_label(run.config)
            block = res.copy()
            for i, (c, val) in enumerate(head.items()):
                block.insert(i, c, [val] * len(block) if isinstance(val, list) else val)
            frames.append(block)
    order = {v.name: i for i, v in enumerate(sweep.variants)}
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["sweep", "variant"])
    if len(df):
        df = df.sort_values("variant", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
    path = results_path(cfg, sweep.name)
    atomic_write_csv(path, df)
    gather_per_image(cfg, sweep, runs)
    states.sort(key=lambda s: order[s["variant"]])
    atomic_write_json(path.with_suffix(".json"), {
        "sweep": sweep.name, "title": sweep.title, "profile": cfg.profile, "params": list(cols.values()),
        "reference": sweep.reference,
        "metrics": list(runs[0].config.eval.metrics) if runs else [],
        "evaluations": [{"name": e.name, "sets": list(e.sets), "kinds": list(e.kinds), "codecs": list(e.codecs)}
                        for e in sweep.evaluations],
        "variants": states,
    })
    return df


def load_sweep_results(cfg: Config, sweep_name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The tidy file and its JSON written by :func:`gather_sweep` (no recomputation)."""
    path = results_path(cfg, sweep_name)
    if not path.is_file():
        raise SweepError(f"{path}: no results for sweep {sweep_name!r}; run `moediffir sweep {sweep_name} "
                         f"--profile {cfg.profile}` first")
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    meta = read_record(path.with_suffix(".json")) or {}
    return df, meta
