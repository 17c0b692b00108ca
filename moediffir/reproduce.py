"""One command that reruns the whole paper: notebooks 01 -> 06 in order through papermill (docs/design.md §1).

Every notebook is executed with the same parameters (``profile``, ``overrides``, ``device``) and written,
executed, to ``results/<profile>/notebooks/``. A notebook whose source, parameters, package code and upstream
notebooks are unchanged since its last successful run is skipped. The first failure stops the run and names the
notebook and the cell. A run manifest (git revision, package versions, seed, device, torch's CPU threads, wall
time per notebook) is written to ``results/<profile>/run_manifest.json``. Profiles that train their own prior
(``prior.enabled``: ``mini``) run notebook ``00_prior`` (stage 0) first; the others skip it. One run per profile at
a time: a run holds the lock of ``results/<profile>/notebooks/`` (:func:`~moediffir.utils.locks.folder_lock`).
"""

from __future__ import annotations

import json
import platform
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from moediffir.config import config_to_dict, resolve_config
from moediffir.errors import MoEDiffIRError
from moediffir.utils.digests import json_digest, read_record, tree_digest
from moediffir.utils.io import atomic_write_json
from moediffir.utils.locks import folder_lock
from moediffir.utils.revision import git_revision

PACKAGES = (
    "moediffir", "torch", "torchvision", "diffusers", "transformers", "accelerate", "compressai", "lpips",
    "pyiqa", "numpy", "pillow", "av", "imageio-ffmpeg", "papermill", "seaborn", "pandas",
)


class ReproduceError(MoEDiffIRError, RuntimeError):
    """The run cannot start (no notebooks, an unknown name) or a notebook failed (:class:`NotebookFailedError`)."""


class NotebookFailedError(ReproduceError):
    """A notebook failed part way through the run; the message names the notebook and the cell."""

    exit_code = 1


@dataclass
class NotebookRun:
    notebook: str
    status: str  # "ran", "skipped", "failed"
    seconds: float
    key: str
    output: str
    error: str = ""


@dataclass
class ReproduceReport:
    profile: str
    runs: list[NotebookRun] = field(default_factory=list)

    @property
    def skipped(self) -> list[str]:
        return [r.notebook for r in self.runs if r.status == "skipped"]

    @property
    def ran(self) -> list[str]:
        return [r.notebook for r in self.runs if r.status == "ran"]


def find_notebooks(notebooks_dir: str | Path) -> list[Path]:
    """Numbered notebooks (``NN_name.ipynb``) in execution order."""
    nbs = sorted(p for p in Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not nbs:
        raise ReproduceError(f"{notebooks_dir}: no numbered notebooks (NN_name.ipynb) found")
    return nbs


def package_fingerprint() -> str:
    """Hash of the package's own source files: a code change invalidates every notebook's cache."""
    return tree_digest(Path(__file__).resolve().parent, suffixes=(".py", ".json"))


def _notebook_source_hash(path: Path) -> str:
    """Hash of the cells' sources and tags only (outputs and metadata noise do not count)."""
    nb = json.loads(path.read_text())
    cells = [(c.get("cell_type"), "".join(c.get("source", "")), c.get("metadata", {}).get("tags", []))
             for c in nb.get("cells", [])]
    return json_digest(cells)


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _failure_message(nb: Path, exc: BaseException) -> str:
    cell = getattr(exc, "exec_count", None) or getattr(exc, "cell_index", None)
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    where = f"cell {cell}" if cell is not None else "an unknown cell"
    msg = f"notebook {nb.name} failed in {where}: {ename}: {evalue}"
    frames = _traceback_frames(getattr(exc, "traceback", None))
    return msg + (" (raised at " + " <- ".join(reversed(frames)) + ")" if frames else "")


KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


def _traceback_frames(traceback: list[str] | None, keep: int = 3) -> list[str]:
    """The last ``keep`` ``file:line, in function`` frames of a kernel's (ANSI-coloured) traceback."""
    if not traceback:
        return []
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))
    frames = [line.strip().removeprefix("File ").strip() for line in text.splitlines()
              if line.strip().startswith(("File ", "Cell In"))]
    return frames[-keep:]


def _default_executor(src: Path, dst: Path, parameters: dict[str, Any], cwd: Path) -> None:
    import papermill as pm

    # The kernel's own log at errors only: over local TCP, ipykernel >= 7 warns on every start that the (loopback)
    # channel is unencrypted, which says nothing about the notebook. Errors of cells come back in the notebook.
    pm.execute_notebook(str(src), str(dst), parameters=parameters, cwd=str(cwd), progress_bar=False,
                        kernel_name="python3", log_output=False, extra_arguments=KERNEL_ARGUMENTS)


