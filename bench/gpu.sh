#!/usr/bin/env bash
# Measure fastrec on one CUDA GPU and write every output into one folder.
#
#   bench/gpu.sh OUT_DIR [--dry-run]
#
# Run from anywhere in a checkout of the repository. Steps, in order, each with a
# time limit taken from an overall budget of GPU_BENCH_SECONDS (default 460 s),
# so the whole script ends within about 8 minutes:
#   1. GPU, driver and library versions             -> env.txt
#   2. python -m bench.topk_check                     -> topk_check.txt
#   3. device-to-device copy bandwidth, bf16 matmul   -> device.json
#   4. training of configs/tutorial.yaml and          -> train_<name>.json/.log
#      configs/ml1m.yaml, capped in steps and time
#   5. pytest bench/test_bench_topk.py                -> topk_bench.json/.txt
# summary.txt lists each step's exit status and time. A failed step is recorded
# and the next one still runs. The script exits 1 if any step failed.
#
# Python: $PYTHON if set, else the first of .venv/bin/python, python3 and python
# that imports torch. Only when none does, it tries a new .venv with pip, which
# needs a package index. Data: data/ml-1m when it contains ratings.dat, else
# synthetic files of ML-1M's size (fastrec.data.synthetic), because the download
# needs the internet.
#
# --dry-run runs every step on the CPU at toy sizes (tiny synthetic data, a few
# steps), to check that the script and its Python parts work without a GPU.

set -uo pipefail

usage() {
    echo "usage: bench/gpu.sh OUT_DIR [--dry-run]" >&2
    exit 2
}

OUT=""
DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage ;;
        -*) echo "error: unknown option $arg" >&2; usage ;;
        *)
            if [ -n "$OUT" ]; then
                echo "error: more than one output folder given" >&2
                usage
            fi
            OUT="$arg"
            ;;
    esac
done
[ -n "$OUT" ] || usage

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT" || { echo "error: cannot create output folder $OUT" >&2; exit 2; }
OUT="$(cd "$OUT" && pwd)"
cd "$REPO" || exit 2
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/fastrec-gpu.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

BUDGET="${GPU_BENCH_SECONDS:-460}"
START=$SECONDS
FAILED=0
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

log() {
    echo "[gpu.sh $(date +%H:%M:%S)] $*" | tee -a "$SUMMARY"
}

# Print the seconds left of the budget, but at most $1 (and at least 1).
step_limit() {
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -gt "$1" ]; then left="$1"; fi
    if [ "$left" -lt 1 ]; then left=1; fi
    echo "$left"
}

# run_step NAME MAX_SECONDS OUTPUT_FILE COMMAND...: run with a time limit, record it.
run_step() {
    local name="$1" max="$2" output="$3"
    shift 3
    local limit
    limit="$(step_limit "$max")"
    if [ $((SECONDS - START)) -ge "$BUDGET" ]; then
        log "$name: skipped, the ${BUDGET} s budget is spent"
        FAILED=1
        return
    fi
    log "$name: started (limit ${limit} s)"
    local began=$SECONDS
    # bash -c runs exported shell functions as well as plain commands.
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@" >"$output" 2>&1
    local rc=$?
    local took=$((SECONDS - began))
    if [ "$rc" -eq 0 ]; then
        log "$name: ok in ${took} s -> $(basename "$output")"
    else
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            log "$name: timed out after ${took} s (exit $rc) -> $(basename "$output")"
        else
            log "$name: failed with exit $rc after ${took} s -> $(basename "$output")"
        fi
        tail -n 5 "$output" | sed 's/^/    /' | tee -a "$SUMMARY"
        FAILED=1
    fi
}

# --- Python ------------------------------------------------------------------

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c "import torch" >/dev/null 2>&1; then
            PY="$(command -v "$candidate")"
            return 0
        fi
    done
    log "no python with torch found; trying python3 -m venv .venv and pip"
    python3 -m venv .venv >>"$OUT/setup.log" 2>&1 &&
        timeout 300 .venv/bin/pip install torch triton -e '.[dev]' \
            >>"$OUT/setup.log" 2>&1 &&
        PY="$REPO/.venv/bin/python" && return 0
    log "error: no python imports torch and pip install failed (see setup.log)"
    return 1
}

