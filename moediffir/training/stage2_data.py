"""Stage II data: the latents ``z_0`` the stage-I model samples for fixed LQ/GT crops of the training pairs
(paper §3.4: "generate 70,000 latent images using the weights from the first stage"; §4.1).

:func:`generate_stage2_data` writes ``stage2.num_latents`` LQ/GT crops of the seen training pairs (fixed, seeded
crops, no flips: the latent belongs to that exact crop) and their ``z_0`` sampled by the stage-I model
(``load_pipeline(<run_dir>/model).sample_latents``, ``stage2.sample_steps`` or ``sample.num_steps`` steps), in
shards of ``stage2.shard_size`` (``shard_XXXXX.pt``, each atomic, with its own seeded generator), so a rerun skips
finished shards and reproduces the same data; several processes split the shards. ``meta.json`` records what the
data was made from; data of an older stage-I model is regenerated. :class:`LatentShardDataset` reads them back
for :func:`moediffir.training.stage2.train_stage2`.

A shard holds tensors only (uint8 crops, float latents, int64 labels and indices), so it is read back with
``torch.load(weights_only=True)`` (:func:`~moediffir.utils.io.load_weights_only`): a file that holds anything
else is refused in one line naming it, and rerunning ``moediffir stage2-data`` rewrites it (shards of every
earlier version of the kit hold the same tensors and stay readable).

One run per stage folder: :func:`generate_stage2_data` holds the lock of the stage-II folder (and of the data
folder, when ``stage2.data_dir`` puts it elsewhere) while it works, as ``train stage2`` does, so a second
``stage2-data`` or a ``train stage2`` reading the shards meanwhile stops at once naming the first.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from moediffir.errors import MoEDiffIRError
from moediffir.training.pairs import PairedCropDataset, SampleKey, item_seed, training_pairs
from moediffir.training.runtime import TrainingConfigError, model_dir, progress_bar, stage_dir, stage_lock
from moediffir.utils.digests import model_fingerprint
from moediffir.utils.io import atomic_write_json, load_weights_only
from moediffir.utils.locks import folder_lock

STAGE = "stage2"
META_NAME = "meta.json"
_DATA_SALT = 0x57A6E2  # separates the stage-II crop seeds from stage I's


class Stage2DataError(MoEDiffIRError, FileNotFoundError):
    """The stage-II latents are missing, unfinished or made from another stage-I model."""


def stage2_data_dir(cfg) -> Path:
    """``stage2.data_dir`` or ``<stage2 dir>/data``."""
    return Path(cfg.stage2.data_dir) if cfg.stage2.data_dir else stage_dir(cfg, STAGE) / "data"


def shard_name(k: int) -> str:
    return f"shard_{k:05d}.pt"


def stage1_fingerprint(folder: str | Path) -> str:
    """:func:`~moediffir.utils.digests.model_fingerprint` of the stage-I parts of a model folder (``denoiser/``,
    the null context), so rewriting the folder with a compensator keeps it, and retraining stage I changes it."""
    try:
        return model_fingerprint(folder, ("denoiser", "null_context.safetensors"))
    except FileNotFoundError as exc:
        raise Stage2DataError(f"{folder}: no stage-I model (denoiser/ missing); train stage I first") from exc


def require_stage1_model(cfg) -> Path:
    """``<run_dir>/model`` when it holds a stage-I model; else an error naming the command that trains one."""
    folder = model_dir(cfg)
    if not (folder / "denoiser").is_dir():
        raise Stage2DataError(
            f"{folder}: no stage-I model; train it first with `moediffir train stage1 --profile {cfg.profile}` "
            "(or run notebook 02)"
        )
    return folder


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8)


def _data_meta(cfg, folder: Path, n_pairs: int, steps: int) -> dict[str, Any]:
    s2 = cfg.stage2
    return {
        "model_fingerprint": stage1_fingerprint(folder),
        "num_latents": s2.num_latents, "shard_size": s2.shard_size, "crop_size": s2.crop_size,
        "steps": steps, "scheduler": cfg.sample.scheduler, "seed": cfg.seed, "n_pairs": n_pairs,
        "benchmark": str(cfg.benchmark_dir), "preset": cfg.data.preset,
    }


def generate_stage2_data(cfg, progress: bool = True) -> Path:
    """Sample the stage-II latents (see the module docstring); return the data folder.

    Runs on one process or under ``accelerate launch`` (shard ``k`` goes to process ``k % N``), inside the lock of
    the stage-II folder (and of the data folder when it lies elsewhere); the ranks of one launch share them.

    Raises:
        Stage2DataError: no stage-I model. BenchmarkMissingError: no benchmark.
        FolderLockedError: another run writes the stage folder (the message names it); nothing was changed.
    """
    folder, out = stage_dir(cfg, STAGE), stage2_data_dir(cfg)
    with contextlib.ExitStack() as locks:
        locks.enter_context(stage_lock(folder))  # a second run (or train stage2) into this folder stops here
        if not _inside(out, folder):
            locks.enter_context(folder_lock(out, what="stage-II data folder", main_process_only=True))
        return _generate(cfg, progress)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def _generate(cfg, progress: bool) -> Path:
    """The run of :func:`generate_stage2_data`, inside the lock of its stage folder."""
    from accelerate import PartialState

    s2 = cfg.stage2
    if s2.num_latents < 1 or s2.shard_size < 1:
        raise TrainingConfigError(f"stage2.num_latents={s2.num_latents} and stage2.shard_size={s2.shard_size} must be >= 1")
    folder = require_stage1_model(cfg)
    pairs = training_pairs(cfg)
    out = stage2_data_dir(cfg)
    steps = s2.sample_steps or cfg.sample.num_steps
    meta = _data_meta(cfg, folder, len(pairs), steps)
    state = PartialState(cpu=cfg.device == "cpu")
    rank, world, main = state.process_index, state.num_processes, state.is_main_process
    n_shards = -(-s2.num_latents // s2.shard_size)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        old = json.loads((out / META_NAME).read_text()) if (out / META_NAME).is_file() else None
        if old is None or old.get("source") != meta:
            if old is not None:
                print(f"[stage2-data] {out}: made from other settings or another stage-I model; regenerating")
            for p in out.glob("shard_*.pt"):
                p.unlink()
            atomic_write_json(out / META_NAME, {"source": meta, "complete": False, "num_shards": n_shards})
    state.wait_for_everyone()

    from moediffir.pipelines.moediffir_pipeline import load_pipeline

    device = "cpu" if cfg.device == "cpu" or not torch.cuda.is_available() else str(state.device)
    pipe = load_pipeline(folder, device=device, overrides={"sample.scheduler": cfg.sample.scheduler})
    pipe.set_progress_bar_config(disable=True)
    if s2.crop_size % pipe.pixel_multiple:
        raise TrainingConfigError(
            f"stage2.crop_size={s2.crop_size} must be a multiple of {pipe.pixel_multiple} (the model's pixel grid)"
        )
    dataset = PairedCropDataset(cfg.benchmark_dir, pairs, s2.crop_size, augment=False)
    order = _selection(len(pairs), s2.num_latents, cfg.seed)
    task_routing = pipe.prompt_module.uses_task_labels
    mine = [k for k in range(n_shards) if k % world == rank and not (out / shard_name(k)).is_file()]
    bar = progress_bar(progress and main, len(mine), "stage II latents")
    for k in mine:
        ids = range(k * s2.shard_size, min(s2.num_latents, (k + 1) * s2.shard_size))
        items = [dataset[SampleKey(int(order[i]), item_seed(cfg.seed, _DATA_SALT, i), 0, 0)] for i in ids]
        lq = torch.stack([it["lq"] for it in items])  # (n, 3, c, c)
        gt = torch.stack([it["gt"] for it in items])  # (n, 3, c, c)
        labels = torch.tensor([it["label"] for it in items])  # (n,)
        gen = torch.Generator(device=pipe.device).manual_seed(cfg.seed * 1_000_003 + k)
        z0 = []
        for s in range(0, len(items), cfg.sample.batch_size):
            extra = {"task_labels": labels[s : s + cfg.sample.batch_size]} if task_routing else {}
            with torch.no_grad():
                z, _ = pipe.sample_latents(lq[s : s + cfg.sample.batch_size], num_inference_steps=steps,
                                           generator=gen, **extra)
            z0.append(z.float().cpu())  # (b, 4, c/8, c/8)
        _atomic_torch_save({
            "lq": _to_uint8(lq), "gt": _to_uint8(gt), "z0": torch.cat(z0), "label": labels,
            "row": torch.tensor([int(order[i]) for i in ids]), "item": torch.tensor(list(ids)),
        }, out / shard_name(k))
        bar.update(1)
    bar.close()
    state.wait_for_everyone()
    if main:
        missing = [k for k in range(n_shards) if not (out / shard_name(k)).is_file()]
        if missing:
            raise Stage2DataError(f"{out}: shards {missing[:5]} were not written")
        atomic_write_json(out / META_NAME, {"source": meta, "complete": True, "num_shards": n_shards,
                                            "scaling_factor": float(pipe.vae.config.scaling_factor)})
    state.wait_for_everyone()
    return out


def _selection(n_pairs: int, n: int, seed: int) -> np.ndarray:
    """Which pair each of the ``n`` latents comes from: seeded permutations of the pairs, concatenated."""
    rng = np.random.default_rng([seed, _DATA_SALT])
    reps = -(-n // n_pairs)
    return np.concatenate([rng.permutation(n_pairs) for _ in range(reps)])[:n]


class LatentShardDataset(Dataset):
    """Items of the stage-II shards: ``lq``/``gt`` ``(3, c, c)`` in [0, 1], ``z0`` ``(4, c/8, c/8)``, ``label``.

    Shards are memory-mapped (``torch.load(mmap=True)``), so the 70 000-latent paper set is not held in RAM.
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.dir = Path(data_dir)
        meta_path = self.dir / META_NAME
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if not meta.get("complete"):
            raise Stage2DataError(f"{self.dir}: no finished stage-II latents; run `moediffir stage2-data` first")
        self.meta = meta
        n, size = meta["source"]["num_latents"], meta["source"]["shard_size"]
        self.n, self.shard_size = n, size
        self._shards: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.n

    def _shard(self, k: int) -> dict[str, torch.Tensor]:
        if k not in self._shards:
            path = self.dir / shard_name(k)
            if not path.is_file():
                raise Stage2DataError(f"{path}: missing; rerun `moediffir stage2-data`")
            self._shards[k] = load_weights_only(  # tensors only: anything else is refused, naming the file
                path, mmap=True, fix="delete it and rerun `moediffir stage2-data` (it rewrites the missing shards)")
        return self._shards[k]

    def __getitem__(self, key: SampleKey | int) -> dict[str, Any]:
        k = SampleKey(*key) if isinstance(key, tuple) else SampleKey(int(key), 0, 0, 0)
        shard = self._shard(k.index // self.shard_size)
        j = k.index % self.shard_size
        return {
            "lq": shard["lq"][j].float() / 255.0,  # (3, c, c)
            "gt": shard["gt"][j].float() / 255.0,  # (3, c, c)
            "z0": shard["z0"][j].float(),  # (4, c/8, c/8)
            "label": int(shard["label"][j]),
            "index": k.index, "epoch": k.epoch, "batch": k.batch,
        }
