"""The evaluation of paper §4.2 and appendix B: restore every test item, score it, save every number.

:func:`run_evaluation` is what ``moediffir evaluate`` and notebook 06 call:

1. select the items (:func:`~moediffir.evaluation.protocol.select_items`: test sets x tasks, seen and unseen);
2. build the metric suite first, so a missing pretrained metric weight fails before any restoration;
3. restore with the model folder's pipeline, resumably (:mod:`moediffir.evaluation.benchmark_restore`), once per batch,
   decoded with the compensator (``moe-diffir``) and with the plain VAE decoder (``moe-diffir (no compensator)``);
4. match every ``--external NAME=DIR`` folder (:mod:`moediffir.evaluation.external`);
5. score every method the same way (:mod:`moediffir.evaluation.scoring`), the compressed input included
   (``no restoration``);
6. save the numbers under ``<results>/<profile>/metrics/`` (every file is listed in
   :mod:`moediffir.evaluation.results`);
7. its callers then draw every table and figure from those files
   (:func:`moediffir.report.regenerate.regenerate_report`).

:func:`evaluate_model` is the reusable core for the ablation sweeps: one model folder, its restorations and
scores in a folder of its own, the tidy results returned. :func:`evaluate_launched` is one process of
``moediffir evaluate`` under ``accelerate launch`` (its rank's shard, then the merge). One evaluation per results
folder (or per shard of it) at a time: each holds the folder's lock (:func:`~moediffir.utils.locks.folder_lock`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from moediffir.config import Config
from moediffir.data.sharded_build import merge_if_sharded
from moediffir.evaluation import analysis, benchmark_restore, protocol, scoring, sharded_evaluation
from moediffir.evaluation.external import ExternalMatch, match_external
from moediffir.evaluation.protocol import METHOD_LQ, METHOD_MOE, METHOD_NO_COMPENSATOR, EvaluationError
from moediffir.evaluation.results import (
    METRICS_DIR,
    RESTORED_DIR,
    EvaluationResult,
    Scored,
    log_message,
    method_paths,
    read_csv,
    write_evaluation,
)
from moediffir.sharding import Shard
from moediffir.utils.locks import folder_lock

LQ_WEIGHTS = "n/a (the compressed input)"
EXTERNAL_WEIGHTS = "external method (run by the user)"


# --------------------------------------------------------------------------------------------- model
def default_model_dir(cfg: Config) -> Path:
    """``<runs>/<profile>/model``: where notebook 03 (stage II) leaves the trained model."""
    return cfg.run_dir / "model"


def require_model_dir(model_dir: str | Path | None, cfg: Config) -> Path:
    """The model folder to evaluate; a clear error naming the notebooks that write it when it is absent."""
    folder = Path(model_dir) if model_dir is not None else default_model_dir(cfg)
    if not (folder / "config.json").is_file():
        raise EvaluationError(
            f"{folder}: no trained model folder (config.json missing). Train it first: run notebooks "
            f"02_stage1_training then 03_stage2_training (or `moediffir train stage1 --profile {cfg.profile}`, "
            f"`moediffir stage2-data --profile {cfg.profile}`, `moediffir train stage2 --profile {cfg.profile}`), "
            f"which write {default_model_dir(cfg)}; or pass --model DIR"
        )
    return folder


def model_weights_label(model_dir: str | Path) -> str:
    """``model_weights`` of our rows: which parts of the model have random weights (model_info.json)."""
    from moediffir.provenance import PRIOR_TRAINED_LABEL
    from moediffir.weights.model_folder import read_model_info

    info = read_model_info(model_dir)
    random_parts = info.get("random_weights") or []
    if random_parts:
        return "random weights: " + ", ".join(random_parts)
    if (info.get("provenance") or {}).get("unet") == "trained here":
        return f"{PRIOR_TRAINED_LABEL} ({info.get('profile', 'unknown')} profile)"
    return f"pretrained backbone + trained MoE-DiffIR parts ({info.get('profile', 'unknown')} profile)"


def load_model(model_dir: str | Path, cfg: Config, device: str | None = None):
    """The pipeline of a model folder with ``cfg.sample`` as its sampling settings, progress bars off."""
    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    overrides = {f"sample.{k}": v for k, v in asdict(cfg.sample).items()}
    pipe = load_pipeline(model_dir, device=device or cfg.device, dtype=cfg.sample.dtype, overrides=overrides)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _restore_ours(cfg: Config, folder: Path, share: pd.DataFrame, restored_root: Path, device: str | None,
                  log, on_batch) -> tuple[dict[str, benchmark_restore.RestoreStats], pd.DataFrame, list[str]]:
    pipe = load_model(folder, cfg, device)
    methods: dict[str, float | None] = {}
    if pipe.compensator is not None:
        methods[METHOD_MOE] = cfg.sample.fusion_weight
    else:
        log_message(log, f"[evaluate] {folder} has no decoder compensator (stage II not run): only "
                  f"{METHOD_NO_COMPENSATOR!r} is evaluated")
    methods[METHOD_NO_COMPENSATOR] = None
    stats = benchmark_restore.restore_items(pipe, share, cfg.benchmark_dir, restored_root, methods, cfg,
                                            benchmark_restore.folder_fingerprint(folder), log=log,
                                            on_batch=on_batch)
    return stats, analysis.prompt_similarity(pipe), list(methods)


def score_share(
    cfg: Config, share: pd.DataFrame, folder: Path | None, matches: Mapping[str, ExternalMatch], suite, out: Path,
    *, cache: pd.DataFrame | None, device: str | None, log, on_batch, include_lq: bool,
) -> Scored:
    """Restore (resumably) and score the items of ``share``: every number an evaluation needs of them."""
    bench, restored_root = cfg.benchmark_dir, out / RESTORED_DIR
    weights_of = {METHOD_LQ: LQ_WEIGHTS}
    stats, similarity, ours = {}, None, []
    if folder is not None:
        stats, similarity, ours = _restore_ours(cfg, folder, share, restored_root, device, log, on_batch)
        weights_of.update({m: model_weights_label(folder) for m in ours})
    weights_of.update({name: EXTERNAL_WEIGHTS for name in matches})
    keys = {protocol.item_key(r) for r in share.itertuples(index=False)}
    paths = method_paths(share, bench, restored_root, ours, matches)
    per_image, features = [], {}
    for method, mpaths in paths.items():
        if method == METHOD_LQ and not include_lq:
            continue
        mpaths = {k: p for k, p in mpaths.items() if k in keys}
        t = time.perf_counter()
        rel_to = matches[method].folder if method in matches else (bench if method == METHOD_LQ else restored_root)
        per_image.append(scoring.score_images(suite, share, mpaths, bench, method, rel_to=rel_to, cache=cache))
        if "fid" in suite.metrics:
            features[method] = scoring.image_features(suite, mpaths)
        log_message(log, f"[evaluate] scored {method!r}: {len(mpaths)} images ({time.perf_counter() - t:.0f} s)")
    gt_feats = scoring.gt_features(suite, share, bench) if "fid" in suite.metrics else {}
    return Scored(pd.concat(per_image, ignore_index=True), features, gt_feats,
                  {m: w for m, w in weights_of.items() if m in paths}, ours, similarity, stats)


def run_evaluation(
    cfg: Config,
    model_dir: str | Path | None = None,
    externals: Mapping[str, str | Path] | None = None,
    *,
    use_model: bool = True,
    out_dir: str | Path | None = None,
    sets: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    device: str | None = None,
    log: Callable[[str], None] | None = print,
    on_batch: Callable[[int], None] | None = None,
    include_lq: bool = True,
    shard: Shard | None = None,
) -> EvaluationResult:
    """Evaluate the model (both decoders), the compressed input and every external method; write all numbers
    (see the module docstring; the tables and figures are :func:`~moediffir.report.regenerate.regenerate_report`'s).

    Args:
        cfg: resolved config (``eval.*`` chooses sets, tasks, images and metrics; ``sample.*`` the sampling).
        model_dir: model folder (default ``<runs>/<profile>/model``). use_model: False scores only the
            compressed input and the externals (no model needed).
        externals: ``{name: folder}`` of other methods' restored images.
        out_dir: results folder (default ``<results>/<profile>``). sets / tasks: restrict (default ``eval.*``).
        device: overrides ``cfg.device``. log: progress messages (None: silent).
        on_batch: called with the batch index after each restored batch (tests interrupt runs with it).
        include_lq: also score ``no restoration``.
        shard: evaluate only this shard's items and write its part (:mod:`moediffir.evaluation.sharded_evaluation`;
            ``moediffir evaluate --merge`` or ``moediffir report`` assembles the results).

    Raises :class:`~moediffir.utils.locks.FolderLockedError` (nothing changed) when another evaluation writes the
    same results folder (the same shard of it, for a shard); the message names it.
    """
    t0 = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else cfg.profile_results_dir
    with folder_lock(out, name=shard.name if shard is not None else "", what="results folder"):
        return _evaluate_locked(cfg, out, t0, model_dir, externals, use_model=use_model, sets=sets, tasks=tasks,
                                device=device, log=log, on_batch=on_batch, include_lq=include_lq,
                                shard=shard)


def _evaluate_locked(
    cfg: Config, out: Path, t0: float, model_dir: str | Path | None, externals: Mapping[str, str | Path] | None, *,
    use_model: bool, sets: Sequence[str] | None, tasks: Sequence[str] | None, device: str | None,
    log: Callable[[str], None] | None, on_batch: Callable[[int], None] | None, include_lq: bool,
    shard: Shard | None,
) -> EvaluationResult:
    """The evaluation of :func:`run_evaluation` into ``out``, inside the lock of that folder (or of its shard)."""
    merge_if_sharded(cfg)  # a benchmark built in shards gets its manifest first
    folder = require_model_dir(model_dir, cfg) if use_model else None
    request = {"sets": list(sets or cfg.eval.test_sets), "tasks": list(tasks or cfg.eval.tasks) or None,
               "strict": tasks is not None}
    items = protocol.select_items(cfg.benchmark_dir, request["sets"], request["tasks"], cfg.eval.max_images,
                                  cfg.data.preset, strict=request["strict"])
    skipped = list(items.attrs.get("skipped_tasks", []))
    if skipped:
        log_message(log, f"[evaluate] tasks not in the benchmark, skipped: {', '.join(skipped)}")
    share = items if shard is None else sharded_evaluation.share_of(items, shard)
    log_message(log, f"[evaluate] {len(share)} items: {share['set'].nunique()} set(s) x {share['task'].nunique()} "
              f"task(s)" + (f" (shard {shard} of {len(items)} items)" if shard is not None else ""))

    from moediffir.metrics import MetricSuite

    suite = MetricSuite.from_config(cfg, device=device)  # checks pretrained metric weights before restoring
    matches: dict[str, ExternalMatch] = {}  # matched before restoring: a bad folder fails at once
    for name, ext_dir in (externals or {}).items():
        if name in protocol.BUILTIN_METHODS:
            raise EvaluationError(f"--external {name}: that name is one of ours {protocol.BUILTIN_METHODS}; rename it")
        matches[name] = match_external(name, ext_dir, items)
        log_message(log, "[evaluate] " + matches[name].summary())
    cache_file = (sharded_evaluation.part_folder(out, shard) if shard is not None else out / METRICS_DIR) / "per_image.csv"
    cache = read_csv(cache_file) if cache_file.is_file() else None
    scored = score_share(cfg, share, folder, matches, suite, out, cache=cache, device=device, log=log,
                         on_batch=on_batch, include_lq=include_lq)
    if shard is not None:
        part = sharded_evaluation.write_part(cfg, out, shard, share, scored, suite, folder, matches, skipped, include_lq, request)
        log_message(log, f"[evaluate] shard {shard}: wrote {part}; merge with `moediffir evaluate --merge`")
        return EvaluationResult(pd.DataFrame(columns=list(scoring.RESULT_COLUMNS)), scored.per_image, out,
                                externals=matches, restore_stats=scored.stats, skipped_tasks=skipped)
    res = write_evaluation(cfg, out, items, scored, suite, folder, matches, skipped, t0=t0, log=log)
    sharded_evaluation.remove_parts(out)  # parts of an earlier sharded run are superseded by these results
    return res


def evaluate_model(
    model_dir: str | Path,
    cfg: Config,
    sets: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    *,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Restore and score one trained model (for the ablation sweeps, one call per variant).

    Writes the restored images and the numbers (``metrics/``) under ``out_dir`` (default
    ``<results>/<profile>``), skips images already restored by the same model and settings, and returns the
    tidy results (:data:`~moediffir.evaluation.scoring.RESULT_COLUMNS`) of our method(s) only: ``moe-diffir``
    (decoder compensator; absent when the model has none) and ``moe-diffir (no compensator)``.
    """
    res = run_evaluation(cfg, model_dir, None, out_dir=out_dir, sets=sets, tasks=tasks, device=device, log=log,
                         include_lq=False)
    return res.results


# ---------------------------------------------------------------------------------- accelerate launch
def launched_shard() -> Shard | None:
    """The shard of this process under ``accelerate launch`` / ``torchrun`` (``RANK`` of ``WORLD_SIZE``)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return Shard.from_rank(int(os.environ.get("RANK", "0") or 0), world) if world > 1 else None


def evaluate_launched(cfg: Config, shard: Shard, model_dir: str | Path | None, externals: Mapping[str, str],
                      *, use_model: bool = True, device: str | None = None) -> EvaluationResult | None:
    """One process of ``moediffir evaluate`` under ``accelerate launch``: its rank's shard on its own device,
    then (main process, once every rank is done) the merge; the merged result on the main process, else None."""
    from accelerate import PartialState

    state = PartialState(cpu=(device or cfg.device) == "cpu")
    run_evaluation(cfg, model_dir, externals, use_model=use_model, device=device or str(state.device), shard=shard)
    print(f"[evaluate] shard {shard} done", flush=True)
    state.wait_for_everyone()
    res = None
    if state.is_main_process:
        res = sharded_evaluation.merge_evaluation(cfg, count=shard.count)  # under the results folder's lock
    state.wait_for_everyone()
    return res
