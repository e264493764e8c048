#!/usr/bin/env bash
# alternate parts.py between HEAD (pairs, ATen rotary) and the working tree (one-pass rotary)
for i in 1 2 3; do
  for tree in /tmp/s34/pairs-only /work/main; do
    echo "== $tree"
    (cd $tree && PYTHONPATH=$tree $PWD/.venv/bin/python docs/benchmarks/zen5-smollm2-bf16-pairs/probes/parts.py 2>&1 | grep rows)
  done
done
