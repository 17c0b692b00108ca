"""Tiles with overlap blending for images larger than one tile (docs/design.md §6; StableSR's tiled sampling).

The paper samples 256/512 px crops; restoring a whole photo needs tiles. Every tiled step of the pipeline --
VAE encoding of the LQ image, the noise prediction at each denoising step, and the (compensated) VAE decoding
-- runs on the same grid of overlapping tiles, expressed in **latent cells** (one cell = ``factor`` pixels,
8 for SD). A tensor aligned to that grid has ``factor`` pixels per cell (images) or 1 (latents).

- :func:`tile_starts` / :func:`tile_grid`: tiles of one size, a stride of ``tile - overlap``, the last tile
  shifted back to end at the border, so every tile has the same shape (tiles batch together) and every cell is
  covered. A side shorter than the tile gets one tile of that side's length.
- :func:`blend_weights`: per-tile weights. ``gaussian`` is StableSR's (variance 0.01 of the tile size,
  i.e. ``sigma = 0.1 * tile``); ``linear`` ramps up over the overlap at each side and is 1 in the interior.
  Blended values are ``sum_t w_t x_t / sum_t w_t`` in float32; a single tile covering everything gets weight 1,
  so it reproduces the untiled computation exactly.
- :func:`tiled_map`: run ``fn`` over (batches of) tiles of several aligned inputs and blend its outputs, with a
  progress bar over the tiles (:func:`tile_progress`) when asked and the image needs more than one call.

StableSR blends the noise predictions of overlapping latent tiles at every step (MultiDiffusion style) rather
than stitching finished tiles; :class:`~moediffir.pipelines.moediffir_pipeline.MoEDiffIRPipeline` does the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

BLEND_MODES = ("gaussian", "linear")


@dataclass(frozen=True)
class Tile:
    """One tile in latent cells: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int

    def region(self, factor: int = 1) -> tuple[slice, slice]:
        """Row and column slices of this tile on a grid with ``factor`` pixels per cell."""
        return (
            slice(self.top * factor, (self.top + self.height) * factor),
            slice(self.left * factor, (self.left + self.width) * factor),
        )

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.top, self.left, self.height, self.width)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of equal tiles of ``tile`` cells covering ``length`` cells with at least ``overlap`` overlap."""
    if tile < 1:
        raise ValueError(f"tile size must be >= 1 cell, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)  # the last tile ends at the border
    return sorted(set(starts))


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Row-major tiles covering a ``height x width`` grid (all of the same size ``min(tile, side)``)."""
    th, tw = min(tile, height), min(tile, width)
    ov_h, ov_w = min(overlap, th - 1), min(overlap, tw - 1)
    return [
        Tile(top, left, th, tw)
        for top in tile_starts(height, th, ov_h)
        for left in tile_starts(width, tw, ov_w)
    ]


