"""float32: verifications of 2..5 rows with the engine's chosen few-row products, against the same with the 2-3-row
bucket on torch's linear, interleaved in one process (probe)."""
import dataclasses, statistics, time, torch, sys
from selfspec.engine.runtime import Engine
from selfspec.models.loading import load_model
torch.set_num_threads(2)
model = load_model(None, dtype="float32").model
engine = Engine(model)
chosen = engine.products
print({b: sorted(set(v.values())) for b, v in chosen.chosen.items()}, chosen.joined)
variant = dataclasses.replace(chosen, chosen={b: v for b, v in chosen.chosen.items() if b != (2, 3)})
n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
prompt = torch.randint(100, 40000, (1, n), generator=torch.Generator().manual_seed(0))
times = {}
with torch.inference_mode():
    cache = engine.new_cache(n, 20, 17)
    engine.full(prompt, 0, cache, last_only=True)
    for rep in range(15):
        for name, products in (("chosen", chosen), ("2-3 on linear", variant)):
            engine.use_products(products)
            for w in (1, 2, 3, 5):
                toks = torch.randint(100, 40000, (1, w))
                f = engine.full if w == 1 else engine.verify
                t = time.perf_counter(); f(toks, n, cache); times.setdefault((name, w), []).append(time.perf_counter() - t); cache.rollback(n)
ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
for name in ("chosen", "2-3 on linear"):
    print(name, " ".join(f"{w}:{ms[(name, w)]:.2f}ms({ms[(name, w)] / ms[(name, 1)]:.2f})" for w in (1, 2, 3, 5)))
