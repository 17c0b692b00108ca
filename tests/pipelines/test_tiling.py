"""Tiles and overlap blending (moediffir.pipelines.tiling): coverage, weights, and exact reconstruction."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from moediffir.pipelines.tiling import (
    Tile,
    blend_weights,
    pad_to_multiple,
    tile_batches,
    tile_grid,
    tile_starts,
    tiled_map,
)


@pytest.mark.parametrize("length,tile,overlap", [(8, 8, 2), (30, 8, 2), (125, 8, 2), (17, 8, 0), (64, 16, 15), (5, 8, 2)])
def test_tile_starts_cover_with_equal_tiles(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    size = min(tile, length)
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        assert 0 <= s and s + size <= length
        covered[s : s + size] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] + size == length  # the last tile ends at the border
    for a, b in itertools.pairwise(starts):
        assert size - (b - a) >= overlap  # neighbours overlap by at least `overlap`


def test_tile_starts_rejects_bad_overlap():
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(20, 8, 8)
    with pytest.raises(ValueError, match="tile size"):
        tile_starts(20, 0, 0)


def test_tile_grid_covers_every_cell_once_or_more():
    tiles = tile_grid(37, 21, 8, 2)
    assert len({(t.height, t.width) for t in tiles}) == 1
    cover = torch.zeros(37, 21)
    for t in tiles:
        rows, cols = t.region()
        cover[rows, cols] += 1
    assert (cover >= 1).all()
    assert tile_grid(6, 40, 8, 2)[0].height == 6  # a short side is one tile of that length


def test_tile_region_scales_to_pixels():
    t = Tile(2, 3, 4, 5)
    assert t.region(8) == (slice(16, 48), slice(24, 64))
    assert t.as_tuple() == (2, 3, 4, 5)


@pytest.mark.parametrize("mode", ["gaussian", "linear"])
def test_blend_weights_shape_symmetry_positivity(mode):
    w = blend_weights(16, 10, mode, overlap=4)
    assert w.shape == (16, 10) and w.dtype == torch.float32
    assert (w > 0).all()
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    assert w[8, 5] >= w[0, 0]


def test_linear_weights_are_one_inside_and_ramp_over_the_overlap():
    w = blend_weights(12, 12, "linear", overlap=3)[6]  # a middle row: 1 across the rows' interior
    assert torch.allclose(w[4:8], torch.ones(4))
    assert torch.allclose(w[:4], torch.tensor([0.25, 0.5, 0.75, 1.0]))
    with pytest.raises(ValueError, match="blend"):
        blend_weights(4, 4, "cosine")


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_tiled_map_of_pointwise_fn_equals_direct(blend):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 13, 22, generator=g)  # latents on a 13 x 22 grid
    x = torch.rand(2, 3, 13 * 8, 22 * 8, generator=g)  # pixels aligned to it

    def fn(zz, xx):  # pointwise in space: upsampled latent channel mean + pixels
        return F.interpolate(zz.mean(1, keepdim=True), scale_factor=8, mode="nearest") + xx * 2.0

    calls = []

    def tile_fn(crops, k, items):
        calls.append((k, items))
        return fn(crops[0], crops[1])

    out = tiled_map(tile_fn, [(z, 1), (x, 8)], (13, 22), 8, tile=8, overlap=3, blend=blend, tile_batch=5)
    assert out.shape == (2, 3, 104, 176)
    assert torch.allclose(out, fn(z, x), atol=1e-5)
    assert len(tile_grid(13, 22, 8, 3)) > 4  # really several tiles
    assert [items for _, items in calls] == tile_batches((13, 22), 8, 3, 2, 5)
    assert [k for k, _ in calls] == list(range(len(calls)))


def test_tiled_map_single_tile_is_exact_for_any_fn():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 8, 8, generator=g)
    conv = torch.nn.Conv2d(2, 5, 3, padding=1)
    fn = lambda t: conv(t) + t.mean(dim=(1, 2, 3), keepdim=True)
    with torch.no_grad():
        out = tiled_map(lambda c, k, i: fn(c[0]), [(x, 1)], (8, 8), 1, tile=8, overlap=2, tile_batch=3)
        assert torch.equal(out, fn(x))  # one tile, one call: weight 1, no blending
        split = tiled_map(lambda c, k, i: fn(c[0]), [(x, 1)], (8, 8), 1, tile=8, overlap=2, tile_batch=2)
        assert torch.allclose(split, fn(x), atol=1e-6)  # images split over calls: same up to kernel rounding


def test_tiled_map_checks_alignment_and_output_shape():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="aligned"):
        tiled_map(lambda c, k, i: c[0], [(x, 1)], (8, 8), 1, tile=4, overlap=0)
    with pytest.raises(ValueError, match="expected"):
        tiled_map(lambda c, k, i: c[0][..., :2, :2], [(x, 1)], (16, 16), 1, tile=4, overlap=0)


def test_pad_to_multiple_repeats_edges_and_crops_back():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    padded, (h, w) = pad_to_multiple(x, 4)
    assert padded.shape == (2, 3, 8, 8) and (h, w) == (5, 7)
    assert torch.equal(padded[..., :5, :7], x)
    assert torch.equal(padded[..., 7, :7], x[..., 4, :])  # bottom rows repeat the last row
    assert torch.equal(padded[..., :5, 7], x[..., :, 6])
    same, _ = pad_to_multiple(x[..., :4, :4], 4)
    assert same.shape == (2, 3, 4, 4)


def _identity_map(x: torch.Tensor, tile_batch: int, progress: bool) -> torch.Tensor:
    return tiled_map(lambda c, k, i: c[0] * 2.0, [(x, 1)], tuple(x.shape[-2:]), 1, tile=4, overlap=1,
                     tile_batch=tile_batch, progress=progress, desc="decode")


def test_tiled_map_shows_a_bar_over_the_tiles_when_asked_and_there_are_several_calls(capsys):
    x = torch.rand(1, 3, 10, 13, generator=torch.Generator().manual_seed(2))
    n = len(tile_grid(10, 13, 4, 1))
    quiet = _identity_map(x, tile_batch=2, progress=False)
    assert capsys.readouterr().err == ""
    shown = _identity_map(x, tile_batch=2, progress=True)
    err = capsys.readouterr().err
    assert "decode" in err and f"/{n} " in err and "tile" in err  # e.g. "decode:   0%|    | 0/12 [00:00<?, ?tile/s]"
    assert torch.equal(shown, quiet)  # the bar changes nothing
    _identity_map(x, tile_batch=n, progress=True)  # one call: nothing to follow
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def smoke_pipe(tmp_path_factory):
    from moediffir.config import resolve_config
    from moediffir.pipelines.moediffir_pipeline import load_pipeline
    from moediffir.weights.model_folder import build_fresh_model_folder

    return load_pipeline(build_fresh_model_folder(tmp_path_factory.mktemp("tiles") / "model",
                                                  resolve_config("smoke")), device="cpu")


def test_a_tiled_restore_shows_its_tiles_unless_the_pipeline_progress_is_off(smoke_pipe, capsys):
    image = torch.rand(1, 3, 100, 150, generator=torch.Generator().manual_seed(3))  # smoke tiles: 64 px

    def restore() -> torch.Tensor:
        return smoke_pipe(image, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                          output_type="pt", batch_size=2).images

    smoke_pipe.set_progress_bar_config(disable=True)
    quiet = restore()
    assert capsys.readouterr().err == ""
    smoke_pipe.set_progress_bar_config(disable=False)
    shown = restore()
    err = capsys.readouterr().err
    assert all(bar in err for bar in ("encode:", "denoise t=", "decode:")), err  # one bar per tiled pass
    assert torch.equal(shown, quiet)
