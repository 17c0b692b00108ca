"""A non-diffusion yardstick: a small residual CNN trained on the same pairs for the same time as stage I.

Not part of the paper. On a CPU budget a reader needs to know whether the diffusion prior pays for itself, so the
``mini`` results table puts next to MoE-DiffIR a plain residual network (ARCNN / DnCNN style: ``x + f(x)`` with
``layers`` 3x3 convolutions) trained with a mean-squared-error loss, the loss that PSNR rewards, on the same
seen-task crops (:class:`PairedCropDataset`, ``stage1.crop_size`` and ``stage1.batch_size``) for as many
wall-clock seconds as stage I took on the same machine. Its restorations are written in the benchmark's
``<set>/<task>/<stem>.png`` layout, so the evaluator scores them as an external method, exactly like the model.

Why MSE, leaky ReLUs and a rate of 1e-3 (measured on the ``mini`` crops, the 12 seen tasks x 6 held-out crops,
one torch thread): with an L1 loss and plain ReLUs, 1e-3 killed every ReLU within 100 steps and the network
returned its input; at 1e-4 it stayed alive but learned almost nothing in five minutes (+0.02 dB). The L1 loss
itself is the slow part: with leaky ReLUs at 1e-3 it was still at -0.02 dB after 450 s, where the MSE loss
reached +0.20 dB in 300 s. Its score depends on where the budget ends: the same run (same seed, same crops)
scores +0.20 dB after 862 steps and +0.08 after 1010, the README's one-thread run, because its gain on the mild
HEVC, VVC and WebP levels swings between about +0.2 and -0.2 dB from one few-hundred-step stretch to the next.
A cosine decay of the rate over the budget did not steady it (+0.08 in the README's run).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from moediffir.training.pairs import PairedCropDataset, ResumableBatchSampler, training_pairs
from moediffir.utils.devices import resolve_device
from moediffir.utils.image_tensors import to_tensor01
from moediffir.utils.io import atomic_save_png, atomic_write_json, read_image_rgb


class ResidualCNN(nn.Module):
    """``y = x + f(x)``: ``layers`` 3x3 convolutions with leaky ReLUs (slope 0.1, so no unit can die), the last one
    zero-initialised (starts as identity)."""

    def __init__(self, channels: int = 64, layers: int = 5) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.1, inplace=True)]
        last = nn.Conv2d(channels, 3, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.body = nn.Sequential(*mods, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.body(x)).clamp(0, 1)  # (B, 3, H, W) in [0, 1]


CNN_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}  # name -> loss of (output, ground truth)


def train_cnn_baseline(cfg, seconds: float, out_dir: str | Path, lr: float = 1e-3, channels: int = 64,
                       layers: int = 5, max_steps: int | None = None,
                       loss: str = "mse") -> tuple[ResidualCNN, dict[str, Any]]:
    """Train :class:`ResidualCNN` for ``seconds`` of wall time (and at most ``max_steps`` steps) on the seen-task
    crops with the ``loss`` of :data:`CNN_LOSSES` (``mse``, the default, or ``l1``); save ``cnn.pt`` + info."""
    if loss not in CNN_LOSSES:
        raise ValueError(f"train_cnn_baseline: loss={loss!r}; choose one of {tuple(CNN_LOSSES)}")
    loss_fn = CNN_LOSSES[loss]
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = ResidualCNN(channels, layers).to(device)
    dataset = PairedCropDataset(cfg.benchmark_dir, training_pairs(cfg), cfg.stage1.crop_size, cfg.stage1.augment)
    sampler = ResumableBatchSampler(len(dataset), cfg.stage1.batch_size, cfg.seed)
    loader = iter(DataLoader(dataset, batch_sampler=sampler, num_workers=0, generator=torch.Generator()))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0, step, losses = time.perf_counter(), 0, []
    model.train()
    while time.perf_counter() - t0 < seconds and (max_steps is None or step < max_steps):
        batch = next(loader)
        value = loss_fn(model(batch["lq"].to(device)), batch["gt"].to(device))
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        step += 1
        losses.append(float(value.detach()))
    model.eval()
    info = {"steps": step, "wall_s": round(time.perf_counter() - t0, 2), "budget_s": round(seconds, 2),
            "batch_size": cfg.stage1.batch_size, "crop_size": cfg.stage1.crop_size, "channels": channels,
            "layers": layers, "lr": lr, "loss": loss, "loss_first": losses[0] if losses else None,
            "loss_last_100": float(np.mean(losses[-100:])) if losses else None,
            "weights": "trained here from scratch"}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "cnn.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(out / "cnn.pt")
    atomic_write_json(out / "cnn_info.json", info)
    return model, info


@torch.no_grad()
def restore_items_with(fn, bench: Path, items, out_dir: str | Path) -> Path:
    """Write ``fn(lq01 (1, 3, H, W), gt01) -> (1, 3, H', W')`` of every item as ``<set>/<task>/<stem>.png``."""
    out = Path(out_dir)
    for r in items.itertuples(index=False):
        lq = to_tensor01(read_image_rgb(bench / r.path))[None]  # (1, 3, H, W)
        gt = to_tensor01(read_image_rgb(bench / r.gt_path))[None]
        y = fn(lq, gt)[0].permute(1, 2, 0).cpu().numpy()  # (H', W', 3)
        atomic_save_png(out / r.set / r.task / f"{r.stem}.png", np.round(y * 255.0).astype(np.uint8))
    return out


def restore_with_cnn(model: ResidualCNN, bench: Path, items, out_dir: str | Path) -> Path:
    """The CNN's restoration of every item's LQ image (whole image, one call each)."""
    device = next(model.parameters()).device
    return restore_items_with(lambda lq, gt: model(lq.to(device)), bench, items, out_dir)
