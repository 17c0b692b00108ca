"""Steps 3-7 of the pipeline for one batch of equal-size images: pad, encode, prompt conditions, noise and the
reverse process (paper §3.1-3.4, Eq. 1-2; inference as §4.1; docs/design.md §6).

:class:`BatchSampling` is a part of :class:`~moediffir.pipelines.moediffir_pipeline.MoEDiffIRPipeline` (the
pipeline inherits it): its methods read the pipeline's own networks, scheduler and device.

The prompt conditions (degradation prior, MoE-Prompt Module, SPADE modulations, Visual2Text context) are
prepared once per image, or once per batch of tiles on the tiled path, and again at every step when the prompt
module reads the timestep. Noise predictions of overlapping tiles are blended at every step
(:func:`~moediffir.pipelines.tiling.tiled_map`). The routing decisions of every (image, tile) are recorded,
detached, on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from moediffir.models.denoiser import DenoiserConditions
from moediffir.pipelines import vae_steps
from moediffir.pipelines.sampling import initial_noise, sample_loop
from moediffir.pipelines.tiling import Tile, pad_to_multiple, tile_batches, tiled_map

RoutingCallback = Callable[[int, torch.Tensor, torch.Tensor, list], Any]


def _split_routing(routing: list[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """Per-row copies (batch dim kept, size 1) of a batch's per-scale routing record, detached, on the CPU."""
    rows: list[list[dict[str, Any]]] = [[] for _ in range(n)]
    for scale in routing:
        for i in range(n):
            rec = {}
            for k, v in scale.items():
                if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n:
                    rec[k] = v[i : i + 1].detach().cpu()
                elif torch.is_tensor(v):
                    rec[k] = v.detach().cpu()
                else:
                    rec[k] = v
            rows[i].append(rec)
    return rows


class BatchSampling:
    """Steps 3-7 of :class:`~moediffir.pipelines.moediffir_pipeline.MoEDiffIRPipeline` for one batch."""

    def _conditions(self, z_lq: torch.Tensor, lq: torch.Tensor, labels: torch.Tensor | None,
                    t: torch.Tensor | None) -> DenoiserConditions:
        """Step 5 for a batch of images or tiles: the denoiser's prompt conditions (``t`` per step, or None)."""
        n = z_lq.shape[0]
        tt = None if t is None else t.reshape(1).expand(n).to(z_lq.device)  # (N,)
        return self.denoiser.prepare(
            z_lq.to(self.prompt_module.dtype), tt, lq_image=lq.float(), task_labels=labels
        )

    def _sample_batch(
        self,
        lq: torch.Tensor,
        image_ids: list[int],
        labels: torch.Tensor | None,
        generator: Any,
        tiled: bool | None,
        a: dict[str, Any],
        eta: float | None,
        callback: RoutingCallback | None,
        progress: Any,
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Steps 3-7 for one batch of equal-size LQ images ``(B, 3, H, W)`` with the resolved arguments ``a``
        (``tile_size``, ``tile_overlap``, ``tile_blend``, ``batch_size``): ``z_0`` ``(B, 4, gh, gw)`` and the
        routing records, one per (image, tile)."""
        device = self._execution_device
        f = self.vae_scale_factor
        tile_size, tile_blend, batch_size = a["tile_size"], a["tile_blend"], a["batch_size"]
        # 3. pad to the latent grid (edge pixels)
        lq_pad, _ = pad_to_multiple(lq.to(device), self.pixel_multiple)  # (B, 3, H', W')
        tiled = self.uses_tiles(lq.shape[-2:], tile_size, tiled)
        tile, overlap = tile_size // f, a["tile_overlap"] // f  # latent cells
        grid = (lq_pad.shape[-2] // f, lq_pad.shape[-1] // f)
        b = lq.shape[0]

        # 4. encode the LQ image -> z_lq
        show_tiles = self.progress_enabled  # a bar over the tiles of each tiled pass (several calls only)
        z_lq = vae_steps.encode(self.vae, lq_pad, f, tiled, tile, overlap, tile_blend, batch_size,
                                progress=show_tiles)  # (B, 4, gh, gw)

        # 5. prompt conditions, once per image (tiled: once per tile batch); per step if they read t
        per_step = bool(self.prompt_module.config.timestep_input)
        if tiled:
            batches = tile_batches(grid, tile, overlap, b, batch_size)
        else:
            batches = [[(i, Tile(0, 0, grid[0], grid[1])) for i in range(b)]]
        lab = None if labels is None else labels.to(device)

        def crops_of(items: list[tuple[int, Tile]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            if not tiled:
                return z_lq, lq_pad, lab
            zs = torch.cat([z_lq[i : i + 1, :, t.region(1)[0], t.region(1)[1]] for i, t in items])  # (N, 4, th, tw)
            xs = torch.cat([lq_pad[i : i + 1, :, t.region(f)[0], t.region(f)[1]] for i, t in items])  # (N, 3, 8th, 8tw)
            ls = None if lab is None else lab[[i for i, _ in items]]  # (N,)
            return zs, xs, ls

        routing: list[dict[str, Any]] = []

        def record(conds: list[DenoiserConditions]) -> None:
            routing.clear()
            for items, cond in zip(batches, conds):
                for (i, t), scales in zip(items, _split_routing(cond.routing, len(items))):
                    routing.append({"image": image_ids[i], "tile": t.as_tuple(), "scales": scales})

        conds: list[DenoiserConditions] = []
        if not per_step:
            conds = [self._conditions(*crops_of(items), None) for items in batches]
            record(conds)

        # 6. latents from pure noise
        latents = initial_noise((b, z_lq.shape[1], *grid), self.scheduler, generator, device)  # (B, 4, gh, gw)

        # 7. denoising loop (noise predictions blended over tiles when tiled)
        dtype = self.unet.dtype

        def eps_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if per_step:
                conds[:] = [self._conditions(*crops_of(items), t) for items in batches]
                record(conds)
            if not tiled:
                return self.denoiser.denoise(z_t.to(dtype), t.reshape(1).expand(b).to(device), conds[0])  # (B, 4, gh, gw)
            return tiled_map(
                lambda crops, k, items: self.denoiser.denoise(
                    crops[0].to(dtype), t.reshape(1).expand(len(items)).to(device), conds[k]
                ),
                [(z_t, 1)], grid, 1, tile, overlap, tile_blend, batch_size,
                progress=show_tiles, desc=f"denoise t={int(t)}",
            )

        step_cb = None
        if callback is not None:
            step_cb = lambda i, t, z: callback(i, t, z, list(routing))
        z0 = sample_loop(eps_fn, self.scheduler, latents, generator=generator, callback=step_cb, progress=progress,
                         eta=eta)
        return z0, routing  # (B, 4, gh, gw)
