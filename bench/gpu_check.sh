#!/usr/bin/env bash
# GPU check of the kit (docs/design.md §2, §5-§6): on one CUDA GPU, within 8 minutes ($BUDGET),
#
#   1. the smoke `reproduce` on CUDA: notebooks 01 -> 06 through papermill with --device cuda (the smoke profile
#      must run unchanged on a GPU);
#   2. bench/bench_model.py: cost of MoE-DiffIR over the bare SD UNet, paper architecture (random weights) at
#      256 and 512 px in bf16, and the tiny smoke networks;
#   3. bench/bench_model.py again at a compute-bound batch (paper architecture, 256 px, batch $LARGE_BATCH,
#      default 64), with and without the Visual2Text adapter: the cost ratios of the method itself (small
#      batches on a fast GPU are bound by kernel launches, not FLOPs);
#   4. bench/bench_train.py: stage-I training throughput and peak memory, paper architecture at 256 px in bf16
#      (with and without gradient checkpointing, batch 4 and 8), when that script is present;
#   5. the CUDA tests (pytest -m gpu): fp16/bf16 restoration against fp32, CUDA against CPU.
#
# Usage (from anywhere; the repository root is found from this file):
#
#     bash bench/gpu_check.sh              # outputs under $OUT if set, else results/gpu_check/
#     STEP_TIMEOUTS="420 75 90 75 60" bash bench/gpu_check.sh   # limits of steps 1-5 (the defaults), seconds
#     BUDGET=480 bash bench/gpu_check.sh   # the whole script's limit (default 480 s = 8 minutes): each step gets
#                                          # at most what is left of it; a step with under 10 s left is skipped
#     BENCHMARK=data/benchmark/smoke bash bench/gpu_check.sh      # reuse a smoke benchmark built on a CPU
#     DEVICE=cpu BENCHMARK=data/benchmark/smoke STEP_TIMEOUTS="600 5 200 5 60" bash bench/gpu_check.sh  # rehearsal, CPU
#
# Outputs (few files, so that they fit a remote machine's copy-back limits):
#     gpu_check.json     per step: command, exit code, seconds, timed out or not; GPU, torch and CUDA versions
#     gpu_check.log      every step's output, one after the other
#     bench_model.json   bench/bench_model.py --out
#     bench_model_large.json  step 3 (rows with and without the V2T adapter)
#     bench_train.json   bench/bench_train.py --out (if the script exists)
#     run_manifest.json  the smoke reproduce's manifest (versions, device, wall time per notebook)
#     smoke_results.tar.gz  the smoke tables and figures (results/smoke/tables, figures, ablations)
#
# The smoke reproduce writes its results, runs and benchmark into a scratch folder (never over results/smoke of
# the checkout). The kit's Python dependencies must be importable: $PYTHON, else .venv/bin/python, else python3.
# On a machine without network, put wheels of the missing packages in $WHEELS (default .wheels/): they are
# installed first, without their dependencies, into a scratch folder put on PYTHONPATH (pip --no-index
# --no-deps --target), so the machine's own torch stays. Data generation (notebook 01) is CPU work (the codecs
# are CPU programs) that needs av, imageio-ffmpeg and compressai: with BENCHMARK pointing at a smoke benchmark
# already built (`moediffir data build --profile smoke` on any machine), notebook 01 is skipped and notebooks
# 02-06 run on that benchmark. Every number comes from random weights (smoke profile and random-weight
# paper architecture): timings, not quality. Exit code: 0 when every step succeeded, 1 otherwise, 3 when the
# environment is not usable (no CUDA GPU or missing packages).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 3
OUT_DIR="${OUT:-$ROOT/results/gpu_check}"
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"
read -r T_REPRODUCE T_MODEL T_LARGE T_TRAIN T_TESTS <<<"${STEP_TIMEOUTS:-}"
T_REPRODUCE="${T_REPRODUCE:-420}" T_MODEL="${T_MODEL:-75}" T_LARGE="${T_LARGE:-90}" T_TRAIN="${T_TRAIN:-75}" T_TESTS="${T_TESTS:-60}"
LARGE_BATCH="${LARGE_BATCH:-64}"
BUDGET="${BUDGET:-480}"
T_START=$(date +%s)
BENCHMARK="${BENCHMARK:-}"
DEVICE="${DEVICE:-cuda}"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/moediffir_gpu_check.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi

