"""Tables 1, 4 and the per-level tables: values, the paper column, footnotes, formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from moediffir.evaluation import scoring
from moediffir.evaluation.protocol import METHOD_LQ, METHOD_MOE, METHOD_NO_COMPENSATOR
from moediffir.metrics import MetricConventions, MetricSuite
from moediffir.report import table_doc, table_notes, tables
from moediffir.report.paper_numbers import paper_value

TASKS = [("jpeg_q5", "jpeg", "5", "seen"), ("jpeg_q10", "jpeg", "10", "seen"), ("jpeg_q15", "jpeg", "15", "seen"),
         ("webp_q10", "webp", "10", "seen"), ("jpeg_q25", "jpeg", "25", "unseen_degree")]
METHODS = [METHOD_MOE, METHOD_NO_COMPENSATOR, METHOD_LQ, "PromptIR"]


def make_results(weights: str = "random", model_weights: str = "random weights: backbone (tiny)") -> pd.DataFrame:
    """Aggregated results of synthetic per-image scores on LIVE1 and smoke_test (2 images per task)."""
    rng = np.random.default_rng(0)
    suite = MetricSuite(["psnr", "ssim", "lpips", "fid", "clipiqa"], MetricConventions(weights="random"))
    rows, fid, items = [], [], []
    for s in ("LIVE1", "smoke_test"):
        for task, codec, level, kind in TASKS:
            items.append({"set": s, "task": task, "codec": codec, "level": level, "kind": kind})
            for m in METHODS:
                for stem in ("a", "b"):
                    rows.append({"method": m, "set": s, "task": task, "stem": stem, "codec": codec, "level": level,
                                 "label": 0, "kind": kind, "bpp": rng.uniform(0.1, 1), "psnr": rng.uniform(24, 32),
                                 "ssim": rng.uniform(0.6, 0.9), "lpips": rng.uniform(0.05, 0.3),
                                 "clipiqa": rng.uniform(0.3, 0.7)})
                fid.append({"method": m, "set": s, "task": task, "n_images": 2, "fid": rng.uniform(40, 120),
                            "fid_reliable": False, "note": "fid on 2 images: comparable only at equal set size"})
    labels = {m: model_weights for m in (METHOD_MOE, METHOD_NO_COMPENSATOR)} | {METHOD_LQ: "n/a", "PromptIR": "external"}
    res = scoring.aggregate(pd.DataFrame(rows), pd.DataFrame(fid), pd.DataFrame(items), suite, labels)
    if weights == "pretrained":  # the labels a suite with real weights writes (no weight files needed here)
        res["weights"] = res["weights"].replace("random(seed=0)", "pretrained")
        res["conventions"] = res["conventions"].str.replace("random(seed=0)", "pretrained", regex=False)
    return res


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return make_results()


def _cell(tidy: pd.DataFrame, **keys) -> pd.Series:
    mask = np.ones(len(tidy), bool)
    for k, v in keys.items():
        mask &= tidy[k] == v
    hit = tidy[mask]
    assert len(hit) == 1, keys
    return hit.iloc[0]


def test_table1_ours_paper_and_difference(results):
    doc, tidy = tables.table1(results)
    ours = results[(results.scope == "codec") & (results.method == METHOD_MOE) & (results.set == "LIVE1")
                   & (results.codec == "jpeg") & (results.metric == "psnr") & (results.kind == "seen")].value.item()
    cell = _cell(tidy, method=METHOD_MOE, set="LIVE1", codec="jpeg", metric="psnr")
    paper = paper_value("table1", "psnr", codec="jpeg", method="MoE-DiffIR", dataset="LIVE1")
    assert paper == 30.50 and cell.ours == ours and cell.paper == paper and cell["diff"] == pytest.approx(ours - paper)
    # an external named like a method of the paper gets the paper's value too
    assert _cell(tidy, method="PromptIR", set="LIVE1", codec="jpeg", metric="fid").paper == 111.15
    # our extra rows and test sets the paper never used have an empty paper column
    assert tidy[tidy.method.isin([METHOD_LQ, METHOD_NO_COMPENSATOR])].paper.isna().all()
    assert tidy[tidy.set == "smoke_test"].paper.isna().all()
    # the codec mean is over the three JPEG levels only (the unseen QF 25 stays out of Table 1)
    seen = results[(results.scope == "task") & (results.method == METHOD_MOE) & (results.set == "LIVE1")
                   & (results.metric == "psnr") & (results.kind == "seen") & (results.codec == "jpeg")]
    assert ours == pytest.approx(seen.value.mean()) and len(seen) == 3
    assert [r[0] for r in doc.rows] == [[c, m] for c in ("JPEG", "WebP") for m in METHODS[:3] + ["PromptIR"]]
    md = table_doc.to_markdown(doc)
    assert f"{ours:.2f} (30.50; {ours - 30.50:+.2f})" in md
    notes = " ".join(doc.footnotes)
    assert "JPEG 5/10/15; WebP 10" in notes and "smoke_test" in notes and "results/paper/table1.csv" in notes
    assert table_notes.RANDOM_NOTE[1:] in notes and "color=rgb" in notes and "random(seed=0)" in notes
    assert "FID on 2 images" in notes


def test_no_random_note_with_pretrained_weights():
    res = make_results(weights="pretrained", model_weights="pretrained backbone + trained parts")
    doc, _ = tables.table1(res)
    assert not table_notes.is_random(res)
    assert "say nothing" not in " ".join(doc.footnotes)
    assert "Metric network weights (LPIPS, FID, CLIP-IQA, MANIQA): pretrained" in " ".join(doc.footnotes)


def test_missing_transcription_leaves_the_paper_column_empty(results, tmp_path):
    for make in (tables.table1, tables.table4):
        doc, tidy = make(results, paper_root=tmp_path)
        assert tidy.paper.isna().all() and tidy["diff"].isna().all()
        assert any("is missing" in f for f in doc.footnotes), doc.footnotes
    doc, tidy = tables.table_levels(results, "jpeg", paper_root=tmp_path)
    assert tidy.paper.isna().all() and any("table5.csv is missing" in f for f in doc.footnotes)


def test_per_level_table_matches_levels_with_table5(results):
    doc, tidy = tables.table_levels(results, "jpeg")
    # Table 5 has QF 10/15/20: our QF 10 and 15 get paper values, QF 5 and the unseen QF 25 do not
    assert _cell(tidy, method=METHOD_MOE, set="LIVE1", level="10", metric="psnr").paper == 29.36
    assert _cell(tidy, method=METHOD_MOE, set="LIVE1", level="15", metric="clipiqa").paper == 0.6670
    assert pd.isna(_cell(tidy, method=METHOD_MOE, set="LIVE1", level="5", metric="psnr").paper)
    assert [g for g, _ in doc.groups] == ["QF=5", "QF=10", "QF=15", "QF=25 (unseen)"]
    assert doc.groups[0][1] == ["PSNR↑", "SSIM↑", "LPIPS↓", "FID↓", "CLIP-IQA↑"]
    task = results[(results.scope == "task") & (results.method == "PromptIR") & (results.set == "smoke_test")
                   & (results.task == "jpeg_q25") & (results.metric == "lpips")].value.item()
    assert _cell(tidy, method="PromptIR", set="smoke_test", level="25", metric="lpips").ours == task
    webp_doc, webp = tables.table_levels(results, "webp")
    assert webp.paper.isna().all() and any("not transcribed" in f for f in webp_doc.footnotes)


def test_table4_maps_decoders_to_vae_settings(results):
    doc, tidy = tables.table4(results)
    comp = _cell(tidy, row="compensator", set="LIVE1", metric="psnr")
    plain = _cell(tidy, row="pretrained_vae", set="LIVE1", metric="ssim")
    scratch = _cell(tidy, row="vae_from_scratch", set="LIVE1", metric="psnr")
    assert comp.method == METHOD_MOE and comp.paper == 29.03
    kind = results[(results.scope == "kind") & (results.kind == "seen") & (results.method == METHOD_MOE)
                   & (results.set == "LIVE1") & (results.metric == "psnr")]
    assert comp.ours == kind.value.item() and kind.n_tasks.item() == 4
    assert plain.method == METHOD_NO_COMPENSATOR and plain.paper == 0.646
    assert pd.isna(scratch.ours) and scratch.paper == 25.12  # the paper's column the kit does not reproduce
    assert "4 seen task(s)" in doc.footnotes[0]


def test_markdown_and_latex_are_well_formed(results, tmp_path):
    doc, tidy = tables.table1(results)
    md = table_doc.to_markdown(doc).splitlines()
    table_lines = [line for line in md if line.startswith("|")]
    assert len({line.count(" | ") for line in table_lines[2:]}) == 1 and len(table_lines) == 2 + len(doc.rows)
    tex = table_doc.to_latex(doc)
    assert r"smoke\_test" in tex and r"\multicolumn{4}{c}{LIVE1}" in tex and r"PSNR$\uparrow$" in tex
    assert tex.count(r"\\") >= len(doc.rows) + 2 and "_" not in tex.replace(r"\_", "").split("\\begin{tabular}")[1]
    assert table_doc.latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"
    paths = tables.write_all_tables(results, tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"{n}.{e}" for n in ("table1", "table4", "table_levels_jpeg", "table_levels_webp")
                           for e in ("csv", "md", "tex"))
    back = pd.read_csv(tmp_path / "table1.csv")
    assert list(back.columns) == list(table_doc.TIDY_COLUMNS) and len(back) == len(tidy)
