"""What the "rows" attention costs a forward against sdpa's forms, in one process, interleaved (docs/BENCHMARKS.md,
"16-bit verifications exact by rows"). Usage, from the repository root:

    PYTHONPATH=$PWD python docs/benchmarks/zen5-smollm2-exact-rows/probes/rows_cost.py DTYPE CONTEXT

Two engines over the same SmolLM2 weights: the engine as it chooses (rows), and one without the rows form (sdpa's
forms, products unchecked). Prints the median ms of a one-token step and of verifications of 5, 9 and 17 positions.
"""
import statistics
import sys
import time

import torch

import selfspec.engine.architectures as architectures
import selfspec.engine.row_products as row_products
from selfspec.bench.prompts import builtin_suite
from selfspec.engine.runtime import Engine
from selfspec.models.loading import load_model

torch.set_num_threads(2)
lm = load_model(None, dtype=sys.argv[1])
engines = {"rows": lm.engine}
rows_attention, exact_rows = architectures.rows_attention, row_products._exact_rows
architectures.rows_attention, row_products._exact_rows = (lambda *args: None), (lambda *args: None)
engines["sdpa"] = Engine(lm.model)
architectures.rows_attention, row_products._exact_rows = rows_attention, exact_rows
print({name: engine.describe()["forms"] for name, engine in engines.items()})
prompt = (lm.encode_chat(builtin_suite(1)[0].messages) * 20)[:int(sys.argv[2])]
n = len(prompt)
token = torch.tensor([[42]])
times = {}
with torch.inference_mode():
    caches = {}
    for name, engine in engines.items():
        caches[name] = engine.new_cache(n, 64, 17)
        engine.full(torch.tensor([prompt]), 0, caches[name], last_only=True)
    for _ in range(25):
        for width in (1, 5, 9, 17):
            for name, engine in engines.items():
                x = token.expand(1, width)
                start = time.perf_counter()
                engine.full(x, n, caches[name]) if width == 1 else engine.verify(x, n, caches[name])
                times.setdefault((name, width), []).append(time.perf_counter() - start)
                caches[name].rollback(n)
for width in (1, 5, 9, 17):
    rows, sdpa = (1e3 * statistics.median(times[(name, width)]) for name in ("rows", "sdpa"))
    print(f"context {n}, width {width:2d}: rows {rows:.2f} ms, sdpa {sdpa:.2f} ms ({rows / sdpa - 1:+.1%})")
