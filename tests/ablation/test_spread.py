"""Bootstrap intervals over images of the ablation means and of paired differences (paper §4.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moediffir.ablation.spread import INTERVAL_COLUMNS, bootstrap_interval, cell_intervals


def test_a_constant_has_a_zero_width_interval():
    sp = bootstrap_interval(np.full(6, 27.5))
    assert sp.mean[0] == sp.lo[0] == sp.hi[0] == 27.5
    assert sp.n_images[0] == 6


def test_the_point_is_the_mean_over_tasks_of_the_task_means():
    x = np.array([[[1.0, 2.0, 3.0], [10.0, np.nan, 30.0]]])  # 1 variant, 2 tasks, 3 images (one missing)
    sp = bootstrap_interval(x)
    assert sp.mean[0] == pytest.approx((2.0 + 20.0) / 2)
    assert sp.lo[0] < sp.mean[0] < sp.hi[0]


def _coverage(confidence: float, trials: int = 100, n: int = 40) -> int:
    mu = 3.0
    hits = 0
    for t in range(trials):
        x = np.random.default_rng(1000 + t).normal(mu, 2.0, size=n)
        sp = bootstrap_interval(x, confidence=confidence, seed=t)
        hits += int(sp.lo[0] <= mu <= sp.hi[0])
    return hits


def test_the_interval_covers_the_true_mean_at_its_level():
    assert _coverage(0.95) >= 90
    # the check can fail: an interval too narrow for its claim (50 %) misses the mean far more often
    assert _coverage(0.5) < 75


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    x = np.random.default_rng(0).normal(size=(2, 3, 12))
    a, b, c = bootstrap_interval(x, seed=1), bootstrap_interval(x, seed=1), bootstrap_interval(x, seed=2)
    assert np.array_equal(a.lo, b.lo) and np.array_equal(a.hi, b.hi)
    assert not np.array_equal(a.lo, c.lo)


def test_identical_variants_differ_by_an_interval_around_zero():
    x = np.random.default_rng(3).normal(29.0, 1.5, size=(1, 4, 10))
    sp = bootstrap_interval(np.concatenate([x, x]), reference=0)  # (2, 4, 10): the same numbers twice
    assert np.all(sp.diff == 0) and np.all(sp.diff_lo == 0) and np.all(sp.diff_hi == 0)
    assert sp.hi[1] - sp.lo[1] > 0.5  # while each mean alone is uncertain


def test_pairing_removes_what_the_images_share():
    rng = np.random.default_rng(4)
    image_effect = rng.normal(0.0, 3.0, size=20)  # some images are easy for every variant
    a = 28.0 + image_effect + rng.normal(0.0, 0.05, size=20)
    b = 28.2 + image_effect + rng.normal(0.0, 0.05, size=20)
    sp = bootstrap_interval(np.stack([a, b]), reference=0)
    assert sp.lo[0] < sp.hi[1] and sp.lo[1] < sp.hi[0]  # the intervals of the means overlap...
    assert sp.diff_lo[1] > 0  # ...yet the paired difference is clearly positive (unpaired draws would hide it)
    assert sp.diff[1] == pytest.approx(b.mean() - a.mean())
    same = bootstrap_interval(np.stack([a, a + rng.normal(0.0, 0.05, size=20)]), reference=0)
    assert same.diff_lo[1] <= 0 <= same.diff_hi[1]  # noise alone: the interval contains 0


def test_one_image_gives_no_interval_and_bad_arguments_are_refused():
    sp = bootstrap_interval(np.array([[5.0], [6.0]]), reference=0)
    assert sp.mean.tolist() == [5.0, 6.0] and np.isnan(sp.lo).all() and np.isnan(sp.diff_hi).all()
    assert sp.diff.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_interval(np.ones(4), confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval(np.ones(4), n_resamples=0)
    with pytest.raises(ValueError, match="reference=2"):
        bootstrap_interval(np.ones((2, 4)), reference=2)
    with pytest.raises(ValueError, match="infinite"):
        bootstrap_interval(np.array([1.0, np.inf]))


def _rows() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    rows = []
    for s in ("LIVE1", "ICB"):
        for stem in range(8):
            base = rng.normal(28.0, 2.0)
            for task in ("jpeg_q10", "hevc_qp37"):
                for v, shift in (("moe", 0.0), ("none", -0.5), ("moe_copy", 0.0)):
                    rows.append({"variant": v, "evaluation": "seen", "set": s, "metric": "psnr", "task": task,
                                 "stem": f"img{stem}", "value": base + shift})
    return pd.DataFrame(rows)


def test_cell_intervals_of_a_tidy_table():
    rows = _rows()
    out = cell_intervals(rows, ["evaluation", "set", "metric"], reference="moe")
    assert list(out.columns) == ["evaluation", "set", "metric", "variant", *INTERVAL_COLUMNS]
    assert len(out) == 2 * 3 and set(out["reference"]) == {"moe"}
    for (s, v), r in out.set_index(["set", "variant"]).iterrows():
        sub = rows[(rows["set"] == s) & (rows["variant"] == v)]
        assert r["mean"] == pytest.approx(sub.groupby("task")["value"].mean().mean())
        assert r["lo"] < r["mean"] < r["hi"] and r["n_images"] == 8
    none = out[out["variant"] == "none"]
    assert none["diff"].to_numpy() == pytest.approx(-0.5)
    assert none["diff_hi"].to_numpy() == pytest.approx(-0.5)  # a constant shift: a zero-width paired interval
    copy = out[out["variant"] == "moe_copy"]
    assert (copy["diff_lo"] == 0).all() and (copy["diff_hi"] == 0).all()
    no_ref = cell_intervals(rows, ["evaluation", "set", "metric"], reference="absent")
    assert (no_ref["reference"] == "").all() and no_ref["diff"].isna().all()


def test_cell_intervals_refuse_repeated_rows():
    rows = _rows()
    with pytest.raises(ValueError, match="repeat"):
        cell_intervals(pd.concat([rows, rows.iloc[:1]]), ["evaluation", "set", "metric"])
    with pytest.raises(ValueError, match="lack the column"):
        cell_intervals(rows.drop(columns=["stem"]), ["evaluation", "set", "metric"])