PY=""
pick_python || exit 1
# A plain checkout imports as fastrec (fastrec/__init__.py loads kernels/ itself).
if ! "$PY" -c "import fastrec" >/dev/null 2>&1; then
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
MISSING="$("$PY" - <<'EOF'
import importlib.util

modules = ["numpy", "pyarrow", "pandas", "yaml", "tqdm", "matplotlib", "pytest"]
modules += ["pytest_benchmark", "triton", "fastrec"]
print(" ".join(m for m in modules if importlib.util.find_spec(m) is None))
EOF
)"
log "python: $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
if [ -n "$MISSING" ]; then
    log "warning: $PY lacks: $MISSING; trying pip install (needs a package index)"
    timeout 60 "$PY" -m pip install pyarrow pandas pyyaml tqdm matplotlib pytest \
        pytest-benchmark >>"$OUT/setup.log" 2>&1 ||
        log "warning: pip install failed (see setup.log)"
fi
if [ "$DRY_RUN" -eq 1 ]; then
    DEVICE=cpu
    log "dry run: CPU only, toy sizes"
else
    DEVICE=cuda
fi

# --- 1. versions ---------------------------------------------------------------

versions() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -a)"
    echo "git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi
        nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version \
            --format=csv
    else
        echo "nvidia-smi: not found"
    fi
    "$PY" - <<'EOF'
import platform

import torch

print("python", platform.python_version(), "at", __import__("sys").executable)
print("torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton

    print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("device", props.name, f"{props.total_memory / 2**30:.1f} GiB")
    print("capability", f"{props.major}.{props.minor}", "SMs", props.multi_processor_count)
    print("bf16 supported", torch.cuda.is_bf16_supported())
else:
    print("CUDA: not available")
EOF
}
export PY OUT DEVICE REPO
export -f versions
run_step versions 30 "$OUT/env.txt" versions
if [ "$DRY_RUN" -eq 0 ] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    log "error: torch sees no CUDA device; rerun with --dry-run for a CPU check"
    exit 1
fi

# --- 2. top-K check ----------------------------------------------------------------

if [ -f bench/topk_check.py ] && [ "$DRY_RUN" -eq 1 ]; then
    # TRITON_INTERPRET=0 makes it report that it needs CUDA instead of spending
    # minutes in the Triton interpreter.
    run_step topk_check 60 "$OUT/topk_check.txt" \
        env TRITON_INTERPRET=0 "$PY" -m bench.topk_check
elif [ -f bench/topk_check.py ]; then
    run_step topk_check 120 "$OUT/topk_check.txt" "$PY" -m bench.topk_check
else
    log "topk_check: skipped, bench/topk_check.py not found"
    FAILED=1
fi

# --- 3. copy bandwidth and matmul rate -----------------------------------------------

