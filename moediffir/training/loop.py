"""The loop every accelerate-run stage shares (paper §4.1; docs/design.md §5): run state, resume, the logging
window, checkpoints and ``summary.json``.

A stage (stage 0's two phases, :mod:`moediffir.training.prior`; stage I, :mod:`moediffir.training.stage1`;
stage II, :mod:`moediffir.training.stage2`) keeps only its own loss step; :class:`StageRun` holds the rest:

- **run state**: the optimiser step and the sampler's position (epoch, batch), restored from the newest
  checkpoint with :meth:`StageRun.resume` so that a resumed run continues the uninterrupted one exactly;
- **data**: :meth:`StageRun.start` prepares the stage folder and the log, and returns the batches of a
  :class:`~moediffir.training.pairs.ResumableBatchSampler` from that position (each process its slice);
- **the logging window**: :meth:`StageRun.end_step` collects each step's values; every ``log_every`` steps
  :meth:`StageRun.log_due` tells the stage to write a record, with the window's values averaged over processes
  (:meth:`StageRun.flush`) and the throughput since the last record;
- **checkpoints**: every ``checkpoint_every`` steps and at the end, atomically, with the run state in the meta
  (:meth:`StageRun.checkpoint`); a run of zero steps still leaves one;
- **summary**: :meth:`StageRun.summary` gives the fields every ``summary.json`` starts with.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from moediffir.training.checkpoint import latest_checkpoint, save_checkpoint
from moediffir.training.pairs import ResumableBatchSampler
from moediffir.training.runtime import checkpoint_meta, progress_bar, resume_from, stage_dir, start_stage_dir
from moediffir.training.training_log import TrainingLog


class StageRun:
    """The bookkeeping of one stage's run under ``accelerator`` (see the module docstring).

    Args:
        cfg: the resolved config. stage: ``"prior"``, ``"stage1"`` or ``"stage2"`` (its config section, its resume
            fingerprint and, unless ``folder`` is given, its folder).
        settings: the stage's config section, or an object with the same fields (``max_steps``, ``batch_size``,
            ``grad_accum``, ``num_workers``, ``log_every``, ``checkpoint_every``, ``keep_checkpoints``).
        resume: continue from the newest checkpoint of the stage folder (a fresh start when there is none).
        folder: the run's folder when it is not the stage's own (a phase of stage 0).
        seed: the seed of the data order (default ``cfg.seed``).
    """

    def __init__(self, cfg, stage: str, accelerator, settings: Any, resume: bool, folder: Path | None = None,
                 seed: int | None = None) -> None:
        self.cfg, self.stage, self.accelerator, self.s = cfg, stage, accelerator, settings
        self.out = stage_dir(cfg, stage) if folder is None else Path(folder)
        self.seed = cfg.seed if seed is None else int(seed)
        self.ckpt_root = self.out / "checkpoints"
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.main = accelerator.is_main_process
        self.latest: Path | None = latest_checkpoint(self.ckpt_root) if resume else None
        self.step = self.epoch = self.batch_pos = 0
        self.meta: dict[str, Any] = {}  # the resumed checkpoint's meta (stage-specific state), or {}

    # -- state --------------------------------------------------------------------------------------
    def resume(self, modules: Mapping[str, Any], optimizers: Mapping[str, Any],
               schedulers: Mapping[str, Any]) -> dict[str, Any]:
        """Load the newest checkpoint (if resuming) into the given objects and the run state; its meta."""
        if self.latest is None:
            return self.meta
        info = resume_from(self.latest, self.cfg, self.stage, modules=modules, optimizers=optimizers,
                           schedulers=schedulers, rank=self.rank, world_size=self.world)
        self.meta = info["meta"]
        self.step = int(info["step"])
        self.epoch, self.batch_pos = self.meta["sampler"]["epoch"], self.meta["sampler"]["batch"]
        if self.main:
            print(f"[{self.stage}] resumed from {self.latest} (step {self.step})")
        return self.meta

    def start(self, dataset: Dataset, progress: bool, desc: str, unit: str = "it", config_name: str = "config.json",
              keep: tuple[str, ...] | set[str] = ()) -> Iterator[dict[str, Any]]:
        """Prepare the stage folder and the log, start the bar and the clocks; the batches from the run state."""
        s = self.s
        start_stage_dir(self.accelerator, self.cfg, self.out, resuming=self.latest is not None,
                        config_name=config_name, keep=keep)
        self.log = TrainingLog(self.out, resume_step=self.step if self.latest is not None else None,
                               enabled=self.main)
        self.sampler = ResumableBatchSampler(len(dataset), s.batch_size, self.seed, rank=self.rank,
                                             world_size=self.world, start_epoch=self.epoch, start_batch=self.batch_pos)
        loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=s.num_workers,
                            pin_memory=self.accelerator.device.type == "cuda", generator=torch.Generator())
        self.bar = progress_bar(progress and self.main, s.max_steps, desc, initial=self.step, unit=unit)
        self.window: dict[str, list[torch.Tensor]] = {}
        self.t_window, self.steps_window = time.perf_counter(), 0
        self.t_start, self.start_step = time.perf_counter(), self.step
        return iter(loader)

    def consumed(self, batch: Mapping[str, Any]) -> None:
        """Move the sampler position past ``batch`` (what a checkpoint records)."""
        self.epoch, self.batch_pos = self.sampler.next_position(int(batch["epoch"][0]), int(batch["batch"][0]))

    @property
    def running(self) -> bool:
        return self.step < self.s.max_steps

    # -- the logging window ---------------------------------------------------------------------------
    def end_step(self, values: Mapping[str, torch.Tensor]) -> None:
        """Count one optimiser step; keep its ``values`` (0-d tensors) for the next record."""
        self.step += 1
        self.steps_window += 1
        for name, value in values.items():
            self.window.setdefault(name, []).append(value)
        self.bar.update(1)

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.s.max_steps

    @property
    def log_due(self) -> bool:
        return self._due(self.s.log_every)

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes (on the CPU)."""
        return self.accelerator.reduce(t.to(self.accelerator.device), "sum").cpu()

    def flush(self) -> tuple[dict[str, torch.Tensor], float]:
        """The window's values per step, averaged over processes (``(n,)`` each), and the samples per second
        since the last record; the window starts again."""
        means = {k: self.reduce_sum(torch.stack(v).double()) / self.world for k, v in self.window.items()}
        elapsed = time.perf_counter() - self.t_window
        s = self.s
        per_s = s.batch_size * s.grad_accum * self.world * self.steps_window / max(elapsed, 1e-9)
        self.window, self.t_window, self.steps_window = {}, time.perf_counter(), 0
        return means, per_s

    def write(self, record: dict[str, Any], losses: torch.Tensor) -> None:
        """Append ``record`` with the per-step ``losses`` of the window (``steps``, ``losses``)."""
        record["steps"] = [self.step - len(losses) + 1 + i for i in range(len(losses))]
        record["losses"] = [float(x) for x in losses]
        self.log.append(record)
        self.bar.set_postfix(loss=f"{record['loss']:.4f}")

    # -- checkpoints and the end ----------------------------------------------------------------------
    def checkpoint(self, modules: Mapping[str, Any], optimizers: Mapping[str, Any], schedulers: Mapping[str, Any],
                   state: Callable[[], dict[str, Any]], force: bool = False) -> None:
        """Save a checkpoint when one is due (or ``force``): the objects, the sampler position and ``state()``."""
        if not (force or self._due(self.s.checkpoint_every)):
            return
        meta = checkpoint_meta(self.cfg, self.stage, sampler={"epoch": self.epoch, "batch": self.batch_pos},
                               **state())
        save_checkpoint(self.ckpt_root, self.step, modules=modules, optimizers=optimizers, schedulers=schedulers,
                        meta=meta, rank=self.rank, world_size=self.world, barrier=self.accelerator.wait_for_everyone,
                        keep_last=self.s.keep_checkpoints)

    def finish(self, checkpoint: Callable[[], None]) -> None:
        """Close the bar and stop the clock; ``checkpoint()`` when the run left none (zero steps)."""
        self.bar.close()
        self.wall = time.perf_counter() - self.t_start
        if latest_checkpoint(self.ckpt_root) is None:  # max_steps == 0: still leave a resumable state
            checkpoint()

    def summary(self) -> dict[str, Any]:
        """The fields every ``summary.json`` starts with: steps, this run's steps, wall time and speed."""
        ran, wall = self.step - self.start_step, self.wall
        return {"steps": self.step, "steps_this_run": ran, "wall_s_this_run": round(wall, 3),
                "steps_per_s": ran / wall if wall > 0 and ran > 0 else None}

    def done(self) -> None:
        """Wait for every process; say this one is done."""
        self.accelerator.wait_for_everyone()
        print(f"[{self.stage}] rank {self.rank}/{self.world} done: {self.step} steps", flush=True)
