"""SmolLM2 bf16: the engine with the bf16 pair-dot products against the engine without them (oneDNN's packed
products, as chosen before), interleaved in one process: a step, verifications of 5, 9 and 17 positions, and the
floor of each (from the repository root, PYTHONPATH=$PWD)."""
import statistics, time, torch
from selfspec.bench.floor import linear_products_seconds
from selfspec.engine import row_products
from selfspec.engine.runtime import Engine
from selfspec.models.loading import load_model

torch.set_num_threads(2)
model = load_model(None, dtype="bfloat16").model
engines = {"pairs": Engine(model)}
offered = row_products.candidate_products
row_products.candidate_products = lambda *a, **k: {n: p for n, p in offered(*a, **k).items() if n != "bf16-pairs"}
engines["onednn"] = Engine(model)
for name, engine in engines.items():
    print(name, row_products.RowProducts.summary_of(engine.describe()["products"])[:160], "exact:", engine.exact_verifications())
n = 300
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
tokens = torch.randint(100, 40000, (1, 17), generator=torch.Generator().manual_seed(1))
times = {}
with torch.inference_mode():
    caches = {name: e.new_cache(n, 20, 17) for name, e in engines.items()}
    for name, e in engines.items():
        e.full(prompt, 0, caches[name], last_only=True)
    for rep in range(25):
        for name, e in engines.items():
            cache = caches[name]
            for width in (1, 5, 9, 17):
                t = time.perf_counter()
                (e.full if width == 1 else e.verify)(tokens[:, :width], n, cache)
                times.setdefault((name, width), []).append(time.perf_counter() - t)
                cache.rollback(n)
            if rep % 5 == 0:
                times.setdefault((name, "floor"), []).append(linear_products_seconds(e.tuned, reps=3))
ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
for name in engines:
    one = ms[(name, 1)]
    print(f"{name}: step {one:.2f} ms, floor {ms[(name, 'floor')]:.2f} ms (step/floor {one / ms[(name, 'floor')]:.2f}); "
          + ", ".join(f"verify {w}: {ms[(name, w)]:.2f} ms (v {ms[(name, w)] / one:.2f})" for w in (5, 9, 17)))
print("pairs / onednn:", ", ".join(f"{w}: {ms[('pairs', w)] / ms[('onednn', w)]:.2f}" for w in (1, 5, 9, 17, "floor")))