log() { echo "[gpu_check] $*" | tee -a "$LOG"; }

# -- environment ------------------------------------------------------------------------------------------
WHEELS="${WHEELS:-$ROOT/.wheels}"
SITE=""
if [[ -d "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE="$SCRATCH/site"
  log "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE (no index, no dependencies)"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
    >>"$LOG" 2>&1 || log "pip install from $WHEELS failed (see $LOG); trying with what is installed"
fi
export PYTHONPATH="$ROOT${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg

if ! DEVICE="$DEVICE" BENCHMARK="$BENCHMARK" "$PY" - >>"$LOG" 2>&1 <<'EOF'
import importlib, os, sys
needed = ["torch", "diffusers", "accelerate", "papermill", "ipykernel", "jupytext", "lpips", "pyiqa", "open_clip",
          "skimage", "pandas", "seaborn"]
if not os.environ["BENCHMARK"]:  # notebook 01 runs the codecs
    needed += ["av", "compressai", "imageio_ffmpeg"]
missing = [m for m in needed if importlib.util.find_spec(m) is None]
import torch
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"gpu {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
if missing:
    sys.exit(f"missing packages: {', '.join(missing)} (put their wheels in $WHEELS, default .wheels/)")
if os.environ["DEVICE"].startswith("cuda") and not torch.cuda.is_available():
    sys.exit("no CUDA GPU visible to torch (DEVICE=cpu rehearses the script without one)")
EOF
then
  log "environment not usable (see $LOG)"
  exit 3
fi
command -v nvidia-smi >/dev/null && nvidia-smi >>"$LOG" 2>&1

# -- steps ------------------------------------------------------------------------------------------------
STEPS_JSON="$SCRATCH/steps.jsonl"
: >"$STEPS_JSON"
FAILED=0

run_step() {  # name timeout command...
  local name="$1" limit="$2"; shift 2
  local left=$(( BUDGET - ($(date +%s) - T_START) ))
  if (( left < 10 )); then
    log "---- $name: skipped, ${left}s left of the ${BUDGET}s budget"
    "$PY" -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "exit": None, "seconds": 0.0, "timed_out": False, "skipped": "budget", "command": sys.argv[2:]}))' \
      "$name" "$@" >>"$STEPS_JSON"
    FAILED=1
    return
  fi
  (( limit > left )) && limit=$left
  log "---- $name (limit ${limit}s): $*"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  local secs
  secs=$("$PY" -c "print(round($t1 - $t0, 1))")
  log "---- $name: exit $rc after ${secs}s$([[ $rc -eq 124 || $rc -eq 137 ]] && echo ' (timed out)')"
  "$PY" -c 'import json,sys; print(json.dumps({"step": sys.argv[1], "exit": int(sys.argv[2]), "seconds": float(sys.argv[3]), "timed_out": sys.argv[2] in ("124", "137"), "command": sys.argv[4:]}))' \
    "$name" "$rc" "$secs" "$@" >>"$STEPS_JSON"
  [[ $rc -eq 0 ]] || FAILED=1
}

# 1. the smoke reproduce on CUDA, into the scratch folder (notebooks 02-06 on $BENCHMARK when it is given)
ONLY=()
if [[ -n "$BENCHMARK" ]]; then
  [[ -f "$BENCHMARK/manifest.csv" ]] \
    || { log "BENCHMARK=$BENCHMARK holds no manifest.csv (not a finished benchmark build)"; exit 3; }
  BENCH_ABS="$(cd "$BENCHMARK" && pwd)"
  ONLY=(--only $(cd notebooks && ls [0-9][0-9]_*.ipynb | grep -v '^01_' | sed 's/\.ipynb$//'))
  log "reusing the benchmark in $BENCH_ABS: notebook 01 (CPU codecs) skipped"
else
  BENCH_ABS="$SCRATCH/benchmark"
