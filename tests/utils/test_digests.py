"""moediffir.utils.digests: settings digests, model fingerprints, write-then-verify outputs."""

from __future__ import annotations

import json

import pytest

from moediffir.utils.digests import (
    json_digest,
    model_fingerprint,
    output_done,
    read_record,
    tree_digest,
    write_output,
)


def test_json_digest_ignores_key_order_and_sees_every_value():
    a = json_digest({"b": [1, 2], "a": {"y": 1, "x": None}})
    assert a == json_digest({"a": {"x": None, "y": 1}, "b": [1, 2]})
    assert len(a) == 64 and len(json_digest({"a": 1}, 16)) == 16
    assert a != json_digest({"b": [2, 1], "a": {"y": 1, "x": None}})
    assert json_digest((1, 2)) == json_digest([1, 2])  # what JSON round-trips to


def _folder(tmp_path):
    root = tmp_path / "model"
    (root / "denoiser" / "spade").mkdir(parents=True)
    (root / "compensator").mkdir()
    (root / "denoiser" / "spade" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 3000 + b"weights")
    (root / "denoiser" / "spade" / "config.json").write_text(json.dumps({"channels": 4, "_name_or_path": "a"}))
    (root / "compensator" / "weights.bin").write_bytes(b"comp")
    (root / "config.json").write_text("{}")
    return root


def test_model_fingerprint_reads_every_byte_and_parts_isolate_it(tmp_path):
    root = _folder(tmp_path)
    whole, stage1 = model_fingerprint(root), model_fingerprint(root, ["denoiser"])
    # diffusers' bookkeeping keys in a re-saved config do not change the model
    (root / "denoiser" / "spade" / "config.json").write_text(json.dumps({"_name_or_path": "b", "channels": 4}))
    assert model_fingerprint(root) == whole
    # a byte in the middle of a weight file does (no sampling of first / last bytes)
    w = root / "denoiser" / "spade" / "diffusion_pytorch_model.safetensors"
    data = bytearray(w.read_bytes())
    data[1500] = 1
    w.write_bytes(bytes(data))
    assert model_fingerprint(root) != whole and model_fingerprint(root, ["denoiser"]) != stage1
    stage1 = model_fingerprint(root, ["denoiser"])
    # a new compensator changes the whole model, not its stage-I parts
    (root / "compensator" / "weights.bin").write_bytes(b"other")
    assert model_fingerprint(root, ["denoiser"]) == stage1
    (root / ".hidden").write_text("x")  # hidden files are not part of the model
    assert model_fingerprint(root, ["denoiser"]) == stage1
    with pytest.raises(FileNotFoundError, match="nothing to fingerprint"):
        model_fingerprint(root, ["missing"])
    assert tree_digest(root, suffixes=(".json",)) != tree_digest(root)
    card = model_fingerprint(root, exclude=["README.md"])
    (root / "README.md").write_text("a model card: describes the model, is not part of it")
    assert model_fingerprint(root, exclude=["README.md"]) == card != model_fingerprint(root)


def test_write_output_then_verify_and_damage_is_found(tmp_path):
    out, rec_path = tmp_path / "a" / "x.png", tmp_path / "records" / "x.json"
    rec = write_output(out, b"payload", rec_path, {"fingerprint": "fp1", "width": 3})
    assert out.read_bytes() == b"payload" and read_record(rec_path) == rec
    assert rec["bytes"] == 7 and len(rec["sha256"]) == 64 and rec["width"] == 3
    assert output_done(out, rec, "fp1")
    assert not output_done(out, rec, "fp2")  # made by something else
    assert not output_done(out, None, "fp1")
    out.write_bytes(b"PAYLOAD")  # same size, other bytes
    assert output_done(out, rec, "fp1", full=False)  # the quick look only checks the size
    assert not output_done(out, rec, "fp1")
    out.unlink()
    assert not output_done(out, rec, "fp1", full=False)


def test_read_record_tolerates_missing_and_damaged_files(tmp_path):
    assert read_record(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text('{"a": ')
    assert read_record(tmp_path / "bad.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert read_record(tmp_path / "list.json") is None
    (tmp_path / "ok.json").write_text('{"a": 1}')
    assert read_record(tmp_path / "ok.json") == {"a": 1}
