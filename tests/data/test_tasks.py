"""Task definitions of the CIR benchmark (paper §3.5, Table 2)."""

from __future__ import annotations

import pytest

from moediffir.data.tasks import (
    ALL_CODECS,
    PRESETS,
    SEEN,
    UNSEEN_DEGREE,
    UNSEEN_TYPE,
    TaskError,
    all_tasks,
    get_task,
    label_names,
    seen_tasks,
    select_tasks,
    task_id,
    unseen_tasks,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_21_seen_tasks_with_labels_0_to_20(preset):
    tasks = seen_tasks(preset)
    assert len(tasks) == 21
    assert [t.label for t in tasks] == list(range(21))
    assert all(t.kind == SEEN for t in tasks)
    assert len({t.id for t in tasks}) == 21
    assert [t.codec for t in tasks[::3]] == ["jpeg", "vvc", "hevc", "webp", "c_psnr", "c_ssim", "hific"]


def test_paper_levels():
    ids = {t.id for t in seen_tasks("paper")}
    for q in (5, 10, 15):
        assert f"jpeg_q{q}" in ids and f"webp_q{q}" in ids
    for qp in (37, 42, 47):
        assert f"hevc_qp{qp}" in ids and f"vvc_qp{qp}" in ids
    for q in (1, 2, 3):
        assert f"c_psnr_q{q}" in ids and f"c_ssim_q{q}" in ids
    assert {"hific_low", "hific_med", "hific_high"} <= ids


def test_paper_unseen_tasks():
    un = {t.id: t for t in unseen_tasks("paper")}
    assert set(un) == {"jpeg_q25", "vvc_qp32", "vvc_qp52", "avc_qp37", "avc_qp42", "avc_qp47"}
    assert un["jpeg_q25"].kind == UNSEEN_DEGREE and un["vvc_qp52"].kind == UNSEEN_DEGREE
    assert un["avc_qp37"].kind == UNSEEN_TYPE
    assert all(t.label == -1 for t in un.values())


def test_official_preset_mirrors_released_code():
    # released training set numbering: JPEG_10:0, JPEG_15:1, JPEG_20:2, VVC_47:3 ... WEBP_1:9 ... HIFI_3:20
    names = label_names("official")
    assert names[0] == "jpeg_q10" and names[2] == "jpeg_q20"
    assert names[3] == "vvc_qp47" and names[5] == "vvc_qp37"
    assert names[6] == "hevc_qp47" and names[9] == "webp_q1" and names[11] == "webp_q10"
    assert names[12] == "c_psnr_q1" and names[17] == "c_ssim_q3" and names[20] == "hific_high"
    un = {t.id for t in unseen_tasks("official")}
    assert {"jpeg_q5", "jpeg_q25"} <= un  # QF 5 is unseen when the seen JPEG levels are 10/15/20


def test_no_unseen_task_is_also_seen():
    for preset in PRESETS:
        seen = {t.id for t in seen_tasks(preset)}
        assert not seen & {t.id for t in unseen_tasks(preset)}


def test_task_ids_and_errors():
    assert task_id("hevc", 37) == "hevc_qp37"
    assert task_id("c_psnr", 1) == "c_psnr_q1"
    assert task_id("hific", "low") == "hific_low"
    with pytest.raises(TaskError, match="unknown codec"):
        task_id("bpg", 3)
    with pytest.raises(TaskError, match="HiFiC"):
        task_id("hific", "ultra")
    with pytest.raises(TaskError, match="integer"):
        task_id("jpeg", "10")
    with pytest.raises(TaskError, match="preset"):
        seen_tasks("nope")
    assert get_task("vvc_qp52").kind == UNSEEN_DEGREE
    with pytest.raises(TaskError, match="unknown task id"):
        get_task("jpeg_q99")


def test_select_tasks_filters():
    only_jpeg = select_tasks("paper", ["jpeg"], unseen=True)
    assert {t.id for t in only_jpeg} == {"jpeg_q5", "jpeg_q10", "jpeg_q15", "jpeg_q25", "avc_qp37", "avc_qp42",
                                         "avc_qp47"}
    assert all(t.seen for t in select_tasks("paper", ["jpeg", "webp"], unseen=False))
    assert len(select_tasks("paper")) == 27
    picked = select_tasks("paper", only=["hevc_qp37", "jpeg_q25"])
    assert [t.id for t in picked] == ["hevc_qp37", "jpeg_q25"]
    with pytest.raises(TaskError, match="data.tasks"):
        select_tasks("paper", only=["jpeg_q99"])
    with pytest.raises(TaskError, match="data.codecs"):
        select_tasks("paper", ["mpeg2"])


def test_task_levels_match_codec_level_types():
    codecs = pytest.importorskip("moediffir.codecs")
    for t in all_tasks("paper") + all_tasks("official"):
        assert isinstance(t.level, codecs.LEVEL_TYPES[t.codec]), t
    assert set(ALL_CODECS) <= set(codecs.CODECS)
