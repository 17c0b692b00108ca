"""CIR benchmark tasks: 21 seen codec x level tasks and the unseen ones (paper §3.5, Table 2; docs/design.md §3).

A task is one codec at one level. Levels are data, not code: :data:`PRESETS` holds the paper's levels
(§3.5: JPEG/WebP QF 5/10/15, HEVC/VVC QP 37/42/47, C_PSNR/C_SSIM quality 1/2/3, HiFiC low/med/high) and the
released code's (``official``: JPEG 10/15/20, WebP 1/5/10). Unseen tasks are either cross-degree (a seen
codec at a level it was not trained on: JPEG QF 25 — and 5 where 5 is not seen — and VVC QP 32/52, Table 2)
or cross-type (AVC at QP 37/42/47, a codec never seen in training).

Seen tasks carry stable integer labels 0..20: codecs in the paper's order (JPEG, VVC, HEVC, WebP, C_PSNR,
C_SSIM, HiFiC), and within a codec from the strongest to the weakest compression (QF up, QP down, quality up)
— the numbering of the released code's training set (``JPEG_10: 0 ... HIFI_3: 20``). The label depends on
the position of a level, not its value, so both presets use 0..20. Unseen tasks have label -1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from moediffir.errors import MoEDiffIRError

SEEN = "seen"
UNSEEN_DEGREE = "unseen_degree"
UNSEEN_TYPE = "unseen_type"
KINDS = (SEEN, UNSEEN_DEGREE, UNSEEN_TYPE)

#: Seen codecs in label order (paper §3.5 lists JPEG, VVC, HEVC, WebP, C_PSNR, C_SSIM, HiFiC).
SEEN_CODECS: tuple[str, ...] = ("jpeg", "vvc", "hevc", "webp", "c_psnr", "c_ssim", "hific")
#: Every codec a task may use (AVC is only ever an unseen cross-type task).
ALL_CODECS: tuple[str, ...] = SEEN_CODECS + ("avc",)

#: Prefix of the level in a task id: ``jpeg_q10``, ``hevc_qp37``, ``c_psnr_q1``, ``hific_low``.
LEVEL_PREFIX: dict[str, str] = {
    "jpeg": "q", "webp": "q", "hevc": "qp", "vvc": "qp", "avc": "qp", "c_psnr": "q", "c_ssim": "q", "hific": "",
}
#: Display names used in tables and figures.
CODEC_DISPLAY: dict[str, str] = {
    "jpeg": "JPEG", "webp": "WebP", "hevc": "HEVC", "vvc": "VVC", "avc": "AVC",
    "c_psnr": "C_PSNR", "c_ssim": "C_SSIM", "hific": "HiFiC",
}
HIFIC_LEVELS: tuple[str, ...] = ("low", "med", "high")

# Levels per codec, listed from the strongest compression to the weakest (this order defines the labels).
PRESETS: dict[str, dict[str, dict[str, tuple]]] = {
    "paper": {
        "seen": {
            "jpeg": (5, 10, 15), "vvc": (47, 42, 37), "hevc": (47, 42, 37), "webp": (5, 10, 15),
            "c_psnr": (1, 2, 3), "c_ssim": (1, 2, 3), "hific": HIFIC_LEVELS,
        },
        # cross-degree: JPEG QF 25 (5 is seen here), VVC QP 32/52 (Table 2); cross-type: AVC (§3.5, Table 2)
        UNSEEN_DEGREE: {"jpeg": (25,), "vvc": (52, 32)},
        UNSEEN_TYPE: {"avc": (47, 42, 37)},
    },
    "official": {
        "seen": {
            "jpeg": (10, 15, 20), "vvc": (47, 42, 37), "hevc": (47, 42, 37), "webp": (1, 5, 10),
            "c_psnr": (1, 2, 3), "c_ssim": (1, 2, 3), "hific": HIFIC_LEVELS,
        },
        UNSEEN_DEGREE: {"jpeg": (5, 25), "vvc": (52, 32)},
        UNSEEN_TYPE: {"avc": (47, 42, 37)},
    },
}


class TaskError(MoEDiffIRError, ValueError):
    """An unknown preset, codec or task id."""


@dataclass(frozen=True)
class Task:
    """One codec at one level."""

    codec: str
    level: int | str
    kind: str = SEEN  # "seen", "unseen_degree" or "unseen_type"
    label: int = -1  # 0..20 for seen tasks, -1 for unseen

    @property
    def id(self) -> str:
        return task_id(self.codec, self.level)

    @property
    def seen(self) -> bool:
        return self.kind == SEEN

    def __str__(self) -> str:
        return self.id


def task_id(codec: str, level: int | str) -> str:
    """``jpeg_q10``, ``hevc_qp37``, ``c_psnr_q1``, ``hific_low``."""
    if codec not in LEVEL_PREFIX:
        raise TaskError(f"unknown codec {codec!r}; known codecs: {list(LEVEL_PREFIX)}")
    if codec == "hific":
        if level not in HIFIC_LEVELS:
            raise TaskError(f"HiFiC level {level!r}: choose one of {HIFIC_LEVELS}")
        return f"hific_{level}"
    if isinstance(level, bool) or not isinstance(level, int):
        raise TaskError(f"{codec} level {level!r}: expected an integer")
    return f"{codec}_{LEVEL_PREFIX[codec]}{level}"


def _check_preset(preset: str) -> dict:
    if preset not in PRESETS:
        raise TaskError(f"unknown level preset {preset!r}; choose one of {sorted(PRESETS)} (config key data.preset)")
    return PRESETS[preset]


def seen_tasks(preset: str = "paper") -> list[Task]:
    """The 21 seen tasks in label order (labels 0..20)."""
    levels = _check_preset(preset)["seen"]
    out: list[Task] = []
    for codec in SEEN_CODECS:
        for level in levels[codec]:
            out.append(Task(codec, level, SEEN, len(out)))
    return out


def unseen_tasks(preset: str = "paper") -> list[Task]:
    """Cross-degree then cross-type unseen tasks (label -1)."""
    p = _check_preset(preset)
    out: list[Task] = []
    for kind in (UNSEEN_DEGREE, UNSEEN_TYPE):
        for codec, levels in p[kind].items():
            out.extend(Task(codec, level, kind, -1) for level in levels)
    return out


def all_tasks(preset: str = "paper") -> list[Task]:
    return seen_tasks(preset) + unseen_tasks(preset)


def select_tasks(
    preset: str = "paper",
    codecs: Iterable[str] | None = None,
    unseen: bool = True,
    only: Iterable[str] = (),
) -> list[Task]:
    """Tasks to build.

    Args:
        preset: ``"paper"`` or ``"official"``.
        codecs: seen codecs to include (``None`` = all). Cross-degree tasks follow their codec; cross-type
            codecs (AVC) are never seen and follow ``unseen`` alone.
        unseen: include the unseen tasks.
        only: if not empty, exactly these task ids of the preset, in this order (``codecs`` and ``unseen``
            are then ignored; ``data.tasks`` in the config).
    """
    codecs = tuple(SEEN_CODECS if codecs is None else codecs)
    for c in codecs:
        if c not in ALL_CODECS:
            raise TaskError(f"unknown codec {c!r} in data.codecs; known codecs: {list(ALL_CODECS)}")
    tasks = [t for t in seen_tasks(preset) if t.codec in codecs]
    if unseen:
        tasks += [t for t in unseen_tasks(preset) if t.kind == UNSEEN_TYPE or t.codec in codecs]
    only = tuple(only)
    if only:
        known = {t.id: t for t in all_tasks(preset)}
        missing = [o for o in only if o not in known]
        if missing:
            raise TaskError(f"unknown task id(s) {missing} for preset {preset!r} (config key data.tasks); "
                            f"known: {sorted(known)}")
        tasks = [known[o] for o in dict.fromkeys(only)]
    return tasks


def get_task(tid: str, preset: str = "paper") -> Task:
    """Look up a task of ``preset`` by id."""
    for t in all_tasks(preset):
        if t.id == tid:
            return t
    raise TaskError(f"unknown task id {tid!r} for preset {preset!r}; known: {[t.id for t in all_tasks(preset)]}")


def label_names(preset: str = "paper") -> dict[int, str]:
    """``{label: task id}`` for the seen tasks."""
    return {t.label: t.id for t in seen_tasks(preset)}


def tasks_table(preset: str = "paper") -> list[dict]:
    """One plain row per task of ``preset`` (for display): task, codec, level, label, kind."""
    return [{"task": t.id, "codec": CODEC_DISPLAY[t.codec], "level": t.level, "label": t.label, "kind": t.kind}
            for t in all_tasks(preset)]


def strength_rank(codec: str, level: int | str) -> float:
    """Sort key from the strongest to the weakest compression of a codec (QP falls, QF/quality rises)."""
    if codec == "hific":
        return float(HIFIC_LEVELS.index(str(level)))
    value = float(level)
    return -value if LEVEL_PREFIX.get(codec) == "qp" else value
