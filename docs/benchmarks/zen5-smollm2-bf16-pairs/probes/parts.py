"""SmolLM2 bf16 with the products chosen on this machine: a forward of 1, 5, 9 rows at 300 positions, against its
products alone in the forward's order over the same rows (from the repository root, PYTHONPATH=$PWD)."""
import statistics, time, torch
from selfspec.bench.floor import linear_layers
from selfspec.engine.runtime import Engine
from selfspec.models.loading import load_model

torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engine = Engine(model)
layers = linear_layers(engine.tuned)
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tokens = torch.randint(100, 40000, (1, 17), generator=torch.Generator().manual_seed(1))
inputs = {(m.in_features, r): torch.randn(1, r, m.in_features).to(torch.bfloat16) for m in layers for r in (1, 5, 9, 17)}
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(25):
        for width in (1, 5, 9, 17):
            t = time.perf_counter()
            (engine.full if width == 1 else engine.verify)(tokens[:, :width], n, cache)
            times.setdefault(("forward", width), []).append(time.perf_counter() - t)
            cache.rollback(n)
            t = time.perf_counter()
            for m in layers:
                m(inputs[(m.in_features, width)])
            times.setdefault(("products", width), []).append(time.perf_counter() - t)
ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
for w in (1, 5, 9, 17):
    print(f"{w:2} rows: forward {ms[('forward', w)]:.2f} ms (v {ms[('forward', w)] / ms[('forward', 1)]:.2f}), products "
          f"{ms[('products', w)]:.2f} ms ({ms[('products', w)] / ms[('products', 1)]:.2f}), the rest {ms[('forward', w)] - ms[('products', w)]:.2f} ms")
