#!/usr/bin/env bash
# Everything a lent GPU session measures, in one command sized for a 10-minute call: each step has its
# own time limit and saves as it goes, so a slow compile costs that step's tail, not the session. The limits
# follow the H200 call of 2026-11-28: the tiny check took ~90 s, 7B ~110 s, 13B ~90 s, the costs ~215 s.
#   OUT=gpu-out bash scripts/gpu_session.sh      (on the GPU machine; .whl/ may carry newer wheels)
set -u
OUT=${OUT:-gpu-out} PY=${PY:-python3} SHAPE=${SHAPE:-real}  # SHAPE=tiny: a CPU rehearsal
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:$PWD/scripts:${PYTHONPATH:-} PYTHONUNBUFFERED=1 TORCH_LOGS=recompiles
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv
  "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
} 2>&1 | tee "$OUT/versions.txt"
step() {  # step NAME SECONDS ARGS...: one gpu_bench run, its log and JSON under $OUT/NAME
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$PY" scripts/gpu_bench.py --shape "$SHAPE" --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name exit $?"; grep -E "^(#|-|  -|\[)|Recompiling|guard fail|FAILED|Error" "$OUT/$name.log" | cut -c1-220 | tail -25
}
# 0. Correctness first: tiny shapes in float32 on the GPU, every part (compiled steps captured as CUDA
#    graphs; q/k/v and gate/up joined over every row count, wherever timing would choose them or not); our
#    AR, generate() and self-speculation must decode identically.
step tiny-cuda-check ${STEP_CHECK:-100} --shape tiny --device cuda --dtype float32 --models Llama-2-7B \
  --no-generate-static --draft-weights int4 --join-projections every-row
# 1. The engine's default on CUDA (inductor, CUDA graphs captured by hand, projections joined where timing
#    says so, each step queued before the last token is read) against the same loop reading each token at
#    once, the one-token step's kernels by name, and the same step with the projections as their parts.
step llama7 ${STEP_7B:-160} --models Llama-2-7B --parts floor,methods,profile,unjoined --no-generate-static
# 2. 13B, the same without the second compile.
step llama13 ${STEP_13B:-100} --models Llama-2-13B --parts floor,methods,profile --no-generate-static
# 3. c and v, the int4 draft, and the planted-redundancy run through captured graphs (each draft's and
#    verification width's graph compiles ~20 s at 7B: the part needs minutes).
step llama7-costs ${STEP_COSTS:-230} --models Llama-2-7B --parts costs,planted,synthetic_speculation \
  --no-generate-static --draft-weights int4 --reps 2
# What comes back is at most 8 files: the logs, and every step's JSON in one archive.
(cd "$OUT" && tar -czf results.tgz */gpu_bench.json && rm -rf -- */) && ls "$OUT"
