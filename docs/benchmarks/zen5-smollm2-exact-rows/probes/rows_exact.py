"""Whether a verification's rows are the one-token steps they stand for, bit for bit, on SmolLM2 (docs/BENCHMARKS.md,
"16-bit verifications exact by rows"). Usage, from the repository root:

    PYTHONPATH=$PWD python docs/benchmarks/zen5-smollm2-exact-rows/probes/rows_exact.py DTYPE [before]

`before`: as the engine was before: sdpa's attention forms, products unchecked. Prints, per verification width, how
many of the 49152 logits of each row differ from the step's.
"""
import sys

import torch

import selfspec.engine.architectures as architectures
import selfspec.engine.row_products as row_products
from selfspec.bench.prompts import builtin_suite
from selfspec.models.loading import load_model

torch.set_num_threads(2)
if len(sys.argv) > 2 and sys.argv[2] == "before":
    architectures.rows_attention = lambda *args: None
    row_products._exact_rows = lambda *args: None
lm = load_model(None, dtype=sys.argv[1])
engine = lm.engine
print(engine.describe()["forms"], "products exact by rows:", engine.describe()["products"]["rows_exact"])
prompt = lm.encode_chat(builtin_suite(1)[0].messages)
n = len(prompt)
tokens = torch.tensor([[42, 99, 1000, 7, 5000, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53]])
with torch.inference_mode(), engine.request_cache(n, 64, 17) as cache:
    engine.full(torch.tensor([prompt]), 0, cache, last_only=True)
    steps = [engine.full(tokens[:, j:j + 1], n + j, cache)[-1].clone() for j in range(17)]
    cache.rollback(n)
    for width in (2, 5, 9, 17):
        verified = engine.verify(tokens[:, :width], n, cache)
        cache.rollback(n)
        print(f"width {width:2d}: logits differing per row", [int((verified[j] != steps[j]).sum()) for j in range(width)])
