"""Where the pretrained metric weights of paper §4.2 must be on disk (LPIPS, FID, CLIP-IQA+, MANIQA).

File names and places only, without importing torch or the metric libraries, so that the preflight
(``moediffir doctor``) lists missing files in a moment; :mod:`moediffir.metrics.perceptual` builds the networks.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from moediffir.utils.io import torch_hub_dir

# Exact file names the libraries cache (torchvision: ``<hub>/checkpoints``; pyiqa: ``<hub>/pyiqa``; pyiqa's CLIP
# loader: ``<hub>/clip``). tests/metrics/test_perceptual.py checks them against the installed packages.
TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
CLIP_RN50_FILE = "RN50.pt"
# pyiqa 0.1.16 names its cache file after the URL path, which encodes "+" as "%2B"; older pyiqa used "+".
CLIPIQA_PLUS_FILE = "CLIP-IQA%2B_learned_prompts-603f3273.pth"
ALTERNATIVE_NAMES = {CLIPIQA_PLUS_FILE: ("CLIP-IQA+_learned_prompts-603f3273.pth",)}
MANIQA_PIPAL_FILE = "MANIQA_PIPAL-ae6d356b.pth"


# -------------------------------------------------------------------------------------------- files
def default_weights_dir() -> Path:
    """The torch hub dir (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``)."""
    return torch_hub_dir()


def _lpips_linear_file(net: str) -> Path:
    """The LPIPS linear head shipped inside the lpips package (found without importing it: no torchvision)."""
    spec = importlib.util.find_spec("lpips")
    folder = Path(spec.origin).parent if spec and spec.origin else Path("lpips")
    return folder / "weights" / "v0.1" / f"{net}.pth"


def weight_files(weights_dir: str | Path | None = None) -> dict[str, Path]:
    """Every local file the pretrained metrics read, by role.

    ``weights_dir`` (default :func:`default_weights_dir`) holds ``checkpoints/`` (torchvision backbones),
    ``pyiqa/`` (pyiqa weights) and ``clip/`` (OpenAI CLIP). The LPIPS linear heads ship with the lpips package.
    """
    root = Path(weights_dir) if weights_dir else default_weights_dir()
    files = {
        "lpips_alex_backbone": root / "checkpoints" / TORCHVISION_FILES["alex"],
        "lpips_vgg_backbone": root / "checkpoints" / TORCHVISION_FILES["vgg"],
        "lpips_alex_linear": _lpips_linear_file("alex"),
        "lpips_vgg_linear": _lpips_linear_file("vgg"),
        "fid_inception": root / "pyiqa" / FID_INCEPTION_FILE,
        "clipiqa_clip_rn50": root / "clip" / CLIP_RN50_FILE,
        "clipiqa_prompts": root / "pyiqa" / CLIPIQA_PLUS_FILE,
        "maniqa_pipal": root / "pyiqa" / MANIQA_PIPAL_FILE,
    }
    for role, path in files.items():  # an existing file under an older cache name wins over a missing one
        for alt in ALTERNATIVE_NAMES.get(path.name, ()):
            if not path.is_file() and (path.parent / alt).is_file():
                files[role] = path.parent / alt
    return files


_SOURCES = {
    "lpips_alex_backbone": "torchvision.models.alexnet(weights='IMAGENET1K_V1'); or `make setup` converts it",
    "lpips_vgg_backbone": "torchvision.models.vgg16(weights='IMAGENET1K_V1'); or `make setup` converts it",
    "lpips_alex_linear": "the lpips package (reinstall lpips)",
    "lpips_vgg_linear": "the lpips package (reinstall lpips)",
    "fid_inception": "pyiqa.create_metric('fid')",
    "clipiqa_clip_rn50": "pyiqa.create_metric('clipiqa+')",
    "clipiqa_prompts": "pyiqa.create_metric('clipiqa+')",
    "maniqa_pipal": "pyiqa.create_metric('maniqa-pipal')",
}


def weight_source(role: str) -> str:
    """The call that writes the file of ``role`` (see :func:`weight_files`) on a machine with network access."""
    return _SOURCES[role]


def weight_roles(metric: str, conv: Any, lpips_dir: str | Path | None = None) -> list[str]:
    """The roles of :func:`weight_files` that ``metric`` reads when pretrained.

    LPIPS reads no torchvision backbone when ``lpips_dir`` holds the conversion of ``make setup``
    (:mod:`moediffir.metrics.lpips_weights`; ``None``: the default folder).
    """
    if metric == "lpips":
        from moediffir.metrics.lpips_weights import converted_problem, default_lpips_dir

        converted = converted_problem(lpips_dir or default_lpips_dir(), conv.lpips_net) is None
        return [f"lpips_{conv.lpips_net}_linear"] + ([] if converted else [f"lpips_{conv.lpips_net}_backbone"])
    return {
        "lpips": [f"lpips_{conv.lpips_net}_linear", f"lpips_{conv.lpips_net}_backbone"],
        "fid": ["fid_inception"],
        "clipiqa": ["clipiqa_clip_rn50", "clipiqa_prompts"],
        "maniqa": ["maniqa_pipal"],
    }.get(metric, [])
