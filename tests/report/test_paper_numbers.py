"""The transcriptions in results/paper/: rows, columns, value ranges and spot values read from the paper text."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from moediffir.report.paper_numbers import (
    DATASETS,
    METHODS,
    OURS,
    SCHEMAS,
    PaperNumbersError,
    load_paper_table,
    paper_dir,
    paper_long,
    paper_value,
    validate_table,
)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {name: load_paper_table(name) for name in SCHEMAS}


def test_files_and_readme_exist(repo_root):
    assert paper_dir() == repo_root / "results" / "paper"
    for name in SCHEMAS:
        assert (paper_dir() / f"{name}.csv").is_file()
    readme = (paper_dir() / "README.md").read_text()
    assert "Rules" in readme and "OCR" in readme


def test_every_table_has_its_columns(tables):
    for name, df in tables.items():
        assert tuple(df.columns) == SCHEMAS[name].columns, name


def test_value_ranges(tables):
    for name, df in tables.items():
        for col in SCHEMAS[name].metrics:
            v = df[col].dropna()
            assert len(v) > 0
            if col == "psnr":
                assert v.between(20, 40).all(), name
            elif col == "fid":
                assert (v > 0).all(), name
            else:
                assert v.between(0, 1).all(), (name, col)


def test_table1_rows(tables):
    t1 = tables["table1"]
    assert len(t1) == 210  # 4 complete codecs x 9 methods x 5 sets + 6 methods x 5 sets of the fifth block
    counts = t1.groupby("codec").method.nunique().to_dict()
    assert counts == {"jpeg": 9, "vvc": 9, "hevc": 9, "webp": 9, "c_ssim": 6}
    assert set(t1.method) == set(METHODS) and set(t1.dataset) == set(DATASETS)
    assert (t1.groupby(["codec", "method"]).size() == 5).all()
    full = t1[t1.codec != "c_ssim"]
    assert full[["psnr", "ssim", "lpips", "fid"]].notna().all().all()  # the four complete codecs lost nothing
    lost = t1[t1[["psnr", "ssim", "lpips", "fid"]].isna().any(axis=1)]
    assert set(zip(lost.method, lost.dataset)) == {("PASD", "DIV2K_valid"), ("PASD", "ICB")}
    assert (t1.loc[t1.codec == "c_ssim", "note"].str.contains("codec inferred")).all()


def test_table1_spot_values():
    # read from the paper's Table 1 (blocks 1-4 in order: JPEG, VVC, HEVC, WebP; see results/paper/README.md)
    assert paper_value("table1", "psnr", codec="jpeg", method=OURS, dataset="LIVE1") == 30.50
    assert paper_value("table1", "fid", codec="jpeg", method=OURS, dataset="ICB") == 100.93
    assert paper_value("table1", "ssim", codec="jpeg", method="AirNet", dataset="Classic5") == 0.955
    assert paper_value("table1", "lpips", codec="vvc", method="PromptIR", dataset="LIVE1") == 0.3035
    assert paper_value("table1", "fid", codec="hevc", method=OURS, dataset="ICB") == 171.01
    assert paper_value("table1", "fid", codec="webp", method=OURS, dataset="ICB") == 109.05
    assert paper_value("table1", "psnr", codec="hevc", method="StableSR", dataset="LIVE1") == 28.19
    assert paper_value("table1", "psnr", codec="c_ssim", method="PromptIR", dataset="Classic5") == 34.26
    assert paper_value("table1", "fid", codec="c_ssim", method="PASD", dataset="DIV2K_valid") is None  # lost
    assert paper_value("table1", "psnr", codec="hific", method=OURS, dataset="LIVE1") is None  # not legible


def test_table2_rows_and_spot_values(tables):
    t2 = tables["table2"]
    assert len(t2) == 20
    assert set(t2.design) == {"none", "single", "multi", "moe"}
    assert t2.groupby("split").dataset.apply(set).to_dict() == {
        "seen": {"LIVE1", "BSDS500", "DIV2K_valid"}, "unseen": {"LIVE1", "ICB"}}
    assert t2[["psnr", "ssim", "lpips", "fid"]].notna().all().all()
    assert paper_value("table2", "psnr", design="moe", split="seen", dataset="LIVE1") == 29.02
    assert paper_value("table2", "fid", design="none", split="unseen", dataset="ICB") == 210.84
    assert paper_value("table2", "lpips", design="multi", split="unseen", dataset="LIVE1") == 0.0432
    # the text: MoE beats multiple prompts by about 0.05 dB on the 21 seen tasks (averaged over test sets)
    seen = t2[t2.split == "seen"].groupby("design").psnr.mean()
    assert seen["moe"] - seen["multi"] == pytest.approx(0.05, abs=0.01)


def test_table3_rows_and_spot_values(tables):
    t3 = tables["table3"]
    assert len(t3) == 12 and set(t3.dataset) == {"LIVE1", "BSDS500", "ICB"}
    assert sorted(zip(t3.use_v2t, t3.use_dp)) == sorted([(a, b) for a in (False, True) for b in (False, True)] * 3)
    assert paper_value("table3", "psnr", variant="MoE-Prompt+V2T Adapter+DP", dataset="LIVE1") == 29.10
    assert paper_value("table3", "fid", variant="MoE-Prompt", dataset="ICB") == 122.59
    # Table 3's MoE-Prompt repeats Table 2's MoE-Prompt on seen LIVE1 / BSDS500
    for ds in ("LIVE1", "BSDS500"):
        for m in ("psnr", "lpips", "fid"):
            assert paper_value("table3", m, variant="MoE-Prompt", dataset=ds) == paper_value(
                "table2", m, design="moe", split="seen", dataset=ds)


def test_table4_values(tables):
    t4 = tables["table4"].set_index("setting")
    assert list(t4.index) == ["pretrained_vae", "vae_from_scratch", "compensator"]
    assert (t4.loc["compensator", "psnr"], t4.loc["compensator", "ssim"]) == (29.03, 0.812)
    assert (t4.loc["pretrained_vae", "psnr"], t4.loc["vae_from_scratch", "ssim"]) == (22.70, 0.705)


def test_table5_rows_and_consistency_with_table1(tables):
    t5 = tables["table5"]
    assert len(t5) == 105  # 3 levels x 5 sets x 7 methods
    assert set(t5.level) == {10, 15, 20} and set(t5.codec) == {"jpeg"}
    assert (t5.groupby(["dataset", "method"]).size() == 3).all()
    empty = t5[t5[["psnr", "ssim", "lpips", "fid", "clipiqa", "maniqa"]].isna().all(axis=1)]
    assert set(zip(empty.dataset, empty.method)) == {("ICB", "DiffBIR")}  # the row the OCR lost
    assert paper_value("table5", "psnr", codec="jpeg", level=10, dataset="LIVE1", method=OURS) == 29.36
    assert paper_value("table5", "maniqa", codec="jpeg", level=20, dataset="ICB", method=OURS) == 0.6688
    # the three-level means of the MoE-DiffIR rows give Table 1's JPEG PSNR (LIVE1, DIV2K, ICB exactly)
    means = t5[t5.method == OURS].groupby("dataset").psnr.mean()
    for ds in ("LIVE1", "DIV2K_valid", "ICB"):
        t1 = paper_value("table1", "psnr", codec="jpeg", method=OURS, dataset=ds)
        assert means[ds] == pytest.approx(t1, abs=0.006), ds
    # the re-assigned ICB row really is RealESRGAN's (its means equal Table 1's JPEG ICB RealESRGAN row)
    real = t5[(t5.method == "RealESRGAN") & (t5.dataset == "ICB")][["lpips", "fid"]].mean()
    assert real["lpips"] == pytest.approx(0.1443, abs=5e-4) and real["fid"] == pytest.approx(130.66, abs=0.2)


def test_long_format(tables):
    long = paper_long("table2")
    assert list(long.columns) == ["design", "split", "dataset", "metric", "value"]
    assert len(long) == 20 * 4
    assert len(paper_long("table1")) == 210 * 4 - int(tables["table1"][["psnr", "ssim", "lpips", "fid"]].isna().sum().sum())


def test_validation_catches_bad_files(tmp_path, tables):
    df = tables["table1"].copy()
    df.loc[0, "psnr"] = 3.2  # a dropped digit
    with pytest.raises(PaperNumbersError, match=r"line 2: psnr=3.2"):
        validate_table(df, SCHEMAS["table1"], "table1.csv")
    df = tables["table1"].copy()
    df.loc[1, "method"] = "StableSH"
    with pytest.raises(PaperNumbersError, match="StableSH"):
        validate_table(df, SCHEMAS["table1"])
    dup = pd.concat([tables["table4"], tables["table4"].iloc[:1]], ignore_index=True)
    with pytest.raises(PaperNumbersError, match="duplicate"):
        validate_table(dup, SCHEMAS["table4"])
    (tmp_path / "table4.csv").write_text("setting,psnr\nx,1\n")
    with pytest.raises(PaperNumbersError, match="columns"):
        load_paper_table("table4", tmp_path)
    with pytest.raises(PaperNumbersError, match="file not found"):
        load_paper_table("table3", tmp_path)
    with pytest.raises(PaperNumbersError, match="unknown paper table"):
        load_paper_table("table9")
    with pytest.raises(PaperNumbersError, match="keys"):
        paper_value("table2", "psnr", design="moe")
    assert math.isnan(tables["table5"].loc[
        (tables["table5"].method == "DiffBIR") & (tables["table5"].dataset == "ICB"), "psnr"].iloc[0])
