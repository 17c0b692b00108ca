"""Image-quality metrics with explicit conventions (paper §4.2, appendix B.2; docs/design.md §7).

* :mod:`moediffir.metrics.fidelity` — PSNR and SSIM (RGB default; BT.601 YCbCr Y and a border crop as options).
* :mod:`moediffir.metrics.perceptual` — LPIPS, FID, CLIP-IQA+ and MANIQA, offline, pretrained or random weights.
* :mod:`moediffir.metrics.conventions` — the conventions string written beside every number.
* :mod:`moediffir.metrics.suite` — :class:`MetricSuite`, per-pair and per-set scoring with networks built once.
* :mod:`moediffir.metrics.weight_files` — where the pretrained metric weights must be (no torch needed).

Importing this package loads neither torch, pyiqa nor lpips: the names below are imported on first use.
"""

from importlib import import_module
from typing import Any

# Names exported here and the module each lives in; imported on first use (PEP 562), so that reading the
# weight file names (moediffir.metrics.weight_files, used by ``moediffir doctor``) does not import torch.
_EXPORTS = {
    "ConventionsError": "conventions", "MetricConventions": "conventions",
    "MetricInputError": "fidelity", "mse": "fidelity", "psnr": "fidelity", "psnr_from_mse": "fidelity",
    "rgb_to_y": "fidelity", "ssim": "fidelity",
    "MissingWeightsError": "perceptual", "fid_from_features": "perceptual", "fid_reliable": "perceptual",
    "weight_files": "weight_files", "KNOWN_METRICS": "suite", "MetricSuite": "suite",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"moediffir.metrics.{_EXPORTS[name]}"), name)
    if name in ("conventions", "fidelity", "perceptual", "suite", "weight_files"):
        return import_module(f"moediffir.metrics.{name}")
    raise AttributeError(f"module 'moediffir.metrics' has no attribute {name!r}")


__all__ = [
    "KNOWN_METRICS",
    "ConventionsError",
    "MetricConventions",
    "MetricInputError",
    "MetricSuite",
    "MissingWeightsError",
    "fid_from_features",
    "fid_reliable",
    "mse",
    "psnr",
    "psnr_from_mse",
    "rgb_to_y",
    "ssim",
    "weight_files",
]
