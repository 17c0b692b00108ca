"""What the training stages share: accelerate set-up, run folders, resume checks (paper §4.1; docs/design.md §5).

Nothing here implements an equation; it keeps the stages' plumbing identical (stage 0 of ``mini``, stages I and
II):

- :func:`make_accelerator`: one ``accelerate.Accelerator`` for CPU, one GPU or ``accelerate launch`` DDP, with
  mixed precision only on CUDA (``"no"`` on CPU whatever the profile says, reported in the logs);
- :func:`stage_dir` / :func:`model_dir`: ``<run_dir>/stage1``, ``<run_dir>/stage2`` (or ``stageN.out_dir``) and
  the model folder ``<run_dir>/model`` that the pipeline loads;
- :func:`check_resume_config`: a checkpoint only resumes under the settings that produced it (steps, logging
  and checkpoint cadence may change);
- :func:`check_fresh_start` / :func:`start_stage_dir`: a run without ``--resume`` never deletes an earlier run's
  checkpoints unless asked to (``--overwrite``), and only once every input has been read and every network built;
- :func:`stage_lock`: one run per stage folder (:func:`~moediffir.utils.locks.folder_lock`); the ranks of one
  ``accelerate launch`` share it, only the main process takes the lock.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from moediffir.config import config_to_dict, save_config
from moediffir.errors import MoEDiffIRError
from moediffir.training.checkpoint import load_checkpoint, read_checkpoint_info
from moediffir.utils.locks import folder_lock, is_lock_file


class TrainingConfigError(MoEDiffIRError, ValueError):
    """A training setting is invalid or does not match the checkpoint being resumed."""


def stage_dir(cfg, stage: str) -> Path:
    """Folder of a stage's checkpoints, logs and data: ``stageN.out_dir`` or ``<run_dir>/<stage>``."""
    section = getattr(cfg, stage)
    return Path(section.out_dir) if section.out_dir else cfg.run_dir / stage


def model_dir(cfg) -> Path:
    """The trained model folder (``save_model_folder`` / ``load_pipeline``): ``<run_dir>/model``."""
    return cfg.run_dir / "model"


def stage_lock(folder: Path) -> AbstractContextManager[Path | None]:
    """The lock of a stage folder for the whole run (:func:`~moediffir.utils.locks.folder_lock`): a second run
    into it stops at once naming the first. Under ``accelerate launch`` only the main process (``RANK`` 0) takes
    it; its other ranks share the folder (a second launch is stopped by its own main process)."""
    return folder_lock(folder, what="stage folder", main_process_only=True)


