"""One object that measures restored images the way the paper does (paper §4.2, appendix B.2; docs/design.md §7).

:class:`MetricSuite` computes a chosen list of metrics per image pair (PSNR, SSIM, LPIPS against the ground
truth; CLIP-IQA+ and MANIQA on the restored image alone) and FID per set of images, with the conventions of a
:class:`~moediffir.metrics.conventions.MetricConventions`. Networks are built on first use and reused for every
later image. With ``weights="pretrained"`` all weight files are checked when the suite is made, so a missing
file fails at once rather than after the first restorations. Every result dict carries ``weights`` and
``conventions`` text next to the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moediffir.metrics import perceptual
from moediffir.metrics.conventions import MetricConventions
from moediffir.metrics.fidelity import psnr, ssim
from moediffir.metrics.weight_files import weight_roles
from moediffir.utils.devices import resolve_device

PAIR_METRICS = ("psnr", "ssim", "lpips", "clipiqa", "maniqa")  # one value per image
SET_METRICS = ("fid",)  # one value per set of images
KNOWN_METRICS = PAIR_METRICS + SET_METRICS
NO_REFERENCE = ("clipiqa", "maniqa")  # scored on the restored image only


class MetricSuite:
    """Compute ``metrics`` under ``conventions``, building each network once.

    Args:
        metrics: names from :data:`KNOWN_METRICS` (``"fid"`` is per set, see :meth:`score_set`).
        conventions: colour / crop / range for PSNR-SSIM, LPIPS backbone, pretrained or random weights.
        weights_dir: folder of pretrained metric weights (``None``: the torch hub dir; see
            :func:`moediffir.metrics.perceptual.weight_files`).
        lpips_dir: folder of the LPIPS weights converted by ``make setup`` (``None``: ``data/weights/lpips``).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` (CUDA when available) or a ``torch.device``.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
        conventions: MetricConventions | None = None,
        *,
        weights_dir: str | Path | None = None,
        lpips_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        unknown = [m for m in metrics if m not in KNOWN_METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; choose from {list(KNOWN_METRICS)}")
        self.metrics = tuple(dict.fromkeys(metrics))
        self.conventions = conventions or MetricConventions()
        self.weights_dir = weights_dir
        self.lpips_dir = lpips_dir
        self.device = resolve_device(device)
        self._nets: dict[str, torch.nn.Module] = {}
        if self.conventions.weights == "pretrained":  # fail now (naming every missing file), not after restoring
            learned = [m for m in self.metrics if weight_roles(m, self.conventions)]
            roles = [r for m in learned for r in weight_roles(m, self.conventions, lpips_dir)]
            if roles:
                perceptual.require_weight_files("+".join(learned), roles, weights_dir)

    @classmethod
    def from_config(
        cls, cfg: Any, metrics: Sequence[str] | None = None, device: str | torch.device | None = None
    ) -> MetricSuite:
        """The suite a resolved :class:`moediffir.config.Config` asks for (``cfg.eval``, ``cfg.seed``)."""
        from moediffir.metrics.lpips_weights import lpips_weights_dir

        return cls(
            metrics if metrics is not None else cfg.eval.metrics,
            MetricConventions.from_config(cfg),
            weights_dir=cfg.eval.metric_weights_dir or None,
            lpips_dir=lpips_weights_dir(cfg),
            device=device if device is not None else cfg.device,
        )

    # ------------------------------------------------------------------------------------ labels
    @property
    def conventions_text(self) -> str:
        return self.conventions.to_text()

    def _labels(self) -> dict[str, str]:
        return {"weights": self.conventions.weights_label, "conventions": self.conventions_text}

    # ---------------------------------------------------------------------------------- networks
    def network(self, name: str) -> torch.nn.Module:
        """The network behind ``name`` (``"lpips"``, ``"fid"``, ``"clipiqa"``, ``"maniqa"``), built once."""
        if name not in self._nets:
            c = self.conventions
            kw = {"weights_dir": self.weights_dir, "seed": c.seed}
            if name == "lpips":
                net = perceptual.build_lpips(c.lpips_net, c.weights, lpips_dir=self.lpips_dir, **kw)
                if net.weights_label != c.weights_label:  # the label says what was loaded, never only what was asked
                    raise RuntimeError(f"LPIPS loaded {net.weights_label} weights but conventions say {c.weights_label}")
            elif name == "fid":
                net = perceptual.build_fid_inception(c.weights, **kw)
            elif name == "clipiqa":
                net = perceptual.build_clipiqa(c.weights, **kw)
            elif name == "maniqa":
                net = perceptual.build_maniqa(c.weights, crops=c.maniqa_crops, **kw)
            else:
                raise ValueError(f"{name!r} has no network; networks: lpips, fid, clipiqa, maniqa")
            self._nets[name] = net.to(self.device)
        return self._nets[name]

    # ----------------------------------------------------------------------------------- scoring
    def score_pair(self, restored: Any, reference: Any) -> dict[str, Any]:
        """Per-image metrics of ``restored`` against ``reference`` (uint8 ``(H, W, 3)`` arrays of equal shape).

        Returns ``{metric: float, ..., "weights": str, "conventions": str}`` for the pair metrics requested
        (FID is skipped here; use :meth:`score_set`).
        """
        c = self.conventions
        rng = None if np.asarray(restored).dtype == np.uint8 else c.data_range
        out: dict[str, Any] = {}
        for m in self.metrics:
            if m == "psnr":
                out[m] = psnr(restored, reference, data_range=rng, crop_border=c.crop_border, color=c.color)
            elif m == "ssim":
                out[m] = ssim(restored, reference, data_range=rng, crop_border=c.crop_border, color=c.color)
            elif m == "lpips":
                out[m] = perceptual.lpips_distance(self.network("lpips"), restored, reference, data_range=rng)
            elif m in NO_REFERENCE:
                out[m] = perceptual.nr_score(self.network(m), restored, data_range=rng)
        out.update(self._labels())
        return out

    def features(self, images: Sequence[Any]) -> np.ndarray:
        """InceptionV3 pool3 features ``(N, 2048)``, e.g. to cache per image and call :meth:`score_features`."""
        return perceptual.inception_features(self.network("fid"), images)

    def score_features(self, restored_feats: np.ndarray, reference_feats: np.ndarray) -> dict[str, Any]:
        """FID from cached features, with the set sizes and the reliability flag."""
        n1, n2 = len(restored_feats), len(reference_feats)
        return {
            "fid": perceptual.fid_from_features(restored_feats, reference_feats),
            "fid_n": min(n1, n2),
            "fid_reliable": perceptual.fid_reliable(n1, n2),
            **self._labels(),
        }

    def score_set(self, restored: Sequence[Any], reference: Sequence[Any]) -> dict[str, Any]:
        """FID between a set of restored images and the ground-truth set (at least 2 images each).

        ``fid_reliable`` is False below :data:`moediffir.metrics.perceptual.FID_MIN_IMAGES` images per set: such
        FIDs compare only between sets of equal size.
        """
        return self.score_features(self.features(restored), self.features(reference))