def blend_weights(height: int, width: int, mode: str = "gaussian", overlap: int = 0) -> torch.Tensor:
    """Float32 weights ``(height, width)`` of one tile (``overlap`` in the same units, used by ``linear``)."""
    if mode not in BLEND_MODES:
        raise ValueError(f"tile blend {mode!r}: choose one of {BLEND_MODES}")

    def profile(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        if mode == "gaussian":
            mid, sigma = (n - 1) / 2.0, 0.1 * n  # StableSR: var = 0.01 in units of the tile size
            return torch.exp(-((i - mid) ** 2) / (2.0 * sigma**2))
        ramp = max(int(overlap), 0) + 1
        return torch.minimum(torch.ones(n, dtype=torch.float64), torch.minimum(i + 1, n - i) / ramp)

    w = profile(height)[:, None] * profile(width)[None, :]  # (h, w)
    return w.clamp_min(1e-12).to(torch.float32)


def tile_batches(
    grid: tuple[int, int], tile: int, overlap: int, batch: int, tile_batch: int
) -> list[list[tuple[int, Tile]]]:
    """The ``(image index, Tile)`` rows of each ``fn`` call of :func:`tiled_map`, in call order (tile-major:
    the images of one tile share a call)."""
    items = [(b, t) for t in tile_grid(grid[0], grid[1], tile, overlap) for b in range(batch)]
    step = max(1, int(tile_batch))
    return [items[s : s + step] for s in range(0, len(items), step)]


def tiled_map(
    fn: Callable[[list[torch.Tensor], int, list[tuple[int, Tile]]], torch.Tensor],
    inputs: Sequence[tuple[torch.Tensor, int]],
    grid: tuple[int, int],
    out_factor: int,
    tile: int,
    overlap: int,
    blend: str = "gaussian",
    tile_batch: int = 4,
    progress: bool = False,
    desc: str = "tiles",
) -> torch.Tensor:
    """Apply ``fn`` tile by tile and blend the results into one tensor.

    Args:
        fn: ``fn(crops, batch_index, items) -> (N, C_out, th * out_factor, tw * out_factor)``; ``crops`` holds one
            ``(N, C_i, th * f_i, tw * f_i)`` crop batch per input, ``items`` the ``(image index, Tile)`` of each of
            the ``N`` rows, ``batch_index`` counts the calls (same order for the same grid and batch size, so a
            caller may cache per-batch state such as conditions).
        inputs: ``(tensor (B, C_i, gh * f_i, gw * f_i), f_i)`` pairs aligned to the grid.
        grid: ``(gh, gw)`` in cells. ``tile``/``overlap``: in cells.
        out_factor: pixels per cell of the output. ``tile_batch``: rows per ``fn`` call.
        progress: show a progress bar over the tiles (``desc``: its label) when there is more than one call.

    Returns:
        ``(B, C_out, gh * out_factor, gw * out_factor)`` float32, on the device of the first input.

    Memory: besides the inputs, one output-sized accumulator and one ``(H, W)`` weight sum (blended in place);
    the crops of one call at a time.
    """
    if not inputs:
        raise ValueError("tiled_map: no inputs")
    gh, gw = grid
    batch = inputs[0][0].shape[0]
    for x, f in inputs:
        if x.shape[0] != batch or tuple(x.shape[-2:]) != (gh * f, gw * f):
            raise ValueError(f"tiled_map: input {tuple(x.shape)} is not aligned to grid {grid} x {f}")
    tiles = tile_grid(gh, gw, tile, overlap)
    th, tw = tiles[0].height, tiles[0].width
    if len(tiles) == 1:
        weight = torch.ones(th * out_factor, tw * out_factor)  # one tile: no blending, exact
    else:
        weight = blend_weights(th * out_factor, tw * out_factor, blend, overlap * out_factor)
    device = inputs[0][0].device
    weight = weight.to(device)  # (th*f, tw*f)
    acc: torch.Tensor | None = None
    wsum = torch.zeros(gh * out_factor, gw * out_factor, device=device)  # (H, W)
    for t in tiles:
        rows, cols = t.region(out_factor)
        wsum[rows, cols] += weight
    calls = tile_batches(grid, tile, overlap, batch, tile_batch)
    with tile_progress(progress and len(calls) > 1, sum(map(len, calls)), desc) as bar:
        for k, chunk in enumerate(calls):
            crops = [  # one (N, C_i, th*f_i, tw*f_i) batch per input
                torch.cat([x[b : b + 1, :, t.region(f)[0], t.region(f)[1]] for b, t in chunk]) for x, f in inputs
            ]
            out = fn(crops, k, chunk)
            expected = (len(chunk), th * out_factor, tw * out_factor)
            if out.shape[0] != expected[0] or tuple(out.shape[-2:]) != expected[1:]:
                raise ValueError(f"tiled_map: fn returned {tuple(out.shape)}, expected (N, C, th, tw) = {expected}")
            if acc is None:
                acc = torch.zeros(batch, out.shape[1], gh * out_factor, gw * out_factor, device=device)  # (B, C, H, W)
            out = out.to(device=device, dtype=torch.float32)
            for n, (b, t) in enumerate(chunk):
                rows, cols = t.region(out_factor)
                acc[b, :, rows, cols] += out[n] * weight
            bar.update(len(chunk))
    assert acc is not None
    return acc.div_(wsum)  # (B, C, H, W), in place: no second image-sized tensor


def tile_progress(enabled: bool, total: int, desc: str = "tiles"):
    """A tqdm bar over ``total`` tiles on stderr that disappears when done (a disabled one, whose methods do
    nothing, unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tile", leave=False, disable=not enabled, dynamic_ncols=True)


def num_tiles(height: int, width: int, tile: int, overlap: int) -> int:
    """How many tiles :func:`tile_grid` makes (for progress reporting)."""
    return len(tile_grid(height, width, tile, overlap))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``(B, C, H, W)`` on the bottom/right by repeating edge pixels to multiples of ``multiple``.

    Returns the padded tensor and the original ``(H, W)`` (crop back with ``x[..., :H, :W]``).
    """
    h, w = x.shape[-2:]
    ph, pw = math.ceil(h / multiple) * multiple - h, math.ceil(w / multiple) * multiple - w
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")  # (B, C, H+ph, W+pw)
    return x, (h, w)