def is_distributed_launch() -> bool:
    """True inside ``accelerate launch`` / ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_mixed_precision(requested: str, use_cpu: bool) -> str:
    if requested not in ("no", "fp16", "bf16"):
        raise TrainingConfigError(f"mixed_precision={requested!r}: choose 'no', 'fp16' or 'bf16'")
    return "no" if use_cpu else requested


def make_accelerator(cfg, mixed_precision: str):
    """An ``Accelerator`` for ``cfg.device`` (``auto``/``cpu``/``cuda``/``cuda:N``) with DDP that tolerates
    experts a batch never routed to (``find_unused_parameters``)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    device = cfg.device
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise TrainingConfigError(f"device={device!r}: choose 'auto', 'cpu', 'cuda' or 'cuda:N'")
    use_cpu = device == "cpu" or not torch.cuda.is_available()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingConfigError(f"device={device!r} but CUDA is not available; use --device cpu")
    if device.startswith("cuda:") and not is_distributed_launch():
        torch.cuda.set_device(int(device.split(":", 1)[1]))
    if not is_distributed_launch():  # several runs in one process (tests, notebooks) may differ in settings
        AcceleratorState._reset_state()
        GradientState._reset_state()
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=resolve_mixed_precision(mixed_precision, use_cpu),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def check_fresh_start(folder: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a fresh start over an earlier run's checkpoints unless ``overwrite`` (``resume`` continues them).

    Called before anything is built or written, so a refused start leaves every file as it was.
    """
    from moediffir.training.checkpoint import list_checkpoints

    found = list_checkpoints(folder / "checkpoints")
    if found and not (resume or overwrite):
        raise TrainingConfigError(
            f"{folder}: holds {len(found)} checkpoint(s) of an earlier run (newest {found[-1][1].name}); pass "
            "--resume to continue it, or --overwrite to start afresh and replace them (nothing was changed)"
        )


def start_stage_dir(accelerator, cfg, folder: Path, resuming: bool, config_name: str = "config.json",
                    keep: Iterable[str] = ()) -> None:
    """Prepare the stage folder once everything is built: a fresh run first removes the earlier run's checkpoints
    and logs (allowed by :func:`check_fresh_start`; ``keep`` and the folder's lock stay), then the config is saved;
    every process waits for it."""
    if accelerator.is_main_process and not resuming and folder.is_dir():
        keep = set(keep)
        for p in folder.iterdir():
            if p.name in keep or is_lock_file(p.name):
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_config(cfg, folder, config_name)


# Settings that may change between a checkpoint and its resumption (lengths and cadence; stage 0 has a length
# per phase).
_MAY_CHANGE = {"max_steps", "vae_steps", "unet_steps", "checkpoint_every", "log_every", "keep_checkpoints",
               "num_workers", "out_dir"}


def resume_fingerprint(cfg, stage: str) -> dict[str, Any]:
    """The parts of ``cfg`` a resumed run must share with the run that wrote the checkpoint: the seed, the stage's
    own section and what the stage reads besides it (stage 0, ``"prior"``: its training photos; stages I and II:
    the method's model settings and the benchmark preset)."""
    d = config_to_dict(cfg)
    section = {k: v for k, v in d[stage].items() if k not in _MAY_CHANGE}
    if stage == "prior":
        return {"seed": d["seed"], "prior": section, "train_sets": d["data"]["train_sets"]}
    return {"seed": d["seed"], "model": d["model"], stage: section, "data.preset": d["data"]["preset"]}


def check_resume_config(saved: Mapping[str, Any], cfg, stage: str, where: str) -> None:
    """Raise :class:`TrainingConfigError` naming every setting that differs from the checkpoint's."""
    now = json_safe(resume_fingerprint(cfg, stage))
    diffs = []
    for key in now:
        a, b = saved.get(key), now[key]
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    if diffs:
        raise TrainingConfigError(
            f"{where}: cannot resume, the settings differ from the checkpoint's: {'; '.join(diffs[:8])}. "
            "Resume with the same settings, or train from scratch (without --resume)."
        )


def resume_from(latest: Path, cfg, stage: str, **objects: Any) -> dict[str, Any]:
    """Resume a stage from its checkpoint ``latest``: refuse other settings (:func:`check_resume_config`), then
    load it into ``objects`` (``modules``, ``optimizers``, ``schedulers``, ``rank``, ``world_size`` of
    :func:`~moediffir.training.checkpoint.load_checkpoint`); its info dict."""
    info = read_checkpoint_info(latest)
    check_resume_config(info["meta"].get("fingerprint", {}), cfg, stage, str(latest))
    return load_checkpoint(latest, **objects)


def checkpoint_meta(cfg, stage: str, **state: Any) -> dict[str, Any]:
    """What a stage's checkpoint records beside the weights: the run's ``state`` (sampler position, first
    evaluation, ...), the settings a resumption must share (:func:`resume_fingerprint`) and the whole config."""
    return {**state, "fingerprint": json_safe(resume_fingerprint(cfg, stage)), "config": json_safe(config_to_dict(cfg))}


def json_safe(value: Any) -> Any:
    """Tuples -> lists recursively (what JSON round-trips to), so saved and current configs compare equal."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class _NoBar:
    """Stands in for a tqdm bar on non-main ranks or when progress is off."""

    def update(self, n: int = 1) -> None: ...

    def set_postfix(self, **_: Any) -> None: ...

    def close(self) -> None: ...


def progress_bar(enabled: bool, total: int, desc: str, initial: int = 0, unit: str = "it"):
    """A tqdm bar when ``enabled`` (main process), else an object with the same no-op methods."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
