"""Image-quality metrics with explicit conventions (paper §4.2, appendix B.2; docs/design.md §7).

* :mod:`moediffir.metrics.fidelity` — PSNR and SSIM (RGB default; BT.601 YCbCr Y and a border crop as options).
* :mod:`moediffir.metrics.perceptual` — LPIPS, FID, CLIP-IQA+ and MANIQA, offline, pretrained or random weights.
* :mod:`moediffir.metrics.conventions` — the conventions string written beside every number.
* :mod:`moediffir.metrics.suite` — :class:`MetricSuite`, per-pair and per-set scoring with networks built once.

Importing this package loads neither pyiqa nor lpips; they are imported when a network is first built.
"""

from moediffir.metrics.conventions import ConventionsError, MetricConventions
from moediffir.metrics.fidelity import MetricInputError, psnr, rgb_to_y, ssim
from moediffir.metrics.perceptual import MissingWeightsError, fid_from_features, fid_reliable, weight_files
from moediffir.metrics.suite import KNOWN_METRICS, MetricSuite

__all__ = [
    "KNOWN_METRICS",
    "ConventionsError",
    "MetricConventions",
    "MetricInputError",
    "MetricSuite",
    "MissingWeightsError",
    "fid_from_features",
    "fid_reliable",
    "psnr",
    "rgb_to_y",
    "ssim",
    "weight_files",
]