device_probe() {
    "$PY" - "$DEVICE" "$OUT/device.json" <<'EOF'
"""Measure device-to-device copy bandwidth and the bf16 matmul rate."""

import json
import os
import sys
import time

import torch

device = torch.device(sys.argv[1])
path = sys.argv[2]
cuda = device.type == "cuda"
# 4 GiB copies and 8192^3 products on the GPU; toy sizes on the CPU dry run.
copy_bytes = 4 * 2**30 if cuda else 64 * 2**20
size = 8192 if cuda else 512
repeats = 20 if cuda else 3


def sync() -> None:
    if cuda:
        torch.cuda.synchronize(device)


def best_seconds(fn, repeats: int) -> float:
    """Return the fastest of ``repeats`` timed calls, after two warm-up calls."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - started)
    return best


source = torch.empty(copy_bytes, dtype=torch.uint8, device=device)
source.fill_(1)
target = torch.empty_like(source)
copy = best_seconds(lambda: target.copy_(source), repeats)
del source, target

a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
product = best_seconds(lambda: a @ b, repeats)
result = {
    "device": torch.cuda.get_device_name(device) if cuda else "cpu",
    "copy_bytes": copy_bytes,
    "copy_seconds": copy,
    # A copy reads and writes every byte: bytes moved = 2 * copy_bytes.
    "copy_GBps_read_plus_write": 2 * copy_bytes / copy / 1e9,
    "copy_GBps_bytes_copied": copy_bytes / copy / 1e9,
    "matmul_size": size,
    "matmul_seconds": product,
    "bf16_matmul_TFLOPs": 2 * size**3 / product / 1e12,
}
tmp = path + ".tmp"
with open(tmp, "w") as sink:
    json.dump(result, sink, indent=2)
os.replace(tmp, path)
print(json.dumps(result, indent=2))
EOF
}
export -f device_probe
run_step device_probe 60 "$OUT/device.log" device_probe

# --- 4. training ------------------------------------------------------------------

if [ "$DRY_RUN" -eq 1 ]; then
    DATA="$SCRATCH/ml-1m"
    SYNTH_ARGS=(--users 300 --movies 400 --unrated 10 --mean-ratings 60)
    STEP_CAP=3
    TRAIN_SECONDS=20
elif [ -f data/ml-1m/ratings.dat ]; then
    DATA="$REPO/data/ml-1m"
    STEP_CAP=2000
    TRAIN_SECONDS=45
else
    DATA="$SCRATCH/ml-1m"
    # ML-1M's sizes: 6,040 users, 3,883 movies (177 unrated), 1,000,209 ratings.
    SYNTH_ARGS=(--users 6040 --movies 3883 --unrated 177 --min-ratings 20
        --mean-ratings 165.5975)
    STEP_CAP=2000
    TRAIN_SECONDS=45
fi
if [ "$DATA" = "$SCRATCH/ml-1m" ]; then
    run_step synthetic_data 60 "$OUT/data.log" \
        "$PY" -m fastrec.data.synthetic --dest "$DATA" "${SYNTH_ARGS[@]}"
    log "data: synthetic files in $DATA (not copied to $OUT)"
else
    log "data: $DATA"
fi

train_config() {
    "$PY" - "$@" <<'EOF'
"""Time capped training and one validation pass of a config; write a JSON report."""

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch

from fastrec.config import load_config
from fastrec.data.prepare import prepare
from fastrec.distributed import DistInfo
from fastrec.evaluate import Evaluator
from fastrec.train import Trainer, peak_memory_mb

config_path, data_dir, device, step_cap, seconds, scratch, device_json, out = sys.argv[1:]
step_cap, seconds = int(step_cap), float(seconds)
WARMUP_STEPS = 5

config = load_config(config_path or None, ["data.download=false", f"train.device={device}"])
store = Path(scratch) / f"{config.name}-{config.data.split}.arrow"
config.data = dataclasses.replace(config.data, data_dir=data_dir, store=str(store))
started = time.perf_counter()
prepared = prepare(config.data)
prepare_seconds = time.perf_counter() - started

trainer = Trainer(config, prepared, Path(scratch), DistInfo())
cuda = trainer.device.type == "cuda"


def sync() -> None:
    if cuda:
        torch.cuda.synchronize(trainer.device)


def endless():
    """Yield batches epoch after epoch (a small dataset has few batches per epoch)."""
    while True:
        yield from trainer.loader.iterate()


# Warm-up: under torch.compile the first steps compile the graph.
started = time.perf_counter()
warmup = endless()
for _ in range(WARMUP_STEPS):
    trainer.train_step(next(warmup))
warmup.close()
sync()
warmup_seconds = time.perf_counter() - started

# Timed: one epoch, cut at step_cap steps or after ``seconds`` of training. The
# last, smaller batch is left out: under torch.compile it would compile a new graph
# inside the timed loop.
full_batches = len(prepared.store.part("train")) // config.train.batch_size
limit = max(1, min(full_batches, step_cap))
steps = samples = 0
loss_sum = torch.zeros((), device=trainer.device)
iterator = trainer.loader.iterate()
started = time.perf_counter()
for batch in iterator:
    loss, _ = trainer.train_step(batch)
    loss_sum += loss
    steps += 1
    samples += int(batch["user"].shape[0])
    # Checking the clock every 50 steps keeps host syncs out of the loop.
    if steps >= limit or (steps % 50 == 0 and time.perf_counter() - started > seconds):
        break
iterator.close()
mean_loss = float(loss_sum) / max(1, steps)
sync()
train_seconds = time.perf_counter() - started
samples_per_s = samples / train_seconds

matmul_tflops = None
if os.path.exists(device_json):
    with open(device_json) as source:
        matmul_tflops = json.load(source).get("bf16_matmul_TFLOPs")
flops = getattr(trainer.model, "flops_per_sample", None)
flops_per_sample = flops() if callable(flops) else None
achieved = None if flops_per_sample is None else flops_per_sample * samples_per_s / 1e12

# One validation pass after a small warm-up pass (Triton compiles its kernels).
evaluator = trainer.evaluator
small = dataclasses.replace(evaluator.config, max_users=evaluator.config.batch_size)
warm = Evaluator(prepared, small, trainer.device, trainer.amp_dtype)
warm.evaluate_model(trainer.model, "valid")
sync()
started = time.perf_counter()
valid = evaluator.evaluate_model(trainer.model, "valid")
sync()
eval_seconds = time.perf_counter() - started

report = {
    "config": config_path or "(default config)",
    "name": config.name,
    "data_dir": data_dir,
    "device": str(trainer.device),
    "amp": str(trainer.amp_dtype),
    "compiled": trainer.compiled,
    "batch_size": config.train.batch_size,
    "max_len": prepared.store.max_len,
    "objective": trainer.objective,
    "head": trainer.model.config.head,
    "parameters": trainer.model.num_parameters(),
    "train_windows": len(prepared.store.part("train")),
    "steps_per_epoch": len(trainer.loader),
    "prepare_seconds": prepare_seconds,
    "warmup_steps": WARMUP_STEPS,
    "warmup_seconds": warmup_seconds,
    "timed_steps": steps,
    "timed_samples": samples,
    "timed_seconds": train_seconds,
    "full_epoch": steps >= full_batches,
    "samples_per_s": samples_per_s,
    "epoch_seconds_estimate": len(prepared.store.part("train")) / samples_per_s,
    "mean_loss": mean_loss,
    "flops_per_sample": flops_per_sample,
    "achieved_TFLOPs": achieved,
    "bf16_matmul_TFLOPs": matmul_tflops,
    "fraction_of_matmul_rate": (
        achieved / matmul_tflops if achieved is not None and matmul_tflops else None
    ),
    "peak_memory_MiB": peak_memory_mb(trainer.device),
    "eval_rows": valid["users"],
    "eval_seconds": eval_seconds,
    "eval_rows_per_s": valid["users"] / eval_seconds,
    "eval_HR@10": valid.get("HR@10"),
}
tmp = out + ".tmp"
with open(tmp, "w") as sink:
    json.dump(report, sink, indent=2)
os.replace(tmp, out)
print(json.dumps(report, indent=2))
EOF
}

export -f train_config
for name in tutorial ml1m; do
    config="configs/$name.yaml"
    if [ ! -f "$config" ]; then
        if [ "$name" = ml1m ]; then
            # The default config is the dot head on all positions with max_len 200.
            log "train_$name: $config not found; using the default config instead"
            config=""
        else
            log "train_$name: skipped, $config not found"
            FAILED=1
            continue
        fi
    fi
    run_step "train_$name" 150 "$OUT/train_$name.log" train_config "$config" "$DATA" \
        "$DEVICE" "$STEP_CAP" "$TRAIN_SECONDS" "$SCRATCH" "$OUT/device.json" \
        "$OUT/train_$name.json"
done

# --- 5. top-K benchmarks --------------------------------------------------------------

if [ -f bench/test_bench_topk.py ]; then
    if [ "$DRY_RUN" -eq 1 ]; then
        run_step topk_bench 60 "$OUT/topk_bench.txt" \
            "$PY" -m pytest bench/test_bench_topk.py --benchmark-only --collect-only -q
    else
        run_step topk_bench 150 "$OUT/topk_bench.txt" \
            "$PY" -m pytest bench/test_bench_topk.py --benchmark-only -q \
            --benchmark-json "$OUT/topk_bench.json"
    fi
else
    log "topk_bench: skipped, bench/test_bench_topk.py not found"
    FAILED=1
fi

log "finished in $((SECONDS - START)) s; outputs in $OUT"
exit "$FAILED"
