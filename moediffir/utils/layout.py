"""One check of a weight file's layout: its ``{key: shape}`` against the layout a model expects (docs/design.md §4).

Nothing here implements a paper equation. Every loader of pretrained weights (the SD single file, DA-CLIP /
CLIP towers, RN50, HiFiC) checks the file before it touches a model, so that a wrong file fails with one
message naming the file and every problem at once: missing keys, unexpected keys, keys with another shape.
Long key lists are cut and counted per top-level prefix (:func:`summarise_keys`); :func:`layout_diff` finds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ShapeCheck = Callable[[str, tuple[int, ...], tuple[int, ...]], bool]


def shape_of(value: Any) -> tuple[int, ...]:
    """The shape of a tensor, an array, or a shape given as a sequence; ``()`` for anything else."""
    shape = getattr(value, "shape", value)
    try:
        return tuple(int(s) for s in shape)
    except TypeError:
        return ()


def summarise_keys(keys: Iterable[str], limit: int = 40) -> str:
    """``[k1, k2, ...]`` (sorted); a list longer than ``limit`` is cut and counted per top-level prefix."""
    keys = sorted(keys)
    if len(keys) <= limit:
        return "[" + ", ".join(keys) + "]"
    counts: dict[str, int] = {}
    for k in keys:
        top = k.split(".", 1)[0] + (".*" if "." in k else "")
        counts[top] = counts.get(top, 0) + 1
    by_prefix = ", ".join(f"{p}: {n}" for p, n in counts.items())
    return "[" + ", ".join(keys[:limit]) + f"] ... and {len(keys) - limit} more (by prefix: {by_prefix})"


@dataclass
class LayoutDiff:
    """What separates a file's layout from the expected one (empty: it matches)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shapes: list[str] = field(default_factory=list)  # "key: file (a, b) vs expected (c, d)"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shapes)

    def problems(self, limit: int = 40) -> list[str]:
        """One line per kind of problem: ``missing keys (N): [...]``, ``unexpected keys``, ``wrong shapes``."""
        out = []
        for name, keys in (("missing keys", self.missing), ("unexpected keys", self.unexpected),
                           ("wrong shapes", self.wrong_shapes)):
            if keys:
                out.append(f"{name} ({len(keys)}): {summarise_keys(keys, limit)}")
        return out


def layout_diff(
    found: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    unexpected: bool = True,
    same_shape: ShapeCheck | None = None,
) -> LayoutDiff:
    """Compare ``found`` (key -> tensor or shape) with ``expected`` (key -> shape).

    ``unexpected=False`` ignores keys the model does not use (a file holding several models);
    ``same_shape(key, file_shape, expected_shape)`` accepts shapes other than equal ones (e.g. a linear layer
    stored as a 1x1 convolution).
    """
    diff = LayoutDiff()
    for key, want in expected.items():
        if key not in found:
            diff.missing.append(key)
            continue
        got, want = shape_of(found[key]), shape_of(want)
        if got != want and not (same_shape is not None and same_shape(key, got, want)):
            diff.wrong_shapes.append(f"{key}: file {got} vs expected {want}")
    if unexpected:
        diff.unexpected = [k for k in found if k not in expected]
    return diff