fi
run_step reproduce_smoke "$T_REPRODUCE" "$PY" -m moediffir.cli reproduce --profile smoke --device "$DEVICE" \
  --set "results_dir=$SCRATCH/results" --set "runs_dir=$SCRATCH/runs" --set "data.out_dir=$BENCH_ABS" "${ONLY[@]}"
[[ -f "$SCRATCH/results/smoke/run_manifest.json" ]] && cp "$SCRATCH/results/smoke/run_manifest.json" "$OUT_DIR/"
if [[ -d "$SCRATCH/results/smoke" ]]; then
  (cd "$SCRATCH/results/smoke" && tar -czf "$OUT_DIR/smoke_results.tar.gz" \
     $(ls -d tables figures ablations 2>/dev/null)) >>"$LOG" 2>&1
fi

# 2. the model benchmark: paper architecture (random weights) at 256 and 512 px in bf16, plus the tiny networks
run_step bench_model "$T_MODEL" "$PY" bench/bench_model.py --device "$DEVICE" --arch all --batch 4 \
  --out "$OUT_DIR/bench_model.json"

# 3. the same at a compute-bound batch, with and without the V2T adapter (the method's own cost ratios)
run_step bench_model_large "$T_LARGE" "$PY" -c "
import json, sys
sys.argv[0] = 'bench/bench_model.py'
sys.path.insert(0, 'bench')
import bench_model
rows = []
for extra in ([], ['--set', 'model.use_v2t=false']):
    out = sys.argv[2] + ('.v2t' if not extra else '.nov2t')
    bench_model.main(['--device', sys.argv[1], '--arch', 'paper', '--sizes', '256', '--batch', sys.argv[3],
                      '--out', out, *extra])
    rows += json.load(open(out))
json.dump(rows, open(sys.argv[2], 'w'), indent=1)
" "$DEVICE" "$SCRATCH/bench_model_large.json" "$LARGE_BATCH"
[[ -f "$SCRATCH/bench_model_large.json" ]] && cp "$SCRATCH/bench_model_large.json" "$OUT_DIR/"

# 4. the stage-I training benchmark, when present
if [[ -f bench/bench_train.py ]]; then
  run_step bench_train "$T_TRAIN" "$PY" bench/bench_train.py --device "$DEVICE" --out "$OUT_DIR/bench_train.json"
else
  log "bench/bench_train.py not found: training benchmark skipped"
fi

# 5. the CUDA tests of the suite (pytest -m gpu; deselected by default)
if "$PY" -c "import pytest" 2>/dev/null; then
  run_step gpu_tests "$T_TESTS" "$PY" -m pytest -q -m gpu -p no:cacheprovider -s tests
else
  log "pytest not installed: CUDA tests skipped"
fi

# -- summary ----------------------------------------------------------------------------------------------
DEVICE="$DEVICE" "$PY" - "$STEPS_JSON" "$OUT_DIR/gpu_check.json" "$(( $(date +%s) - T_START ))" "$BUDGET" <<'EOF'
import json, os, platform, sys
import torch
steps = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
summary = {
    "device": os.environ.get("DEVICE", "cuda"),
    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
    "weights": "random (smoke profile; paper architecture with random weights): timings only, not quality",
    "steps": steps, "total_seconds": round(float(sys.argv[3]), 1), "budget_seconds": int(sys.argv[4]),
    "ok": all(s["exit"] == 0 for s in steps),
}
summary["within_budget"] = summary["total_seconds"] <= summary["budget_seconds"]
json.dump(summary, open(sys.argv[2], "w"), indent=2)
print(json.dumps({k: summary[k] for k in ("gpu", "total_seconds", "budget_seconds", "within_budget", "ok")}))
for s in steps:
    if s.get("skipped"):
        print(f"  {s['step']:<22} skipped (no time left of the budget)")
        continue
    print(f"  {s['step']:<22} exit {s['exit']:>3}  {s['seconds']:>7.1f} s" + ("  TIMED OUT" if s["timed_out"] else ""))
EOF
log "outputs in $OUT_DIR"
exit $FAILED
