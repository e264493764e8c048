#!/usr/bin/env bash
# Everything a lent GPU session measures, in one command sized for a 10-minute call: each step has its
# own time limit and saves as it goes, so a slow compile costs that step's tail, not the session.
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
# CUDA graphs over the eager kernels first: seconds to compile, so every part gets measured.
step llama7-cudagraphs ${STEP_7B:-190} --models Llama-2-7B --compile-backend cudagraphs --no-generate-static --draft-weights int4
step llama13-cudagraphs ${STEP_13B:-170} --models Llama-2-13B --compile-backend cudagraphs --no-generate-static --draft-weights ''
# inductor like for like against generate() static-compiled (also inductor): minutes of compiling.
step llama7-inductor ${STEP_INDUCTOR:-190} --models Llama-2-7B --compile-backend inductor --parts floor,methods
