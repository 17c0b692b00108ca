"""The measurement conventions written beside every number (paper §4.2, appendix B.2; docs/design.md §7).

Restoration papers differ in how they measure the same metric: RGB or the Y channel of YCbCr, a border crop or
none, the value range, the LPIPS backbone, and (for the learned metrics) whether real pretrained weights were
used. :class:`MetricConventions` records those choices in one frozen object; :meth:`MetricConventions.to_text`
turns them into one short ``key=value; ...`` string that every results row and table carries, and
:meth:`MetricConventions.from_text` reads it back.

Fixed choices (not options, but written into the text so a reader never has to guess):

* SSIM: Gaussian window 11x11, sigma 1.5, population covariance, constants K1=0.01, K2=0.03, mean over the
  "valid" region (Wang et al. 2004; BasicSR; ``skimage.metrics.structural_similarity`` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``). RGB SSIM is the mean over channels.
* Y channel: BT.601 YCbCr luma, ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for R, G, B in [0, 1] (the
  MATLAB / BasicSR / scikit-image definition used by restoration papers), kept as a float (not rounded).
* Colour and border crop apply to PSNR and SSIM only; LPIPS, FID, CLIP-IQA and MANIQA see the full RGB image.
* FID: InceptionV3 pool3 (2048-d, the pytorch-fid / pyiqa weights), clean-fid "clean" resizing to 299 px.
* CLIP-IQA and MANIQA: pyiqa's ``clipiqa+`` (CLIP RN50) and ``maniqa-pipal``, as the paper states (app. B.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moediffir.errors import MoEDiffIRError

COLORS = ("rgb", "y")
LPIPS_NETS = ("alex", "vgg")
WEIGHTS = ("pretrained", "random")

SSIM_WINDOW = "gauss11-s1.5"
FID_FEATURES = "inception-pool3-clean"
CLIPIQA_MODEL = "clipiqa+"
MANIQA_MODEL = "maniqa-pipal"


class ConventionsError(MoEDiffIRError, ValueError):
    """A bad convention value or an unreadable conventions string."""


@dataclass(frozen=True)
class MetricConventions:
    """How every metric of a results row was measured.

    Attributes:
        color: ``"rgb"`` (all three channels) or ``"y"`` (BT.601 YCbCr luma) for PSNR / SSIM.
        crop_border: pixels removed from each side before PSNR / SSIM (0 = none).
        data_range: peak value of the images compared (255 for uint8 images, 1 for float images in [0, 1]).
        lpips_net: LPIPS backbone, ``"alex"`` (paper default) or ``"vgg"``.
        weights: ``"pretrained"`` (real weights from local files) or ``"random"`` (seeded random init; the
            numbers of LPIPS / FID / CLIP-IQA / MANIQA then say nothing about quality).
        seed: the seed of the random initialisation (ignored for pretrained weights).
        maniqa_crops: number of 224-px crops MANIQA averages per image.
    """

    color: str = "rgb"
    crop_border: int = 0
    data_range: float = 255.0
    lpips_net: str = "alex"
    weights: str = "pretrained"
    seed: int = 0
    maniqa_crops: int = 20

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ConventionsError(f"color={self.color!r}: choose one of {COLORS}")
        if not isinstance(self.crop_border, int) or self.crop_border < 0:
            raise ConventionsError(f"crop_border={self.crop_border!r}: must be an int >= 0")
        if not self.data_range > 0:
            raise ConventionsError(f"data_range={self.data_range!r}: must be > 0 (255 for uint8, 1.0 for [0, 1])")
        if self.lpips_net not in LPIPS_NETS:
            raise ConventionsError(f"lpips_net={self.lpips_net!r}: choose one of {LPIPS_NETS}")
        if self.weights not in WEIGHTS:
            raise ConventionsError(f"weights={self.weights!r}: choose one of {WEIGHTS}")
        if self.maniqa_crops < 1:
            raise ConventionsError(f"maniqa_crops={self.maniqa_crops!r}: must be >= 1")

    # ------------------------------------------------------------------------------------------ text
    @property
    def weights_label(self) -> str:
        """``"pretrained"`` or ``"random(seed=N)"``: the value of a table's ``weights`` column."""
        return "pretrained" if self.weights == "pretrained" else f"random(seed={self.seed})"

    def to_text(self) -> str:
        """One line naming every convention, e.g. ``color=rgb; crop=0; range=0-255; ...; weights=pretrained``."""
        rng = f"0-{self.data_range:g}"
        parts = [
            f"color={self.color}",
            f"crop={self.crop_border}",
            f"range={rng}",
            f"ssim={SSIM_WINDOW}",
            f"lpips={self.lpips_net}-v0.1",
            f"fid={FID_FEATURES}",
            f"clipiqa={CLIPIQA_MODEL}",
            f"maniqa={MANIQA_MODEL}/crops{self.maniqa_crops}",
            f"weights={self.weights_label}",
        ]
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.to_text()

    @classmethod
    def from_text(cls, text: str) -> MetricConventions:
        """Parse a string written by :meth:`to_text` (round trip); raise ConventionsError naming the bad part."""
        fields: dict[str, str] = {}
        for part in text.split(";"):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise ConventionsError(f"conventions {text!r}: part {part!r} is not key=value")
            key, value = part.split("=", 1)
            fields[key.strip()] = value.strip()
        try:
            rng = fields["range"]
            if not rng.startswith("0-"):
                raise ConventionsError(f"conventions {text!r}: range {rng!r} must look like 0-255")
            lpips_net = fields["lpips"].split("-", 1)[0]
            maniqa = fields["maniqa"]
            crops = int(maniqa.rsplit("/crops", 1)[1]) if "/crops" in maniqa else 20
            weights = fields["weights"]
            seed = 0
            if weights.startswith("random"):
                if "seed=" in weights:
                    seed = int(weights.split("seed=", 1)[1].rstrip(")"))
                weights = "random"
            return cls(
                color=fields["color"],
                crop_border=int(fields["crop"]),
                data_range=float(rng[2:]),
                lpips_net=lpips_net,
                weights=weights,
                seed=seed,
                maniqa_crops=crops,
            )
        except KeyError as exc:
            raise ConventionsError(f"conventions {text!r}: missing key {exc.args[0]!r}") from exc
        except ValueError as exc:
            if isinstance(exc, ConventionsError):
                raise
            raise ConventionsError(f"conventions {text!r}: {exc}") from exc

    # ---------------------------------------------------------------------------------------- config
    @classmethod
    def from_config(cls, cfg: Any) -> MetricConventions:
        """Build from a resolved :class:`moediffir.config.Config` (its ``eval`` section and ``seed``)."""
        ev = cfg.eval
        return cls(
            color=ev.color_space,
            crop_border=ev.crop_border,
            data_range=255.0,
            lpips_net=ev.lpips_net,
            weights=ev.metric_weights,
            seed=cfg.seed,
            maniqa_crops=ev.maniqa_crops,
        )
