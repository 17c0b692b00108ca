"""Figures: each is drawn from saved numbers, deterministic, labelled, with its numbers saved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from moediffir.evaluation.protocol import METHOD_LQ, METHOD_MOE
from moediffir.report import figures
from moediffir.utils.io import atomic_save_png


def _per_image() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for m in (METHOD_LQ, METHOD_MOE):
        for task, codec, level in (("jpeg_q5", "jpeg", "5"), ("jpeg_q10", "jpeg", "10"), ("webp_q10", "webp", "10")):
            for stem in ("a", "b"):
                rows.append({"method": m, "set": "smoke_test", "task": task, "stem": stem, "codec": codec,
                             "level": level, "label": 0, "kind": "seen", "bpp": rng.uniform(0.2, 1.0),
                             "psnr": rng.uniform(22, 30), "ssim": rng.uniform(0.5, 0.9), "lpips": rng.uniform(0, 0.3)})
    return pd.DataFrame(rows)


def _routing(n: int = 4, k: int = 2) -> pd.DataFrame:
    rows = []
    for task, codec, level, kind in (("jpeg_q5", "jpeg", "5", "seen"), ("jpeg_q25", "jpeg", "25", "unseen_degree")):
        for scale in (0, 1):
            tokens = 64 // 4**scale
            counts = np.zeros(n, int)
            counts[:k] = tokens  # experts 0..k-1 always chosen
            for e in range(n):
                rows.append({"method": METHOD_MOE, "set": "smoke_test", "task": task, "codec": codec, "level": level,
                             "kind": kind, "scale": scale, "expert": e, "count": int(counts[e]), "slots": tokens * k,
                             "gate_sum": tokens / k if e < k else 0.0, "tokens": tokens, "n_images": 1})
    return pd.DataFrame(rows)


def _similarity(n: int = 3) -> pd.DataFrame:
    rows = []
    for s in (0, 1):
        for i in range(n):
            for j in range(n):
                rows.append({"scale": s, "height": 0, "width": 0, "expert_i": i, "expert_j": j,
                             "cosine": 1.0 if i == j else 0.1 * (i + j) * (-1) ** s, "design": "moe", "num_prompts": n})
    return pd.DataFrame(rows)


def _visual(tmp_path):
    rng = np.random.default_rng(2)
    entries = []
    for task, level in (("jpeg_q5", "5"), ("jpeg_q10", "10")):
        panels = []
        for label, slug in (("LQ", "lq"), (METHOD_MOE, "moe"), ("GT", "gt")):
            rel = f"visual/{task}/{slug}.png"
            atomic_save_png(tmp_path / rel, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
            panels.append({"label": label, "method": label, "file": rel, "psnr": 25.0, "lpips": 0.1}
                          | ({"bpp": 0.5} if label == "LQ" else {}))
        entries.append({"codec": "jpeg", "task": task, "level": level, "kind": "seen", "set": "smoke_test",
                        "stem": "a", "box": [0, 0, 16, 16], "panels": panels})
    return {"crop": 16, "entries": entries}


def _draw_all(tmp_path, out):
    paths = []
    paths += figures.visual_grid(_visual(tmp_path), tmp_path, out, weights=True)
    paths += figures.bpp_quality(_per_image(), out, weights=True)
    paths += figures.prompt_similarity(_similarity(), out, weights=True)
    paths += figures.expert_usage(_routing(), out, weights=True)
    return paths


def test_every_figure_is_written_with_its_numbers(tmp_path):
    paths = _draw_all(tmp_path, tmp_path / "fig")
    names = sorted(p.name for p in paths)
    assert names == sorted(["fig4_visual_jpeg.png", "fig4_visual_jpeg.pdf", "bpp_quality.csv", "bpp_quality.png",
                            "bpp_quality.pdf", "fig8_prompt_similarity.csv", "fig8_prompt_similarity.png",
                            "fig8_prompt_similarity.pdf", "expert_usage.csv", "expert_usage.png", "expert_usage.pdf"])
    for p in paths:
        assert p.stat().st_size > (5000 if p.suffix in (".png", ".pdf") else 100), p
    # the plotted numbers: bpp / quality means per method and task; usage = count / slots
    pts = pd.read_csv(tmp_path / "fig" / "bpp_quality.csv")
    per = _per_image()
    want = per[(per.method == METHOD_MOE) & (per.task == "jpeg_q5")][["bpp", "psnr"]].mean()
    got = pts[(pts.method == METHOD_MOE) & (pts.task == "jpeg_q5")].iloc[0]
    assert got.bpp == pytest.approx(want.bpp) and got.psnr == pytest.approx(want.psnr) and got.n_images == 2
    usage = pd.read_csv(tmp_path / "fig" / "expert_usage.csv")
    assert set(usage.usage.round(9)) == {1.0, 0.0}  # experts 1 and 2 are in every token's top-2, 3 and 4 never
    with Image.open(tmp_path / "fig" / "fig8_prompt_similarity.png") as im:
        assert im.size[0] > im.size[1] > 100


def test_figures_are_byte_identical_and_carry_no_timestamps(tmp_path):
    a = _draw_all(tmp_path, tmp_path / "a")
    b = _draw_all(tmp_path, tmp_path / "b")
    for pa, pb in zip(a, b):
        assert pa.name == pb.name and pa.read_bytes() == pb.read_bytes(), pa.name
    pdf = (tmp_path / "a" / "expert_usage.pdf").read_bytes()
    assert b"CreationDate" not in pdf and b"Producer" not in pdf and b"matplotlib" not in pdf.lower()
    png = (tmp_path / "a" / "expert_usage.png").read_bytes()
    assert b"Software" not in png and b"matplotlib" not in png.lower()


def test_random_weights_are_named_in_the_titles(tmp_path):
    """Random weights add a line to every title (a different image); the line names them."""
    fig_random, fig_real = tmp_path / "r", tmp_path / "p"
    figures.prompt_similarity(_similarity(), fig_random, weights=True)
    figures.prompt_similarity(_similarity(), fig_real, weights=False)
    big = (fig_random / "fig8_prompt_similarity.png").stat().st_size
    small = (fig_real / "fig8_prompt_similarity.png").stat().st_size
    assert big != small
    with figures.figure_style():
        fig = figures.new_figure(3, 2)
        figures.suptitle(fig, "x", True)
        assert figures.RANDOM_TITLE in fig.get_suptitle()


def test_a_weights_note_is_its_own_title_line_and_changes_the_figure(tmp_path):
    note = "diffusion prior and MoE-DiffIR parts trained here (mini profile)"
    with figures.figure_style():
        fig = figures.new_figure(3, 2)
        figures.suptitle(fig, "x", note)
        assert fig.get_suptitle() == f"x\n({note})"
    figures.prompt_similarity(_similarity(), tmp_path / "noted", weights=note)
    figures.prompt_similarity(_similarity(), tmp_path / "plain", weights=False)
    assert (tmp_path / "noted" / "fig8_prompt_similarity.png").read_bytes() != \
        (tmp_path / "plain" / "fig8_prompt_similarity.png").read_bytes()


def _routing_scale(h: int, w: int, n: int, k: int, seed: int) -> dict:
    """One scale of ``pipe(...).routing[i]["scales"]``: dense top-K gates (1, L, N) and chosen experts (1, L, K)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, h * w, n, generator=g)
    values, indices = logits.softmax(-1).topk(k, dim=-1)  # (1, L, K)
    gates = torch.zeros(1, h * w, n).scatter(-1, indices, values)  # (1, L, N)
    return {"gates": gates, "indices": indices, "values": values, "height": h, "width": w}