def reproduce(
    profile: str = "smoke",
    overrides: Mapping[str, Any] | None = None,
    *,
    root: str | Path = ".",
    notebooks: list[str] | None = None,
    force: bool = False,
    device: str | None = None,
    executor: Callable[[Path, Path, dict[str, Any], Path], None] | None = None,
    log: Callable[[str], None] = print,
) -> ReproduceReport:
    """Run the numbered notebooks in order; skip unchanged ones; stop at the first failure.

    Args:
        profile: ``smoke``, ``mini`` or ``paper``.
        overrides: validated config overrides passed to every notebook.
        root: repository root (notebooks run with this as their working directory).
        notebooks: optional subset of notebook names (``"01_data_generation"``) to run.
        force: rerun even when nothing changed.
        device: ``cpu``/``cuda``; ``None`` keeps the profile's ``device``.

    Raises :class:`~moediffir.utils.locks.FolderLockedError` (nothing run) while another reproduce of the same
    profile runs; the message names it.
    """
    root = Path(root).resolve()
    overrides = dict(overrides or {})
    if device is not None:
        overrides["device"] = device
    cfg = resolve_config(profile, overrides)  # validates the overrides before anything runs
    selected = [nb for nb in find_notebooks(root / "notebooks") if in_profile(nb, cfg, log)]
    if notebooks:
        wanted = {n.removesuffix(".ipynb") for n in notebooks}
        unknown = wanted - {p.stem for p in selected}
        if unknown:
            raise ReproduceError(f"unknown notebook(s) {sorted(unknown)}; have {[p.stem for p in selected]}")
        selected = [p for p in selected if p.stem in wanted]
    out_dir = root / cfg.results_dir / profile / "notebooks"
    with folder_lock(out_dir, what="notebooks folder"):  # one reproduce per profile; the notebooks lock their own
        return _run_notebooks(root, cfg, selected, out_dir, overrides, force, executor, log)


def _run_notebooks(root: Path, cfg, selected: list[Path], out_dir: Path, overrides: dict[str, Any], force: bool,
                   executor: Callable[[Path, Path, dict[str, Any], Path], None] | None,
                   log: Callable[[str], None]) -> ReproduceReport:
    """Run ``selected`` in order into ``out_dir`` (inside its lock); skip unchanged ones; stop at the first failure."""
    profile = cfg.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / "reproduce_state.json"
    state: dict[str, Any] = read_record(state_path) or {}
    code_hash = package_fingerprint()
    params = {"profile": profile, "overrides": overrides}
    report = ReproduceReport(profile=profile)
    upstream = ""
    run_exec = executor or _default_executor
    t_total = time.perf_counter()
    for nb in selected:
        key = json_digest([_notebook_source_hash(nb), params, code_hash, upstream])
        upstream = key
        dst = out_dir / nb.name
        prev = state.get(nb.stem, {})
        if not force and prev.get("key") == key and prev.get("status") == "ok" and dst.exists():
            log(f"[reproduce] {nb.name}: unchanged since its last successful run, skipped")
            report.runs.append(NotebookRun(nb.stem, "skipped", 0.0, key, str(dst)))
            continue
        log(f"[reproduce] {nb.name}: running ({profile})")
        t0 = time.perf_counter()
        tmp_dst = dst.with_suffix(".running.ipynb")
        try:
            run_exec(nb, tmp_dst, params, root)
        except Exception as exc:  # papermill raises PapermillExecutionError with the cell
            msg = _failure_message(nb, exc)
            report.runs.append(NotebookRun(nb.stem, "failed", time.perf_counter() - t0, key, str(tmp_dst), msg))
            state[nb.stem] = {"key": key, "status": "failed", "error": msg}
            atomic_write_json(state_path, state)
            _write_manifest(root, cfg, report, time.perf_counter() - t_total)
            raise NotebookFailedError(msg + f" (executed copy: {tmp_dst})") from exc
        tmp_dst.replace(dst)
        seconds = time.perf_counter() - t0
        report.runs.append(NotebookRun(nb.stem, "ran", seconds, key, str(dst)))
        state[nb.stem] = {"key": key, "status": "ok", "seconds": round(seconds, 2)}
        atomic_write_json(state_path, state)
        log(f"[reproduce] {nb.name}: done in {seconds:.1f} s")
    _write_manifest(root, cfg, report, time.perf_counter() - t_total)
    return report


STAGE0_PREFIX = "00_"  # notebook of stage 0 (training the prior): only in profiles with prior.enabled


def in_profile(nb: Path, cfg, log: Callable[[str], None] | None = None) -> bool:
    """Whether ``nb`` belongs to this profile's run: the stage-0 notebook only where the prior is trained here."""
    if nb.name.startswith(STAGE0_PREFIX) and not cfg.prior.enabled:
        if log is not None:
            log(f"[reproduce] {nb.name}: not part of profile {cfg.profile} (its prior is not trained here)")
        return False
    return True


def _write_manifest(root: Path, cfg, report: ReproduceReport, total: float) -> Path:
    device = cfg.device
    try:
        import torch

        from moediffir.utils.devices import resolve_device

        resolved = str(resolve_device(device))
        gpu = torch.cuda.get_device_name(0) if resolved.startswith("cuda") and torch.cuda.is_available() else ""
        # the kernels inherit this process's environment (OMP_NUM_THREADS), so they run with as many CPU threads;
        # wall times, and results in their last bits, depend on it
        threads = torch.get_num_threads()
    except Exception:  # noqa: BLE001 - torch missing or broken: still write the manifest
        resolved, gpu, threads = device, "", None
    manifest = {
        "profile": report.profile,
        "git_revision": git_revision(root),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "seed": cfg.seed,
        "device": resolved,
        "gpu": gpu,
        "torch_threads": threads,
        "config": config_to_dict(cfg),
        "notebooks": [
            {"notebook": r.notebook, "status": r.status, "seconds": round(r.seconds, 2), "output": r.output,
             "error": r.error}
            for r in report.runs
        ],
        "total_seconds": round(total, 2),
    }
    return atomic_write_json(root / cfg.results_dir / report.profile / "run_manifest.json", manifest)