def test_routing_checkpoint_draws_the_decision_and_saves_its_counts(tmp_path):
    import torch

    scales = [_routing_scale(4, 6, 5, 2, 0), _routing_scale(2, 3, 5, 2, 1)]
    lq = np.full((32, 48, 3), 90, np.uint8)
    panels = [("LQ", lq), ("restored", torch.rand(3, 32, 48)), ("GT", lq)]
    paths = figures.routing_checkpoint(panels, scales, tmp_path, "check", "one crop", weights=True)
    assert sorted(p.name for p in paths) == ["check.csv", "check.pdf", "check.png"]
    counts = pd.read_csv(tmp_path / "check.csv")
    for sc in scales:
        key = f"{sc['height']}x{sc['width']}"
        expected = np.bincount(sc["indices"][0].reshape(-1).numpy(), minlength=5)
        assert counts[counts.scale == key].sort_values("expert").top_k_count.tolist() == expected.tolist()
        assert counts[counts.scale == key].top_k_count.sum() == sc["height"] * sc["width"] * 2  # K per token
    png = (tmp_path / "check.png").read_bytes()
    again = figures.routing_checkpoint(panels, scales, tmp_path / "again", "check", "one crop", weights=True)
    assert again[0].read_bytes() == png  # deterministic
    other = figures.routing_checkpoint(panels, scales[::-1][:1], tmp_path / "other", "check", "one crop", weights=True)
    assert other[0].read_bytes() != png


def test_routing_checkpoint_of_a_design_without_router_writes_no_counts(tmp_path):
    import torch

    no_router = [{"gates": torch.full((1, 1, 3), 1 / 3)}]  # the "multi" design: soft weights, no top-K
    paths = figures.routing_checkpoint([("LQ", np.zeros((8, 8, 3), np.uint8))], no_router, tmp_path, "c", "t")
    assert sorted(p.name for p in paths) == ["c.pdf", "c.png"]
